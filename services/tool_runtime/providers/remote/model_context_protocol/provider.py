"""``remote::model-context-protocol``: tool groups served by MCP servers.

A group names its server with ``mcp_endpoint`` (streamable HTTP, or SSE when the path ends in
``/sse`` or ``args.transport`` says so) or ``mcp_command`` (a stdio server: one subprocess per
group). Each group keeps one session open; its tool list is cached until the group's registry
entry changes, the server announces ``tools/list_changed``, or the session is lost. A session that
breaks fails the call that finds it broken with a clear tool error (``is_error``: the call was sent,
its outcome is unknown, so it must not be retried blindly); the next call reconnects. A server that
cannot be reached before anything is sent is ``UNAVAILABLE`` (safe to retry).

Group ``args`` understood here: ``headers`` (HTTP), ``env`` and ``cwd`` (stdio), ``transport``
(``streamable-http`` | ``sse``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import sys
from typing import Any
from urllib.parse import urlparse

import mcp_types
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from services.common.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from services.tool_runtime.providers.base import CallOptions, Tool, ToolContent, ToolGroupTarget, ToolResult, \
    ToolRuntimeProvider
from services.tool_runtime.providers.remote.model_context_protocol.config import MCPConfig
from services.tool_runtime.providers.remote.model_context_protocol.connection import ConnectionLost, \
    MCPConnection, ServerError, TransportFactory
from services.tool_runtime.providers.remote.model_context_protocol.stdio import popen_stdio_client

__all__ = ["MCPProvider"]

log = logging.getLogger("stackmesh.tool_runtime.mcp")


def _min_timeout(limit: float, options: CallOptions) -> float:
    return min(limit, options.timeout) if options.timeout is not None else limit


def _str_dict(value: Any, what: str, toolgroup_id: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FailedPrecondition(f"tool group '{toolgroup_id}': args.{what} must be a mapping of strings",
                                 reason="BAD_TOOLGROUP_ARGS")
    return {str(k): str(v) for k, v in value.items()}


def _content(item: Any) -> ToolContent:
    kind = getattr(item, "type", "text")
    if kind == "text":
        return ToolContent("text", item.text)
    if kind in ("image", "audio"):
        return ToolContent(kind, f"data:{item.mime_type};base64,{item.data}")
    if kind == "resource":
        resource = item.resource
        return ToolContent("resource", getattr(resource, "text", None) or str(resource.uri))
    if kind == "resource_link":
        return ToolContent("resource", str(item.uri))
    return ToolContent(str(kind), str(item))


class MCPProvider(ToolRuntimeProvider):
    config: MCPConfig

    def __init__(self, provider_id: str, config: MCPConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self._connections: dict[str, tuple[str, MCPConnection]] = {}  # group -> (fingerprint, connection)
        self._tools: dict[str, tuple[str, list[Tool]]] = {}  # group -> (fingerprint, tools)
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ sessions
    def _transport(self, group: ToolGroupTarget) -> tuple[str, TransportFactory]:
        """(description for messages, transport factory) of the group's server."""
        if group.mcp_command and group.mcp_endpoint:
            raise FailedPrecondition(f"tool group '{group.toolgroup_id}' has both mcp_endpoint and mcp_command; "
                                     f"re-register it with one of them", reason="BAD_TOOLGROUP")
        if group.mcp_command:
            program, *rest = group.mcp_command
            shown = shlex.join(group.mcp_command)
            if self.config.python_uses_service_interpreter and program in ("python", "python3"):
                program = sys.executable
            params = StdioServerParameters(
                command=program, args=rest, env=_str_dict(group.args.get("env"), "env", group.toolgroup_id) or None,
                cwd=group.args.get("cwd") or None)
            return f"stdio `{shown}`", lambda stack: popen_stdio_client(params)
        if not group.mcp_endpoint:
            raise FailedPrecondition(f"tool group '{group.toolgroup_id}' has neither mcp_endpoint nor mcp_command; "
                                     f"re-register it with one", reason="BAD_TOOLGROUP")
        url = group.mcp_endpoint
        if urlparse(url).scheme not in ("http", "https"):
            raise FailedPrecondition(f"tool group '{group.toolgroup_id}': mcp_endpoint '{url}' is not an http(s) URL",
                                     reason="BAD_TOOLGROUP")
        headers = _str_dict(group.args.get("headers"), "headers", group.toolgroup_id)
        transport = group.args.get("transport") or ("sse" if urlparse(url).path.rstrip("/").endswith("/sse")
                                                    else "streamable-http")
        if transport == "sse":
            return url, lambda stack: sse_client(url, headers=headers or None,
                                                 timeout=self.config.connect_timeout_seconds)
        if transport != "streamable-http":
            raise FailedPrecondition(f"tool group '{group.toolgroup_id}': args.transport '{transport}' is not "
                                     f"streamable-http or sse", reason="BAD_TOOLGROUP_ARGS")

        def streamable(stack: contextlib.AsyncExitStack) -> Any:
            client = create_mcp_http_client(headers=headers or None)
            stack.push_async_callback(client.aclose)  # a client we pass in is ours to close
            return streamable_http_client(url, http_client=client)

        return url, streamable

    async def _connection(self, group: ToolGroupTarget) -> MCPConnection:
        key = group.toolgroup_id
        held = self._connections.get(key)
        if held is not None and held[0] == group.fingerprint and held[1].alive:
            return held[1]
        async with self._locks.setdefault(key, asyncio.Lock()):
            held = self._connections.get(key)
            if held is not None and held[0] == group.fingerprint and held[1].alive:
                return held[1]
            if held is not None:
                self._drop(key)
            description, transport = self._transport(group)
            connection = MCPConnection(key, description, transport, lambda: self._tools.pop(key, None))
            try:
                await connection.open(self.config.connect_timeout_seconds)
            except ConnectionLost as err:  # the caller turns it into its answer; the log keeps the detail
                log.warning("mcp connect failed toolgroup=%s server=%s reason=%s", key, description, err)
                if group.mcp_command and isinstance(err.__cause__, OSError):  # no such program, not executable
                    raise FailedPrecondition(
                        f"cannot start the MCP server of tool group '{key}' ({description}): {err}; fix the command "
                        f"and re-register the group", reason="MCP_COMMAND_FAILED", metadata={"toolgroup_id": key}) from None
                raise
            self._connections[key] = (group.fingerprint, connection)
            log.info("mcp session opened toolgroup=%s server=%s", key, description)
            return connection

    def _drop(self, toolgroup_id: str) -> asyncio.Task[None] | None:
        """Forget the group's session and tools now; its close (which may wait seconds for a stdio
        server to exit) runs in the background, so no request waits for it."""
        self._tools.pop(toolgroup_id, None)
        held = self._connections.pop(toolgroup_id, None)
        if held is None:
            return None

        async def close() -> None:
            await held[1].close()
            log.info("mcp session closed toolgroup=%s", toolgroup_id)

        task = asyncio.get_running_loop().create_task(close(), name=f"mcp-close-{toolgroup_id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    def _describe(self, group: ToolGroupTarget) -> str:
        try:
            return self._transport(group)[0]
        except FailedPrecondition:
            return "?"

    # ------------------------------------------------------------------ tools
    async def list_tools(self, group: ToolGroupTarget, options: CallOptions) -> list[Tool]:
        cached = self._tools.get(group.toolgroup_id)
        if cached is not None and cached[0] == group.fingerprint:
            return cached[1]
        where = f"the MCP server of tool group '{group.toolgroup_id}' ({self._describe(group)})"
        timeout = _min_timeout(self.config.list_timeout_seconds, options)
        try:
            connection = await self._connection(group)
            listed = await connection.list_tools(timeout)
        except ConnectionLost as err:
            self._drop(group.toolgroup_id)
            raise Unavailable(f"cannot list the tools of {where}: {err}; check that the server runs",
                              reason="MCP_SERVER_UNAVAILABLE", metadata={"toolgroup_id": group.toolgroup_id}) from None
        except ServerError as err:
            raise FailedPrecondition(f"{where} refused tools/list: {err} (JSON-RPC error {err.code})",
                                     reason="MCP_SERVER_ERROR") from None
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"{where} did not list its tools within {timeout:.0f} s",
                                   reason="MCP_TIMEOUT") from None
        tools = [Tool(name=t.name, description=t.description or getattr(t, "title", None) or "",
                      input_schema=dict(t.input_schema or {"type": "object"}), toolgroup_id=group.toolgroup_id)
                 for t in listed]
        self._tools[group.toolgroup_id] = (group.fingerprint, tools)
        return tools

    async def invoke_tool(self, group: ToolGroupTarget, tool: str, arguments: dict[str, Any],
                          options: CallOptions) -> ToolResult:
        where = f"the MCP server of tool group '{group.toolgroup_id}' ({self._describe(group)})"
        try:
            connection = await self._connection(group)
        except ConnectionLost as err:  # nothing was sent: a plain UNAVAILABLE, safe to retry
            raise Unavailable(f"cannot reach {where}: {err}; check that the server runs, then retry",
                              reason="MCP_SERVER_UNAVAILABLE", metadata={"toolgroup_id": group.toolgroup_id}) from None
        timeout = _min_timeout(self.config.call_timeout_seconds, options)
        try:
            result: mcp_types.CallToolResult = await connection.call_tool(tool, arguments, timeout)
        except ConnectionLost as err:
            self._drop(group.toolgroup_id)
            return ToolResult.error(f"{where} went away ({err}); the call to '{tool}' did not complete. "
                                    f"The next call starts a new session.", error_type="MCP_CONNECTION_LOST")
        except ServerError as err:
            return ToolResult.error(f"{where} rejected the call to '{tool}': {err} (JSON-RPC error {err.code})",
                                    error_type="MCP_SERVER_ERROR")
        except asyncio.TimeoutError:
            return ToolResult.error(f"tool '{tool}' of tool group '{group.toolgroup_id}' did not answer within "
                                    f"{timeout:.0f} s", error_type="MCP_TIMEOUT")
        content = [_content(item) for item in result.content]
        metadata: dict[str, Any] = {}
        if result.structured_content is not None:
            metadata["structured_content"] = result.structured_content
        if result.is_error:
            message = "\n".join(c.text for c in content if c.type == "text") or f"tool '{tool}' failed"
            return ToolResult(content=content, is_error=True, error_message=message,
                              metadata={**metadata, "error_type": "TOOL_ERROR"})
        return ToolResult(content=content, metadata=metadata)

    async def release_group(self, toolgroup_id: str) -> None:
        async with self._locks.setdefault(toolgroup_id, asyncio.Lock()):
            closing = self._drop(toolgroup_id)
        if closing is not None:
            await closing

    async def shutdown(self) -> None:
        for key in list(self._connections):
            self._drop(key)
        await asyncio.gather(*self._closing, return_exceptions=True)
