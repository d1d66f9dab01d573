"""A tiny real MCP server for tests, and a handle to run it as a subprocess on 127.0.0.1.

    python -m tests.support.mcp_http_server --port 8765 [--transport streamable-http|sse]

Tools: ``add(a, b)``, ``echo(text)``, ``fail()`` (always reports a tool error) and ``crash()`` (the
process exits mid-call, like a server that dies). Endpoint: ``/mcp`` (streamable HTTP) or ``/sse``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

__all__ = ["MCPHTTPServer", "build_server"]

ROOT = pathlib.Path(__file__).resolve().parents[2]


def build_server():
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    app = MCPServer("stackmesh-test")

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @app.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @app.tool()
    def fail() -> str:
        """Always fails, the way a tool reports an error."""
        raise ToolError("boom: the fail tool always fails")

    @app.tool()
    def crash() -> str:
        """Kills the server process in the middle of the call."""
        os._exit(3)

    return app


class MCPHTTPServer:
    """``python -m tests.support.mcp_http_server`` as a child process on a fixed port."""

    def __init__(self, port: int, log_dir: pathlib.Path, transport: str = "streamable-http") -> None:
        self.port, self.transport = port, transport
        self.log_path = log_dir / f"mcp-http-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.transport == 'sse' else 'mcp'}"

    def start(self, timeout: float = 30.0) -> "MCPHTTPServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mcp_http_server", "--port", str(self.port),
             "--transport", self.transport], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MCP test server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"MCP test server not listening after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    args = parser.parse_args()
    build_server().run(transport=args.transport, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
