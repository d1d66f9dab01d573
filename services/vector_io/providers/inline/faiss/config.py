"""Config of ``inline::faiss`` (Llama Stack keys: ``persistence``, ``kvstore``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.storage import KVSTORE_DESCRIPTION, PERSISTENCE_DESCRIPTION, StoreRef

__all__ = ["FaissConfig"]


class FaissConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_dir: str | None = Field(default=None, description="Folder for the chunk database (faiss.db) and one "
                                 "index_<n>.faiss file per vector DB (stackmesh key); default: the folder "
                                 "persistence/kvstore point at, else vector_io/<provider_id>/ beside the registry "
                                 "database.")
    persistence: StoreRef | None = Field(default=None, description=PERSISTENCE_DESCRIPTION)
    kvstore: dict[str, Any] | None = Field(default=None, description=KVSTORE_DESCRIPTION)
    flush_delay_seconds: float = Field(default=2.0, ge=0, description="Index files are rewritten this long after "
                                       "an insert (and at shutdown); chunks are durable in faiss.db at once and "
                                       "an index file older than them is rebuilt from it on start.")
    omp_threads: int | None = Field(default=1, ge=1, description="OpenMP threads of this provider's FAISS calls. "
                                    "1 suits serving one query at a time: measured here, an idle-then-woken 2-thread pool "
                                    "made a 10k-vector search take ~22 ms instead of ~0.8 ms. null keeps FAISS's "
                                    "default (one per core), for large batch searches.")
