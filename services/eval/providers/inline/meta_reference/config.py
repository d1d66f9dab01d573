"""Config of ``inline::meta-reference`` eval (Llama Stack keys: ``kvstore``, ``persistence``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.storage import KVSTORE_DESCRIPTION, PERSISTENCE_DESCRIPTION, StoreRef

__all__ = ["MetaReferenceEvalConfig"]


class MetaReferenceEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_dir: str | None = Field(default=None, description="Folder of the jobs database (SQLite); default: the "
                                 "folder kvstore/persistence point at, else eval/<provider_id>/ beside the registry "
                                 "database.")
    persistence: StoreRef | None = Field(default=None, description=PERSISTENCE_DESCRIPTION)
    kvstore: dict[str, Any] | None = Field(default=None, description=KVSTORE_DESCRIPTION)
    generation_concurrency: int = Field(default=4, ge=1, le=256, description="Rows generated at the same time "
                                        "within one job.")
    max_running_jobs: int = Field(default=2, ge=1, le=64, description="Jobs run at once; later ones wait "
                                  "SCHEDULED.")
    dataset_page_rows: int = Field(default=1000, ge=1, le=10000, description="Rows asked of datasetio per "
                                   "IterRows call (its limit is 10,000).")
    generation_timeout_seconds: float = Field(default=300.0, gt=0, description="Limit of one row's generation "
                                              "(ChatCompletion) call.")
    scoring_timeout_seconds: float = Field(default=600.0, gt=0, description="Limit of the Score call over all "
                                           "of a job's rows (an LLM judge may take long).")
    datasetio_timeout_seconds: float = Field(default=60.0, gt=0, description="Limit of one IterRows call.")
    unavailable_grace_seconds: float = Field(default=5.0, ge=0, description="How long a call to a service that "
                                             "is UNAVAILABLE is retried before the job fails naming it (rides "
                                             "out a rolling restart of a peer).")
    heartbeat_seconds: float = Field(default=2.0, gt=0, description="How often a replica renews its claim on "
                                     "the jobs it runs, and looks for orphaned ones to adopt.")
    lease_seconds: float = Field(default=20.0, gt=0, description="A claim not renewed for this long is "
                                 "orphaned (its replica died or hangs) and another replica adopts the job. "
                                 "A claim of a dead process on the same host is adopted at once.")
    max_attempts: int = Field(default=3, ge=1, description="A job whose replica crashed this many times while "
                              "running it is marked FAILED instead of resumed again (a job that kills its "
                              "service must not do so forever).")
