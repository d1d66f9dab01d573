"""Appended rows, durable in one SQLite file (WAL) per provider; the user's source files are never written.

Rows are kept per *registration* ``(dataset_id, token)`` (token: the registration's create_time), at
consecutive positions ``seq`` 0, 1, 2 ... (their index among the appended rows). ``appended_sets``
holds each registration's row count (so a page needs no COUNT) and the newest registry revision it
was written under (so garbage collection can tell a registration that ended from one newer than
the registry state it looks at). Several processes may share the file: an append takes SQLite's
write lock (BEGIN IMMEDIATE) before it reads the count, a read sees one snapshot.

The store is used from one thread only (``Worker``): SQLite connections stay on their thread and
the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import functools
import json
import pathlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

__all__ = ["AppendedRows", "Worker"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS appended_rows (
        dataset_id TEXT NOT NULL, token TEXT NOT NULL, seq INTEGER NOT NULL, row TEXT NOT NULL,
        PRIMARY KEY (dataset_id, token, seq)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS appended_sets (
        dataset_id TEXT NOT NULL, token TEXT NOT NULL, row_count INTEGER NOT NULL, revision INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, token))""",
)


class Worker:
    """One dedicated thread running blocking calls in order."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class AppendedRows:
    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # An AppendRows reply promises durability: FULL syncs the WAL at every commit (power loss too).
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        for statement in _SCHEMA:
            self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    def count(self, dataset_id: str, token: str) -> int:
        row = self.conn.execute("SELECT row_count FROM appended_sets WHERE dataset_id = ? AND token = ?",
                                (dataset_id, token)).fetchone()
        return row[0] if row else 0

    def read(self, dataset_id: str, token: str, first: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(appended row count, rows at positions [first, first + limit)) from one snapshot."""
        self.conn.execute("BEGIN")
        try:
            total = self.count(dataset_id, token)
            rows = []
            if limit > 0 and first < total:
                rows = [json.loads(text) for (text,) in self.conn.execute(
                    "SELECT row FROM appended_rows WHERE dataset_id = ? AND token = ? AND seq >= ? AND seq < ? "
                    "ORDER BY seq", (dataset_id, token, first, first + limit))]
            return total, rows
        finally:
            self.conn.execute("COMMIT")

    def append(self, dataset_id: str, token: str, revision: int, rows: list[dict[str, Any]],
               check: Callable[[int], None] | None = None) -> int:
        """Store ``rows`` after the existing ones in one transaction; returns the new appended count.
        ``check(count_before)`` runs under the write lock first: when it raises nothing is written."""
        encoded = [json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":")) for row in rows]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            start = self.count(dataset_id, token)
            if check is not None:
                check(start)
            self.conn.executemany("INSERT INTO appended_rows (dataset_id, token, seq, row) VALUES (?, ?, ?, ?)",
                                  [(dataset_id, token, start + i, text) for i, text in enumerate(encoded)])
            self.conn.execute(
                "INSERT INTO appended_sets (dataset_id, token, row_count, revision) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (dataset_id, token) DO UPDATE SET row_count = excluded.row_count, "
                "revision = MAX(revision, excluded.revision)", (dataset_id, token, start + len(rows), revision))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return start + len(rows)

    def forget(self, dataset_id: str, token: str) -> int:
        """Drop the appended rows of one registration; returns how many there were."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            count = self.count(dataset_id, token)
            self.conn.execute("DELETE FROM appended_rows WHERE dataset_id = ? AND token = ?", (dataset_id, token))
            self.conn.execute("DELETE FROM appended_sets WHERE dataset_id = ? AND token = ?", (dataset_id, token))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return count

    def stale(self, registered: Mapping[str, str], revision: int) -> list[tuple[str, str]]:
        """Registrations holding rows that the registry at ``revision`` no longer lists (and that were
        written at or before it)."""
        return [(dataset_id, token) for dataset_id, token, seen in self.conn.execute(
                    "SELECT dataset_id, token, revision FROM appended_sets")
                if registered.get(dataset_id) != token and seen <= revision]
