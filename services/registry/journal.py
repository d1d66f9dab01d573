"""The registry's state and how it changes: memory index, revisions, group commit, watchers.

A mutation is a function that reads the current state and returns what to put and delete (or
raises a StackmeshError). The writer task runs queued mutations in batches:

1. ``store.begin(committed)`` — SQLite: nothing; PostgreSQL: a transaction holding the registry's
   advisory lock, plus the changes other replicas committed since (applied first, so every
   mutation validates against the latest state and revisions stay gap-free across replicas);
2. each mutation runs on the event loop (no await in between: serialized without locks) and its
   changes are numbered and applied to memory;
3. ``store.commit(changes)`` — one transaction, one fsync, for the whole batch (group commit);
   PostgreSQL also NOTIFYs the other replicas;
4. only then are callers answered and watchers told: nothing acknowledged or watched can be lost.

Changes committed by other replicas arrive through ``notify_remote`` (LISTEN/NOTIFY) and are read
back from the store's change log in revision order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable

from services.common.errors import Unavailable
from services.common.resource_index import ResourceIndex
from services.registry.store import OP_PUT, Change, prepare_changes
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2

__all__ = ["Journal", "Mutation", "SNAPSHOT_BATCH"]

log = logging.getLogger("stackmesh.registry")
Resource = common_pb2.Resource
WatchEvent = registry_pb2.WatchResourcesResponse
Mutation = Callable[[], tuple[list[Resource], list[Resource], Any]]
SNAPSHOT_BATCH = 500  # resources per snapshot message


class Journal:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.index = ResourceIndex()
        self.revision = 0  # last revision applied to memory (may be staged, not yet durable)
        self.committed_revision = 0  # last revision durable and announced to watchers
        self._queued: list[tuple[Mutation, asyncio.Future[Any]]] = []
        self._remote_pending = False
        self._writer: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Queue[WatchEvent | None]] = set()

    def load(self) -> None:
        resources, self.revision = self.store.load()
        self.committed_revision = self.revision
        self.index.clear()
        for resource in resources:
            self.index.put(resource)

    # ----------------------------------------------------------------- writing
    async def mutate(self, mutation: Mutation) -> Any:
        """Run ``mutation`` in the next group commit; its result once durable."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((mutation, done))
        self._wake()
        return await done

    def notify_remote(self) -> None:
        """Another replica committed: read its changes (call on the event loop)."""
        self._remote_pending = True
        self._wake()

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run(), name="registry-writer")

    async def _run(self) -> None:
        while self._queued or self._remote_pending:
            self._remote_pending = False
            if not self._queued:
                try:
                    changes = await asyncio.to_thread(self.store.changes_since, self.committed_revision)
                    self._apply_committed(changes)
                except Exception as err:  # noqa: BLE001 - the database is unreachable: try again shortly
                    log.warning("reading other replicas' changes failed (%s); retrying", err)
                    self._remote_pending = True
                    await asyncio.sleep(1.0)
                continue
            batch, self._queued = self._queued, []
            try:
                await self._run_batch(batch)
            except Exception as err:  # noqa: BLE001 - e.g. disk full or database gone: nothing acknowledged
                log.error("registry write failed, reloading from the store: %s", err)
                failure = Unavailable(f"the registry could not persist the change ({err}); retry",
                                      reason="STORE_WRITE_FAILED")
                try:
                    self.load()  # memory ran ahead of the failed write: back to what is durable, before answering
                except Exception as reload_err:  # noqa: BLE001 - the store is gone too; callers still get an answer
                    log.error("registry reload failed too: %s", reload_err)
                for queue in self._watchers:
                    queue.put_nowait(None)  # end every watch: watchers resync from the reloaded state
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failure)

    async def _run_batch(self, batch: list[tuple[Mutation, asyncio.Future[Any]]]) -> None:
        self._apply_committed(await asyncio.to_thread(self.store.begin, self.committed_revision))
        staged: list[Change] = []
        results: list[tuple[asyncio.Future[Any], Any]] = []
        try:
            for mutation, done in batch:
                try:
                    puts, deletes, result = mutation()
                except Exception as err:  # noqa: BLE001 - only this caller's request is wrong
                    if not done.done():  # the caller may have given up (deadline, cancel)
                        done.set_exception(err)
                    continue
                staged += self._stage(puts, deletes)
                results.append((done, result))
        except BaseException:
            await asyncio.to_thread(self.store.rollback)  # never keep the write lock (PostgreSQL)
            raise
        await asyncio.to_thread(self.store.commit, staged)
        if staged:
            self.committed_revision = staged[-1].revision
            self._announce(staged)
        for done, result in results:
            if not done.done():
                done.set_result(result)

    def _stage(self, puts: list[Resource], deletes: list[Resource]) -> list[Change]:
        changes = prepare_changes(puts, deletes, self.revision)
        for change in changes:
            self._apply(change)
        return changes

    def _apply(self, change: Change) -> None:
        if change.op == OP_PUT:
            self.index.put(change.resource)
        else:
            self.index.delete(change.resource.type, change.resource.identifier)
        self.revision = max(self.revision, change.revision)

    def _apply_committed(self, changes: list[Change] | None) -> None:
        """Changes another replica made durable; None means the log no longer reaches back: reload."""
        if changes is None:
            self.load()
            for queue in self._watchers:
                queue.put_nowait(None)
            return
        fresh = [c for c in changes if c.revision > self.committed_revision]
        for change in fresh:
            self._apply(change)
        if fresh:
            self.committed_revision = fresh[-1].revision
            self._announce(fresh)

    def _announce(self, changes: list[Change]) -> None:
        events = [self.event(change) for change in changes]
        for queue in self._watchers:
            for event in events:
                queue.put_nowait(event)

    @staticmethod
    def event(change: Change) -> WatchEvent:
        kind = registry_pb2.WATCH_EVENT_TYPE_PUT if change.op == OP_PUT else registry_pb2.WATCH_EVENT_TYPE_DELETE
        return WatchEvent(event_type=kind, revision=change.revision, resource=change.resource)

    # ----------------------------------------------------------------- watching
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
                changes = await asyncio.to_thread(self.store.changes_since, since_revision)
            if changes is None:
                last = self.committed_revision
                snapshot = list(self.index.all())  # point in time; streamed in batches below
                yield WatchEvent(event_type=registry_pb2.WATCH_EVENT_TYPE_RESET, revision=last)
                for start in range(0, len(snapshot), SNAPSHOT_BATCH):
                    yield WatchEvent(event_type=registry_pb2.WATCH_EVENT_TYPE_SNAPSHOT,
                                     resources=snapshot[start:start + SNAPSHOT_BATCH])
            else:
                for change in changes:
                    if change.revision <= last:
                        yield self.event(change)
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
