"""Start real stackmesh processes on 127.0.0.1 for tests and benchmarks.

Each process is ``python -m stackmesh.cli serve <name>`` with a config written to a temp dir,
on a free port; readiness is the process's ``READY`` line followed by a SERVING health check.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["free_port", "ServiceProcess", "LocalMesh", "write_config", "DEFAULT_PROVIDERS"]

ROOT = pathlib.Path(__file__).resolve().parents[2]

DEFAULT_PROVIDERS: dict[str, list[dict[str, Any]]] = {
    "inference": [
        {"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp", "config": {}},
        {"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers", "config": {}},
    ]
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(directory: pathlib.Path, *, providers: dict[str, Any] | None = None,
                 resources: dict[str, Any] | None = None, ports: dict[str, int] | None = None,
                 refresh_interval: float = 60.0, name: str = "run.yaml", extra_mesh: dict[str, Any] | None = None,
                 registry_backend: dict[str, Any] | None = None) -> pathlib.Path:
    """A run config for tests; ``registry_backend`` (a kv_postgres entry) puts the registry on PostgreSQL."""
    ports = ports or {}
    mesh: dict[str, Any] = {"host": "127.0.0.1", "refresh_interval_seconds": refresh_interval, "services": {}}
    if registry_backend is None:
        mesh["registry_db"] = str(directory / "registry.db")
    if "registry" in ports:
        mesh["registry"] = {"target": f"127.0.0.1:{ports['registry']}"}
    for api, port in ports.items():
        if api not in ("registry", "gateway"):
            mesh["services"][api] = {"target": f"127.0.0.1:{port}"}
    mesh.update(extra_mesh or {})
    config = {
        "version": 2, "distro_name": "test",
        "providers": providers if providers is not None else DEFAULT_PROVIDERS,
        "registered_resources": resources or {},
        "server": {"port": ports.get("gateway", 0)},
        "mesh": mesh,
    }
    if registry_backend is not None:
        config["storage"] = {"backends": {"kv_default": registry_backend},
                             "stores": {"metadata": {"backend": "kv_default"}}}
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class ServiceProcess:
    """One ``stackmesh serve <name>`` child process."""

    def __init__(self, name: str, config: pathlib.Path, port: int, log_dir: pathlib.Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.config, self.port = name, config, port
        self.log_path = log_dir / f"{name}-{port}.log"
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "ServiceProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **self.env}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stackmesh.cli", "serve", self.name, "--config", str(self.config),
             "--port", str(self.port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, grace: float = 10.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class LocalMesh:
    """registry + inference (+ replicas) + the other APIs in ``providers`` + gateway, as real
    processes on free ports. ``mesh.services["vector_io"]`` etc. are the extra API processes."""

    def __init__(self, directory: pathlib.Path, *, providers: dict[str, Any] | None = None,
                 resources: dict[str, Any] | None = None, inference_replicas: int = 1,
                 refresh_interval: float = 60.0, env: dict[str, str] | None = None) -> None:
        self.directory = directory
        providers = providers if providers is not None else DEFAULT_PROVIDERS
        self.ports = {"registry": free_port(), "gateway": free_port()}
        self.inference_ports = [free_port() for _ in range(inference_replicas)]
        other_apis = [api for api in providers if api != "inference"]
        api_ports = {api: free_port() for api in other_apis}
        self.env = env or {}
        mesh_services = {"inference": {"target": ",".join(f"127.0.0.1:{p}" for p in self.inference_ports)}}
        mesh_services.update({api: {"target": f"127.0.0.1:{port}"} for api, port in api_ports.items()})
        self.config = write_config(directory, providers=providers, resources=resources, ports=self.ports,
                                   refresh_interval=refresh_interval)
        data = yaml.safe_load(self.config.read_text())
        data["mesh"]["services"] = mesh_services
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        self.registry = ServiceProcess("registry", self.config, self.ports["registry"], directory, self.env)
        self.inference = [ServiceProcess("inference", self.config, p, directory, self.env) for p in self.inference_ports]
        self.services = {api: ServiceProcess(api, self.config, port, directory, self.env)
                         for api, port in api_ports.items()}
        self.gateway = ServiceProcess("gateway", self.config, self.ports["gateway"], directory, self.env)

    @property
    def url(self) -> str:
        return self.gateway.address

    def start(self) -> "LocalMesh":
        self.registry.start()
        threads = [threading.Thread(target=p.start) for p in [*self.inference, *self.services.values()]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in [*self.inference, *self.services.values()]:
            if p.process is None or p.process.poll() is not None:
                raise RuntimeError(f"{p.name} did not start:\n{p.log_tail()}")
        self.gateway.start()
        return self

    def stop(self) -> None:
        for process in [self.gateway, *self.services.values(), *self.inference, self.registry]:
            process.stop()

    def __enter__(self) -> "LocalMesh":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
