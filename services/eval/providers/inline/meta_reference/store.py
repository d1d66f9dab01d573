"""The eval job store: one SQLite file (WAL) per provider, shared by every eval replica on a machine.

Two tables: ``jobs`` (one row per job: state, progress, the run spec as JSON, error, times, final
scores, phase timings, and the claim: ``holder`` + ``heartbeat``) and ``job_rows`` (one row per
generated dataset row, written as each generation completes, so a restarted job resumes where it
stopped). Every write that moves a job is conditional on the writer still holding an active job
(``holder = ? AND state IN (scheduled, in_progress)``): a job cancelled meanwhile, or adopted by
another replica after this one stalled, is never written over, and the writer learns that it lost
it from the row count. Claims are compare-and-set on (holder, heartbeat) — SQLite runs one writer
at a time, so of two replicas claiming one orphaned job exactly one wins.

Durability: WAL with ``synchronous=NORMAL``: a committed write survives ``kill -9`` of the process
(what restarts are about); a power cut may lose the last few row writes, which a resume regenerates.
All methods are blocking; the provider calls them on its one store thread.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
from typing import Any

from services.common.job_claims import ACTIVE, MINE, ClaimedJobsTable
from services.eval.providers.base import JobInfo, JobState, RunSpec

__all__ = ["JobStore", "Claimable"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    benchmark_id TEXT NOT NULL,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    rows_done INTEGER NOT NULL DEFAULT 0,
    rows_total INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    create_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    holder TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    scores TEXT,
    timings TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (create_time DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS job_rows (
    job_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    scoring_row TEXT NOT NULL,
    PRIMARY KEY (job_id, row_index)
) WITHOUT ROWID;
"""
_COLUMNS = "job_id, benchmark_id, state, rows_done, rows_total, error, model, create_time, start_time, end_time"
Claimable = tuple[str, "str | None", "float | None", int]  # job_id, holder, heartbeat, attempts


def _info(row: tuple[Any, ...]) -> JobInfo:
    return JobInfo(*row)


class JobStore(ClaimedJobsTable):
    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # --- reads ------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobInfo | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _info(row) if row else None

    def spec(self, job_id: str) -> RunSpec:
        (text,) = self.conn.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return RunSpec.from_json(json.loads(text))

    def done_rows(self, job_id: str) -> dict[int, dict[str, Any]]:
        """row index -> scoring row ({input_query, expected_answer, generated_answer}) generated so far."""
        cur = self.conn.execute("SELECT row_index, scoring_row FROM job_rows WHERE job_id = ? ORDER BY row_index",
                                (job_id,))
        return {index: json.loads(text) for index, text in cur}

    def scores(self, job_id: str) -> dict[str, dict[str, Any]]:
        row = self.conn.execute("SELECT scores FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def timings(self, job_id: str) -> dict[str, float]:
        row = self.conn.execute("SELECT timings FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def page(self, benchmark_id: str, after: tuple[float, str] | None, limit: int) -> list[JobInfo]:
        filters = {"benchmark_id": benchmark_id} if benchmark_id else None
        return [_info(r) for r in self._newest_first(_COLUMNS, after, limit, filters)]

    def active(self) -> list[Claimable]:
        """Every SCHEDULED / IN_PROGRESS job, oldest first, with what a compare-and-set claim needs."""
        return list(self.conn.execute(
            f"SELECT job_id, holder, heartbeat, attempts FROM jobs WHERE {ACTIVE} ORDER BY create_time"))

    # --- writes -----------------------------------------------------------------------------
    def create(self, job_id: str, spec: RunSpec, holder: str, now: float) -> JobInfo:
        self._write("INSERT INTO jobs (job_id, benchmark_id, model, state, spec, create_time, holder, heartbeat, "
                    "attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (job_id, spec.benchmark.benchmark_id, spec.candidate.model, JobState.SCHEDULED,
                     json.dumps(spec.to_json()), now, holder, now))
        info = self.get(job_id)
        assert info is not None
        return info

    def claim(self, job: Claimable, holder: str, now: float) -> bool:
        job_id, old_holder, old_heartbeat, _ = job
        return self._claim(job_id, old_holder, old_heartbeat, holder, now)

    def start(self, job_id: str, holder: str, rows_total: int, now: float) -> JobInfo | None:
        """SCHEDULED -> IN_PROGRESS (or a resumed IN_PROGRESS job), with its row count."""
        changed = self._write(f"UPDATE jobs SET state = ?, rows_total = ?, start_time = COALESCE(start_time, ?), "
                              f"heartbeat = ? WHERE {MINE}",
                              (JobState.IN_PROGRESS, rows_total, now, now, job_id, holder))
        return self.get(job_id) if changed else None

    def add_rows(self, job_id: str, holder: str, rows: list[tuple[int, dict[str, Any]]]) -> JobInfo | None:
        """Record finished generations and the progress in one transaction; None when the job is no
        longer this holder's active job (cancelled, or adopted elsewhere): nothing is written then."""

        def record() -> None:
            added = sum(self._write("INSERT OR IGNORE INTO job_rows (job_id, row_index, scoring_row) VALUES (?, ?, ?)",
                                    (job_id, index, json.dumps(row))) for index, row in rows)
            self._write("UPDATE jobs SET rows_done = rows_done + ? WHERE job_id = ?", (added, job_id))

        return self._as_holder(job_id, holder, body=record)

    def finish(self, job_id: str, holder: str, state: str, now: float, *, error: str = "",
               scores: dict[str, Any] | None = None, timings: dict[str, float] | None = None) -> JobInfo | None:
        """Active -> ``state`` (terminal) if ``holder`` still holds it."""
        changed = self._write(
            f"UPDATE jobs SET state = ?, error = ?, end_time = ?, scores = ?, timings = ?, holder = NULL, "
            f"heartbeat = NULL WHERE {MINE}",
            (state, error, now, json.dumps(scores) if scores is not None else None,
             json.dumps(timings) if timings is not None else None, job_id, holder))
        return self.get(job_id) if changed else None

    def fail_claimed(self, job_id: str, holder: str, error: str, now: float) -> JobInfo | None:
        return self.finish(job_id, holder, JobState.FAILED, now, error=error)

    def cancel(self, job_id: str, reason: str, now: float) -> JobInfo | None:
        """Active -> CANCELLED whoever holds it; returns the job as it is afterwards."""
        self._write(f"UPDATE jobs SET state = ?, error = ?, end_time = ?, holder = NULL, heartbeat = NULL "
                    f"WHERE job_id = ? AND {ACTIVE}", (JobState.CANCELLED, reason, now, job_id))
        return self.get(job_id)
