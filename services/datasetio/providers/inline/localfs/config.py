"""Config of ``inline::localfs`` (Llama Stack keys: ``kvstore``, ``persistence``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.storage import KVSTORE_DESCRIPTION, PERSISTENCE_DESCRIPTION, StoreRef

__all__ = ["LocalFSConfig"]


class LocalFSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_dir: str | None = Field(default=None, description="Folder for appended rows (one SQLite file); default: "
                                 "the folder kvstore/persistence point at, else datasetio/<provider_id>/ beside the "
                                 "registry database.")
    persistence: StoreRef | None = Field(default=None, description=PERSISTENCE_DESCRIPTION)
    kvstore: dict[str, Any] | None = Field(default=None, description=KVSTORE_DESCRIPTION)
    cache_max_rows: int = Field(default=1_000_000, ge=0, description="Rows of file datasets kept in memory "
                                "between pages, all files together (least recently used files are dropped first; "
                                "the file being read always stays). A file is re-read when it changes.")
