"""Assemble the inference process: providers, registry cache, router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.mesh import MeshClient
from services.common.provider_host import ProviderSupervisor, build_providers
from services.common.registry_cache import RegistryCache
from services.common.server import ServiceHost
from services.inference.router import InferenceRouter
from services.inference.servicer import InferenceServicer
from stackmesh.inference.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["build_inference"]


async def build_inference(config: StackConfig, host: ServiceHost) -> InferenceRouter:
    mesh = MeshClient(config.mesh)
    providers = build_providers("inference", config)
    cache = RegistryCache(mesh, lambda _type: providers.keys())
    router = InferenceRouter(providers, cache)
    supervisor = ProviderSupervisor("inference", providers, mesh, config.mesh.refresh_interval_seconds,
                                    host.health)
    host.add(inference_pb2_grpc.add_InferenceServiceServicer_to_server, InferenceServicer(router),
             inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name)
    cache.start()
    await supervisor.start()

    async def close() -> None:
        await supervisor.stop()
        await cache.stop()
        await mesh.close()

    host.on_stop(close)
    return router
