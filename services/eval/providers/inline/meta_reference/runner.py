"""Running one eval job: rows from datasetio, generations in parallel, scores at the end.

The dataset is read a page at a time while rows are generated (a bounded queue between the page
reader and ``generation_concurrency`` workers), so reading overlaps generation and memory stays
bounded. Each finished generation is written to the store at once with the job's progress; rows
already in the store (a resumed job) are not generated again. Scoring runs once, over every row
in dataset order, because aggregations such as accuracy are over the whole set.

Where the time went is recorded per phase (``timings`` in the store; bench/eval_throughput.py
reads it): datasetio, generation (sum of call latencies and wall), scoring, store writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from services.common.errors import FailedPrecondition, StackmeshError
from services.eval.downstream import Downstream
from services.eval.providers.base import Candidate, JobInfo, JobState, RunSpec
from services.eval.rows import chat_messages, scoring_row

__all__ = ["JobRun", "JobLost", "generate_row", "StoreCall"]

log = logging.getLogger("stackmesh.eval.jobs")
StoreCall = Callable[..., Awaitable[Any]]  # runs a JobStore method on the store thread
_DONE = object()


class JobLost(Exception):
    """The store no longer lets this replica write the job: it was cancelled or adopted elsewhere."""


async def generate_row(downstream: Downstream, candidate: Candidate, row: dict[str, Any], index: int,
                       timeout: float | None = None) -> dict[str, Any]:
    """The scoring row for dataset row ``index``: {input_query, expected_answer, generated_answer}."""
    answer = await downstream.generate(candidate, chat_messages(candidate, row, index), timeout=timeout)
    return scoring_row(row, answer)


class JobRun:
    """One attempt at one job, by the replica ``holder`` that claimed it."""

    def __init__(self, job_id: str, holder: str, store: StoreCall, downstream: Downstream,
                 publish: Callable[[JobInfo], None], concurrency: int, page_rows: int) -> None:
        self.job_id, self.holder, self.store, self.downstream = job_id, holder, store, downstream
        self.publish, self.concurrency, self.page_rows = publish, concurrency, page_rows
        self._started = time.perf_counter()
        self.timings: dict[str, float] = {"datasetio_s": 0.0, "generation_s": 0.0, "scoring_s": 0.0,
                                          "store_s": 0.0, "rows_generated": 0.0}

    async def _timed_store(self, name: str, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.store(name, *args)
        finally:
            self.timings["store_s"] += time.perf_counter() - t0

    async def run(self) -> JobInfo | None:
        """Run to a terminal state; returns it (None: the job was lost to a cancel or another replica)."""
        self._started = time.perf_counter()
        try:
            spec: RunSpec = await self.store("spec", self.job_id)
            info: JobInfo = await self.store("get", self.job_id)
            done: dict[int, dict[str, Any]] = await self.store("done_rows", self.job_id)
            scores = await self._generate_and_score(spec, info, done)
            self.timings["total_s"] = time.perf_counter() - self._started
            final = await self.store("finish", self.job_id, self.holder, JobState.COMPLETED, time.time(),
                                     scores=scores, timings=self.timings)
        except JobLost:
            return None
        except asyncio.CancelledError:
            raise
        except StackmeshError as err:
            final = await self._fail(err.message)
        except Exception as err:  # noqa: BLE001 - any bug ends this job FAILED, never stuck running
            log.exception("eval job crashed job=%s", self.job_id)
            final = await self._fail(f"internal error in the eval service ({type(err).__name__}: {err})")
        if final is not None:
            self.publish(final)
            log.info("eval job ended job=%s state=%s rows=%d/%d %s%s", final.job_id, final.state, final.rows_done,
                     final.rows_total, " ".join(f"{k}={v:.3f}" for k, v in self.timings.items()),
                     f" error={final.error!r}" if final.error else "")
        return final

    async def _fail(self, reason: str) -> JobInfo | None:
        self.timings["total_s"] = time.perf_counter() - self._started
        return await self.store("finish", self.job_id, self.holder, JobState.FAILED, time.time(), error=reason,
                                timings=self.timings)

    async def _pages(self, dataset_id: str, start: int, stop: int | None):
        pages = self.downstream.iter_rows(dataset_id, start, stop, self.page_rows)
        while True:
            t0 = time.perf_counter()
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                return
            finally:
                self.timings["datasetio_s"] += time.perf_counter() - t0
            yield page

    async def _generate_and_score(self, spec: RunSpec, info: JobInfo, done: dict[int, dict[str, Any]]) -> dict:
        dataset_id = spec.benchmark.dataset_id
        resumed = info.state == JobState.IN_PROGRESS and info.rows_total > 0
        stop = info.rows_total if resumed else (spec.num_examples or None)
        pages = self._pages(dataset_id, 0, stop)
        first = await anext(pages, None)
        total = info.rows_total if resumed else 0
        if not resumed:
            available = first[1] if first else 0
            total = min(available, spec.num_examples) if spec.num_examples else available
        if total == 0:
            raise FailedPrecondition(f"dataset '{dataset_id}' has no rows to evaluate")
        started = await self._timed_store("start", self.job_id, self.holder, total, time.time())
        if started is None:
            raise JobLost()
        self.publish(started)

        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.concurrency * 2)

        async def produce() -> None:
            page = first
            while page is not None:
                index, _, rows = page
                for offset, row in enumerate(rows):
                    if index + offset < total and index + offset not in done:
                        await queue.put((index + offset, row))
                page = await anext(pages, None)
            for _ in range(self.concurrency):
                await queue.put(_DONE)

        async def work() -> None:
            while (item := await queue.get()) is not _DONE:
                index, row = item
                t0 = time.perf_counter()
                result = await generate_row(self.downstream, spec.candidate, row, index)
                self.timings["generation_s"] += time.perf_counter() - t0
                self.timings["rows_generated"] += 1
                progressed = await self._timed_store("add_rows", self.job_id, self.holder, [(index, result)])
                if progressed is None:
                    raise JobLost()
                self.publish(progressed)

        t_gen = time.perf_counter()
        workers = [asyncio.ensure_future(work()) for _ in range(self.concurrency)]
        producer = asyncio.ensure_future(produce())
        try:
            await asyncio.gather(producer, *workers)
        finally:
            for task in (producer, *workers):
                task.cancel()
            await asyncio.gather(producer, *workers, return_exceptions=True)
        self.timings["generation_wall_s"] = time.perf_counter() - t_gen

        rows = await self._timed_store("done_rows", self.job_id)
        ordered = [rows[i] for i in sorted(rows) if i < total]
        if len(ordered) < total:
            raise FailedPrecondition(f"dataset '{dataset_id}' returned {len(ordered)} of the {total} rows it had "
                                     f"when the job started; it shrank while the job ran")
        t0 = time.perf_counter()
        scores = await self.downstream.score(ordered, list(spec.benchmark.scoring_functions), spec.scoring_params)
        self.timings["scoring_s"] = time.perf_counter() - t0
        return scores
