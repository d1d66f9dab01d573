"""The vector_io providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

_P = "services.vector_io.providers"

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::sqlite-vec": ProviderSpec(
        provider_type="inline::sqlite-vec", api="vector_io",
        config_class=f"{_P}.inline.sqlite_vec.config:SQLiteVecConfig",
        impl=f"{_P}.inline.sqlite_vec.provider:SQLiteVecProvider",
        description="The embedded default: one SQLite file (WAL), sqlite-vec exact KNN + FTS5 BM25 per vector DB."),
    "inline::faiss": ProviderSpec(
        provider_type="inline::faiss", api="vector_io",
        config_class=f"{_P}.inline.faiss.config:FaissConfig",
        impl=f"{_P}.inline.faiss.provider:FaissProvider",
        description="In-process FAISS IndexFlatIP (cosine) per vector DB, persisted to disk; BM25 keyword search."),
    "remote::chromadb": ProviderSpec(
        provider_type="remote::chromadb", api="vector_io",
        config_class=f"{_P}.remote.chroma.config:ChromaConfig",
        impl=f"{_P}.remote.chroma.adapter:ChromaAdapter",
        description="Collections on a Chroma server (`chroma run`); stackmesh always sends the embeddings."),
}
