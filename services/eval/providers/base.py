"""The interface every eval provider implements, and the domain types it speaks.

An eval provider turns a benchmark (a dataset + scoring functions, resolved from the registry by
the service) and a candidate (a model + sampling) into a *job*: rows read from datasetio, one
generation per row from inference, scores from scoring. Jobs outlive the process that started
them, so everything here is plain data that can be written to a store and read back; the gRPC
types stay in ``services.eval.servicer``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, AsyncIterator

from services.common.config import StackConfig
from services.common.errors import NotFound

__all__ = ["JobState", "Candidate", "BenchmarkTarget", "RunSpec", "JobInfo", "JobResult", "EvalResult",
           "EvalProvider", "TERMINAL_STATES", "ACTIVE_STATES", "job_not_found"]


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
class Candidate:
    """The model a benchmark is run with. ``sampling`` and ``system_message`` are the JSON forms of
    ``inference.v1.SamplingParams`` / ``ChatMessage`` (so a job's config can be stored as JSON)."""

    model: str
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)
    system_message: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class BenchmarkTarget:
    """A benchmark as resolved from the registry when the job was started (a snapshot: a later
    re-registration does not change what a running or resumed job evaluates)."""

    benchmark_id: str
    dataset_id: str
    scoring_functions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything a job needs to run, resume or be rerun identically."""

    benchmark: BenchmarkTarget
    candidate: Candidate
    scoring_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    num_examples: int = 0  # 0: every row of the dataset

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": {"benchmark_id": self.benchmark.benchmark_id, "dataset_id": self.benchmark.dataset_id,
                              "scoring_functions": list(self.benchmark.scoring_functions)},
                "candidate": dataclasses.asdict(self.candidate), "scoring_params": self.scoring_params,
                "num_examples": self.num_examples}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSpec":
        b = data["benchmark"]
        return cls(benchmark=BenchmarkTarget(b["benchmark_id"], b["dataset_id"], tuple(b["scoring_functions"])),
                   candidate=Candidate(**data["candidate"]), scoring_params=data.get("scoring_params") or {},
                   num_examples=int(data.get("num_examples") or 0))


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """A job's state as a caller sees it. Times are Unix seconds (None: not reached yet)."""

    job_id: str
    benchmark_id: str
    state: str
    rows_done: int
    rows_total: int
    error: str
    model: str
    create_time: float
    start_time: float | None = None
    end_time: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def step(self) -> tuple[str, int, int, str]:
        """What a watcher sees change."""
        return self.state, self.rows_done, self.rows_total, self.error


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Generations (``{generated_answer}`` per row, in row order) and scores by function
    (``{score_rows: [...], aggregated_results: {...}}``, the JSON form of ``ScoringResult``)."""

    generations: list[dict[str, Any]]
    scores: dict[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class JobResult:
    job: JobInfo
    result: EvalResult


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"eval job '{job_id}' not found; list jobs with ListJobs (`stackmesh eval jobs`)",
                    reason="JOB_NOT_FOUND", metadata={"job_id": job_id})


class EvalProvider(abc.ABC):
    """One configured eval provider instance inside the eval service."""

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults

    # --- life cycle (what ProviderSupervisor calls) -----------------------------------------
    refresh_models = False
    refresh_interval_seconds: float | None = None

    def resolve_storage(self, stack: StackConfig) -> None:
        """Work out where local files go from the whole run config; called before ``initialize``."""

    def attach(self, downstream: Any) -> None:
        """Receive the client of the services a job calls (``services.eval.downstream.Downstream``)."""

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
    async def run_eval(self, spec: RunSpec) -> JobInfo:
        """Record a job SCHEDULED and start it in the background; returns at once."""

    @abc.abstractmethod
    async def evaluate_rows(self, spec: RunSpec, rows: list[dict[str, Any]],
                            timeout: float | None = None) -> EvalResult:
        """Generate and score ``rows`` now."""

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobInfo | None:
        """The job, or None when this provider has no such job."""

    @abc.abstractmethod
    def watch_job(self, job_id: str) -> AsyncIterator[JobInfo]:
        """The job now, then each change until it ends."""

    @abc.abstractmethod
    async def job_result(self, job_id: str) -> JobResult:
        """Generations and scores of a completed job (FailedPrecondition otherwise)."""

    @abc.abstractmethod
    async def cancel_job(self, job_id: str) -> JobInfo:
        """Stop the job if it is still running; a finished job is returned unchanged."""

    @abc.abstractmethod
    async def list_jobs(self, benchmark_id: str, after: str, limit: int) -> tuple[list[JobInfo], str]:
        """Jobs newest first, strictly after the cursor ``after``; returns (page, cursor of the last
        one when more follow, else "")."""
