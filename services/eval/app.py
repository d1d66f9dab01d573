"""Assemble the eval process: providers (with their job stores and the client of the services a job
calls), registry cache, router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.eval.core import EvalCore
from services.eval.downstream import Downstream
from services.eval.router import EvalRouter
from services.eval.servicer import EvalServicer
from stackmesh.eval.v1 import eval_pb2, eval_pb2_grpc

__all__ = ["build_eval"]


async def build_eval(config: StackConfig, host: ServiceHost) -> EvalCore:
    runtime = ApiRuntime("eval", config, host.health)
    for provider in runtime.providers.values():
        provider.resolve_storage(config)
        provider.attach(Downstream(runtime.mesh))  # one per provider: each sets its own timeouts
    core = EvalCore(EvalRouter(runtime.providers, runtime.cache))
    host.add(eval_pb2_grpc.add_EvalServiceServicer_to_server, EvalServicer(core),
             eval_pb2.DESCRIPTOR.services_by_name["EvalService"].full_name)
    # Providers open their stores and resume unfinished jobs here; jobs reach other services only
    # through the mesh, so nothing waits for them.
    await runtime.start()
    host.on_stop(runtime.stop)
    return core
