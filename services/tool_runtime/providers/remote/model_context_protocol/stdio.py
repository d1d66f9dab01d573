"""The stdio transport for MCP servers, spawning them with ``subprocess.Popen``.

Why not ``mcp.client.stdio.stdio_client``: it spawns through ``anyio.open_process``, which under
uvloop (what stackmesh services run on) is libuv's ``fork()``. That runs gRPC's ``pthread_atfork``
child handlers, which start threads in the child before ``exec`` and sometimes crash it (SIGSEGV):
the server then never answers ``initialize``, intermittently ("Connection closed"). ``Popen`` spawns
with ``vfork()`` (CPython >= 3.10 on Linux), where no fork handler runs. The pipes are then
driven by the event loop as usual.

Protocol and shutdown follow the SDK's transport: newline-delimited JSON-RPC, the server in its own
session (process group); on close, stdin is closed, the server gets a grace period to exit, then
SIGTERM and SIGKILL to its whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from typing import Any, AsyncIterator

import anyio
import mcp_types
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.shared.message import SessionMessage

__all__ = ["popen_stdio_client"]

log = logging.getLogger("stackmesh.tool_runtime.mcp")

EXIT_GRACE_SECONDS = 2.0  # after stdin closes, as the SDK
KILL_GRACE_SECONDS = 2.0  # after SIGTERM
MAX_LINE_BYTES = 64 * 1024 * 1024


async def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while process.poll() is None:
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def _stop(process: subprocess.Popen[bytes], writer: asyncio.StreamWriter) -> None:
    writer.close()  # EOF on the server's stdin: the polite way to ask it to exit
    if not await _wait_exit(process, EXIT_GRACE_SECONDS):
        _signal_group(process, signal.SIGTERM)
        if not await _wait_exit(process, KILL_GRACE_SECONDS):
            _signal_group(process, signal.SIGKILL)
            if not await _wait_exit(process, KILL_GRACE_SECONDS):
                log.warning("mcp stdio server pid=%d survived SIGKILL; abandoning it", process.pid)
    else:
        _signal_group(process, signal.SIGTERM)  # children it left behind in its group


@contextlib.asynccontextmanager
async def popen_stdio_client(params: StdioServerParameters) -> AsyncIterator[tuple[Any, Any]]:
    """Like ``stdio_client``: yields (read_stream, write_stream) of ``SessionMessage``s. The server's
    stderr is this service's (its log)."""
    process = subprocess.Popen(  # OSError (e.g. no such program) reaches the caller
        [params.command, *params.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        env=get_default_environment() | (params.env or {}), cwd=params.cwd, start_new_session=True, bufsize=0)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stdout)
    write_transport, write_protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), process.stdin)
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)

    read_in, read_out = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_in, write_out = anyio.create_memory_object_stream[SessionMessage](0)

    async def stdout_reader() -> None:
        async with read_in:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError, OSError) as err:
                    await read_in.send(err if isinstance(err, Exception) else ValueError(str(err)))
                    return
                if not line:
                    return  # EOF: the server exited; the session sees the stream close
                if not line.strip():
                    continue
                try:
                    message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                except ValueError as err:
                    log.warning("mcp stdio server pid=%d wrote a line that is not JSON-RPC", process.pid)
                    await read_in.send(err)
                    continue
                await read_in.send(SessionMessage(message))

    async def stdin_writer() -> None:
        try:
            async with write_out:
                async for session_message in write_out:
                    data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    writer.write((data + "\n").encode())
                    await writer.drain()
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            await read_in.aclose()  # the server stopped reading: end the session instead of hanging

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stdout_reader)
        tasks.start_soon(stdin_writer)
        try:
            yield read_out, write_in
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process, writer)
                for stream in (read_out, write_in, read_in, write_out):
                    await stream.aclose()
            tasks.cancel_scope.cancel()
