"""The registry store on PostgreSQL, for several registry replicas sharing one database.

Writers serialize on a transaction-level advisory lock: inside it a replica first reads what the
others committed (so it validates against the latest state and numbers its changes right after
theirs), then writes its batch and ``NOTIFY``s. Revisions are therefore gap-free and commit in
order. Each replica ``LISTEN``s on its own connection and reads new changes from the change log.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import psycopg

from services.registry.store import KEEP_CHANGES, LEASE_SQL, OP_PUT, Change
from stackmesh.common.v1 import common_pb2

__all__ = ["PostgresRegistryStore", "dsn_from_backend"]

log = logging.getLogger("stackmesh.registry")
Resource = common_pb2.Resource
CHANNEL = "stackmesh_registry"
LOCK_KEY = 0x5374_6B4D  # any constant shared by every replica

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stackmesh_resources (
    type INTEGER NOT NULL,
    identifier TEXT NOT NULL,
    revision BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (type, identifier)
);
CREATE TABLE IF NOT EXISTS stackmesh_changes (
    revision BIGINT PRIMARY KEY,
    op INTEGER NOT NULL,
    body BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS stackmesh_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""


def dsn_from_backend(backend: dict[str, Any]) -> str:
    """A libpq connection string from a Llama Stack ``kv_postgres``/``sql_postgres`` backend."""
    parts = {"host": backend.get("host") or "localhost", "port": backend.get("port") or 5432,
             "dbname": backend.get("db") or "llamastack", "user": backend.get("user") or "llamastack",
             "password": backend.get("password")}
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})


class _Listener:
    """A thread that LISTENs and calls back on each notification, until stopped."""

    def __init__(self, dsn: str, callback: Callable[[], None]) -> None:
        self._dsn = dsn
        self._callback = callback
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._callback()  # anything committed while we were not listening
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._callback()
            except psycopg.Error as err:
                log.warning("registry LISTEN connection lost (%s); reconnecting", err)
                self._stopping.wait(1.0)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)


class PostgresRegistryStore:
    def __init__(self, dsn: str, keep_changes: int = KEEP_CHANGES) -> None:
        self.dsn = dsn
        self.keep_changes = keep_changes
        self._writer = psycopg.connect(dsn, autocommit=True)  # used by the journal's writer thread only
        self._reader = psycopg.connect(dsn, autocommit=True)  # loads and change-log reads
        # Every use of a connection holds its lock, and close() takes both: libpq frees a connection
        # on close, so closing it under a query still running in a worker thread would crash the process.
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False
        with self._writer.transaction():
            self._writer.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))  # replicas starting together
            self._writer.execute(_SCHEMA)

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._closed = True
            self._writer.close()
            self._reader.close()

    def load(self) -> tuple[list[Resource], int]:
        with self._read_lock, self._reader_conn().transaction():  # one snapshot for both reads
            self._reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = self._reader.execute("SELECT body FROM stackmesh_resources").fetchall()
            last = self._reader.execute("SELECT COALESCE(MAX(revision), 0) FROM stackmesh_changes").fetchone()[0]
        return [Resource.FromString(bytes(body)) for (body,) in rows], int(last)

    def _check_open(self) -> None:
        if self._closed:
            raise psycopg.OperationalError("the registry store is closed")

    def _writer_conn(self) -> psycopg.Connection:
        """The writer connection, reopened after the database restarted or failed over."""
        self._check_open()
        if self._writer.closed or self._writer.broken:
            self._writer = psycopg.connect(self.dsn, autocommit=True)
        return self._writer

    def _reader_conn(self) -> psycopg.Connection:
        self._check_open()
        if self._reader.closed or self._reader.broken:
            self._reader = psycopg.connect(self.dsn, autocommit=True)
        return self._reader

    def rollback(self) -> None:
        with self._write_lock:
            if not self._writer.closed and not self._writer.broken:
                self._writer.execute("ROLLBACK")

    def begin(self, since_revision: int) -> list[Change] | None:
        """Open the write transaction, take the lock, and return what others committed since."""
        with self._write_lock:
            self._writer_conn().execute("BEGIN")
            try:
                self._writer.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                return self._changes_since(self._writer, since_revision)
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    def commit(self, changes: list[Change]) -> None:
        """Write the batch, NOTIFY, COMMIT (which releases the lock). Always ends the transaction."""
        with self._write_lock:
            self._check_open()  # never reconnect here: the batch belongs to the transaction begin() opened
            try:
                with self._writer.cursor() as cur:
                    for change in changes:
                        body = change.resource.SerializeToString()
                        if change.op == OP_PUT:
                            cur.execute(
                                "INSERT INTO stackmesh_resources (type, identifier, revision, body) VALUES (%s, %s, %s, %s) "
                                "ON CONFLICT (type, identifier) DO UPDATE SET revision = EXCLUDED.revision, body = EXCLUDED.body",
                                (change.resource.type, change.resource.identifier, change.revision, body))
                        else:
                            cur.execute("DELETE FROM stackmesh_resources WHERE type = %s AND identifier = %s",
                                        (change.resource.type, change.resource.identifier))
                        cur.execute("INSERT INTO stackmesh_changes (revision, op, body) VALUES (%s, %s, %s)",
                                    (change.revision, change.op, body))
                    if changes:
                        last = changes[-1].revision
                        if last % 1000 < len(changes):
                            cur.execute("DELETE FROM stackmesh_changes WHERE revision <= %s", (last - self.keep_changes,))
                        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(last)))
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    def changes_since(self, revision: int) -> list[Change] | None:
        with self._read_lock:
            return self._changes_since(self._reader_conn(), revision)

    @staticmethod
    def _changes_since(conn: psycopg.Connection, revision: int) -> list[Change] | None:
        oldest = conn.execute("SELECT MIN(revision) FROM stackmesh_changes").fetchone()[0]
        if oldest is not None and revision < oldest - 1:
            return None
        rows = conn.execute("SELECT revision, op, body FROM stackmesh_changes WHERE revision > %s ORDER BY revision",
                            (revision,)).fetchall()
        return [Change(int(rev), op, Resource.FromString(bytes(body))) for rev, op, body in rows]

    def listen(self, callback: Callable[[], None]) -> _Listener:
        return _Listener(self.dsn, callback)

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> tuple[bool, str]:
        """Take ``name`` if free or expired, or renew it for its holder; (granted, holder).
        Time is the database's, so replicas on different hosts agree on expiry."""
        with self._read_lock:
            now = float(self._reader_conn().execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])
            row = self._reader.execute(LEASE_SQL, (name, holder, now + ttl_seconds, now)).fetchone()
            if row is None:
                row = self._reader.execute("SELECT holder FROM stackmesh_leases WHERE name = %s", (name,)).fetchone()
        return row[0] == holder, row[0]
