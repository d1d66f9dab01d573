"""The tool_runtime providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::rag-runtime": ProviderSpec(
        provider_type="inline::rag-runtime", api="tool_runtime",
        config_class="services.tool_runtime.providers.inline.rag_runtime.config:RagRuntimeConfig",
        impl="services.tool_runtime.providers.inline.rag_runtime.provider:RagRuntimeProvider",
        description="builtin::rag: documents chunked by tokens into vector_io; knowledge search with citations."),
    "remote::model-context-protocol": ProviderSpec(
        provider_type="remote::model-context-protocol", api="tool_runtime",
        config_class="services.tool_runtime.providers.remote.model_context_protocol.config:MCPConfig",
        impl="services.tool_runtime.providers.remote.model_context_protocol.provider:MCPProvider",
        description="Tool groups served by MCP servers: streamable HTTP, SSE, or a stdio command."),
}
