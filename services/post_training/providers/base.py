"""The interface every post_training provider implements, and the domain types it speaks.

A fine-tuning request is checked and resolved by the service (the base model's weights, the
datasets, where the result will be served) into a ``TrainingSpec``: plain data, written to the
provider's store as JSON, so a job restarted after a crash trains exactly what was asked, even if
the registry changed meanwhile. The gRPC types stay in ``services.post_training.servicer``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, AsyncIterator

from services.common.config import StackConfig

from services.common.errors import NotFound

__all__ = ["JobState", "ACTIVE_STATES", "TERMINAL_STATES", "BaseSource", "TrainingSpec", "LossPoint",
           "CheckpointInfo", "JobInfo", "Artifacts", "PostTrainingProvider", "job_not_found"]


class JobState:
    """Where a job is in its life (stored as these strings)."""

    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = (JobState.SCHEDULED, JobState.IN_PROGRESS)
TERMINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclasses.dataclass(frozen=True)
class BaseSource:
    """Where a base model's weights are: a GGUF file (``kind`` "gguf", converted once to
    transformers files) or a transformers folder (``kind`` "transformers"). ``size`` and ``mtime``
    of a GGUF are part of the converted copy's key: a replaced file is converted again."""

    model_id: str
    provider_id: str
    kind: str
    path: str
    size: int = 0
    mtime: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """A fine-tuning job, defaults applied and names resolved: everything needed to run, resume
    or rerun it identically. ``algorithm`` is "lora" or "full"; ``config`` is the request as the
    caller gave it (shown back in ``Job.config``)."""

    model: str
    base: BaseSource
    dataset_id: str
    algorithm: str
    n_epochs: int = 1
    max_steps_per_epoch: int = 0
    gradient_accumulation_steps: int = 1
    batch_size: int = 4
    shuffle: bool = True
    max_seq_len: int = 256
    validation_dataset_id: str = ""
    lr: float = 1e-4
    weight_decay: float = 0.0
    num_warmup_steps: int = 0
    checkpoint_every_steps: int = 0
    seed: int = 0
    lora_rank: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lora_dropout: float = 0.0
    merge_output: bool = False
    output_model: str = ""
    inference_provider_id: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def lora(self) -> bool:
        return self.algorithm == "lora"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainingSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["base"] = BaseSource(**values["base"])
        values["target_modules"] = tuple(values.get("target_modules") or ())
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class LossPoint:
    step: int
    epoch: int
    loss: float
    validation_loss: float | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    identifier: str
    epoch: int
    step: int
    path: str
    create_time: float


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """A job as a caller sees it. Times are Unix seconds (None: not reached yet); ``epoch`` is
    1-based (0 before training starts)."""

    job_id: str
    state: str
    model: str
    output_model: str
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float = 0.0
    loss_curve: tuple[LossPoint, ...] = ()
    eta_seconds: float = 0.0
    error: str = ""
    resumed: int = 0
    create_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def progress(self) -> tuple[Any, ...]:
        """What a watcher sees change."""
        return self.state, self.step, self.total_steps, self.epoch, len(self.loss_curve), self.error, self.resumed


@dataclasses.dataclass(frozen=True)
class Artifacts:
    job_id: str
    checkpoints: tuple[CheckpointInfo, ...] = ()
    adapter_path: str = ""
    merged_path: str = ""
    base_path: str = ""
    registered_model: str = ""


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"post-training job '{job_id}' not found; list jobs with ListJobs "
                    f"(`stackmesh post-training jobs list`)", reason="JOB_NOT_FOUND", metadata={"job_id": job_id})


class PostTrainingProvider(abc.ABC):
    """One configured post_training provider instance inside the post_training service."""

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults

    # --- life cycle (what ProviderSupervisor calls) -----------------------------------------
    refresh_models = False
    refresh_interval_seconds: float | None = None

    def bind(self, stack: StackConfig, mesh: Any, cache: Any) -> None:
        """Receive the run config (storage), the mesh client and the registry cache; called
        before ``initialize``."""

    async def initialize(self) -> None:
        """Open the store and pick up unfinished jobs; must not wait for other services."""

    async def shutdown(self) -> None:
        """Stop running jobs (they stay resumable) and release files."""

    async def health(self) -> tuple[bool, str]:
        return True, ""

    async def list_models(self) -> None:
        return None

    # --- jobs -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def check(self, spec: TrainingSpec, rows: int) -> None:
        """Refuse a request this provider cannot run (limits, memory) before anything is queued;
        ``rows`` is the training dataset's row count."""

    @abc.abstractmethod
    async def submit(self, spec: TrainingSpec, job_id: str, rows: int) -> JobInfo:
        """Record the job SCHEDULED (``job_id`` empty: a new id) and queue it; returns at once."""

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobInfo | None:
        """The job, or None when this provider has no such job."""

    @abc.abstractmethod
    def watch_job(self, job_id: str) -> AsyncIterator[JobInfo]:
        """The job now, then each change until it ends."""

    @abc.abstractmethod
    async def cancel_job(self, job_id: str) -> JobInfo:
        """Stop the job if it is still active; a finished job is returned unchanged."""

    @abc.abstractmethod
    async def list_jobs(self, after: str, limit: int) -> tuple[list[JobInfo], str]:
        """Jobs newest first, strictly after the cursor ``after``; (page, cursor or "")."""

    @abc.abstractmethod
    async def artifacts(self, job_id: str) -> Artifacts:
        """What the job produced so far."""

    @abc.abstractmethod
    async def delete_artifacts(self, job_id: str, served_by: list[str]) -> int:
        """Delete a finished job's files; ``served_by`` are registered models made from them
        (FailedPrecondition when any). Returns the bytes freed."""
