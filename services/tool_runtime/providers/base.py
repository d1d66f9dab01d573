"""The interface every tool_runtime provider implements, and the plain types it speaks.

A provider serves tool groups (registry resources): it lists a group's tools and invokes them.
Providers that implement RAG (``inline::rag-runtime``) also insert documents and search them.
The servicer converts protos to these types once; the router picks the provider of a group.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from services.common.errors import Unimplemented
from services.common.mesh import MeshClient

__all__ = [
    "CallOptions", "ToolGroupTarget", "Tool", "ToolContent", "ToolResult",
    "Document", "InsertResult", "SearchQuery", "Citation", "SearchResult", "ToolRuntimeProvider",
]


@dataclasses.dataclass(frozen=True)
class CallOptions:
    """What a provider needs of the caller's request when it calls further (mesh, MCP servers)."""

    timeout: float | None = None  # seconds left of the caller's deadline
    metadata: tuple[tuple[str, str], ...] = ()  # trace context to pass on


@dataclasses.dataclass(frozen=True)
class ToolGroupTarget:
    """The registered tool group a request resolved to."""

    toolgroup_id: str
    provider_id: str
    mcp_endpoint: str = ""
    mcp_command: tuple[str, ...] = ()
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Changes whenever the group's registry entry changes: sessions and caches keyed on it go stale.
    fingerprint: str = ""


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    toolgroup_id: str


@dataclasses.dataclass(frozen=True)
class ToolContent:
    type: str  # "text", "image", "audio", "resource"
    text: str


@dataclasses.dataclass
class ToolResult:
    """What a tool returned; ``is_error`` when the tool (or its server) failed."""

    content: list[ToolContent] = dataclasses.field(default_factory=list)
    is_error: bool = False
    error_message: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def error(cls, message: str, **metadata: Any) -> "ToolResult":
        return cls(content=[ToolContent("text", message)], is_error=True, error_message=message, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Document:
    """A document to index: its text, or where to read it (file:// or data: URI)."""

    document_id: str
    content: str = ""
    uri: str = ""
    mime_type: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class InsertResult:
    documents: int
    chunks: int


@dataclasses.dataclass(frozen=True)
class SearchQuery:
    query: str
    vector_db_ids: tuple[str, ...]
    max_chunks: int = 0  # 0: the provider's default
    mode: int = 0  # stackmesh.vector_io.v1.SearchMode
    score_threshold: float = 0.0
    max_tokens_in_context: int = 0  # 0: the provider's default


@dataclasses.dataclass(frozen=True)
class Citation:
    document_id: str
    vector_db_id: str
    chunk_id: str
    score: float
    text: str
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    content: str  # formatted for a model prompt
    citations: list[Citation]


class ToolRuntimeProvider(abc.ABC):
    """One configured provider instance inside the tool_runtime service."""

    #: Whether this provider implements InsertDocuments / KnowledgeSearch.
    supports_rag = False

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults
        self.mesh: MeshClient | None = None

    def attach(self, mesh: MeshClient) -> None:
        """Give the provider the process's mesh client (to call vector_io, inference...)."""
        self.mesh = mesh

    # --- life cycle (also what ProviderSupervisor expects) --------------------------------------
    async def initialize(self) -> None:
        """Prepare; must not block on remote servers being reachable."""

    async def shutdown(self) -> None:
        """Close sessions, stop subprocesses."""

    async def health(self) -> tuple[bool, str]:
        return True, ""

    refresh_models = False
    refresh_interval_seconds: float | None = None
    allowed_models: list[str] | None = None

    async def list_models(self) -> None:
        return None  # tool runtimes serve no models

    # --- tools ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def list_tools(self, group: ToolGroupTarget, options: CallOptions) -> list[Tool]:
        """The tools of ``group``; raise ``Unavailable`` when its server cannot be reached."""

    @abc.abstractmethod
    async def invoke_tool(self, group: ToolGroupTarget, tool: str, arguments: dict[str, Any],
                          options: CallOptions) -> ToolResult:
        """Call ``tool``; a failure of the tool or of its server is a ``ToolResult.error``."""

    async def release_group(self, toolgroup_id: str) -> None:
        """The group was unregistered or changed: drop what is held for it (sessions, processes)."""

    # --- RAG ------------------------------------------------------------------------------------
    async def insert_documents(self, vector_db_id: str, documents: list[Document], chunk_size: int,
                               chunk_overlap: int, options: CallOptions) -> InsertResult:
        raise Unimplemented(f"provider '{self.provider_id}' does not insert documents")

    async def knowledge_search(self, query: SearchQuery, options: CallOptions) -> SearchResult:
        raise Unimplemented(f"provider '{self.provider_id}' does not search knowledge")
