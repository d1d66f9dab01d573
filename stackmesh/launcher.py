"""``stackmesh run``: every process of the mesh on this machine, in dependency order.

registry -> each API service with runnable providers -> gateway. Each child must report healthy
(``grpc.health.v1``) before the next starts. Logs are prefixed with the child's name. Ctrl-C or
SIGTERM stops the children in reverse order (SIGTERM, then SIGKILL after a grace period). A child
that dies is reported with its exit code; the rest keep running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import StackConfig

__all__ = ["Launcher", "launch"]

_COLORS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]
_RESET = "\033[0m"


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the launcher dies (even by SIGKILL), so a killed
    launcher never leaves orphaned services holding their ports (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _Child:
    def __init__(self, name: str, address: str, color: str) -> None:
        self.name = name
        self.address = address
        self.color = color
        self.process: asyncio.subprocess.Process | None = None
        self.pump: asyncio.Task[None] | None = None
        self.stopping = False


class Launcher:
    def __init__(self, config: StackConfig, config_path: str, start_timeout: float = 180.0) -> None:
        self.config = config
        self.config_path = config_path
        self.start_timeout = start_timeout
        self.children: list[_Child] = []
        self.color = sys.stdout.isatty()

    def _say(self, name: str, line: str, color: str = "") -> None:
        prefix = f"{color}{name:>10} |{_RESET if color else ''}" if self.color else f"{name:>10} |"
        print(f"{prefix} {line}", flush=True)

    def plan(self) -> list[tuple[str, str]]:
        mesh = self.config.mesh
        names = ["registry", *self.config.apis_to_serve()]
        order = [(n, f"{mesh.host}:{mesh.port_of(n)}") for n in names]
        gateway_host = self.config.server.host or mesh.host
        return order + [("gateway", f"{gateway_host}:{self.config.server.port}")]

    async def _pump(self, child: _Child) -> None:
        assert child.process and child.process.stdout
        # Read chunks, not lines: a line longer than the stream's limit must not stop the pump
        # (the child would then block on a full pipe).
        pending = b""
        while chunk := await child.process.stdout.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._say(child.name, raw.decode(errors="replace").rstrip(), child.color)
        if pending:
            self._say(child.name, pending.decode(errors="replace").rstrip(), child.color)
        code = await child.process.wait()
        if not child.stopping:
            self._say("launcher", f"{child.name} exited unexpectedly with code {code}; the other services keep running")

    async def _wait_healthy(self, child: _Child) -> None:
        deadline = time.monotonic() + self.start_timeout
        async with grpc.aio.insecure_channel(child.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if child.process and child.process.returncode is not None:
                    raise RuntimeError(f"{child.name} exited with code {child.process.returncode} while starting")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{child.name} did not become healthy at {child.address} in {self.start_timeout:.0f} s")

    async def start(self) -> None:
        env = {**os.environ, "STACKMESH_CONFIG": self.config_path, "PYTHONUNBUFFERED": "1"}
        for i, (name, address) in enumerate(self.plan()):
            child = _Child(name, address, _COLORS[i % len(_COLORS)])
            self.children.append(child)
            child.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "stackmesh.cli", "serve", name, "--config", self.config_path,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
                start_new_session=True,  # Ctrl-C reaches only the launcher, which stops children in order
                preexec_fn=_die_with_parent)
            child.pump = asyncio.create_task(self._pump(child))
            await self._wait_healthy(child)
            self._say("launcher", f"{name} is healthy at {address} (pid {child.process.pid})")

    async def stop(self, grace: float = 10.0) -> None:
        for child in reversed(self.children):
            process = child.process
            child.stopping = True
            if process is None or process.returncode is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except asyncio.TimeoutError:
                self._say("launcher", f"{child.name} did not stop in {grace:.0f} s; killing it")
                process.kill()
                await process.wait()
        for child in self.children:
            if child.pump:
                await asyncio.gather(child.pump, return_exceptions=True)


async def launch(config: StackConfig, config_path: str) -> int:
    launcher = Launcher(config, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for line in config.skipped:
        launcher._say("launcher", f"disabled by config: {line}")
    for u in config.unsupported:
        launcher._say("launcher", f"not started: {u.api} provider '{u.provider_id}' ({u.provider_type}): {u.reason}")
    starting = asyncio.create_task(launcher.start())
    done, _ = await asyncio.wait([starting, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if starting in done and starting.exception() is None:
        gateway = launcher.plan()[-1][1]
        launcher._say("launcher", f"stackmesh is up. Gateway: {gateway}  (try: stackmesh models list; "
                                  f"grpcurl -plaintext {gateway} list). Ctrl-C stops everything.")
        await stop.wait()
    elif starting in done:
        launcher._say("launcher", f"start-up failed: {starting.exception()}")
        code = 1
    else:
        starting.cancel()
    launcher._say("launcher", "stopping")
    await launcher.stop()
    return code
