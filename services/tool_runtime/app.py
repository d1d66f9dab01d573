"""Assemble the tool_runtime process: providers, registry cache, router, servicer."""

from __future__ import annotations

from services.common import catalog
from services.common.config import StackConfig
from services.common.mesh import MeshClient
from services.common.provider_host import ProviderSupervisor, build_providers
from services.common.registry_cache import RegistryCache
from services.common.server import ServiceHost
from services.tool_runtime.router import ToolRuntimeRouter
from services.tool_runtime.servicer import ToolRuntimeServicer
from stackmesh.tool_runtime.v1 import tool_runtime_pb2, tool_runtime_pb2_grpc

__all__ = ["build_tool_runtime"]


async def build_tool_runtime(config: StackConfig, host: ServiceHost) -> ToolRuntimeRouter:
    mesh = MeshClient(config.mesh)
    providers = build_providers("tool_runtime", config)
    for provider in providers.values():
        provider.attach(mesh)  # the RAG runtime calls vector_io through the mesh

    def provider_ids(resource_type: int) -> list[str]:
        # This cache also resolves vector DBs (checked before RAG calls): each type with its own API's providers.
        return [p.provider_id for p in config.supported_providers(catalog.RESOURCE_API[resource_type])]

    cache = RegistryCache(mesh, provider_ids)
    router = ToolRuntimeRouter(providers, cache)
    supervisor = ProviderSupervisor("tool_runtime", providers, mesh, config.mesh.refresh_interval_seconds,
                                    host.health)
    host.add(tool_runtime_pb2_grpc.add_ToolRuntimeServiceServicer_to_server, ToolRuntimeServicer(router),
             tool_runtime_pb2.DESCRIPTOR.services_by_name["ToolRuntimeService"].full_name)
    cache.start()
    await supervisor.start()

    async def close() -> None:
        await supervisor.stop()  # providers shut down: MCP sessions closed, stdio servers stopped
        await router.close()
        await cache.stop()
        await mesh.close()

    host.on_stop(close)
    return router
