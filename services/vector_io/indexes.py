"""Index life cycle: the providers' indexes follow the registry's vector DBs, not this process's memory.

A ``RegistryCache`` listener queues every change to a vector DB served by one of this service's
providers; one worker applies them in order:

- PUT (registered, or changed in the config file): create the index (idempotent);
- DELETE (unregistered): drop it, unless another registered vector DB still names the same index;
- SYNCED (after every (re)connection to the registry, snapshot or replay): reconcile each provider
  with the registry: create what is missing, drop what the provider holds and the registry no
  longer lists (unregistered while this service was down).
A step that fails (a remote store down) is logged and the whole reconcile retried with backoff.
The data path calls ``ensure`` too, so a vector DB used before its PUT arrived (read-your-writes
through ``resolve_fresh``) gets its index at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import grpc

from services.common.errors import FailedPrecondition, NotFound, StackmeshError
from services.common.registry_cache import RegistryCache
from services.common.resource_index import list_hint
from services.vector_io.providers.base import VectorDBTarget, VectorIOProvider
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2

__all__ = ["IndexLifecycle", "target_of"]

log = logging.getLogger("stackmesh.vector_io.indexes")
R = registry_pb2
VECTOR_DB = common_pb2.RESOURCE_TYPE_VECTOR_DB
RETRY_SECONDS = (1.0, 60.0)  # first and longest wait before retrying a failed reconcile


def target_of(resource: common_pb2.Resource) -> VectorDBTarget:
    """The domain view of a vector DB resource."""
    created = resource.create_time
    token = f"{created.seconds}.{created.nanos:09d}" if resource.HasField("create_time") else ""
    return VectorDBTarget(identifier=resource.identifier, name=resource.provider_resource_id or resource.identifier,
                          embedding_model=resource.vector_db.embedding_model,
                          dimension=resource.vector_db.embedding_dimension, token=token)


class IndexLifecycle:
    def __init__(self, providers: dict[str, VectorIOProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache
        # (provider_id, index name) -> (token, dimension) it was built for; a config change of the
        # dimension keeps the token (same create_time) and must rebuild the index.
        self._ready: dict[tuple[str, str], tuple[str, int]] = {}
        # Registrations seen unregistered: (provider_id, name, token). A request that resolved the vector DB
        # just before its DELETE must not re-create the index after the drop (tokens never come back).
        self._deleted: set[tuple[str, str, str]] = set()
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._queue: asyncio.Queue[tuple[int, common_pb2.Resource | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.Task[None] | None = None
        self._retry_wait = RETRY_SECONDS[0]

    # ----------------------------------------------------------------- registry events
    def on_event(self, event: R.WatchResourcesResponse) -> None:
        """RegistryCache listener (synchronous: only queues)."""
        kind = event.event_type
        if kind in (R.WATCH_EVENT_TYPE_PUT, R.WATCH_EVENT_TYPE_DELETE):
            resource = event.resource
            if resource.type == VECTOR_DB and resource.provider_id in self.providers:
                self._queue.put_nowait((kind, resource))
        elif kind == R.WATCH_EVENT_TYPE_SYNCED:
            self._queue.put_nowait((kind, None))

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="vector-db-indexes")

    async def stop(self) -> None:
        for task in (self._task, self._retry):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._task, self._retry) if t is not None), return_exceptions=True)

    async def _work(self) -> None:
        while True:
            kind, resource = await self._queue.get()
            try:
                if kind == R.WATCH_EVENT_TYPE_PUT:
                    await self.ensure(self.providers[resource.provider_id], target_of(resource))
                elif kind == R.WATCH_EVENT_TYPE_DELETE:
                    target = target_of(resource)
                    name = target.name
                    self._deleted.add((resource.provider_id, name, target.token))
                    if not self._registered_names(resource.provider_id).get(name):
                        await self.drop(self.providers[resource.provider_id], name)
                        log.info("index deleted vector_db=%s provider=%s", resource.identifier, resource.provider_id)
                else:
                    await self.reconcile()
            except asyncio.CancelledError:
                raise
            except (StackmeshError, grpc.aio.AioRpcError, OSError) as err:
                message = err.message if isinstance(err, StackmeshError) else str(err)
                log.warning("index change failed (retrying) event=%s vector_db=%s reason=%s",
                            R.WatchEventType.Name(kind), resource.identifier if resource else "-", message)
                self._schedule_retry()
            except Exception:  # noqa: BLE001 - a provider bug must not end the worker
                log.exception("index change failed event=%s", R.WatchEventType.Name(kind))
                self._schedule_retry()

    def _registered_names(self, provider_id: str) -> dict[str, VectorDBTarget]:
        """Index name -> vector DB, for the vector DBs of ``provider_id`` the registry lists now."""
        out = {}
        for resource in self.cache.index.all(VECTOR_DB):
            if resource.provider_id == provider_id and resource.WhichOneof("spec") == "vector_db":
                target = target_of(resource)
                out[target.name] = target
        return out

    async def reconcile(self) -> None:
        failed = []
        for provider_id, provider in self.providers.items():
            wanted = self._registered_names(provider_id)
            try:
                existing = await provider.list_indexes()
                for target in wanted.values():
                    await self.ensure(provider, target)
                for name in existing.keys() - wanted.keys():
                    await self.drop(provider, name)
                    log.info("index of an unregistered vector DB deleted name=%s provider=%s", name, provider_id)
            except (StackmeshError, grpc.aio.AioRpcError, OSError) as err:
                failed.append(f"{provider_id}: {err.message if isinstance(err, StackmeshError) else err}")
        if failed:
            log.warning("reconcile with the registry incomplete (retrying) %s", "; ".join(failed))
            self._schedule_retry()
        else:
            self._retry_wait = RETRY_SECONDS[0]

    def _schedule_retry(self) -> None:
        if self._retry is not None and not self._retry.done():
            return

        async def later(wait: float) -> None:
            await asyncio.sleep(wait)
            self._queue.put_nowait((R.WATCH_EVENT_TYPE_SYNCED, None))

        self._retry = asyncio.create_task(later(self._retry_wait), name="vector-db-indexes-retry")
        self._retry_wait = min(self._retry_wait * 2, RETRY_SECONDS[1])

    # ----------------------------------------------------------------- operations
    async def ensure(self, provider: VectorIOProvider, db: VectorDBTarget) -> None:
        """The index of ``db`` exists in ``provider`` (cheap when it is known to)."""
        key = (provider.provider_id, db.name)
        if self._ready.get(key) == (db.token, db.dimension):
            return
        self._check_not_deleted(provider, db)
        if db.dimension <= 0:
            raise FailedPrecondition(f"vector DB '{db.identifier}' has no embedding dimension (its model "
                                     f"'{db.embedding_model}' declares none); re-register it with embedding_dimension",
                                     reason="EMBEDDING_DIMENSION_MISSING")
        async with self._locks[key]:
            if self._ready.get(key) != (db.token, db.dimension):
                self._check_not_deleted(provider, db)
                await provider.create_index(db)
                self._ready[key] = (db.token, db.dimension)
                log.info("index ready vector_db=%s provider=%s dimension=%d", db.identifier, provider.provider_id,
                         db.dimension)

    def _check_not_deleted(self, provider: VectorIOProvider, db: VectorDBTarget) -> None:
        if db.token and (provider.provider_id, db.name, db.token) in self._deleted:
            raise NotFound(f"vector DB '{db.identifier}' was unregistered; {list_hint(VECTOR_DB)}",
                           reason="RESOURCE_NOT_FOUND", metadata={"identifier": db.identifier})

    async def drop(self, provider: VectorIOProvider, name: str) -> None:
        key = (provider.provider_id, name)
        async with self._locks[key]:
            self._ready.pop(key, None)
            await provider.delete_index(name)
