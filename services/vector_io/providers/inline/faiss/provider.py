"""``inline::faiss``: an exact ``IndexFlatIP`` per vector DB over normalized vectors (cosine).

Chunks, with their normalized embeddings, are committed to ``faiss.db`` (SQLite, WAL) before an
insert is acknowledged: that file is the truth. The FAISS index lives in memory and is written to
``index_<n>.faiss`` within ``flush_delay_seconds`` of an insert and at shutdown; each write records which
insert generation it holds, so on start an index file that is missing or older than the database
(a crash in between) is rebuilt from the stored embeddings. Keyword search is BM25 in Python over
the texts (``keyword.BM25Index``), rebuilt from the database on start.

One process per data folder (an exclusive lock on ``faiss.lock`` says so at start): each process
holds its own in-memory index, so replicas of the service must not share one (scale out with
sqlite-vec on a shared file, or Chroma).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import pathlib
import sqlite3

import numpy as np

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # eight INFO lines per start about CPU variants
import faiss  # noqa: E402

from services.common.config import StackConfig
from services.common.errors import FailedPrecondition
from services.vector_io.providers.base import ChunkRecord, ScoredChunk, VectorDBTarget, VectorIOProvider
from services.vector_io.providers.inline.faiss.config import FaissConfig
from services.vector_io.providers.keyword import BM25Index
from services.vector_io.providers.sqlite_store import ChunkStore, IndexRow, Worker, connect
from services.common.storage import data_dir

__all__ = ["FaissProvider"]

log = logging.getLogger("stackmesh.vector_io.faiss")


def _no_extra(*_: object) -> list[str]:
    return []


def normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


@dataclasses.dataclass
class _Loaded:
    row: IndexRow
    index: faiss.IndexIDMap2
    keywords: BM25Index


class FaissProvider(VectorIOProvider):
    config: FaissConfig

    def __init__(self, provider_id: str, config: FaissConfig, defaults: dict) -> None:
        super().__init__(provider_id, config, defaults)
        self.folder: pathlib.Path | None = None
        self._worker = Worker(f"faiss-{provider_id}")
        self._store: ChunkStore | None = None
        self._loaded: dict[str, _Loaded] = {}
        self._dirty: set[str] = set()
        self._flush_task: asyncio.Task[None] | None = None

    def resolve_storage(self, stack: StackConfig) -> None:
        if self.config.data_dir:
            self.folder = pathlib.Path(self.config.data_dir).expanduser()
        else:
            self.folder = data_dir(stack, self.provider_id, api="vector_io", persistence=self.config.persistence,
                                   kvstore=self.config.kvstore)

    def _file(self, row: IndexRow) -> pathlib.Path:
        return self.folder / f"index_{row.id}.faiss"

    # ----------------------------------------------------------------- life cycle
    async def initialize(self) -> None:
        self.folder = self.folder or pathlib.Path("faiss")
        await self._worker.run(self._open)

    def _open(self) -> None:
        if self.config.omp_threads:  # OpenMP's thread count is per calling thread: set it on the worker's
            faiss.omp_set_num_threads(self.config.omp_threads)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.folder / "faiss.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise FailedPrecondition(f"{self.folder} is in use by another inline::faiss provider process; give each "
                                     f"process its own data_dir", reason="DATA_DIR_IN_USE") from None
        self._store = ChunkStore(connect(sqlite3, self.folder / "faiss.db"), keep_embeddings=True)
        for name, row in self._store.rows().items():
            self._loaded[name] = self._load(row)

    def _load(self, row: IndexRow) -> _Loaded:
        path = self._file(row)
        index = None
        if path.exists() and row.flushed_generation == row.generation:
            index = faiss.read_index(str(path))
        if index is None or index.d != row.dimension:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(row.dimension))
            rowids, vectors = [], []
            for rowid, blob in self._store.scan(row, "rowid, embedding"):
                rowids.append(rowid)
                vectors.append(np.frombuffer(blob, dtype=np.float32))
            if rowids:
                index.add_with_ids(np.vstack(vectors), np.asarray(rowids, dtype=np.int64))
                log.info("rebuilt faiss index name=%s chunks=%d (file older than the chunk database)",
                         row.name, len(rowids))
            self._dirty.add(row.name)
        keywords = BM25Index()
        for rowid, content in self._store.scan(row, "rowid, content"):
            keywords.add(rowid, content)
        return _Loaded(row, index, keywords)

    async def shutdown(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
        if self._store is not None:
            await self._worker.run(self._flush)
            await self._worker.run(self._store.conn.close)
            self._store = None
            self._lock.close()
        self._worker.close()

    async def health(self) -> tuple[bool, str]:
        return (True, "") if self._store is not None else (False, f"{self.folder} is not open")

    def _schedule_flush(self) -> None:
        """Write dirty index files once, flush_delay_seconds from now (inserts meanwhile ride along)."""
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_later(), name=f"faiss-flush-{self.provider_id}")

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.config.flush_delay_seconds)
        if self._store is not None:
            await self._worker.run(self._flush)

    def _flush(self) -> None:
        for name in sorted(self._dirty):
            loaded = self._loaded.get(name)
            if loaded is None:
                continue
            path = self._file(loaded.row)
            tmp = path.with_suffix(".tmp")
            faiss.write_index(loaded.index, str(tmp))
            os.replace(tmp, path)
            self._store.mark_flushed(loaded.row, loaded.row.generation)
        self._dirty.clear()

    # ----------------------------------------------------------------- indexes
    async def create_index(self, db: VectorDBTarget) -> None:
        await self._worker.run(self._create, db)

    def _create(self, db: VectorDBTarget) -> None:
        row, stale = self._store.create(db, _no_extra, _no_extra)
        if stale is not None:
            self._forget(stale)
        if db.name not in self._loaded:
            self._loaded[db.name] = _Loaded(row, faiss.IndexIDMap2(faiss.IndexFlatIP(row.dimension)), BM25Index())

    async def delete_index(self, name: str) -> None:
        await self._worker.run(self._delete, name)

    def _delete(self, name: str) -> None:
        dropped = self._store.drop(name, _no_extra)
        if dropped is not None:
            self._forget(dropped)

    def _forget(self, row: IndexRow) -> None:
        self._loaded.pop(row.name, None)
        self._dirty.discard(row.name)
        self._file(row).unlink(missing_ok=True)

    async def list_indexes(self) -> dict[str, str]:
        return {name: loaded.row.token for name, loaded in self._loaded.items()}

    def _get(self, db: VectorDBTarget) -> _Loaded:
        loaded = self._loaded.get(db.name)
        if loaded is None:
            raise FailedPrecondition(f"vector DB '{db.identifier}' has no index in {self.folder}; it is being "
                                     f"created or was just removed, retry", reason="INDEX_MISSING")
        return loaded

    # ----------------------------------------------------------------- data path
    async def insert(self, db: VectorDBTarget, chunks: list[ChunkRecord], embeddings: np.ndarray) -> None:
        await self._worker.run(self._insert, db, chunks, normalized(embeddings))
        self._schedule_flush()

    def _insert(self, db: VectorDBTarget, chunks: list[ChunkRecord], vectors: np.ndarray) -> None:
        loaded = self._get(db)
        with self._store.transaction():
            removed, rowids = self._store.replace(loaded.row, chunks, vectors)
        if removed:
            loaded.index.remove_ids(np.asarray(removed, dtype=np.int64))
            for rowid in removed:
                loaded.keywords.remove(rowid)
        loaded.index.add_with_ids(vectors, np.asarray(rowids, dtype=np.int64))
        for rowid, chunk in zip(rowids, chunks):
            loaded.keywords.add(rowid, chunk.content)
        self._dirty.add(db.name)

    async def query_vector(self, db: VectorDBTarget, embedding: np.ndarray, k: int) -> list[ScoredChunk]:
        return await self._worker.run(self._knn, db, normalized(np.asarray(embedding).reshape(1, -1)), k)

    def _knn(self, db: VectorDBTarget, query: np.ndarray, k: int) -> list[ScoredChunk]:
        loaded = self._get(db)
        if loaded.index.ntotal == 0:
            return []
        scores, ids = loaded.index.search(query, min(k, loaded.index.ntotal))
        return self._scored(loaded, [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0])

    async def query_keyword(self, db: VectorDBTarget, text: str, k: int) -> list[ScoredChunk]:
        return await self._worker.run(self._match, db, text, k)

    def _match(self, db: VectorDBTarget, text: str, k: int) -> list[ScoredChunk]:
        loaded = self._get(db)
        return self._scored(loaded, loaded.keywords.search(text, k))

    def _scored(self, loaded: _Loaded, hits: list[tuple[int, float]]) -> list[ScoredChunk]:
        chunks = self._store.fetch(loaded.row, [rowid for rowid, _ in hits])
        return [ScoredChunk(chunks[rowid], score) for rowid, score in hits if rowid in chunks]
