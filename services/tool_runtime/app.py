"""Assemble the tool_runtime process: providers, registry cache, router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.tool_runtime.router import ToolRuntimeRouter
from services.tool_runtime.servicer import ToolRuntimeServicer
from stackmesh.tool_runtime.v1 import tool_runtime_pb2, tool_runtime_pb2_grpc

__all__ = ["build_tool_runtime"]


async def build_tool_runtime(config: StackConfig, host: ServiceHost) -> ToolRuntimeRouter:
    runtime = ApiRuntime("tool_runtime", config, host.health)  # its cache also resolves vector DBs
    for provider in runtime.providers.values():
        provider.attach(runtime.mesh)  # the RAG runtime calls vector_io through the mesh
    router = ToolRuntimeRouter(runtime.providers, runtime.cache)
    host.add(tool_runtime_pb2_grpc.add_ToolRuntimeServiceServicer_to_server, ToolRuntimeServicer(router),
             tool_runtime_pb2.DESCRIPTOR.services_by_name["ToolRuntimeService"].full_name)
    runtime.on_stop(router.close)
    await runtime.start()  # on stop, providers shut down after the router: MCP sessions closed, stdio servers stopped
    host.on_stop(runtime.stop)
    return router
