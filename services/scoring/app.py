"""Assemble the scoring process: providers (bound to the mesh), registry cache, router, core, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.scoring.core import ScoringCore
from services.scoring.mesh_calls import MeshBackend
from services.scoring.router import ScoringFunctionRouter
from services.scoring.servicer import ScoringServicer
from stackmesh.scoring.v1 import scoring_pb2, scoring_pb2_grpc

__all__ = ["build_scoring"]


async def build_scoring(config: StackConfig, host: ServiceHost) -> ScoringCore:
    runtime = ApiRuntime("scoring", config, host.health)
    backend = MeshBackend(runtime.mesh, runtime.cache)
    for provider in runtime.providers.values():
        provider.bind(backend)
    core = ScoringCore(ScoringFunctionRouter(runtime.providers, runtime.cache), backend)
    host.add(scoring_pb2_grpc.add_ScoringServiceServicer_to_server, ScoringServicer(core),
             scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name)
    await runtime.start()
    host.on_stop(runtime.stop)
    return core
