"""Following a job as it runs, for the job services' server-streaming Watch RPCs.

The replica running a job ``publish``es each change at once; a watcher on another replica (or one
that missed a change) polls the store, so it also sees steps made elsewhere. A watcher subscribes
before its first read, so no change can fall between that read and the stream.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable, Generic, Protocol, TypeVar

__all__ = ["JobWatchers"]


class _Job(Protocol):
    job_id: str

    @property
    def terminal(self) -> bool: ...


J = TypeVar("J", bound=_Job)


class JobWatchers(Generic[J]):
    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[J]]] = {}

    def publish(self, info: J) -> None:
        for queue in self._queues.get(info.job_id, ()):
            queue.put_nowait(info)

    async def follow(self, job_id: str, read: Callable[[], Awaitable[J | None]], advanced: Callable[[J, J], bool],
                     not_found: Callable[[], Exception], poll_seconds: float = 1.0) -> AsyncIterator[J]:
        """The job as it is now, then each state for which ``advanced(last, new)`` holds, until it is
        terminal. ``read`` fetches it from the store; ``not_found`` is raised when it does not exist."""
        queue: asyncio.Queue[J] = asyncio.Queue()
        self._queues.setdefault(job_id, set()).add(queue)
        try:
            info = await read()
            if info is None:
                raise not_found()
            last = info
            yield info
            while not last.terminal:
                try:
                    new = await asyncio.wait_for(queue.get(), poll_seconds)
                except asyncio.TimeoutError:  # steps made by another replica reach us through the store
                    new = await read()
                if new is not None and advanced(last, new):
                    last = new
                    yield new
        finally:
            queues = self._queues.get(job_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._queues[job_id]
