"""Assemble the vector_io process: providers, registry cache, index life cycle, router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.mesh import MeshClient
from services.common.provider_host import ProviderSupervisor, build_providers
from services.common.registry_cache import RegistryCache
from services.common.server import ServiceHost
from services.vector_io.core import VectorIOCore
from services.vector_io.embedder import Embedder
from services.vector_io.indexes import IndexLifecycle
from services.vector_io.router import VectorDBRouter
from services.vector_io.servicer import VectorIOServicer
from stackmesh.vector_io.v1 import vector_io_pb2, vector_io_pb2_grpc

__all__ = ["build_vector_io"]


async def build_vector_io(config: StackConfig, host: ServiceHost) -> VectorIOCore:
    mesh = MeshClient(config.mesh)
    providers = build_providers("vector_io", config)
    for provider in providers.values():
        provider.resolve_storage(config)
    cache = RegistryCache(mesh, lambda _type: providers.keys())
    indexes = IndexLifecycle(providers, cache)
    cache.add_listener(indexes.on_event)
    core = VectorIOCore(VectorDBRouter(providers, cache, indexes), Embedder(mesh))
    supervisor = ProviderSupervisor("vector_io", providers, mesh, config.mesh.refresh_interval_seconds, host.health)
    host.add(vector_io_pb2_grpc.add_VectorIOServiceServicer_to_server, VectorIOServicer(core),
             vector_io_pb2.DESCRIPTOR.services_by_name["VectorIOService"].full_name)
    await supervisor.start()  # providers are open before the first registry event is applied
    indexes.start()
    cache.start()

    async def close() -> None:
        await cache.stop()
        await indexes.stop()
        await supervisor.stop()
        await mesh.close()

    host.on_stop(close)
    return core
