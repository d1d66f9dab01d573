"""The registry's rules (DESIGN §2), independent of gRPC.

State lives in a ``ResourceIndex`` (memory) mirrored by a store (disk). Mutations are validated
and applied to memory on the event loop without awaiting in between (so they are serialized
without locks and each sees every earlier one), then written by a background writer that groups
everything queued meanwhile into one transaction (group commit: one fsync for many
registrations, and the loop never blocks on the disk). A caller is answered, and watchers are told,
only once its change is durable: nothing acknowledged or watched can be lost by a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Iterable

from services.common import catalog
from services.common.config import StackConfig
from services.common.errors import (AlreadyExists, ConfigError, FailedPrecondition, InvalidArgument, NotFound,
                                     Unavailable)
from services.common.resource_index import ResourceIndex, list_hint
from services.registry.config_resources import config_resources
from services.registry.specs import spec_diff
from services.registry.store import OP_DELETE, OP_PUT, Change
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2

__all__ = ["RegistryCore"]

log = logging.getLogger("stackmesh.registry")
T = common_pb2
Resource = common_pb2.Resource
WatchEvent = registry_pb2.WatchResourcesResponse
HEALTH_STALE_SECONDS = 30.0
SNAPSHOT_BATCH = 500  # resources per snapshot message


class RegistryCore:
    def __init__(self, config: StackConfig, store) -> None:
        self.config = config
        self.store = store
        self.index = ResourceIndex()
        self.revision = 0  # last revision handed out (memory)
        self.committed_revision = 0  # last revision durable on disk and announced to watchers
        self._queued: list[Change] = []
        self._queued_waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Queue[WatchEvent]] = set()
        self._health: dict[tuple[str, str], tuple[int, str, float]] = {}

    # ----------------------------------------------------------------- start-up
    def start(self) -> list[str]:
        """Load the store and reconcile CONFIG resources with the file; returns skipped entries."""
        resources, self.revision = self.store.load()
        self.committed_revision = self.revision
        for resource in resources:
            self.index.put(resource)
        return self.reconcile_config()

    def reconcile_config(self) -> list[str]:
        entries, skipped = config_resources(self.config)
        wanted: dict[tuple[int, str], Resource] = {}
        for path, resource in entries:
            try:
                self._complete(resource)
            except (InvalidArgument, NotFound, FailedPrecondition) as err:
                raise ConfigError(path, err.message) from None
            wanted[(resource.type, resource.identifier)] = resource
        puts, deletes = [], []
        for key, resource in wanted.items():
            current = self.index.get(*key)
            if current is None:
                puts.append(resource)
            elif current.source != T.RESOURCE_SOURCE_CONFIG:
                skipped.append(f"{catalog.RESOURCE_NAMES[key[0]]} '{key[1]}' from the config is already "
                               f"{T.ResourceSource.Name(current.source)}; the existing entry is kept")
            elif spec_diff(current, resource):
                resource.create_time.CopyFrom(current.create_time)
                puts.append(resource)
        for resource in self.index.all():
            if resource.source == T.RESOURCE_SOURCE_CONFIG and (resource.type, resource.identifier) not in wanted:
                deletes.append(resource)
        changes = self._stage(puts, deletes)
        self.store.write(changes)  # start-up: written before the server takes any call
        self.committed_revision = self.revision
        return skipped

    # ----------------------------------------------------------------- providers
    def provider_ids(self, resource_type: int) -> list[str]:
        api = catalog.RESOURCE_API[resource_type]
        return [p.provider_id for p in self.config.providers.get(api, [])]

    def _complete(self, resource: Resource) -> None:
        """Fill defaults and check the rules every new resource must satisfy."""
        name = catalog.RESOURCE_NAMES[resource.type]
        if not resource.identifier:
            raise InvalidArgument(f"a {name} needs an id", reason="RESOURCE_ID_MISSING")
        api = catalog.RESOURCE_API[resource.type]
        candidates = self.provider_ids(resource.type)
        if not resource.provider_id:
            if len(candidates) == 1:
                resource.provider_id = candidates[0]
            elif not candidates:
                raise FailedPrecondition(f"no {api} provider is configured to serve {name} '{resource.identifier}'; "
                                         f"add one under providers.{api} in the config", reason="NO_PROVIDER")
            else:
                raise FailedPrecondition(
                    f"{name} '{resource.identifier}' could be served by several {api} providers "
                    f"({', '.join(candidates)}); pass provider_id to choose one", reason="AMBIGUOUS_PROVIDER",
                    metadata={"candidates": ",".join(candidates)})
        elif resource.provider_id not in candidates:
            raise NotFound(f"{api} provider '{resource.provider_id}' is not configured; configured {api} providers: "
                           f"{', '.join(candidates) or 'none'} (list them with `stackmesh providers list`)",
                           reason="PROVIDER_NOT_FOUND", metadata={"provider_id": resource.provider_id})
        if not resource.provider_resource_id:
            resource.provider_resource_id = resource.identifier
        if resource.type == T.RESOURCE_TYPE_MODEL:
            self._check_model(resource)
        elif resource.type == T.RESOURCE_TYPE_VECTOR_DB:
            self._check_vector_db(resource)

    def _check_model(self, resource: Resource) -> None:
        if resource.model.model_type == T.MODEL_TYPE_UNSPECIFIED:
            resource.model.model_type = T.MODEL_TYPE_LLM
        if resource.model.model_type == T.MODEL_TYPE_EMBEDDING:
            dim = resource.metadata.fields.get("embedding_dimension")
            value = dim.number_value if dim is not None and dim.WhichOneof("kind") == "number_value" else None
            if value is None or value <= 0 or value != int(value):
                raise InvalidArgument(
                    f"embedding model '{resource.identifier}' needs metadata.embedding_dimension, a positive integer "
                    f"(e.g. --metadata '{{\"embedding_dimension\": 384}}')", reason="EMBEDDING_DIMENSION_MISSING")

    def _check_vector_db(self, resource: Resource) -> None:
        spec = resource.vector_db
        if not spec.embedding_model:
            raise InvalidArgument(f"vector DB '{resource.identifier}' needs an embedding_model",
                                  reason="EMBEDDING_MODEL_MISSING")
        model = self.index.resolve(T.RESOURCE_TYPE_MODEL, spec.embedding_model, self.provider_ids(T.RESOURCE_TYPE_MODEL))
        if model.model.model_type != T.MODEL_TYPE_EMBEDDING:
            raise InvalidArgument(f"model '{spec.embedding_model}' is not an embedding model; "
                                  f"choose one whose type is embedding ({list_hint(T.RESOURCE_TYPE_MODEL)})",
                                  reason="NOT_AN_EMBEDDING_MODEL")
        dim = int(model.metadata.fields["embedding_dimension"].number_value) if "embedding_dimension" in model.metadata.fields else 0
        if spec.embedding_dimension and dim and spec.embedding_dimension != dim:
            raise InvalidArgument(f"vector DB '{resource.identifier}' asks for dimension {spec.embedding_dimension} "
                                  f"but model '{model.identifier}' produces {dim}; omit the dimension",
                                  reason="DIMENSION_MISMATCH")
        spec.embedding_model = model.identifier
        spec.embedding_dimension = spec.embedding_dimension or dim

    # ----------------------------------------------------------------- public operations
    async def register(self, resource: Resource) -> Resource:
        resource.source = resource.source or T.RESOURCE_SOURCE_REGISTERED
        self._complete(resource)
        current = self.index.get(resource.type, resource.identifier)
        if current is not None:
            diff = spec_diff(current, resource)
            if not diff:
                return current
            name = catalog.RESOURCE_NAMES[resource.type]
            raise AlreadyExists(f"{name} '{resource.identifier}' already exists with a different "
                                f"{', '.join(diff)}; unregister it first or use another id",
                                reason="RESOURCE_EXISTS", metadata={"differing_fields": ",".join(diff)})
        await self._commit([resource], [])
        return resource

    async def unregister(self, resource_type: int, identifier: str) -> Resource:
        current = self.get(resource_type, identifier)
        await self._commit([], [current])
        return current

    def get(self, resource_type: int, identifier: str) -> Resource:
        current = self.index.get(resource_type, identifier)
        if current is None:
            name = catalog.RESOURCE_NAMES[resource_type]
            raise NotFound(f"{name} '{identifier}' not found; {list_hint(resource_type)}",
                           reason="RESOURCE_NOT_FOUND", metadata={"identifier": identifier})
        return current

    def resolve(self, resource_type: int, identifier: str) -> Resource:
        return self.index.resolve(resource_type, identifier, self.provider_ids(resource_type))

    async def sync_discovered(self, provider_id: str, resource_type: int, listed: Iterable[Resource]) -> tuple[int, int, int]:
        """Make the DISCOVERED entries of ``provider_id`` equal ``listed``, in one transaction."""
        if provider_id not in self.provider_ids(resource_type):
            raise NotFound(f"provider '{provider_id}' is not configured for {catalog.RESOURCE_API[resource_type]}",
                           reason="PROVIDER_NOT_FOUND")
        wanted: dict[str, Resource] = {}
        for item in listed:
            resource = Resource()
            resource.CopyFrom(item)
            resource.type, resource.provider_id, resource.source = resource_type, provider_id, T.RESOURCE_SOURCE_DISCOVERED
            resource.identifier = f"{provider_id}/{resource.provider_resource_id}"
            wanted[resource.identifier] = resource
        puts, deletes, updated = [], [], 0
        for identifier, resource in wanted.items():
            current = self.index.get(resource_type, identifier)
            if current is None:
                puts.append(resource)
            elif current.source != T.RESOURCE_SOURCE_DISCOVERED:
                continue  # a user or the config owns this id: discovery never touches it
            elif spec_diff(current, resource):
                resource.create_time.CopyFrom(current.create_time)
                puts.append(resource)
                updated += 1
        for current in self.index.all(resource_type):
            if (current.source == T.RESOURCE_SOURCE_DISCOVERED and current.provider_id == provider_id
                    and current.identifier not in wanted):
                deletes.append(current)
        await self._commit(puts, deletes)
        return len(puts) - updated, updated, len(deletes)

    # ----------------------------------------------------------------- health
    def report_health(self, api: str, provider_id: str, health: int, message: str) -> None:
        self._health[(api, provider_id)] = (health, message, time.time())

    def providers(self) -> list[T.Provider]:
        unsupported = {(u.api, u.provider_id): u.reason for u in self.config.unsupported}
        out = []
        for api, entry in self.config.all_providers():
            provider = T.Provider(provider_id=entry.provider_id, provider_type=entry.provider_type, api=api)
            key = (api, entry.provider_id)
            if key in unsupported:
                provider.health, provider.health_message = T.PROVIDER_HEALTH_UNSUPPORTED, unsupported[key]
            elif key in self._health:
                health, message, at = self._health[key]
                provider.health_time.FromNanoseconds(int(at * 1e9))
                age = time.time() - at
                if age > HEALTH_STALE_SECONDS:
                    health, message = T.PROVIDER_HEALTH_UNHEALTHY, f"no report from the {api} service for {age:.0f} s"
                provider.health, provider.health_message = health, message
            else:
                provider.health, provider.health_message = T.PROVIDER_HEALTH_UNKNOWN, f"the {api} service has not reported yet"
            out.append(provider)
        return out

    # ----------------------------------------------------------------- commit and watch
    def _stage(self, puts: list[Resource], deletes: list[Resource]) -> list[Change]:
        """Number the changes and apply them to memory (synchronously: no other mutation interleaves)."""
        changes = self.store.prepare(puts, deletes, self.revision)
        for change in changes:
            if change.op == OP_PUT:
                self.index.put(change.resource)
            else:
                self.index.delete(change.resource.type, change.resource.identifier)
        if changes:
            self.revision = changes[-1].revision
        return changes

    async def _commit(self, puts: list[Resource], deletes: list[Resource]) -> None:
        """Stage now; return once the group commit holding these changes is durable."""
        changes = self._stage(puts, deletes)
        if not changes:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.extend(changes)
        self._queued_waiters.append(done)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="registry-writer")
        await done

    async def _write_queued(self) -> None:
        while self._queued:
            changes, waiters = self._queued, self._queued_waiters
            self._queued, self._queued_waiters = [], []
            try:
                await asyncio.to_thread(self.store.write, changes)
            except Exception as err:  # noqa: BLE001 - e.g. disk full: nothing of it was acknowledged
                log.error("registry write failed, reloading from the store: %s", err)
                self._reload_after_failed_write()
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(Unavailable(f"the registry could not persist the change: {err}",
                                                         reason="STORE_WRITE_FAILED"))
                continue
            self.committed_revision = changes[-1].revision
            events = [self._event(change) for change in changes]
            for queue in self._watchers:
                for event in events:
                    queue.put_nowait(event)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _reload_after_failed_write(self) -> None:
        """Memory ran ahead of a write that failed: rebuild it from disk. Changes staged after the
        failed ones built on them, so they fail too; every watcher (which may have seen the lost
        state in a snapshot) is ended so that it reconnects and resyncs."""
        self.index.clear()
        resources, self.revision = self.store.load()
        for resource in resources:
            self.index.put(resource)
        self.committed_revision = self.revision
        for waiter in self._queued_waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable("the registry could not persist the change; retry",
                                                 reason="STORE_WRITE_FAILED"))
        self._queued, self._queued_waiters = [], []
        for queue in self._watchers:
            queue.put_nowait(None)

    @staticmethod
    def _event(change: Change) -> WatchEvent:
        kind = registry_pb2.WATCH_EVENT_TYPE_PUT if change.op == OP_PUT else registry_pb2.WATCH_EVENT_TYPE_DELETE
        return WatchEvent(event_type=kind, revision=change.revision, resource=change.resource)

    async def watch(self, since_revision: int) -> AsyncIterator[WatchEvent]:
        """Catch-up (a snapshot when needed), a SYNCED marker, then live changes, in revision order.

        Only committed changes are announced. A snapshot may already hold a staged change whose
        commit is in flight; its event follows later and re-applying it is harmless."""
        queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._watchers.add(queue)  # before reading the backlog: nothing can fall in between
        try:
            last = self.committed_revision
            changes = None
            if 0 < since_revision <= last:
                changes = self.store.changes_since(since_revision)
            if changes is None:
                snapshot = list(self.index.all())  # point in time; streamed in batches below
                yield WatchEvent(event_type=registry_pb2.WATCH_EVENT_TYPE_RESET, revision=last)
                for start in range(0, len(snapshot), SNAPSHOT_BATCH):
                    yield WatchEvent(event_type=registry_pb2.WATCH_EVENT_TYPE_SNAPSHOT,
                                     resources=snapshot[start:start + SNAPSHOT_BATCH])
            else:
                for change in changes:
                    if change.revision <= last:
                        yield self._event(change)
            yield WatchEvent(event_type=registry_pb2.WATCH_EVENT_TYPE_SYNCED, revision=last)
            while True:
                event = await queue.get()
                if event is None:
                    return
                if event.revision > last:
                    last = event.revision
                    yield event
        finally:
            self._watchers.discard(queue)
