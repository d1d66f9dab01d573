"""Shared fixtures: in-process registry/gateway servers on 127.0.0.1 with port 0."""

from __future__ import annotations

import os
import pathlib
from typing import Any, AsyncIterator

import grpc
import pytest
import pytest_asyncio

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from services.common.config import parse_config  # noqa: E402
from services.common.server import ServiceHost  # noqa: E402


def make_config(tmp_path: pathlib.Path, providers: dict[str, Any] | None = None,
                resources: dict[str, Any] | None = None, mesh: dict[str, Any] | None = None,
                backend: dict[str, Any] | None = None):
    """A parsed config; ``backend`` (a kv_postgres entry) puts the registry on PostgreSQL, else SQLite."""
    storage = None
    if backend is not None:
        storage = {"backends": {"kv_default": backend}, "stores": {"metadata": {"backend": "kv_default"}}}
    raw = {
        "version": 2,
        "distro_name": "test",
        "providers": providers if providers is not None else {
            "inference": [
                {"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp"},
                {"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"},
            ]
        },
        "registered_resources": resources or {},
        "mesh": {**({"registry_db": str(tmp_path / "registry.db")} if backend is None else {}), **(mesh or {})},
        **({"storage": storage} if storage else {}),
    }
    return parse_config(raw, "test")


class InProcess:
    """A registry (and optionally a gateway) served in the test's event loop."""

    def __init__(self) -> None:
        self.hosts: list[ServiceHost] = []
        self.channels: list[grpc.aio.Channel] = []

    async def registry(self, config) -> tuple[ServiceHost, Any]:
        from services.registry.app import build_registry

        host = ServiceHost("registry", "127.0.0.1", 0, grace_seconds=0.5)
        core = await build_registry(config, host)
        await host.start(install_signal_handlers=False)
        await host.set_serving(True)
        self.hosts.append(host)
        return host, core

    async def gateway(self, config) -> tuple[ServiceHost, Any]:
        from gateway.app import build_gateway

        host = ServiceHost("gateway", "127.0.0.1", 0, grace_seconds=0.5)
        forwarder = await build_gateway(config, host)
        await host.start(install_signal_handlers=False)
        await host.set_serving(True)
        self.hosts.append(host)
        return host, forwarder

    def channel(self, port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for host in reversed(self.hosts):
            await host.stop()


@pytest_asyncio.fixture
async def inproc() -> AsyncIterator[InProcess]:
    servers = InProcess()
    yield servers
    await servers.close()


@pytest.fixture(scope="session")
def postgres():
    from tests.support.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> dict[str, Any] | None:
    """Run a registry test on both stores: None (SQLite file) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    server = request.getfixturevalue("postgres")
    return server.backend(server.new_database())
