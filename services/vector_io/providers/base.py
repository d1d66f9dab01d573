"""The interface every vector_io provider implements, and the domain types it speaks.

A provider stores, per vector DB, chunks of text with one embedding each, and searches them by
vector (cosine similarity), by keyword (BM25) or both. Embedding is not its business: the service
hands it chunks that already carry embeddings (see ``services.vector_io.embedder``).

Hybrid search is written once, here: the provider's vector and keyword rankings are merged by
reciprocal-rank fusion (RRF, k = 60), which needs no score calibration between BM25 and cosine.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from typing import Any

import numpy as np

from services.common.config import StackConfig

__all__ = ["VectorDBTarget", "ChunkRecord", "ScoredChunk", "SearchMode", "VectorIOProvider",
           "reciprocal_rank_fusion", "RRF_K"]

RRF_K = 60  # the constant of Cormack et al. (2009); Llama Stack's default "impact factor" too
HYBRID_CANDIDATES = 4  # each ranking contributes this many times max_chunks candidates (at least 20)


class SearchMode:
    VECTOR = "vector"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


@dataclasses.dataclass(frozen=True)
class VectorDBTarget:
    """The vector DB a request resolved to (from its registry resource)."""

    identifier: str
    name: str  # the index's name in the provider: the resource's provider_resource_id
    embedding_model: str
    dimension: int
    # Identity of the registration (its create_time): an index built for an earlier registration of
    # the same name is stale and is rebuilt, never reused with the old chunks.
    token: str


@dataclasses.dataclass
class ChunkRecord:
    """A stored chunk. ``metadata`` already holds document_id, position and chunk_id."""

    chunk_id: str
    document_id: str
    position: int
    content: str
    metadata: dict[str, Any]


@dataclasses.dataclass
class ScoredChunk:
    chunk: ChunkRecord
    score: float


def reciprocal_rank_fusion(rankings: list[list[ScoredChunk]], limit: int, k: int = RRF_K) -> list[ScoredChunk]:
    """Merge rankings (each best first): score = sum over rankings of 1 / (k + rank), rank from 1."""
    scores: dict[str, float] = {}
    chunks: dict[str, ChunkRecord] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk.chunk_id] = scores.get(hit.chunk.chunk_id, 0.0) + 1.0 / (k + rank)
            chunks.setdefault(hit.chunk.chunk_id, hit.chunk)
    best = sorted(scores, key=lambda chunk_id: scores[chunk_id], reverse=True)[:limit]
    return [ScoredChunk(chunks[chunk_id], scores[chunk_id]) for chunk_id in best]


class VectorIOProvider(abc.ABC):
    """One configured provider instance inside the vector_io service.

    Index operations are idempotent: the service replays the registry's state into them after every
    (re)connection, so creating an index that exists, or deleting one that does not, is a no-op.
    """

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults

    # --- life cycle -------------------------------------------------------------------------
    def resolve_storage(self, stack: StackConfig) -> None:
        """Work out where local files go from the whole run config (``storage`` backends, the
        registry's folder); called once before ``initialize``."""

    async def initialize(self) -> None:
        """Open files; must not block on remote servers being reachable."""

    async def shutdown(self) -> None:
        """Flush and release files, connections and threads."""

    async def health(self) -> tuple[bool, str]:
        """(healthy, reason) — inline providers are healthy once initialized."""
        return True, ""

    # --- what ProviderSupervisor asks every provider (vector stores list no models) ----------
    refresh_models = False
    refresh_interval_seconds: float | None = None

    async def list_models(self) -> None:
        return None

    # --- indexes ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_index(self, db: VectorDBTarget) -> None:
        """Create the index for ``db``; keep an existing one with the same token and dimension,
        replace one with another (a stale index left by an earlier registration of the name)."""

    @abc.abstractmethod
    async def delete_index(self, name: str) -> None:
        """Drop the index called ``name`` and its chunks; no-op when there is none."""

    @abc.abstractmethod
    async def list_indexes(self) -> dict[str, str]:
        """name -> token of every index this provider instance created."""

    # --- data path --------------------------------------------------------------------------
    @abc.abstractmethod
    async def insert(self, db: VectorDBTarget, chunks: list[ChunkRecord], embeddings: np.ndarray) -> None:
        """Store ``chunks`` (unique chunk ids) with ``embeddings`` (float32, one row per chunk);
        a chunk id that exists is replaced."""

    @abc.abstractmethod
    async def query_vector(self, db: VectorDBTarget, embedding: np.ndarray, k: int) -> list[ScoredChunk]:
        """The ``k`` chunks closest to ``embedding``, best first; score = cosine similarity."""

    @abc.abstractmethod
    async def query_keyword(self, db: VectorDBTarget, text: str, k: int) -> list[ScoredChunk]:
        """The ``k`` best BM25 matches of ``text`` (any of its words), best first; score = BM25."""

    async def query(self, db: VectorDBTarget, embedding: np.ndarray | None, text: str, mode: str, k: int,
                    threshold: float) -> list[ScoredChunk]:
        """The ``k`` best chunks for ``mode`` scoring at least ``threshold``, best first."""
        if mode == SearchMode.VECTOR:
            hits = await self.query_vector(db, embedding, k)
        elif mode == SearchMode.KEYWORD:
            hits = await self.query_keyword(db, text, k)
        else:
            candidates = max(k * HYBRID_CANDIDATES, 20)
            vector, keyword = await asyncio.gather(self.query_vector(db, embedding, candidates),
                                                   self.query_keyword(db, text, candidates))
            hits = reciprocal_rank_fusion([vector, keyword], k)
        return [hit for hit in hits if hit.score >= threshold][:k]

