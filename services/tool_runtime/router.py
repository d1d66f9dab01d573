"""Which provider serves a tool group, which group has a tool, and which provider does RAG —
all resolved from the watched registry cache.

Providers keep per-group state (MCP sessions, stdio processes, tool lists) keyed on the group's
fingerprint. The router follows the registry watch and tells a provider to release a group as soon
as the group is unregistered or changed, so an unregistered stdio server stops at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import grpc

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, StackmeshError, Unavailable
from services.common.protoutil import to_dict
from services.common.registry_cache import RegistryCache
from services.tool_runtime.arguments import validate_arguments
from services.tool_runtime.providers.base import CallOptions, Tool, ToolGroupTarget, ToolResult, ToolRuntimeProvider
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2

__all__ = ["ToolRuntimeRouter", "GroupError", "RAG_TOOLGROUP"]

log = logging.getLogger("stackmesh.tool_runtime")
T = common_pb2
TOOL_GROUP = T.RESOURCE_TYPE_TOOL_GROUP
RAG_TOOLGROUP = "builtin::rag"
_LIST_HINT = "list tools with `stackmesh tools list`"

GroupError = tuple[str, str]  # (toolgroup_id, message)


def fingerprint(resource: common_pb2.Resource) -> str:
    """Identity of one registration of a group: provider, spec and creation time."""
    digest = hashlib.sha256(resource.provider_id.encode())
    digest.update(resource.tool_group.SerializeToString(deterministic=True))
    digest.update(resource.create_time.SerializeToString(deterministic=True))
    return digest.hexdigest()[:24]


def _target(resource: common_pb2.Resource) -> ToolGroupTarget:
    spec = resource.tool_group
    return ToolGroupTarget(toolgroup_id=resource.identifier, provider_id=resource.provider_id,
                           mcp_endpoint=spec.mcp_endpoint, mcp_command=tuple(spec.mcp_command),
                           args=to_dict(spec.args), fingerprint=fingerprint(resource))


def _message(err: BaseException) -> str:
    if isinstance(err, StackmeshError):
        return err.message
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return f"{type(err).__name__}: {err}"


class ToolRuntimeRouter:
    def __init__(self, providers: dict[str, ToolRuntimeProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache
        self._held: dict[str, tuple[str, ToolRuntimeProvider]] = {}  # group -> (fingerprint, provider holding it)
        self._releases: set[asyncio.Task[None]] = set()
        cache.add_listener(self._on_event)

    # ------------------------------------------------------------------ groups
    def _bind(self, resource: common_pb2.Resource) -> tuple[ToolRuntimeProvider, ToolGroupTarget]:
        provider = self.providers.get(resource.provider_id)
        if provider is None:
            raise Unavailable(f"tool group '{resource.identifier}' is served by provider '{resource.provider_id}', "
                              f"which this tool_runtime service does not run (see `stackmesh providers list`)",
                              reason="PROVIDER_NOT_RUN", metadata={"toolgroup_id": resource.identifier})
        target = _target(resource)
        self._held[target.toolgroup_id] = (target.fingerprint, provider)
        return provider, target

    async def group(self, toolgroup_id: str) -> tuple[ToolRuntimeProvider, ToolGroupTarget]:
        return self._bind(await self.cache.resolve_fresh(TOOL_GROUP, toolgroup_id))

    async def _groups(self) -> list[common_pb2.Resource]:
        if not await self.cache.wait_synced(timeout=5):
            raise Unavailable("this service has not reached the registry yet; retry in a moment",
                              reason="REGISTRY_NOT_SYNCED")
        return sorted(self.cache.index.all(TOOL_GROUP), key=lambda r: r.identifier)

    # ------------------------------------------------------------------ tools
    async def list_group(self, toolgroup_id: str, options: CallOptions) -> list[Tool]:
        provider, target = await self.group(toolgroup_id)
        return await provider.list_tools(target, options)

    async def _try_list(self, resource: common_pb2.Resource, options: CallOptions) -> tuple[list[Tool], str]:
        # Leave the caller time to get the partial answer when one group hangs.
        timeout = options.timeout * 0.9 if options.timeout is not None else None
        try:
            provider, target = self._bind(resource)
            return await asyncio.wait_for(provider.list_tools(target, options), timeout), ""
        except asyncio.TimeoutError:
            return [], f"did not list its tools within {timeout:.1f} s"
        except (StackmeshError, grpc.aio.AioRpcError, OSError) as err:
            return [], _message(err)

    async def list_all(self, options: CallOptions) -> tuple[list[Tool], list[GroupError]]:
        """Every group's tools, listed concurrently; a group that fails is reported, not fatal."""
        groups = await self._groups()
        results = await asyncio.gather(*(self._try_list(r, options) for r in groups))
        tools = [t for listed, _ in results for t in listed]
        errors = [(r.identifier, error) for r, (_, error) in zip(groups, results) if error]
        return tools, errors

    async def _find(self, tool_name: str, options: CallOptions) -> tuple[ToolRuntimeProvider, ToolGroupTarget, Tool]:
        tools, errors = await self.list_all(options)
        matches = [t for t in tools if t.name == tool_name]
        if len(matches) > 1:
            groups = ", ".join(sorted(t.toolgroup_id for t in matches))
            raise FailedPrecondition(f"tool '{tool_name}' exists in several tool groups ({groups}); pass toolgroup_id "
                                     f"to choose one", reason="AMBIGUOUS_TOOL",
                                     metadata={"tool": tool_name, "candidates": groups})
        if not matches:
            unlisted = "; ".join(f"'{g}': {e}" for g, e in errors)
            raise NotFound(f"tool '{tool_name}' not found in any tool group; {_LIST_HINT}"
                           + (f" (groups that could not be listed, it may be in one: {unlisted})" if unlisted else ""),
                           reason="TOOL_NOT_FOUND", metadata={"tool": tool_name})
        provider, target = await self.group(matches[0].toolgroup_id)
        return provider, target, matches[0]

    async def invoke(self, tool_name: str, arguments: dict[str, Any], toolgroup_id: str,
                     options: CallOptions) -> ToolResult:
        if not tool_name:
            raise InvalidArgument(f"tool_name is empty; {_LIST_HINT}", reason="TOOL_NAME_MISSING")
        if not toolgroup_id and "/" in tool_name:  # "mcp::time/get_current_time"
            prefix, _, rest = tool_name.rpartition("/")
            if self.cache.index.get(TOOL_GROUP, prefix) is not None:
                toolgroup_id, tool_name = prefix, rest
        if toolgroup_id:
            provider, target = await self.group(toolgroup_id)
            tool = next((t for t in await provider.list_tools(target, options) if t.name == tool_name), None)
            if tool is None:
                raise NotFound(f"tool '{tool_name}' not found in tool group '{toolgroup_id}'; list its tools with "
                               f"`stackmesh tools list --group {toolgroup_id}`", reason="TOOL_NOT_FOUND",
                               metadata={"tool": tool_name, "toolgroup_id": toolgroup_id})
        else:
            provider, target, tool = await self._find(tool_name, options)
        validate_arguments(tool, arguments)
        return await provider.invoke_tool(target, tool_name, arguments, options)

    # ------------------------------------------------------------------ RAG
    async def rag_provider(self) -> ToolRuntimeProvider:
        """The provider behind builtin::rag when registered, else the only RAG-capable one."""
        resource = self.cache.index.get(TOOL_GROUP, RAG_TOOLGROUP)
        provider = self.providers.get(resource.provider_id) if resource is not None else None
        if provider is not None and provider.supports_rag:
            return provider
        capable = sorted(pid for pid, p in self.providers.items() if p.supports_rag)
        if len(capable) == 1:
            return self.providers[capable[0]]
        if not capable:
            raise FailedPrecondition("no RAG provider runs in this tool_runtime service; add an inline::rag-runtime "
                                     "provider under providers.tool_runtime", reason="NO_RAG_PROVIDER")
        raise FailedPrecondition(f"several RAG providers ({', '.join(capable)}); register tool group "
                                 f"'{RAG_TOOLGROUP}' with the one to use", reason="AMBIGUOUS_PROVIDER")

    async def check_vector_dbs(self, vector_db_ids: list[str]) -> None:
        """Fail fast, before reading any document, on a vector DB that is not registered."""
        for vector_db_id in vector_db_ids:
            await self.cache.resolve_fresh(T.RESOURCE_TYPE_VECTOR_DB, vector_db_id)

    # ------------------------------------------------------------------ registry watch
    def _on_event(self, event: registry_pb2.WatchResourcesResponse) -> None:
        kind = event.event_type
        if kind == registry_pb2.WATCH_EVENT_TYPE_SYNCED or (
                kind in (registry_pb2.WATCH_EVENT_TYPE_PUT, registry_pb2.WATCH_EVENT_TYPE_DELETE)
                and event.resource.type == TOOL_GROUP):
            self._release_stale()

    def _release_stale(self) -> None:
        for toolgroup_id, (held_fingerprint, provider) in list(self._held.items()):
            current = self.cache.index.get(TOOL_GROUP, toolgroup_id)
            if current is not None and fingerprint(current) == held_fingerprint:
                continue
            del self._held[toolgroup_id]
            log.info("tool group changed or unregistered, releasing toolgroup=%s provider=%s",
                     toolgroup_id, provider.provider_id)
            task = asyncio.get_running_loop().create_task(provider.release_group(toolgroup_id))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def close(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
