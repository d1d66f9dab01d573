"""Durable storage of the registry: resources plus an ordered change log.

The embedded default is SQLite (WAL, ``synchronous=FULL``); ``pg_store`` holds the PostgreSQL
twin for several registry replicas. Both implement the same small interface used by ``Journal``:

    load() -> (resources, last revision)
    begin(since) -> changes committed by others since ``since`` (and, in PostgreSQL, the write lock)
    commit(changes)          one transaction for the whole batch; releases the lock
    rollback()               end a begun batch without writing
    changes_since(revision)  the log after ``revision``, or None when it no longer reaches back
    listen(callback)         call ``callback`` when another replica commits (None: single writer)
    acquire_lease(name, holder, ttl) -> (granted, holder)

Every commit writes the resources table and the change log together, and the revision is the
change log's primary key, so a crash (even ``kill -9``) leaves either the whole batch or none of it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable

from stackmesh.common.v1 import common_pb2

__all__ = ["Change", "SqliteRegistryStore", "OP_PUT", "OP_DELETE", "prepare_changes", "LEASE_SQL"]

Resource = common_pb2.Resource
OP_PUT = 1
OP_DELETE = 2
KEEP_CHANGES = 100_000  # change-log entries kept for watchers that resume

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stackmesh_resources (
    type INTEGER NOT NULL,
    identifier TEXT NOT NULL,
    revision INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (type, identifier)
);
CREATE TABLE IF NOT EXISTS stackmesh_changes (
    revision INTEGER PRIMARY KEY,
    op INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS stackmesh_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""

# Take a free or expired lease, or renew one's own, atomically; no row back means someone else holds it.
LEASE_SQL = """
INSERT INTO stackmesh_leases (name, holder, expires_at) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE stackmesh_leases.holder = excluded.holder OR stackmesh_leases.expires_at < %s
RETURNING holder
"""


@dataclasses.dataclass(frozen=True)
class Change:
    revision: int
    op: int  # OP_PUT | OP_DELETE
    resource: Resource


def prepare_changes(puts: Iterable[Resource], deletes: Iterable[Resource], revision: int) -> list[Change]:
    """Number the changes from ``revision + 1`` on; each put gets its revision and times set."""
    changes: list[Change] = []
    now_ns = int(time.time() * 1e9)
    for resource in puts:
        revision += 1
        resource.revision = revision
        resource.update_time.FromNanoseconds(now_ns)
        if not resource.HasField("create_time"):
            resource.create_time.FromNanoseconds(now_ns)
        changes.append(Change(revision, OP_PUT, resource))
    for resource in deletes:
        revision += 1
        changes.append(Change(revision, OP_DELETE, resource))
    return changes


class SqliteRegistryStore:
    """The embedded default store; one writer process (the registry)."""

    def __init__(self, path: str | pathlib.Path, keep_changes: int = KEEP_CHANGES) -> None:
        self.path = pathlib.Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.keep_changes = keep_changes
        # Used from the writer thread and the event loop: every use holds the lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def load(self) -> tuple[list[Resource], int]:
        with self._lock:
            resources = [Resource.FromString(body) for (body,) in
                         self._db.execute("SELECT body FROM stackmesh_resources")]
            row = self._db.execute("SELECT MAX(revision) FROM stackmesh_changes").fetchone()
        return resources, int(row[0] or 0)

    def begin(self, since_revision: int) -> list[Change]:
        return []  # the only writer: nobody else can have committed

    def rollback(self) -> None:
        """End a batch that will not be committed (nothing is open between begin and commit here)."""

    def commit(self, changes: list[Change]) -> None:
        if not changes:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for change in changes:
                    body = change.resource.SerializeToString()
                    if change.op == OP_PUT:
                        self._db.execute(
                            "INSERT INTO stackmesh_resources (type, identifier, revision, body) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (type, identifier) DO UPDATE SET revision = excluded.revision, "
                            "body = excluded.body",
                            (change.resource.type, change.resource.identifier, change.revision, body))
                    else:
                        self._db.execute("DELETE FROM stackmesh_resources WHERE type = ? AND identifier = ?",
                                         (change.resource.type, change.resource.identifier))
                    self._db.execute("INSERT INTO stackmesh_changes (revision, op, body) VALUES (?, ?, ?)",
                                     (change.revision, change.op, body))
                last = changes[-1].revision
                if last % 1000 < len(changes):  # trim the log now and then, not on every write
                    self._db.execute("DELETE FROM stackmesh_changes WHERE revision <= ?", (last - self.keep_changes,))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def apply(self, puts: Iterable[Resource], deletes: Iterable[Resource], revision: int) -> list[Change]:
        """Number and commit in one go (tools that write a stopped registry's file)."""
        changes = prepare_changes(puts, deletes, revision)
        self.commit(changes)
        return changes

    def changes_since(self, revision: int) -> list[Change] | None:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(revision) FROM stackmesh_changes").fetchone()[0]
            if oldest is not None and revision < oldest - 1:
                return None
            rows = self._db.execute("SELECT revision, op, body FROM stackmesh_changes WHERE revision > ? "
                                    "ORDER BY revision", (revision,)).fetchall()
        return [Change(rev, op, Resource.FromString(body)) for rev, op, body in rows]

    def listen(self, callback: Callable[[], None]) -> Any:
        return None  # single writer: there is nobody to hear from

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> tuple[bool, str]:
        """Take ``name`` if it is free or expired, or renew it for its holder; (granted, holder)."""
        now = time.time()
        with self._lock:
            row = self._db.execute(LEASE_SQL.replace("%s", "?"), (name, holder, now + ttl_seconds, now)).fetchone()
            if row is None:
                row = self._db.execute("SELECT holder FROM stackmesh_leases WHERE name = ?", (name,)).fetchone()
        return row[0] == holder, row[0]

