"""``remote::chromadb``: vector DBs as collections of a Chroma server (`chroma run`).

Chroma never embeds anything here: every call passes embeddings and collections have no embedding
function (a text query would make Chroma fetch an ONNX model). Collections use cosine distance and
carry stackmesh's marker in their metadata (provider id, vector DB name, registration token), so
this provider only ever replaces or deletes collections it created, never someone else's.
Keyword search fetches the chunks containing any query word (a case-insensitive ``$regex`` on the
documents, at most ``keyword_candidates``) and ranks them with BM25, N being the collection size.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from typing import Any, Awaitable, TypeVar
from urllib.parse import urlparse

import numpy as np

from services.common.errors import FailedPrecondition, StackmeshError, Unavailable
from services.vector_io.providers.base import ChunkRecord, ScoredChunk, VectorDBTarget, VectorIOProvider
from services.vector_io.providers.keyword import BM25Index, query_terms
from services.vector_io.providers.remote.chroma.config import ChromaConfig

__all__ = ["ChromaAdapter", "collection_name"]

log = logging.getLogger("stackmesh.vector_io.chroma")
T = TypeVar("T")

_VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
MARK_PROVIDER, MARK_NAME, MARK_TOKEN, MARK_DIMENSION = ("stackmesh_provider_id", "stackmesh_name",
                                                         "stackmesh_token", "stackmesh_dimension")


def collection_name(name: str) -> str:
    """``name`` when Chroma accepts it as a collection name, else a stable hash of it."""
    if _VALID_NAME.match(name) and ".." not in name and not _IPV4.match(name):
        return name
    return "sm-" + hashlib.sha256(name.encode()).hexdigest()[:40]


def _chunk(document: str, metadata: dict[str, Any]) -> ChunkRecord:
    return ChunkRecord(chunk_id=str(metadata.get("chunk_id", "")), document_id=str(metadata.get("document_id", "")),
                       position=int(metadata.get("position", 0)), content=document,
                       metadata=json.loads(metadata.get("stackmesh_metadata") or "{}"))


class ChromaAdapter(VectorIOProvider):
    config: ChromaConfig

    def __init__(self, provider_id: str, config: ChromaConfig, defaults: dict) -> None:
        super().__init__(provider_id, config, defaults)
        self._client: Any = None
        self._connecting = asyncio.Lock()
        self._collections: dict[str, tuple[tuple[str, int], Any]] = {}  # name -> ((token, dimension), collection)
        self._batch_size = 1000

    # ----------------------------------------------------------------- connection
    async def _call(self, awaitable: Awaitable[T]) -> T:
        """Await a Chroma call with the configured timeout; transport failures become UNAVAILABLE
        (Chroma's NotFoundError passes through: callers decide what a missing collection means)."""
        try:
            return await asyncio.wait_for(awaitable, self.config.timeout_seconds)
        except StackmeshError:
            raise
        except asyncio.TimeoutError:
            raise Unavailable(f"Chroma at {self.config.url} did not answer within {self.config.timeout_seconds:.0f} s",
                              reason="CHROMA_TIMEOUT") from None
        except Exception as err:
            import httpx
            from chromadb.errors import ChromaError, NotFoundError

            if isinstance(err, NotFoundError):
                raise
            if isinstance(err, (httpx.TransportError, OSError)):
                self._client = None  # reconnect next time
                raise Unavailable(f"Chroma at {self.config.url} is unreachable ({err}); start it or fix "
                                  f"providers.vector_io[{self.provider_id}].config.url",
                                  reason="CHROMA_UNREACHABLE") from None
            if isinstance(err, ChromaError):
                raise Unavailable(f"Chroma at {self.config.url} failed: {err}", reason="CHROMA_ERROR") from None
            raise

    async def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        if not self.config.url:
            raise Unavailable(f"provider '{self.provider_id}' (remote::chromadb) has no url; set "
                              f"providers.vector_io[{self.provider_id}].config.url", reason="CHROMA_URL_MISSING")
        async with self._connecting:
            if self._client is None:
                import chromadb
                from chromadb.config import Settings

                url = urlparse(self.config.url if "://" in self.config.url else f"http://{self.config.url}")
                https = url.scheme == "https"
                client = await self._call(chromadb.AsyncHttpClient(
                    host=url.hostname or "127.0.0.1", port=url.port or (443 if https else 8000), ssl=https,
                    settings=Settings(anonymized_telemetry=False), tenant=self.config.tenant,
                    database=self.config.database))
                try:
                    self._batch_size = max(1, min(int(await self._call(client.get_max_batch_size())), 5000))
                except Unavailable:
                    pass
                self._client = client
        return self._client

    async def health(self) -> tuple[bool, str]:
        try:
            client = await self._connect()
            await self._call(client.heartbeat())
        except Unavailable as err:
            return False, err.message
        return True, ""

    # ----------------------------------------------------------------- indexes
    async def _get_collection(self, name: str) -> Any | None:
        from chromadb.errors import NotFoundError

        client = await self._connect()
        try:
            return await self._call(client.get_collection(collection_name(name)))
        except NotFoundError:
            return None

    def _ours(self, collection: Any) -> bool:
        return (collection.metadata or {}).get(MARK_PROVIDER) == self.provider_id

    async def create_index(self, db: VectorDBTarget) -> None:
        cached = self._collections.get(db.name)
        if cached is not None and cached[0] == (db.token, db.dimension):
            return
        client = await self._connect()
        existing = await self._get_collection(db.name)
        if existing is not None:
            meta = existing.metadata or {}
            if not self._ours(existing):
                raise FailedPrecondition(
                    f"Chroma already has a collection '{collection_name(db.name)}' that provider '{self.provider_id}' "
                    f"did not create; register the vector DB with another provider_vector_db_id",
                    reason="COLLECTION_NOT_OURS")
            if meta.get(MARK_TOKEN) == (db.token or "-") and meta.get(MARK_DIMENSION) == db.dimension:
                self._collections[db.name] = ((db.token, db.dimension), existing)
                return
            log.info("replacing stale collection name=%s (an earlier registration of the name)", db.name)
            await self._call(client.delete_collection(collection_name(db.name)))
        metadata = {"hnsw:space": "cosine", MARK_PROVIDER: self.provider_id, MARK_NAME: db.name,
                    MARK_TOKEN: db.token or "-", MARK_DIMENSION: db.dimension}
        try:
            collection = await self._call(client.create_collection(collection_name(db.name), metadata=metadata,
                                                                   embedding_function=None))
        except Unavailable:
            collection = await self._get_collection(db.name)  # another replica created it meanwhile
            if collection is None or (collection.metadata or {}).get(MARK_TOKEN) != (db.token or "-"):
                raise
        self._collections[db.name] = ((db.token, db.dimension), collection)

    async def delete_index(self, name: str) -> None:
        from chromadb.errors import NotFoundError

        self._collections.pop(name, None)
        existing = await self._get_collection(name)
        if existing is None or not self._ours(existing):
            return
        try:
            await self._call((await self._connect()).delete_collection(collection_name(name)))
        except NotFoundError:
            pass

    async def list_indexes(self) -> dict[str, str]:
        client = await self._connect()
        out = {}
        for collection in await self._call(client.list_collections()):
            meta = collection.metadata or {}
            if meta.get(MARK_PROVIDER) == self.provider_id and MARK_NAME in meta:
                token = meta.get(MARK_TOKEN, "")
                out[meta[MARK_NAME]] = "" if token == "-" else token
        return out

    async def _collection(self, db: VectorDBTarget) -> Any:
        cached = self._collections.get(db.name)
        if cached is not None and cached[0] == (db.token, db.dimension):
            return cached[1]
        await self.create_index(db)
        return self._collections[db.name][1]

    async def _data_call(self, db: VectorDBTarget, awaitable: Awaitable[T]) -> T:
        """``_call`` for calls on a collection: one deleted behind stackmesh's back is reported as such."""
        from chromadb.errors import NotFoundError

        try:
            return await self._call(awaitable)
        except NotFoundError:
            self._collections.pop(db.name, None)
            raise FailedPrecondition(f"the Chroma collection of vector DB '{db.identifier}' was deleted outside "
                                     f"stackmesh; unregister the vector DB and register it again",
                                     reason="COLLECTION_GONE") from None

    # ----------------------------------------------------------------- data path
    async def insert(self, db: VectorDBTarget, chunks: list[ChunkRecord], embeddings: np.ndarray) -> None:
        collection = await self._collection(db)
        for start in range(0, len(chunks), self._batch_size):
            part = chunks[start:start + self._batch_size]
            await self._data_call(db, collection.upsert(
                ids=[c.chunk_id for c in part], embeddings=embeddings[start:start + len(part)],
                documents=[c.content for c in part],
                metadatas=[{"chunk_id": c.chunk_id, "document_id": c.document_id, "position": c.position,
                            "stackmesh_metadata": json.dumps(c.metadata)} for c in part]))

    async def query_vector(self, db: VectorDBTarget, embedding: np.ndarray, k: int) -> list[ScoredChunk]:
        collection = await self._collection(db)
        result = await self._data_call(db, collection.query(
            query_embeddings=[np.asarray(embedding, dtype=np.float32)], n_results=k,
            include=["documents", "metadatas", "distances"]))
        documents, metadatas, distances = result["documents"][0], result["metadatas"][0], result["distances"][0]
        return [ScoredChunk(_chunk(d, m), 1.0 - float(x)) for d, m, x in zip(documents, metadatas, distances)]

    async def query_keyword(self, db: VectorDBTarget, text: str, k: int) -> list[ScoredChunk]:
        terms = query_terms(text)
        if not terms:
            return []
        collection = await self._collection(db)
        pattern = r"(?i)\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b"
        found, total = await asyncio.gather(
            self._data_call(db, collection.get(where_document={"$regex": pattern}, include=["documents", "metadatas"],
                                      limit=self.config.keyword_candidates)),
            self._data_call(db, collection.count()))
        index = BM25Index()
        for i, document in enumerate(found["documents"]):
            index.add(i, document)
        return [ScoredChunk(_chunk(found["documents"][i], found["metadatas"][i]), score)
                for i, score in index.search(text, k, total_docs=total)]
