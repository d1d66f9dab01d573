"""``inline::meta-reference`` eval: benchmarks as persisted, resumable, cancellable jobs.

A job is recorded SCHEDULED and claimed by the replica that accepted it; it runs in a background
task once one of ``max_running_jobs`` slots frees (``runner.JobRun``). A maintenance loop renews
this replica's claims every ``heartbeat_seconds`` and adopts orphaned jobs (``claims``).

Restarts resume: a job found SCHEDULED or IN_PROGRESS whose holder is gone is claimed and run again
from the rows already generated (they are in the store); only a job that crashed its replica
``max_attempts`` times is marked FAILED, with that reason. A job is never lost and never left
running without a live holder.

Cancel writes CANCELLED to the store first (whichever replica holds the job) and then stops the
local task at once; a replica running a job cancelled elsewhere notices at its next row write or
heartbeat, whichever comes first. Watchers get every local step pushed, and poll the store for
steps made by other replicas.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import pathlib
import time
import uuid
from typing import Any, AsyncIterator

from services.common.config import StackConfig
from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.storage import data_dir
from services.eval.downstream import Downstream, Timeouts
from services.eval.providers.base import (TERMINAL_STATES, EvalProvider, EvalResult, JobInfo, JobResult, JobState,
                                          RunSpec, job_not_found)
from services.common import job_claims as claims
from services.common.job_watch import JobWatchers
from services.common.paging import decode_time_cursor, newest_first_page
from services.eval.providers.inline.meta_reference.config import MetaReferenceEvalConfig
from services.eval.providers.inline.meta_reference.runner import JobRun, generate_row
from services.eval.providers.inline.meta_reference.store import JobStore

__all__ = ["MetaReferenceEvalProvider"]

log = logging.getLogger("stackmesh.eval")
_RANK = {JobState.SCHEDULED: 0, JobState.IN_PROGRESS: 1}


def _order(info: JobInfo) -> tuple[int, int]:
    return _RANK.get(info.state, 2), info.rows_done


class MetaReferenceEvalProvider(EvalProvider):
    config: MetaReferenceEvalConfig

    def __init__(self, provider_id: str, config: MetaReferenceEvalConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self.path: pathlib.Path | None = None
        self.holder = claims.holder_id()
        self.downstream: Downstream | None = None
        self._store: JobStore | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(config.max_running_jobs)
        self._mine: set[str] = set()  # jobs this replica holds (queued or running)
        self._attempt_errors: dict[str, str] = {}  # job -> why its last attempt here could not even be recorded
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._watchers: JobWatchers[JobInfo] = JobWatchers()
        self._maintainer: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------
    def resolve_storage(self, stack: StackConfig) -> None:
        folder = (pathlib.Path(self.config.data_dir).expanduser() if self.config.data_dir else
                  data_dir(stack, self.provider_id, api="eval", persistence=self.config.persistence,
                           kvstore=self.config.kvstore))
        self.path = folder / "eval_jobs.db"

    def attach(self, downstream: Downstream) -> None:
        c = self.config
        downstream.timeouts = Timeouts(datasetio=c.datasetio_timeout_seconds, generation=c.generation_timeout_seconds,
                                       scoring=c.scoring_timeout_seconds, unavailable_grace=c.unavailable_grace_seconds)
        self.downstream = downstream

    async def initialize(self) -> None:
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"eval-store-{self.provider_id}")
        path = self.path or pathlib.Path("eval_jobs.db")
        self._store = await asyncio.get_running_loop().run_in_executor(self._thread, JobStore, path)
        self._maintainer = asyncio.create_task(self._maintain(), name=f"eval-jobs-{self.provider_id}")

    async def shutdown(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._store is not None:
            released = await self._db("release", self.holder)
            if released:  # graceful stop: hand the jobs over now instead of after the lease
                log.info("released eval jobs for adoption jobs=%s", ",".join(released))
            await self._db("close")
            self._store = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        claims.retire(self.holder)

    async def health(self) -> tuple[bool, str]:
        return (True, "") if self._store is not None else (False, f"job store {self.path} is not open")

    async def _db(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._store is None or self._thread is None:
            raise Unavailable(f"eval provider '{self.provider_id}' is not open", reason="PROVIDER_NOT_READY")
        store = self._store
        call = getattr(store, method)
        return await asyncio.get_running_loop().run_in_executor(self._thread, lambda: call(*args, **kwargs))

    # --- running jobs -----------------------------------------------------------------------
    def _publish(self, info: JobInfo) -> None:
        self._watchers.publish(info)

    def _launch(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        self._mine.add(job_id)
        task = asyncio.create_task(self._run(job_id), name=f"eval-job-{job_id}")
        self._tasks[job_id] = task

        def forget(_: asyncio.Task[Any]) -> None:
            if self._tasks.get(job_id) is task:
                del self._tasks[job_id]
                self._mine.discard(job_id)

        task.add_done_callback(forget)

    async def _run(self, job_id: str) -> None:
        assert self.downstream is not None, "attach() the downstream client before running jobs"
        async with self._slots:
            run = JobRun(job_id, self.holder, self._db, self.downstream, self._publish,
                         self.config.generation_concurrency, self.config.dataset_page_rows)
            try:
                await run.run()
            except Exception as err:  # noqa: BLE001 - not even FAILED could be written (store down)
                # The claim lapses (this job is no longer heartbeated) and the next maintenance round
                # adopts it again, counting an attempt: it ends resumed or FAILED, never stuck.
                log.exception("eval job could not be recorded; it will be retried job=%s", job_id)
                self._attempt_errors[job_id] = f"{type(err).__name__}: {err}"
            else:
                self._attempt_errors.pop(job_id, None)

    async def _maintain(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a busy or broken store this round; try again next round
                log.exception("eval job maintenance failed; retrying")
            await asyncio.sleep(self.config.heartbeat_seconds)

    async def _tick(self) -> None:
        """Renew claims, stop jobs lost to a cancel or another replica, adopt orphaned jobs."""
        running = set(self._tasks)
        held = await self._db("heartbeat", self.holder, sorted(self._mine), time.time())
        for job_id in running - held:
            task = self._tasks.get(job_id)
            if task is not None and not task.done():
                info = await self._db("get", job_id)
                if info is not None:
                    self._publish(info)
                log.info("eval job no longer held here; stopping it job=%s state=%s", job_id, info and info.state)
                task.cancel()
        now = time.time()
        for job in await self._db("active"):
            job_id, holder, heartbeat, attempts = job
            if job_id in self._mine or not claims.orphaned(holder, heartbeat, now, self.config.lease_seconds,
                                                          self.holder):
                continue
            if not await self._db("claim", job, self.holder, now):
                continue  # another replica was quicker
            if attempts + 1 > self.config.max_attempts:
                reason = (f"the eval service stopped while running this job {attempts} times (last holder "
                          f"{holder}); not resuming it again (max_attempts)")
                if job_id in self._attempt_errors:  # it was not a crash but an error here: name it
                    reason = (f"eval job attempted {attempts} times; the last attempt failed with "
                              f"{self._attempt_errors.pop(job_id)}; not resuming it again (max_attempts)")
                info = await self._db("fail_claimed", job_id, self.holder, reason, now)
                if info is not None:
                    self._publish(info)
                continue
            log.info("adopting eval job job=%s previous_holder=%s attempt=%d", job_id, holder, attempts + 1)
            self._launch(job_id)

    # --- the API ----------------------------------------------------------------------------
    async def run_eval(self, spec: RunSpec) -> JobInfo:
        job_id = uuid.uuid4().hex
        self._mine.add(job_id)
        try:
            info = await self._db("create", job_id, spec, self.holder, time.time())
        except BaseException:
            self._mine.discard(job_id)
            raise
        self._launch(job_id)
        log.info("eval job scheduled job=%s benchmark=%s model=%s", job_id, spec.benchmark.benchmark_id,
                 spec.candidate.model)
        return info

    async def evaluate_rows(self, spec: RunSpec, rows: list[dict[str, Any]],
                            timeout: float | None = None) -> EvalResult:
        assert self.downstream is not None
        if not rows:
            raise InvalidArgument("input_rows must hold at least one row", reason="ROWS_MISSING")
        deadline = None if timeout is None else time.monotonic() + timeout
        gate = asyncio.Semaphore(self.config.generation_concurrency)

        def left() -> float | None:
            return None if deadline is None else max(deadline - time.monotonic(), 0.001)

        async def one(index: int, row: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                return await generate_row(self.downstream, spec.candidate, row, index, timeout=left())

        tasks = [asyncio.ensure_future(one(i, row)) for i, row in enumerate(rows)]
        try:
            scored = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one row failed: the caller has its answer, stop generating the others
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        scores = await self.downstream.score(scored, list(spec.benchmark.scoring_functions), spec.scoring_params,
                                             timeout=left())
        return EvalResult([{"generated_answer": r["generated_answer"]} for r in scored], scores)

    async def get_job(self, job_id: str) -> JobInfo | None:
        return await self._db("get", job_id)

    def watch_job(self, job_id: str) -> AsyncIterator[JobInfo]:
        return self._watchers.follow(job_id, lambda: self._db("get", job_id),
                                     advanced=lambda last, new: (new.step() != last.step()
                                                                 and _order(new) >= _order(last)),
                                     not_found=lambda: job_not_found(job_id),
                                     poll_seconds=min(1.0, self.config.heartbeat_seconds))

    async def job_result(self, job_id: str) -> JobResult:
        info = await self._db("get", job_id)
        if info is None:
            raise job_not_found(job_id)
        if info.state != JobState.COMPLETED:
            why = f" ({info.error})" if info.error else ""
            raise FailedPrecondition(f"eval job '{job_id}' is {info.state.upper()}{why}; results exist once it is "
                                     f"COMPLETED (follow it with WatchJob or `stackmesh eval status --follow`)",
                                     reason="JOB_NOT_COMPLETED",
                                     metadata={"job_id": job_id, "state": info.state})
        rows = await self._db("done_rows", job_id)
        generations = [{"generated_answer": rows[i]["generated_answer"]} for i in sorted(rows)][:info.rows_total]
        return JobResult(info, EvalResult(generations, await self._db("scores", job_id)))

    async def cancel_job(self, job_id: str) -> JobInfo:
        info = await self._db("get", job_id)
        if info is None:
            raise job_not_found(job_id)
        if info.state in TERMINAL_STATES:
            return info
        info = await self._db("cancel", job_id, "cancelled by request", time.time())
        self._publish(info)
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        log.info("eval job cancelled job=%s rows=%d/%d", job_id, info.rows_done, info.rows_total)
        return info

    async def list_jobs(self, benchmark_id: str, after: str, limit: int) -> tuple[list[JobInfo], str]:
        return newest_first_page(await self._db("page", benchmark_id, decode_time_cursor(after), limit + 1), limit)
