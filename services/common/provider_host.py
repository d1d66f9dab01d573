"""What every API service does with its providers: build them from config, keep the registry
informed of what they discover and how healthy they are.

Discovery never blocks start-up: each provider lists in its own task, retried with backoff while
unreachable (reported unhealthy meanwhile). ``refresh_models: true`` keeps re-listing on the
provider's interval. A provider that returns None (cannot list) keeps its registry entries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2

from services.common import catalog
from services.common.config import StackConfig
from services.common.errors import StackmeshError
from services.common.mesh import MeshClient
from services.common.registry_cache import RegistryCache
from services.common.protoutil import MODEL_TYPES, struct
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["build_providers", "ProviderSupervisor", "ApiRuntime"]

log = logging.getLogger("stackmesh.providers")
T = common_pb2
HEALTH_REPORT_SECONDS = 5.0


def build_providers(api: str, config: StackConfig) -> dict[str, Any]:
    """Instantiate every supported provider of ``api`` (configs were validated at load)."""
    providers = {}
    for entry in config.supported_providers(api):
        spec = catalog.find_provider_spec(api, entry.provider_type)
        provider_config = catalog.import_object(spec.config_class).model_validate(entry.config)
        providers[entry.provider_id] = catalog.import_object(spec.impl)(entry.provider_id, provider_config,
                                                                         dict(spec.defaults))
    return providers


async def _list_resources(provider: Any) -> tuple[int, list[Any]] | None:
    """(resource type, resources) a provider brings by itself, or None when it cannot list.

    Providers of models implement ``list_models`` (DiscoveredModel items); providers of other
    resource types (scoring functions) implement ``list_resources`` returning ready Resources of
    their ``discovered_type``, each with the identifier users know it by (``basic::equality``)."""
    if hasattr(provider, "list_resources"):
        resources = await provider.list_resources()
        return None if resources is None else (provider.discovered_type, list(resources))
    models = await provider.list_models()
    if models is None:
        return None
    return T.RESOURCE_TYPE_MODEL, [
        T.Resource(provider_resource_id=m.provider_model_id, metadata=struct(m.metadata),
                   model=T.ModelSpec(model_type=MODEL_TYPES.get(m.model_type, T.MODEL_TYPE_LLM)))
        for m in models]


class ProviderSupervisor:
    def __init__(self, api: str, providers: dict[str, Any], mesh: MeshClient, default_interval: float,
                 health: Any = None) -> None:
        """``health``: the process's grpc health servicer; each provider gets an entry
        ``provider/<provider_id>`` there. The service's overall entry stays SERVING while one
        provider is down: the others still serve, and a balancer must not eject the replica."""
        self.api = api
        self.health = health
        self.providers = providers
        self.stub = registry_pb2_grpc.RegistryServiceStub(mesh.channel("registry"))
        self.default_interval = default_interval
        self._failures: dict[str, str] = {}
        self.holder = f"{socket.gethostname()}:{os.getpid()}"  # this replica, for leases
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.initialize()
            self._tasks.append(asyncio.create_task(self._discover(provider), name=f"discover-{provider.provider_id}"))
        self._tasks.append(asyncio.create_task(self._report_health(), name="report-health"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for provider in self.providers.values():
            await provider.shutdown()

    async def _discover(self, provider: Any) -> None:
        backoff = 1.0
        while True:
            interval = provider.refresh_interval_seconds or self.default_interval
            try:
                # Every replica lists (that is also its health probe of the provider), but with
                # refresh_models only the holder of the provider's lease writes the result to the
                # registry: N replicas do not race N identical syncs each interval.
                listed = await _list_resources(provider)
                if listed is not None and (not provider.refresh_models
                                           or await self._hold_lease(provider.provider_id, interval)):
                    await self._sync(provider.provider_id, *listed)
                self._failures.pop(provider.provider_id, None)
                backoff = 1.0
                if not provider.refresh_models:
                    return
                await asyncio.sleep(interval)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - discovery must go on whatever one listing did
                reason = err.message if isinstance(err, StackmeshError) else f"{type(err).__name__}: {err}"
                if self._failures.get(provider.provider_id) != reason:
                    log.warning("discovery failed provider=%s retry_in=%.0fs reason=%s", provider.provider_id, backoff, reason)
                self._failures[provider.provider_id] = reason
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max(60.0, provider.refresh_interval_seconds or 0))

    async def _hold_lease(self, provider_id: str, interval: float) -> bool:
        reply = await self.stub.AcquireLease(registry_pb2.AcquireLeaseRequest(
            name=f"discovery/{self.api}/{provider_id}", holder=self.holder, ttl_seconds=interval * 2.5), timeout=5)
        return reply.granted

    async def _sync(self, provider_id: str, resource_type: int, resources: list[Any]) -> None:
        reply = await self.stub.SyncDiscoveredResources(registry_pb2.SyncDiscoveredResourcesRequest(
            provider_id=provider_id, type=resource_type, resources=resources), timeout=10, wait_for_ready=True)
        if reply.added or reply.updated or reply.removed:
            log.info("discovered provider=%s added=%d updated=%d removed=%d revision=%d",
                     provider_id, reply.added, reply.updated, reply.removed, reply.revision)

    async def _report_health(self) -> None:
        while True:
            reports = []
            for provider_id, provider in self.providers.items():
                try:
                    healthy, message = await provider.health()
                except Exception as err:  # noqa: BLE001 - a failing health check is a health answer
                    healthy, message = False, f"health check failed: {type(err).__name__}: {err}"
                if provider_id in self._failures:
                    healthy, message = False, self._failures[provider_id]
                if self.health is not None:
                    await self.health.set(f"provider/{provider_id}", health_pb2.HealthCheckResponse.SERVING
                                          if healthy else health_pb2.HealthCheckResponse.NOT_SERVING)
                reports.append(registry_pb2.ProviderHealthReport(
                    api=self.api, provider_id=provider_id, message=message,
                    health=T.PROVIDER_HEALTH_HEALTHY if healthy else T.PROVIDER_HEALTH_UNHEALTHY))
            try:
                await self.stub.ReportProviderHealth(registry_pb2.ReportProviderHealthRequest(reports=reports), timeout=5)
            except grpc.aio.AioRpcError:
                pass  # the registry is down; the next round reports again
            await asyncio.sleep(HEALTH_REPORT_SECONDS)


class ApiRuntime:
    """What every API service process is made of, assembled once: the mesh client, its providers
    (built from config), a watched registry cache, and the supervisor reporting their health.

    ``start`` opens the providers before the cache applies its first registry event; ``stop``
    stops following the registry, runs the service's own hooks, then shuts the providers and the mesh.
    """

    def __init__(self, api: str, config: StackConfig, health: Any) -> None:
        self.mesh = MeshClient(config.mesh)
        self.providers = build_providers(api, config)
        # "provider_id/x" names resolve against the providers of the API serving that resource type
        # (eval looks up models, scoring functions and datasets, not only its own benchmarks).
        self.cache = RegistryCache(self.mesh, lambda rtype: [
            entry.provider_id for entry in config.supported_providers(catalog.RESOURCE_API.get(rtype, ""))])
        self.supervisor = ProviderSupervisor(api, self.providers, self.mesh, config.mesh.refresh_interval_seconds,
                                             health)
        self._stop_hooks: list[Callable[[], Awaitable[None]]] = []

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after the cache stops and before the providers shut down."""
        self._stop_hooks.append(hook)

    async def start(self) -> None:
        await self.supervisor.start()
        self.cache.start()

    async def stop(self) -> None:
        await self.cache.stop()
        for hook in self._stop_hooks:
            await hook()
        await self.supervisor.stop()
        await self.mesh.close()
