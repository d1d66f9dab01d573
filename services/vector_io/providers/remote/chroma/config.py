"""Config of ``remote::chromadb`` (Llama Stack keys: ``url``, ``persistence``, ``kvstore``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.storage import StoreRef

__all__ = ["ChromaConfig"]


class ChromaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, description="Chroma server, e.g. http://127.0.0.1:8000 (`chroma run`); "
                            "the provider reports unhealthy while unset or unreachable.")
    tenant: str = Field(default="default_tenant", description="Chroma tenant.")
    database: str = Field(default="default_database", description="Chroma database.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="HTTP timeout of one call to Chroma.")
    keyword_candidates: int = Field(default=1000, ge=1, description="Keyword search ranks (BM25) at most this many "
                                    "chunks that contain a query word, fetched from Chroma per query.")
    persistence: StoreRef | None = Field(default=None, description="Accepted from Llama Stack configs and unused: "
                                         "Chroma itself stores the collections.")
    kvstore: dict[str, Any] | None = Field(default=None,
                                           description="Accepted from Llama Stack < 0.3 configs and unused.")
