"""The post-training job store: one SQLite file (WAL) per provider, shared by the replicas that
share the provider's folder.

Tables: ``jobs`` (state, progress, the resolved spec as JSON, the request as given, error, times,
result paths, and the claim: ``holder`` + ``heartbeat`` + ``attempts``), ``loss_points`` (one row
per logged step) and ``checkpoints`` (the saved states a restart resumes from).

A new job is SCHEDULED with no holder: the first idle replica claims it (compare-and-set on
holder and heartbeat; SQLite runs one writer at a time, so of two claims exactly one wins). Every
write that moves a job is conditional on the writer still holding it while active: a job
cancelled meanwhile, or adopted by another replica after this one stalled, is never written over,
and the writer learns it lost the job from the row count (None).

All methods block; the provider calls them on its one store thread.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
from typing import Any

from services.common.errors import AlreadyExists
from services.common.job_claims import ACTIVE, MINE, ClaimedJobsTable
from services.post_training.providers.base import CheckpointInfo, JobInfo, JobState, LossPoint, TrainingSpec

__all__ = ["JobStore", "Claimable", "output_model_reserved"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, state TEXT NOT NULL, model TEXT NOT NULL, output_model TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL, config TEXT NOT NULL DEFAULT '{}',
    step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0, epoch INTEGER NOT NULL DEFAULT 0,
    loss REAL NOT NULL DEFAULT 0, eta_seconds REAL NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    resumed INTEGER NOT NULL DEFAULT 0, create_time REAL NOT NULL, start_time REAL, end_time REAL,
    holder TEXT, heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0,
    base_path TEXT NOT NULL DEFAULT '', adapter_path TEXT NOT NULL DEFAULT '', merged_path TEXT NOT NULL DEFAULT '',
    registered_model TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (create_time DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
-- one active job per output model: two requests racing for one id cannot both train
CREATE UNIQUE INDEX IF NOT EXISTS jobs_active_output ON jobs (output_model)
    WHERE output_model != '' AND state IN ('scheduled', 'in_progress');
CREATE TABLE IF NOT EXISTS loss_points (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL, loss REAL NOT NULL, validation_loss REAL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL, path TEXT NOT NULL, create_time REAL NOT NULL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
"""
_COLUMNS = ("job_id, state, model, output_model, step, total_steps, epoch, loss, eta_seconds, error, resumed, "
            "create_time, start_time, end_time, config")
Claimable = tuple[str, str, "str | None", "float | None", int]  # job_id, state, holder, heartbeat, attempts


def output_model_reserved(output_model: str, job_id: str) -> str:
    return (f"output_model '{output_model}' will be registered by job '{job_id}', which is still running; "
            "choose another id")


class JobStore(ClaimedJobsTable):
    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # survives kill -9 of the process
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # --- reads ------------------------------------------------------------------------------
    def _curve(self, job_id: str) -> tuple[LossPoint, ...]:
        return tuple(LossPoint(*row) for row in self.conn.execute(
            "SELECT step, epoch, loss, validation_loss FROM loss_points WHERE job_id = ? ORDER BY step", (job_id,)))

    def _info(self, row: tuple[Any, ...]) -> JobInfo:
        return JobInfo(job_id=row[0], state=row[1], model=row[2], output_model=row[3], step=row[4],
                       total_steps=row[5], epoch=row[6], loss=row[7], loss_curve=self._curve(row[0]),
                       eta_seconds=row[8], error=row[9], resumed=row[10], create_time=row[11], start_time=row[12],
                       end_time=row[13], config=json.loads(row[14]))

    def get(self, job_id: str) -> JobInfo | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._info(row) if row else None

    def spec(self, job_id: str) -> TrainingSpec:
        (text,) = self.conn.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return TrainingSpec.from_json(json.loads(text))

    def results(self, job_id: str) -> dict[str, str]:
        row = self.conn.execute("SELECT base_path, adapter_path, merged_path, registered_model FROM jobs "
                                "WHERE job_id = ?", (job_id,)).fetchone()
        return dict(zip(("base_path", "adapter_path", "merged_path", "registered_model"), row or ("",) * 4))

    def checkpoints(self, job_id: str) -> list[CheckpointInfo]:
        return [CheckpointInfo(f"{job_id}/step-{step}", epoch, step, path, created) for step, epoch, path, created
                in self.conn.execute("SELECT step, epoch, path, create_time FROM checkpoints WHERE job_id = ? "
                                     "ORDER BY step", (job_id,))]

    def page(self, after: tuple[float, str] | None, limit: int) -> list[JobInfo]:
        return [self._info(r) for r in self._newest_first(_COLUMNS, after, limit)]

    def queued(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'scheduled'").fetchone()[0]

    def active_with_output(self, output_model: str) -> str | None:
        row = self.conn.execute(f"SELECT job_id FROM jobs WHERE output_model = ? AND {ACTIVE}",
                                (output_model,)).fetchone()
        return row[0] if row else None

    def claimable(self) -> list[Claimable]:
        """Active jobs, those already started first (a resumed job goes before new ones), then oldest first."""
        return list(self.conn.execute(f"SELECT job_id, state, holder, heartbeat, attempts FROM jobs WHERE {ACTIVE} "
                                      f"ORDER BY state = 'scheduled', create_time"))

    # --- writes -----------------------------------------------------------------------------
    def create(self, job_id: str, spec: TrainingSpec, total_steps: int, base_path: str, now: float) -> JobInfo:
        try:
            self._write("INSERT INTO jobs (job_id, state, model, output_model, spec, config, total_steps, create_time, "
                        "base_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (job_id, JobState.SCHEDULED, spec.model, spec.output_model, json.dumps(spec.to_json()),
                         json.dumps(spec.config), total_steps, now, base_path))
        except sqlite3.IntegrityError as err:
            if "output_model" in str(err):
                other = self.active_with_output(spec.output_model) or "another job"
                raise AlreadyExists(output_model_reserved(spec.output_model, other), reason="OUTPUT_MODEL_RESERVED",
                                    metadata={"output_model": spec.output_model, "job_id": other}) from None
            raise AlreadyExists(f"job_id '{job_id}' is already used by a job; pick a new id", reason="JOB_EXISTS",
                                metadata={"job_id": job_id}) from None
        info = self.get(job_id)
        assert info is not None
        return info

    def claim(self, job: Claimable, holder: str, now: float) -> bool:
        job_id, _, old_holder, old_heartbeat, _ = job
        return self._claim(job_id, old_holder, old_heartbeat, holder, now)

    def start(self, job_id: str, holder: str, now: float, resumed: bool) -> JobInfo | None:
        changed = self._write(f"UPDATE jobs SET state = 'in_progress', start_time = COALESCE(start_time, ?), "
                              f"resumed = resumed + ?, error = '', heartbeat = ? WHERE {MINE}",
                              (now, int(resumed), now, job_id, holder))
        return self.get(job_id) if changed else None

    def update(self, job_id: str, holder: str, **fields: Any) -> JobInfo | None:
        """Set progress columns (step, total_steps, epoch, loss, eta_seconds, base/adapter/merged paths)."""
        names = ", ".join(f"{k} = ?" for k in fields)
        return self.get(job_id) if self._write(f"UPDATE jobs SET {names} WHERE {MINE}",
                                               (*fields.values(), job_id, holder)) else None

    def log_step(self, job_id: str, holder: str, point: LossPoint, total_steps: int, eta: float) -> JobInfo | None:
        return self._as_holder(
            job_id, holder,
            ("UPDATE jobs SET step = ?, epoch = ?, loss = ?, total_steps = ?, eta_seconds = ? WHERE job_id = ?",
             (point.step, point.epoch, point.loss, total_steps, eta, job_id)),
            ("INSERT OR REPLACE INTO loss_points (job_id, step, epoch, loss) VALUES (?, ?, ?, ?)",
             (job_id, point.step, point.epoch, point.loss)))

    def log_validation(self, job_id: str, holder: str, step: int, epoch: int, loss: float) -> JobInfo | None:
        return self._as_holder(job_id, holder, (
            "INSERT INTO loss_points (job_id, step, epoch, loss, validation_loss) VALUES (?, ?, ?, 0, ?) "
            "ON CONFLICT (job_id, step) DO UPDATE SET validation_loss = excluded.validation_loss",
            (job_id, step, epoch, loss)))

    def rewind(self, job_id: str, holder: str, step: int) -> JobInfo | None:
        """The worker continues from ``step``: later loss points will be logged again."""
        return self._as_holder(job_id, holder,
                               ("UPDATE jobs SET step = ? WHERE job_id = ?", (step, job_id)),
                               ("DELETE FROM loss_points WHERE job_id = ? AND step > ?", (job_id, step)),
                               ("DELETE FROM checkpoints WHERE job_id = ? AND step > ?", (job_id, step)))

    def add_checkpoint(self, job_id: str, holder: str, checkpoint: CheckpointInfo,
                       removed: list[str]) -> JobInfo | None:
        return self._as_holder(
            job_id, holder,
            ("INSERT OR REPLACE INTO checkpoints (job_id, step, epoch, path, create_time) VALUES (?, ?, ?, ?, ?)",
             (job_id, checkpoint.step, checkpoint.epoch, checkpoint.path, checkpoint.create_time)),
            *(("DELETE FROM checkpoints WHERE job_id = ? AND path = ?", (job_id, path)) for path in removed))

    def finish(self, job_id: str, holder: str, state: str, now: float, *, error: str = "",
               registered_model: str = "") -> JobInfo | None:
        """Active -> ``state`` (terminal) if ``holder`` still holds it."""
        changed = self._write(f"UPDATE jobs SET state = ?, error = ?, end_time = ?, registered_model = ?, "
                              f"eta_seconds = 0, holder = NULL, heartbeat = NULL WHERE {MINE}",
                              (state, error, now, registered_model, job_id, holder))
        return self.get(job_id) if changed else None

    def cancel(self, job_id: str, reason: str, now: float) -> JobInfo | None:
        """Active -> CANCELLED whoever holds it; returns the job as it is afterwards."""
        self._write(f"UPDATE jobs SET state = 'cancelled', error = ?, end_time = ?, eta_seconds = 0, holder = NULL, "
                    f"heartbeat = NULL WHERE job_id = ? AND {ACTIVE}", (reason, now, job_id))
        return self.get(job_id)

    def clear_artifacts(self, job_id: str) -> None:
        self._write("UPDATE jobs SET adapter_path = '', merged_path = '' WHERE job_id = ?", (job_id,))
        self._write("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))
