"""Assemble the gateway: the forwarder, a watched registry cache, health and reflection."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.forwarder import Forwarder
from gateway.routes import PUBLIC_ROUTES, public_service_names
from services.common import catalog
from services.common.config import StackConfig
from services.common.mesh import MeshClient
from services.common.registry_cache import RegistryCache
from services.common.server import ServiceHost

__all__ = ["build_gateway", "HEALTH_POLL_SECONDS"]

HEALTH_POLL_SECONDS = 2.0


async def _follow_backend_health(host: ServiceHost, mesh: MeshClient) -> None:
    """Each public service's health entry on the gateway mirrors its backend's overall health."""
    backend_of = {path.split("/")[1]: route.backend for path, route in PUBLIC_ROUTES.items()}
    while True:
        statuses: dict[str, int] = {}
        for backend in set(backend_of.values()):
            try:
                reply = await health_pb2_grpc.HealthStub(mesh.channel(backend)).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2)
                statuses[backend] = reply.status
            except grpc.aio.AioRpcError:
                statuses[backend] = health_pb2.HealthCheckResponse.NOT_SERVING
        for service, backend in backend_of.items():
            await host.health.set(service, statuses[backend])
        await asyncio.sleep(HEALTH_POLL_SECONDS)


async def build_gateway(config: StackConfig, host: ServiceHost) -> Forwarder:
    mesh = MeshClient(config.mesh)
    providers_of = {rtype: [p.provider_id for p in config.providers.get(api, [])]
                    for rtype, api in catalog.RESOURCE_API.items()}
    cache = RegistryCache(mesh, lambda rtype: providers_of.get(rtype, []))
    forwarder = Forwarder(config, mesh, cache)
    host.server.add_generic_rpc_handlers((forwarder,))
    host.extra_reflection_names.extend(public_service_names())
    host.tag_replies = False  # callers see which backend replica answered, not the gateway
    cache.start()
    follower = asyncio.create_task(_follow_backend_health(host, mesh), name="backend-health")

    async def close() -> None:
        follower.cancel()
        await cache.stop()
        await forwarder.close()
        await mesh.close()

    host.on_stop(close)
    return forwarder
