"""Appended rows follow the registry: a dataset that is unregistered loses its appended rows.

Correctness never depends on this module: appended rows are stored per registration (dataset id +
create_time), so a dataset registered again under the same id never sees the old ones. This is
garbage collection, driven by the registry watch like ``services/vector_io/indexes.py``:

- DELETE of a dataset served here: drop that registration's appended rows;
- SYNCED (after every (re)connection to the registry): drop the rows of registrations the registry
  no longer lists (unregistered while this service was down), judged against the registry state
  of that event, so rows appended (by another replica) to a newer registration are kept.
A failure is logged; the next SYNCED (reconnect, restart) tries again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Mapping

from services.common.registry_cache import RegistryCache
from services.datasetio.providers.base import DatasetIOProvider
from services.datasetio.router import token_of
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2

__all__ = ["AppendedRowsLifecycle"]

log = logging.getLogger("stackmesh.datasetio.lifecycle")
R = registry_pb2
DATASET = common_pb2.RESOURCE_TYPE_DATASET

# ("forget", provider_id, (identifier, token)) or ("reconcile", "", (registered, revision))
Job = tuple[str, str, tuple]


class AppendedRowsLifecycle:
    def __init__(self, providers: Mapping[str, DatasetIOProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def on_event(self, event: R.WatchResourcesResponse) -> None:
        """RegistryCache listener (synchronous: only queues, with the state the event leaves)."""
        kind = event.event_type
        if kind == R.WATCH_EVENT_TYPE_DELETE:
            resource = event.resource
            if resource.type == DATASET and resource.provider_id in self.providers:
                self._queue.put_nowait(("forget", resource.provider_id, (resource.identifier, token_of(resource))))
        elif kind == R.WATCH_EVENT_TYPE_SYNCED:
            registered = {r.identifier: token_of(r) for r in self.cache.index.all(DATASET)}
            self._queue.put_nowait(("reconcile", "", (registered, self.cache.revision)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="datasetio-appended-rows")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def idle(self) -> None:
        """Until every queued change is applied (tests)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            action, provider_id, args = await self._queue.get()
            try:
                if action == "forget":
                    await self.providers[provider_id].forget(*args)
                else:
                    for provider in self.providers.values():
                        await provider.reconcile(*args)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - garbage collection must not end the worker
                log.exception("dropping appended rows failed action=%s; retried at the next registry sync", action)
            finally:
                self._queue.task_done()
