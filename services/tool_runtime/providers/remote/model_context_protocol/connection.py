"""One live MCP session to the server of one tool group.

The MCP client's transports and ``ClientSession`` are anyio context managers that must be entered
and left by the same task, so each connection has an owner task that opens them, hands the session
out, and waits until the connection is closed. Calls are made from the request tasks (JSON-RPC
multiplexes them). A transport that fails ends the owner task; the call that notices gets
``ConnectionLost`` and the provider opens a fresh connection on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncContextManager, Callable

import mcp_types
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError

__all__ = ["ConnectionLost", "ServerError", "MCPConnection", "describe_error", "root_error"]

log = logging.getLogger("stackmesh.tool_runtime.mcp")

TransportFactory = Callable[[contextlib.AsyncExitStack], AsyncContextManager[Any]]


class ConnectionLost(Exception):
    """The transport to the MCP server failed (process died, server down, session gone)."""


class ServerError(Exception):
    """The MCP server answered a request with a JSON-RPC error; the session is still fine."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def root_error(err: BaseException) -> BaseException:
    """The first leaf of anyio's exception groups."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return err


def describe_error(err: BaseException) -> str:
    """A one-line description of what failed."""
    err = root_error(err)
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class MCPConnection:
    def __init__(self, toolgroup_id: str, description: str, transport: TransportFactory,
                 on_tools_changed: Callable[[], None]) -> None:
        self.toolgroup_id = toolgroup_id
        self.description = description  # "stdio `python -m x`" or the URL, for messages
        self._transport = transport
        self._on_tools_changed = on_tools_changed
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._lost = False

    @property
    def alive(self) -> bool:
        return self._ready.is_set() and not self._lost and self._task is not None and not self._task.done()

    async def open(self, timeout: float) -> None:
        """Connect and initialize; raise ``ConnectionLost`` naming what failed."""
        self._task = asyncio.create_task(self._own(), name=f"mcp-{self.toolgroup_id}")
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait([ready, self._task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller left: do not leave a half-open server behind
            await self.close()
            raise
        finally:
            ready.cancel()
        if self._ready.is_set() and not self._task.done():
            return
        if not self._task.done():
            await self.close()
            raise ConnectionLost(f"no MCP handshake within {timeout:.0f} s")
        if self._failure is None:
            raise ConnectionLost("the connection ended at once")
        raise ConnectionLost(describe_error(self._failure)) from root_error(self._failure)

    async def _own(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(
                    ClientSession(streams[0], streams[1], message_handler=self._on_message))
                await session.initialize()
                self._session = session
                self._ready.set()
                await self._closing.wait()
        except asyncio.CancelledError:
            if not self._closing.is_set():
                self._failure = ConnectionLost("the connection was cancelled")
        except BaseException as err:  # noqa: BLE001 - the transport's failure, kept for the next caller
            self._failure = err
            log.debug("mcp connection task ended toolgroup=%s", self.toolgroup_id, exc_info=err)
            if self._ready.is_set() and not self._closing.is_set():
                log.warning("mcp connection ended toolgroup=%s server=%s reason=%s",
                            self.toolgroup_id, self.description, describe_error(err))
        finally:
            self._lost = True

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._on_tools_changed()
        elif isinstance(message, Exception):
            log.debug("mcp transport message toolgroup=%s error=%s", self.toolgroup_id, describe_error(message))

    async def _request(self, call: Callable[[ClientSession], Any], timeout: float) -> Any:
        if not self.alive or self._session is None:
            raise ConnectionLost(describe_error(self._failure) if self._failure else "the connection is closed")
        try:
            return await asyncio.wait_for(call(self._session), timeout)
        except MCPError as err:
            if err.error.code == mcp_types.CONNECTION_CLOSED:
                self._lost = True
                raise ConnectionLost(self._lost_reason(err.error.message)) from None
            raise ServerError(err.error.code, err.error.message) from None
        except (asyncio.TimeoutError, asyncio.CancelledError):
            raise
        except Exception as err:  # noqa: BLE001 - anything else is the transport breaking under us
            self._lost = True
            raise ConnectionLost(self._lost_reason(describe_error(err))) from None

    def _lost_reason(self, fallback: str) -> str:
        return describe_error(self._failure) if self._failure is not None else fallback

    async def list_tools(self, timeout: float) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await self._request(lambda s: s.list_tools(params=params), timeout)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float) -> mcp_types.CallToolResult:
        return await self._request(lambda s: s.call_tool(name, arguments), timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """End the session (a stdio server process is stopped); bounded in time."""
        self._closing.set()
        task = self._task
        if task is None or task.done():
            return
        # A session still in its handshake is not waiting for _closing: cancel it (its transport
        # still stops the server, shielded).
        done = set() if not self._ready.is_set() else (await asyncio.wait([task], timeout=timeout))[0]
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
