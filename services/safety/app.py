"""Assemble the safety process: providers (attached to the mesh and the registry cache), router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.safety.core import SafetyCore
from services.safety.router import ShieldRouter
from services.safety.servicer import SafetyServicer
from stackmesh.safety.v1 import safety_pb2, safety_pb2_grpc

__all__ = ["build_safety"]


async def build_safety(config: StackConfig, host: ServiceHost) -> SafetyCore:
    runtime = ApiRuntime("safety", config, host.health)
    for provider in runtime.providers.values():
        provider.attach(runtime.mesh, runtime.cache)  # llama-guard asks its model through the mesh
    core = SafetyCore(ShieldRouter(runtime.providers, runtime.cache))
    host.add(safety_pb2_grpc.add_SafetyServiceServicer_to_server, SafetyServicer(core),
             safety_pb2.DESCRIPTOR.services_by_name["SafetyService"].full_name)
    await runtime.start()  # the code scanner's self-test runs here, before the first request
    host.on_stop(runtime.stop)
    return core
