"""Loaded dataset files, cached by path and file version so paging does not re-read the file per page.

A file's version is its (mtime_ns, size): a page checks it with one ``stat`` and a changed file is
read again. Concurrent requests for a file being read share that one read. The cache keeps at most
``max_rows`` rows in all (least recently used files go first; the file just read always stays).
Reads run in worker threads: a large file never blocks the event loop or other datasets.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import pathlib
from services.common.errors import FailedPrecondition, StackmeshError
from services.datasetio.providers.base import KeptRow
from services.datasetio.providers.inline.localfs.readers import format_of, read_rows

__all__ = ["LoadedFile", "SourceFiles"]


@dataclasses.dataclass(eq=False)
class LoadedFile:
    path: pathlib.Path
    version: tuple[int, int]
    rows: list[KeptRow]
    # (dataset_id, purpose) -> the purpose check's failure (None: the rows fit); checked once per version.
    checks: dict[tuple[str, str], StackmeshError | None] = dataclasses.field(default_factory=dict)


def _version(path: pathlib.Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FailedPrecondition(f"dataset file {path} does not exist; create it or re-register the dataset with the "
                                 f"right file:// URI", reason="DATASET_FILE_MISSING",
                                 metadata={"path": str(path)}) from None
    except OSError as err:
        raise FailedPrecondition(f"dataset file {path} cannot be read: {err.strerror}", reason="DATASET_FILE_INVALID",
                                 metadata={"path": str(path)}) from None
    if not os.path.isfile(path):
        raise FailedPrecondition(f"dataset file {path} is not a regular file", reason="DATASET_FILE_INVALID",
                                 metadata={"path": str(path)})
    return info.st_mtime_ns, info.st_size


class SourceFiles:
    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._files: collections.OrderedDict[pathlib.Path, LoadedFile] = collections.OrderedDict()
        self._reading: dict[tuple[pathlib.Path, tuple[int, int]], asyncio.Task[LoadedFile]] = {}
        self.reads = 0  # files read from disk (tests and logs)

    @property
    def cached_rows(self) -> int:
        return sum(len(f.rows) for f in self._files.values())

    async def get(self, path: pathlib.Path) -> LoadedFile:
        """The rows of ``path`` as the file is now (read again when it changed)."""
        format_of(path)  # an unsupported extension fails before touching the disk
        version = _version(path)
        cached = self._files.get(path)
        if cached is not None and cached.version == version:
            self._files.move_to_end(path)
            return cached
        key = (path, version)
        task = self._reading.get(key)
        if task is None:
            task = asyncio.create_task(self._read(path, version), name=f"read-{path.name}")
            self._reading[key] = task
            task.add_done_callback(lambda _t: self._reading.pop(key, None))
        # shield: one caller giving up (deadline) must not cancel the read the others wait for
        return await asyncio.shield(task)

    async def _read(self, path: pathlib.Path, version: tuple[int, int]) -> LoadedFile:
        rows = await asyncio.to_thread(lambda: [KeptRow(row) for row in read_rows(path)])
        self.reads += 1
        loaded = LoadedFile(path, version, rows)
        current = self._files.get(path)
        if current is None or current.version != version:
            self._files[path] = loaded
            self._files.move_to_end(path)
            self._evict(keep=path)
        return self._files[path]

    def _evict(self, keep: pathlib.Path) -> None:
        total = self.cached_rows
        for path in list(self._files):
            if total <= self.max_rows:
                return
            if path != keep:
                total -= len(self._files.pop(path).rows)

    def clear(self) -> None:
        self._files.clear()
