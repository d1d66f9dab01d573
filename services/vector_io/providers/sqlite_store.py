"""SQLite bookkeeping shared by the inline providers: a catalog of indexes and one chunk table each.

Table names never contain user text: index ``n`` of the catalog owns ``chunks_<n>`` (and whatever
the provider adds, e.g. ``vec_<n>``), so any vector DB name is safe; ``n`` is never reused. A
``ChunkStore`` is used from one thread only (each provider runs its store on a dedicated
single-thread executor); several processes may share the file (catalog decisions are re-read
under SQLite's write lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import pathlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np

from services.vector_io.providers.base import ChunkRecord, VectorDBTarget

__all__ = ["IndexRow", "ChunkStore", "Worker", "connect", "record"]

_IN_BATCH = 500  # ids per "IN (...)" (SQLite's host parameter limit is far higher; this keeps plans small)


class Worker:
    """One dedicated thread: everything that touches a provider's files runs there, in call order
    (SQLite connections stay on their thread; the event loop never waits on the disk)."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def connect(module: Any, path: pathlib.Path) -> Any:
    """A connection in autocommit mode (transactions are explicit) with WAL and a busy timeout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = module.connect(str(path), isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash (kill -9) loses nothing committed
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


@dataclasses.dataclass
class IndexRow:
    name: str
    id: int
    dimension: int
    token: str
    embedding_model: str
    generation: int = 0  # bumped by every insert (faiss compares it with what its file holds)
    flushed_generation: int = 0


class ChunkStore:
    def __init__(self, conn: Any, *, keep_embeddings: bool) -> None:
        self.conn = conn
        self.keep_embeddings = keep_embeddings
        conn.execute("""CREATE TABLE IF NOT EXISTS sm_indexes (
            name TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE, dimension INTEGER NOT NULL, token TEXT NOT NULL,
            embedding_model TEXT NOT NULL, generation INTEGER NOT NULL DEFAULT 0,
            flushed_generation INTEGER NOT NULL DEFAULT 0)""")
        # Index ids are never reused (AUTOINCREMENT): a replica holding a stale catalog row of a dropped
        # index must find its tables gone, never another vector DB's tables under the same id.
        conn.execute("CREATE TABLE IF NOT EXISTS sm_index_ids (id INTEGER PRIMARY KEY AUTOINCREMENT)")
        self._rows: dict[str, IndexRow] = {}
        self.reload()

    # ----------------------------------------------------------------- catalog
    def reload(self) -> dict[str, IndexRow]:
        self._rows = {r[0]: IndexRow(*r) for r in self.conn.execute(
            "SELECT name, id, dimension, token, embedding_model, generation, flushed_generation FROM sm_indexes")}
        return self._rows

    def rows(self) -> dict[str, IndexRow]:
        return dict(self._rows)

    def get(self, name: str) -> IndexRow | None:
        row = self._rows.get(name)
        if row is None:  # another process sharing the file may have created it
            row = self.reload().get(name)
        return row

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.reload()
            raise
        self.conn.execute("COMMIT")

    def _read(self, name: str) -> IndexRow | None:
        """The catalog row of ``name`` as the file holds it now (inside a transaction: final)."""
        found = self.conn.execute("SELECT name, id, dimension, token, embedding_model, generation, flushed_generation "
                                  "FROM sm_indexes WHERE name = ?", (name,)).fetchone()
        return IndexRow(*found) if found else None

    def create(self, db: VectorDBTarget, extra_tables: Callable[[int, int], list[str]],
               drop_extra: Callable[[int], list[str]]) -> tuple[IndexRow, IndexRow | None]:
        """(the index row, the stale row it replaced or None); existing and current: returned as is.
        ``extra_tables(id, dimension)`` / ``drop_extra(id)``: the provider's own DDL for index ``id``.
        Safe when replicas share the file: the decision is re-read under the write lock."""

        def current_for(row: IndexRow | None) -> bool:
            return row is not None and row.token == db.token and row.dimension == db.dimension

        cached = self._rows.get(db.name)
        if current_for(cached):
            return cached, None
        with self.transaction():
            current = self._read(db.name)
            if not current_for(current):
                if current is not None:
                    self._drop_tables(current.id, drop_extra)
                    self.conn.execute("DELETE FROM sm_indexes WHERE name = ?", (db.name,))
                next_id = self.conn.execute("INSERT INTO sm_index_ids DEFAULT VALUES").lastrowid
                embedding = ", embedding BLOB" if self.keep_embeddings else ""
                self.conn.execute(f"""CREATE TABLE chunks_{next_id} (
                    rowid INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, document_id TEXT NOT NULL,
                    position INTEGER NOT NULL, content TEXT NOT NULL, metadata TEXT NOT NULL{embedding})""")
                for statement in extra_tables(next_id, db.dimension):
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO sm_indexes (name, id, dimension, token, embedding_model) VALUES (?, ?, ?, ?, ?)",
                    (db.name, next_id, db.dimension, db.token, db.embedding_model))
        if current_for(current):  # another process sharing the file created it meanwhile
            self._rows[db.name] = current
            return current, None
        row = IndexRow(db.name, next_id, db.dimension, db.token, db.embedding_model)
        self._rows[db.name] = row
        return row, current

    def drop(self, name: str, drop_extra: Callable[[int], list[str]]) -> IndexRow | None:
        with self.transaction():
            current = self._read(name)
            if current is not None:
                self._drop_tables(current.id, drop_extra)
                self.conn.execute("DELETE FROM sm_indexes WHERE name = ?", (name,))
        self._rows.pop(name, None)
        return current

    def _drop_tables(self, index_id: int, drop_extra: Callable[[int], list[str]]) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS chunks_{index_id}")
        for statement in drop_extra(index_id):
            self.conn.execute(statement)

    # ----------------------------------------------------------------- chunks
    def replace(self, row: IndexRow, chunks: list[ChunkRecord], embeddings: np.ndarray) -> tuple[list[int], list[int]]:
        """Inside a transaction: delete the chunks whose ids are being inserted, insert ``chunks``.
        Returns (rowids removed, rowids given to ``chunks`` in order)."""
        table = f"chunks_{row.id}"
        ids = [c.chunk_id for c in chunks]
        removed: list[int] = []
        for start in range(0, len(ids), _IN_BATCH):
            part = ids[start:start + _IN_BATCH]
            marks = ",".join("?" * len(part))
            removed += [r[0] for r in self.conn.execute(f"SELECT rowid FROM {table} WHERE chunk_id IN ({marks})", part)]
        for start in range(0, len(removed), _IN_BATCH):
            part = removed[start:start + _IN_BATCH]
            self.conn.execute(f"DELETE FROM {table} WHERE rowid IN ({','.join('?' * len(part))})", part)
        (base,) = self.conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()
        rowids = list(range(base + 1, base + 1 + len(chunks)))
        columns = "rowid, chunk_id, document_id, position, content, metadata"
        if self.keep_embeddings:
            self.conn.executemany(
                f"INSERT INTO {table} ({columns}, embedding) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r, c.chunk_id, c.document_id, c.position, c.content, json.dumps(c.metadata), e.tobytes())
                 for r, c, e in zip(rowids, chunks, embeddings)])
        else:
            self.conn.executemany(
                f"INSERT INTO {table} ({columns}) VALUES (?, ?, ?, ?, ?, ?)",
                [(r, c.chunk_id, c.document_id, c.position, c.content, json.dumps(c.metadata))
                 for r, c in zip(rowids, chunks)])
        self.conn.execute("UPDATE sm_indexes SET generation = generation + 1 WHERE id = ?", (row.id,))
        row.generation += 1
        return removed, rowids

    def fetch(self, row: IndexRow, rowids: list[int]) -> dict[int, ChunkRecord]:
        out: dict[int, ChunkRecord] = {}
        for start in range(0, len(rowids), _IN_BATCH):
            part = rowids[start:start + _IN_BATCH]
            for r in self.conn.execute(
                    f"SELECT rowid, chunk_id, document_id, position, content, metadata FROM chunks_{row.id} "
                    f"WHERE rowid IN ({','.join('?' * len(part))})", part):
                out[r[0]] = record(r[1:])
        return out

    def scan(self, row: IndexRow, columns: str) -> Iterator[tuple[Any, ...]]:
        """Every chunk row's ``columns`` (e.g. "rowid, content"), in rowid order."""
        return self.conn.execute(f"SELECT {columns} FROM chunks_{row.id} ORDER BY rowid")

    def mark_flushed(self, row: IndexRow, generation: int) -> None:
        self.conn.execute("UPDATE sm_indexes SET flushed_generation = ? WHERE id = ?", (generation, row.id))
        row.flushed_generation = generation


def record(values: tuple[Any, ...]) -> ChunkRecord:
    """A ChunkRecord from (chunk_id, document_id, position, content, metadata JSON)."""
    chunk_id, document_id, position, content, metadata = values
    return ChunkRecord(chunk_id=chunk_id, document_id=document_id, position=position, content=content,
                       metadata=json.loads(metadata))
