"""A process-local copy of the registry that follows ``WatchResources``.

The hot path of a data request resolves its resource here, never with a call to the registry.
The watch resumes from the last revision seen after any disconnect (the registry sends a fresh
snapshot when it cannot replay), so a restarted registry or a reconnecting replica resyncs.
While the registry is unreachable the last known state keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

import grpc

from services.common.errors import NotFound, Unavailable
from services.common.mesh import MeshClient
from services.common.resource_index import ResourceIndex, list_hint
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["RegistryCache", "resolve_named"]

log = logging.getLogger("stackmesh.cache")
R = registry_pb2
Listener = Callable[[R.WatchResourcesResponse], None]


class RegistryCache:
    def __init__(self, mesh: MeshClient, provider_ids: Callable[[int], Iterable[str]]) -> None:
        self.mesh = mesh
        self.provider_ids = provider_ids
        self.index = ResourceIndex()
        self.revision = 0
        self.connected = False
        self._synced = asyncio.Event()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._revision_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._incoming: ResourceIndex | None = None  # a snapshot being received

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="registry-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def wait_revision(self, revision: int, timeout: float = 5.0) -> None:
        """Until this cache has applied ``revision`` (read-your-writes for callers that know it)."""
        if self.revision >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._revision_waiters.append((revision, future))
        await asyncio.wait_for(future, timeout)

    def resolve(self, resource_type: int, identifier: str) -> common_pb2.Resource:
        if not self._synced.is_set():
            raise Unavailable("this service has not reached the registry yet; retry in a moment",
                              reason="REGISTRY_NOT_SYNCED")
        return self.index.resolve(resource_type, identifier, self.provider_ids(resource_type))

    async def resolve_fresh(self, resource_type: int, identifier: str) -> common_pb2.Resource:
        """``resolve``, but a local miss asks the registry once before saying NOT_FOUND.

        Only the miss path pays a registry call: it gives read-your-writes to a client that
        registers and uses a resource at once, before the watch event has arrived."""
        try:
            return self.resolve(resource_type, identifier)
        except NotFound:
            stub = registry_pb2_grpc.RegistryServiceStub(self.mesh.channel("registry"))
            try:
                reply = await stub.ResolveResource(
                    R.ResolveResourceRequest(type=resource_type, identifier=identifier), timeout=2)
            except grpc.aio.AioRpcError:
                raise  # NOT_FOUND from the registry, or the registry is down: the caller sees it
            return reply.resource

    async def _follow(self) -> None:
        stub = registry_pb2_grpc.RegistryServiceStub(self.mesh.channel("registry"))
        backoff = 0.05
        while True:
            try:
                call = stub.WatchResources(R.WatchResourcesRequest(since_revision=self.revision),
                                           wait_for_ready=True)
                async for event in call:
                    self._apply(event)
                    backoff = 0.05
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as err:
                if self.connected:
                    log.warning("registry watch lost code=%s revision=%d; serving from cache",
                                err.code().name, self.revision)
                self.connected = False
            except Exception:  # noqa: BLE001 - keep following whatever happened
                log.exception("registry watch failed; reconnecting")
                self.connected = False
            self._incoming = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _apply(self, event: R.WatchResourcesResponse) -> None:
        kind = event.event_type
        if kind == R.WATCH_EVENT_TYPE_RESET:
            # A snapshot is built aside and swapped in at SYNCED: requests keep resolving against the
            # last known state meanwhile (no window where a model 404s), and a watch cut mid-snapshot
            # leaves that state in place; the revision moves only at SYNCED.
            self._incoming = ResourceIndex()
        elif kind == R.WATCH_EVENT_TYPE_SNAPSHOT and self._incoming is not None:
            for resource in event.resources:
                self._incoming.put(resource)
        elif kind == R.WATCH_EVENT_TYPE_PUT:
            self.index.put(event.resource)
            self.revision = event.revision
        elif kind == R.WATCH_EVENT_TYPE_DELETE:
            self.index.delete(event.resource.type, event.resource.identifier)
            self.revision = event.revision
        elif kind == R.WATCH_EVENT_TYPE_SYNCED:
            if self._incoming is not None:
                self.index, self._incoming = self._incoming, None
            self.revision = event.revision
            if not self.connected:
                log.info("registry watch synced revision=%d resources=%d", event.revision, len(self.index))
            self.connected = True
            self._synced.set()
        self._wake_waiters()
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one listener's bug must not stop the cache following
                log.exception("registry watch listener failed on %s", R.WatchEventType.Name(kind))

    def _wake_waiters(self) -> None:
        still = []
        for revision, future in self._revision_waiters:
            if self.revision >= revision and not future.done():
                future.set_result(None)
            elif not future.done():
                still.append((revision, future))
        self._revision_waiters = still


async def resolve_named(cache: RegistryCache, resource_type: int, identifier: str, what: str) -> common_pb2.Resource:
    """``cache.resolve_fresh`` with the registry's answer to a miss turned into this service's errors:
    NOT_FOUND naming ``what`` and how to list them, or UNAVAILABLE when the registry is down."""
    try:
        return await cache.resolve_fresh(resource_type, identifier)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(f"{what} '{identifier}' not found; {list_hint(resource_type)}, or register it",
                           reason="RESOURCE_NOT_FOUND", metadata={"identifier": identifier}) from None
        raise Unavailable(f"registry unavailable while resolving {what} '{identifier}': {err.details()}",
                          reason="REGISTRY_UNAVAILABLE") from None
