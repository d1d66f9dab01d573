"""Config of ``inline::sqlite-vec`` (Llama Stack keys: ``db_path``, ``persistence``, ``kvstore``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.storage import KVSTORE_DESCRIPTION, PERSISTENCE_DESCRIPTION, StoreRef

__all__ = ["SQLiteVecConfig"]


class SQLiteVecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db_path: str | None = Field(default=None, description="The SQLite file (WAL) holding every vector DB of this "
                                "provider; default: sqlite_vec.db in the folder persistence/kvstore point at, else "
                                "vector_io/<provider_id>/ beside the registry database.")
    persistence: StoreRef | None = Field(default=None, description=PERSISTENCE_DESCRIPTION)
    kvstore: dict[str, Any] | None = Field(default=None, description=KVSTORE_DESCRIPTION)
