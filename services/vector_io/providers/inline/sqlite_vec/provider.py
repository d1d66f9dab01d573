"""``inline::sqlite-vec``: every vector DB of the provider in one SQLite file (WAL).

Index ``n`` is three tables: ``chunks_<n>`` (text and metadata), ``vec_<n>`` (a sqlite-vec ``vec0``
table, cosine distance, exact KNN) and ``fts_<n>`` (FTS5, contentless, BM25) sharing rowids. An
insert is one transaction over all three. The stock ``sqlite3`` module cannot load extensions here,
hence ``pysqlite3``.
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Iterator

import numpy as np
import pysqlite3
import sqlite_vec

from services.common.config import StackConfig
from services.common.errors import FailedPrecondition
from services.vector_io.providers.base import ChunkRecord, ScoredChunk, VectorDBTarget, VectorIOProvider
from services.vector_io.providers.inline.sqlite_vec.config import SQLiteVecConfig
from services.vector_io.providers.keyword import query_terms
from services.vector_io.providers.sqlite_store import ChunkStore, IndexRow, Worker, connect, record
from services.common.storage import data_dir

__all__ = ["SQLiteVecProvider"]

VEC0_MAX_K = 4096  # sqlite-vec's limit on k in one KNN query


def _extra_tables(index_id: int, dimension: int) -> list[str]:
    return [f"CREATE VIRTUAL TABLE vec_{index_id} USING vec0(embedding float[{dimension}] distance_metric=cosine)",
            f"CREATE VIRTUAL TABLE fts_{index_id} USING fts5(content, content='', contentless_delete=1)"]


def _drop_extra(index_id: int) -> list[str]:
    return [f"DROP TABLE IF EXISTS vec_{index_id}", f"DROP TABLE IF EXISTS fts_{index_id}"]


def _fts_query(text: str) -> str:
    """Any of the query's words, each quoted (no FTS5 syntax from users reaches MATCH)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in query_terms(text))


class SQLiteVecProvider(VectorIOProvider):
    config: SQLiteVecConfig

    def __init__(self, provider_id: str, config: SQLiteVecConfig, defaults: dict) -> None:
        super().__init__(provider_id, config, defaults)
        self.path: pathlib.Path | None = None
        self._worker = Worker(f"sqlite-vec-{provider_id}")
        self._store: ChunkStore | None = None

    def resolve_storage(self, stack: StackConfig) -> None:
        if self.config.db_path:
            self.path = pathlib.Path(self.config.db_path).expanduser()
        else:
            folder = data_dir(stack, self.provider_id, api="vector_io", persistence=self.config.persistence, kvstore=self.config.kvstore)
            self.path = folder / "sqlite_vec.db"

    async def initialize(self) -> None:
        await self._worker.run(self._open)

    def _open(self) -> None:
        conn = connect(pysqlite3, self.path or pathlib.Path("sqlite_vec.db"))
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        self._store = ChunkStore(conn, keep_embeddings=False)

    async def shutdown(self) -> None:
        if self._store is not None:
            await self._worker.run(self._store.conn.close)
            self._store = None
        self._worker.close()

    async def health(self) -> tuple[bool, str]:
        return (True, "") if self._store is not None else (False, f"{self.path} is not open")

    # ----------------------------------------------------------------- indexes
    async def create_index(self, db: VectorDBTarget) -> None:
        await self._worker.run(self._store.create, db, _extra_tables, _drop_extra)

    async def delete_index(self, name: str) -> None:
        await self._worker.run(self._store.drop, name, _drop_extra)

    async def list_indexes(self) -> dict[str, str]:
        rows = await self._worker.run(self._store.reload)
        return {name: row.token for name, row in rows.items()}

    def _missing(self, db: VectorDBTarget) -> FailedPrecondition:
        return FailedPrecondition(f"vector DB '{db.identifier}' has no index in {self.path}; it is being created "
                                  f"or was just removed, retry", reason="INDEX_MISSING")

    def _row(self, db: VectorDBTarget) -> IndexRow:
        row = self._store.get(db.name)
        if row is None:
            raise self._missing(db)
        return row

    @contextlib.contextmanager
    def _tables_of(self, db: VectorDBTarget) -> Iterator[IndexRow]:
        """The index's catalog row; its tables dropped meanwhile by another process sharing the file
        (a replica that saw the DELETE first) read as a missing index, not an internal error."""
        try:
            yield self._row(db)
        except pysqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
            self._store.reload()
            raise self._missing(db) from None

    # ----------------------------------------------------------------- data path
    async def insert(self, db: VectorDBTarget, chunks: list[ChunkRecord], embeddings: np.ndarray) -> None:
        await self._worker.run(self._insert, db, chunks, embeddings)

    def _insert(self, db: VectorDBTarget, chunks: list[ChunkRecord], embeddings: np.ndarray) -> None:
        conn = self._store.conn
        with self._tables_of(db) as row, self._store.transaction():
            removed, rowids = self._store.replace(row, chunks, embeddings)
            if removed:
                conn.executemany(f"DELETE FROM vec_{row.id} WHERE rowid = ?", [(r,) for r in removed])
                conn.executemany(f"DELETE FROM fts_{row.id} WHERE rowid = ?", [(r,) for r in removed])
            conn.executemany(f"INSERT INTO vec_{row.id} (rowid, embedding) VALUES (?, ?)",
                             [(r, e.tobytes()) for r, e in zip(rowids, embeddings)])
            conn.executemany(f"INSERT INTO fts_{row.id} (rowid, content) VALUES (?, ?)",
                             [(r, c.content) for r, c in zip(rowids, chunks)])

    async def query_vector(self, db: VectorDBTarget, embedding: np.ndarray, k: int) -> list[ScoredChunk]:
        return await self._worker.run(self._knn, db, embedding, k)

    def _knn(self, db: VectorDBTarget, embedding: np.ndarray, k: int) -> list[ScoredChunk]:
        with self._tables_of(db) as row:
            rows = self._store.conn.execute(
                f"""SELECT c.chunk_id, c.document_id, c.position, c.content, c.metadata, knn.distance
                    FROM (SELECT rowid, distance FROM vec_{row.id} WHERE embedding MATCH ? AND k = ?) AS knn
                    JOIN chunks_{row.id} AS c ON c.rowid = knn.rowid ORDER BY knn.distance""",
                (np.asarray(embedding, dtype=np.float32).tobytes(), min(k, VEC0_MAX_K))).fetchall()
        return [ScoredChunk(record(r[:5]), 1.0 - float(r[5])) for r in rows]

    async def query_keyword(self, db: VectorDBTarget, text: str, k: int) -> list[ScoredChunk]:
        return await self._worker.run(self._match, db, text, k)

    def _match(self, db: VectorDBTarget, text: str, k: int) -> list[ScoredChunk]:
        match = _fts_query(text)
        with self._tables_of(db) as row:
            if not match:
                return []
            rows = self._store.conn.execute(
                f"""SELECT c.chunk_id, c.document_id, c.position, c.content, c.metadata, hits.score
                    FROM (SELECT rowid, bm25(fts_{row.id}) AS score FROM fts_{row.id} WHERE fts_{row.id} MATCH ?
                          ORDER BY bm25(fts_{row.id}) LIMIT ?) AS hits
                    JOIN chunks_{row.id} AS c ON c.rowid = hits.rowid ORDER BY hits.score""", (match, k)).fetchall()
        return [ScoredChunk(record(r[:5]), -float(r[5])) for r in rows]  # FTS5's bm25() is negated: lower is better
