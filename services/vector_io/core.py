"""InsertChunks and QueryChunks, independent of gRPC: checks, chunk identity, embedding, search.

Chunk identity, as in Llama Stack: a chunk without an id gets one derived from its document id and
text (so inserting the same document twice stores it once); a chunk without a document id is its
own document (document_id = chunk_id). ``position`` is the chunk's index within its document:
``metadata.position`` when given, else its rank among the chunks of that document in the request —
a document inserted over several calls should set it. Every stored chunk's metadata carries
``document_id``, ``position`` and ``chunk_id``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from typing import Any, Sequence

import numpy as np

from services.common.errors import InvalidArgument
from services.vector_io.embedder import Embedder
from services.vector_io.providers.base import ChunkRecord, ScoredChunk, SearchMode, VectorDBTarget
from services.vector_io.router import VectorDBRouter

__all__ = ["ChunkInput", "VectorIOCore", "DEFAULT_MAX_CHUNKS", "MAX_CHUNKS_LIMIT"]

DEFAULT_MAX_CHUNKS = 5
MAX_CHUNKS_LIMIT = 1000


@dataclasses.dataclass
class ChunkInput:
    """A chunk as a client sent it."""

    content: str
    metadata: dict[str, Any]
    embedding: Sequence[float]  # empty: the service embeds ``content``
    chunk_id: str = ""
    document_id: str = ""


def derived_chunk_id(document_id: str, content: str) -> str:
    return str(uuid.UUID(hashlib.sha256(f"{document_id}:{content}".encode()).hexdigest()[:32]))


def _position(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        return None
    return int(value)


def prepare(chunks: list[ChunkInput]) -> list[ChunkRecord]:
    """Records with ids, document ids and positions; raises on a chunk without content."""
    if not chunks:
        raise InvalidArgument("chunks must hold at least one chunk", reason="CHUNKS_MISSING")
    records, seen_in_document = [], {}
    for i, chunk in enumerate(chunks):
        if not chunk.content.strip():
            raise InvalidArgument(f"chunks[{i}] has no content; every chunk needs text (it is what a query "
                                  f"returns, and what is embedded when no embedding is given)",
                                  reason="CHUNK_CONTENT_MISSING", metadata={"chunk_index": i})
        document_id = chunk.document_id or str(chunk.metadata.get("document_id") or "")
        chunk_id = (chunk.chunk_id or str(chunk.metadata.get("chunk_id") or "")
                    or derived_chunk_id(document_id, chunk.content))
        document_id = document_id or chunk_id
        rank = seen_in_document.get(document_id, 0)
        seen_in_document[document_id] = rank + 1
        given = chunk.metadata.get("position")
        position = _position(given) if given is not None else rank
        if position is None:
            raise InvalidArgument(f"chunks[{i}].metadata.position must be an integer, got {given!r}",
                                  reason="BAD_POSITION", metadata={"chunk_index": i})
        metadata = {**chunk.metadata, "document_id": document_id, "position": position, "chunk_id": chunk_id}
        records.append(ChunkRecord(chunk_id=chunk_id, document_id=document_id, position=position,
                                   content=chunk.content, metadata=metadata))
    return records


def given_embeddings(chunks: list[ChunkInput], db: VectorDBTarget) -> tuple[np.ndarray, list[int]]:
    """(matrix with the given embeddings filled in, indices of the chunks still to embed)."""
    matrix = np.zeros((len(chunks), db.dimension), dtype=np.float32)
    missing = []
    for i, chunk in enumerate(chunks):
        size = len(chunk.embedding)
        if size == 0:
            missing.append(i)
        elif size != db.dimension:
            raise InvalidArgument(
                f"chunks[{i}].embedding has {size} dimensions but vector DB '{db.identifier}' holds {db.dimension} "
                f"({db.embedding_model}); send {db.dimension}-dimensional embeddings or none (the service then "
                f"embeds the text)",
                reason="EMBEDDING_DIMENSION_MISMATCH",
                metadata={"chunk_index": i, "expected": db.dimension, "got": size})
        else:
            matrix[i] = chunk.embedding
    return matrix, missing


def _last_wins(records: list[ChunkRecord], matrix: np.ndarray) -> tuple[list[ChunkRecord], np.ndarray]:
    """Drop earlier chunks whose id repeats later in the same request (a store wants unique ids)."""
    last = {r.chunk_id: i for i, r in enumerate(records)}
    if len(last) == len(records):
        return records, matrix
    keep = sorted(last.values())
    return [records[i] for i in keep], matrix[keep]


class VectorIOCore:
    def __init__(self, router: VectorDBRouter, embedder: Embedder) -> None:
        self.router = router
        self.embedder = embedder

    async def insert(self, vector_db_id: str, chunks: list[ChunkInput], *, timeout: float | None = None,
                     metadata: Sequence[tuple[str, str]] = ()) -> list[str]:
        """Store ``chunks``; returns their chunk ids in request order."""
        records = prepare(chunks)
        provider, db = await self.router.route(vector_db_id)
        matrix, missing = given_embeddings(chunks, db)
        if missing:
            matrix[missing] = await self.embedder.embed(db, [chunks[i].content for i in missing], timeout, metadata)
        unique, vectors = _last_wins(records, matrix)
        await provider.insert(db, unique, vectors)
        return [r.chunk_id for r in records]

    async def query(self, vector_db_id: str, query: str, *, mode: str = SearchMode.VECTOR,
                    query_embedding: Sequence[float] = (), max_chunks: int = 0, score_threshold: float = 0.0,
                    timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()) -> list[ScoredChunk]:
        if max_chunks < 0 or max_chunks > MAX_CHUNKS_LIMIT:
            raise InvalidArgument(f"max_chunks must be between 1 and {MAX_CHUNKS_LIMIT} (0 means {DEFAULT_MAX_CHUNKS})",
                                  reason="BAD_MAX_CHUNKS")
        if mode in (SearchMode.KEYWORD, SearchMode.HYBRID) and not query.strip():
            raise InvalidArgument(f"{mode} search needs the query text", reason="QUERY_MISSING")
        if mode == SearchMode.VECTOR and not query.strip() and not query_embedding:
            raise InvalidArgument("vector search needs the query text or query_embedding", reason="QUERY_MISSING")
        provider, db = await self.router.route(vector_db_id)
        embedding = None
        if mode != SearchMode.KEYWORD:
            if query_embedding:
                if len(query_embedding) != db.dimension:
                    raise InvalidArgument(
                        f"query_embedding has {len(query_embedding)} dimensions but vector DB '{db.identifier}' "
                        f"holds {db.dimension} ({db.embedding_model})", reason="EMBEDDING_DIMENSION_MISMATCH",
                        metadata={"expected": db.dimension, "got": len(query_embedding)})
                embedding = np.asarray(query_embedding, dtype=np.float32)
            else:
                embedding = (await self.embedder.embed(db, [query], timeout, metadata))[0]
        return await provider.query(db, embedding, query, mode, max_chunks or DEFAULT_MAX_CHUNKS, score_threshold)
