"""The meta-reference eval provider's jobs: progress, cancel, restart/resume, claims between replicas.

The provider runs for real on a SQLite file in a tmp dir; datasetio, inference and scoring are
replaced by ``ScriptedDownstream``, a stand-in whose timing the test controls (a generation can be
held mid-job, which is what cancel and crash tests need). The real services are exercised by
tests/e2e/test_eval_mesh.py; the real client's error mapping is tested here against a closed port.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sqlite3
import subprocess
import sys
from typing import Any

import grpc
import pytest

from services.common.config import MeshConfig
from services.common.errors import FailedPrecondition, NotFound
from services.common.mesh import MeshClient
from services.eval.downstream import Downstream, DownstreamError, Timeouts
from services.eval.providers.base import BenchmarkTarget, Candidate, JobState, RunSpec
from services.eval.providers.inline.meta_reference.config import MetaReferenceEvalConfig
from services.eval.providers.inline.meta_reference.provider import MetaReferenceEvalProvider
from services.eval.providers.inline.meta_reference.store import JobStore
from tests.support.mesh import free_port

ROWS = [{"input_query": f"question {i}", "expected_answer": f"answer {i}"} for i in range(6)]
SPEC = RunSpec(BenchmarkTarget("bench", "questions", ("basic::subset_of",)), Candidate("m", {"temperature": 0.0}))


class ScriptedDownstream:
    """Stand-in for datasetio + inference + scoring (see the module docstring). Row i is answered
    "answer i" for even i, "no idea" for odd i; generations of rows >= ``hold_from`` wait for ``go``."""

    def __init__(self, rows: list[dict[str, Any]] = ROWS, hold_from: int | None = None) -> None:
        self.rows = rows
        self.hold_from = hold_from
        self.go = asyncio.Event()
        self.generated: collections.Counter[int] = collections.Counter()
        self.started: collections.Counter[int] = collections.Counter()
        self.score_error: Exception | None = None

    async def iter_rows(self, dataset_id: str, start: int, stop: int | None, page_rows: int = 1000):
        end = len(self.rows) if stop is None else min(stop, len(self.rows))
        for first in range(start, end, 2):  # small pages: the reader and the workers interleave
            yield first, len(self.rows), self.rows[first:min(first + 2, end)]

    async def generate(self, candidate: Candidate, messages: list[dict[str, Any]], timeout: float | None = None) -> str:
        index = int(messages[-1]["content"].split()[-1])
        self.started[index] += 1
        if self.hold_from is not None and index >= self.hold_from:
            await self.go.wait()
        await asyncio.sleep(0.01)
        self.generated[index] += 1
        return f"answer {index}" if index % 2 == 0 else "no idea"

    async def score(self, rows, functions, params, timeout=None):
        if self.score_error is not None:
            raise self.score_error
        score_rows = [{"score": 1.0 if r["expected_answer"] in r["generated_answer"] else 0.0} for r in rows]
        return {fn: {"score_rows": score_rows,
                     "aggregated_results": {"accuracy": sum(r["score"] for r in score_rows) / len(rows)}}
                for fn in functions}


def config(tmp_path, **overrides) -> MetaReferenceEvalConfig:
    return MetaReferenceEvalConfig(data_dir=str(tmp_path), heartbeat_seconds=0.1, lease_seconds=5.0,
                                   generation_concurrency=2, **overrides)


async def open_provider(tmp_path, downstream, holder: str | None = None, **overrides) -> MetaReferenceEvalProvider:
    provider = MetaReferenceEvalProvider("meta-reference", config(tmp_path, **overrides), {})
    provider.path = tmp_path / "eval_jobs.db"
    if holder:
        provider.holder = holder
    provider.attach(downstream)
    await provider.initialize()
    return provider


async def crash(provider: MetaReferenceEvalProvider) -> None:
    """What kill -9 leaves behind: tasks gone, claims not released, store as last committed."""
    provider._maintainer.cancel()
    for task in list(provider._tasks.values()):
        task.cancel()
    await asyncio.gather(provider._maintainer, *provider._tasks.values(), return_exceptions=True)
    provider._store.conn.close()
    provider._thread.shutdown()


def dead_holder() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:gone"


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def final(provider, job_id: str, timeout: float = 10.0):
    async def last():
        async for info in provider.watch_job(job_id):
            pass
        return info
    return await asyncio.wait_for(last(), timeout)


async def test_job_runs_to_completion_and_every_step_is_watched(tmp_path):
    provider = await open_provider(tmp_path, ScriptedDownstream())
    try:
        job = await provider.run_eval(SPEC)
        assert job.state == JobState.SCHEDULED
        steps = [info async for info in provider.watch_job(job.job_id)]
        assert steps[-1].state == JobState.COMPLETED and steps[-1].rows_done == steps[-1].rows_total == 6
        progress = [s.rows_done for s in steps if s.state == JobState.IN_PROGRESS]
        assert progress == list(range(7))  # 0/6 .. 6/6, each step once, in order
        result = await provider.job_result(job.job_id)
        assert [g["generated_answer"] for g in result.result.generations] == \
            ["answer 0", "no idea", "answer 2", "no idea", "answer 4", "no idea"]
        assert result.result.scores["basic::subset_of"]["aggregated_results"]["accuracy"] == 0.5
        assert steps[-1].start_time and steps[-1].end_time >= steps[-1].start_time
    finally:
        await provider.shutdown()


async def test_num_examples_and_max_running_jobs(tmp_path):
    downstream = ScriptedDownstream(hold_from=0)
    provider = await open_provider(tmp_path, downstream, max_running_jobs=1)
    try:
        first = await provider.run_eval(RunSpec(SPEC.benchmark, SPEC.candidate, num_examples=3))
        second = await provider.run_eval(SPEC)
        await until(lambda: downstream.started)
        assert (await provider.get_job(first.job_id)).state == JobState.IN_PROGRESS
        assert (await provider.get_job(second.job_id)).state == JobState.SCHEDULED  # waits for a slot
        downstream.go.set()
        assert (await final(provider, first.job_id)).rows_total == 3
        assert (await final(provider, second.job_id)).state == JobState.COMPLETED
        jobs, token = await provider.list_jobs("bench", "", 1)
        assert [j.job_id for j in jobs] == [second.job_id] and token
        jobs, token = await provider.list_jobs("bench", token, 1)
        assert [j.job_id for j in jobs] == [first.job_id] and not token
    finally:
        await provider.shutdown()


async def test_cancel_stops_generation_and_keeps_the_job(tmp_path):
    downstream = ScriptedDownstream(hold_from=2)
    provider = await open_provider(tmp_path, downstream)
    try:
        job = await provider.run_eval(SPEC)
        await until(lambda: downstream.started[2] and downstream.started[3])
        cancelled = await provider.cancel_job(job.job_id)
        assert cancelled.state == JobState.CANCELLED and cancelled.rows_done == 2
        await asyncio.sleep(0.05)
        assert not provider._tasks  # the running task stopped at once
        downstream.go.set()
        await asyncio.sleep(0.2)
        assert sum(downstream.generated.values()) == 2 and (await provider.get_job(job.job_id)).rows_done == 2
        assert (await final(provider, job.job_id)).state == JobState.CANCELLED
        with pytest.raises(FailedPrecondition, match="CANCELLED"):
            await provider.job_result(job.job_id)
        assert (await provider.cancel_job(job.job_id)).state == JobState.CANCELLED  # idempotent
        with pytest.raises(NotFound):
            await provider.cancel_job("nope")
    finally:
        await provider.shutdown()


async def test_cancel_through_another_replica_stops_the_runner(tmp_path):
    downstream = ScriptedDownstream(hold_from=2)
    runner = await open_provider(tmp_path, downstream)
    other = await open_provider(tmp_path, ScriptedDownstream())
    try:
        job = await runner.run_eval(SPEC)
        await until(lambda: downstream.started[2])
        assert (await other.cancel_job(job.job_id)).state == JobState.CANCELLED
        await until(lambda: not runner._tasks, timeout=2.0)  # the runner's next heartbeat sees it
        assert (await runner.get_job(job.job_id)).state == JobState.CANCELLED
    finally:
        await runner.shutdown()
        await other.shutdown()


async def test_restart_resumes_from_the_rows_already_generated(tmp_path):
    before = ScriptedDownstream(hold_from=3)
    crashed = await open_provider(tmp_path, before, holder=dead_holder())
    job = await crashed.run_eval(SPEC)
    await until(lambda: before.generated[0] and before.generated[1] and before.generated[2])
    await asyncio.sleep(0.1)
    await crash(crashed)

    after = ScriptedDownstream()
    restarted = await open_provider(tmp_path, after)
    try:
        done = await final(restarted, job.job_id)
        assert done.state == JobState.COMPLETED and done.rows_done == 6
        assert set(after.generated) == {3, 4, 5}  # rows 0-2 were in the store: not generated again
        result = await restarted.job_result(job.job_id)
        assert len(result.result.generations) == 6
        assert result.result.scores["basic::subset_of"]["aggregated_results"]["accuracy"] == 0.5
    finally:
        await restarted.shutdown()


async def test_two_replicas_never_both_resume_a_job(tmp_path):
    store = JobStore(tmp_path / "eval_jobs.db")
    orphans = [store.create(f"job{i}", SPEC, dead_holder(), 100.0 + i).job_id for i in range(3)]
    store.close()
    downstreams = [ScriptedDownstream(), ScriptedDownstream()]
    replicas = await asyncio.gather(*(open_provider(tmp_path, d) for d in downstreams))
    try:
        for job_id in orphans:
            assert (await final(replicas[0], job_id)).state == JobState.COMPLETED
        total = downstreams[0].generated + downstreams[1].generated
        assert sum(total.values()) == 6 * len(orphans)  # every row of every job generated exactly once
    finally:
        for replica in replicas:
            await replica.shutdown()


async def test_graceful_stop_hands_the_job_over_without_counting_an_attempt(tmp_path):
    before = ScriptedDownstream(hold_from=2)
    first = await open_provider(tmp_path, before)
    job = await first.run_eval(SPEC)
    await until(lambda: before.started[2])
    await first.shutdown()
    second = await open_provider(tmp_path, ScriptedDownstream(), max_attempts=1)
    try:
        assert (await final(second, job.job_id)).state == JobState.COMPLETED
    finally:
        await second.shutdown()


async def test_a_job_that_keeps_crashing_its_service_is_failed_with_the_reason(tmp_path):
    store = JobStore(tmp_path / "eval_jobs.db")
    store.create("poison", SPEC, dead_holder(), 100.0)
    store.conn.execute("UPDATE jobs SET attempts = 3")
    store.close()
    provider = await open_provider(tmp_path, ScriptedDownstream(), max_attempts=3)
    try:
        failed = await final(provider, "poison")
        assert failed.state == JobState.FAILED and "stopped while running this job 3 times" in failed.error
    finally:
        await provider.shutdown()


async def test_a_job_whose_state_cannot_be_written_fails_naming_the_store_error(tmp_path):
    provider = await open_provider(tmp_path, ScriptedDownstream(), max_attempts=2)
    try:
        store = provider._store
        finish, failed_writes = store.finish, []

        def broken(*args, **kwargs):
            raise sqlite3.OperationalError("disk I/O error")

        def finish_after_two_failures(*args, **kwargs):  # the store recovers after the two attempts
            if len(failed_writes) < 2:
                failed_writes.append(args)
                broken()
            return finish(*args, **kwargs)

        store.start, store.finish = broken, finish_after_two_failures  # each attempt fails to record itself
        job = await provider.run_eval(SPEC)
        failed = await final(provider, job.job_id)
        assert failed.state == JobState.FAILED
        assert "the last attempt failed with OperationalError: disk I/O error" in failed.error
    finally:
        await provider.shutdown()


async def test_a_downstream_failure_fails_the_job_naming_the_service(tmp_path):
    downstream = ScriptedDownstream()
    downstream.score_error = DownstreamError("scoring", grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="connection refused"))
    provider = await open_provider(tmp_path, downstream)
    try:
        job = await provider.run_eval(SPEC)
        failed = await final(provider, job.job_id)
        assert failed.state == JobState.FAILED and failed.error == "scoring service unavailable: connection refused"
        assert failed.rows_done == 6  # the generations are kept
    finally:
        await provider.shutdown()


async def test_evaluate_rows_generates_and_scores_now(tmp_path):
    provider = await open_provider(tmp_path, ScriptedDownstream())
    try:
        result = await provider.evaluate_rows(SPEC, ROWS[:3], timeout=10)
        assert [g["generated_answer"] for g in result.generations] == ["answer 0", "no idea", "answer 2"]
        assert result.scores["basic::subset_of"]["aggregated_results"]["accuracy"] == pytest.approx(2 / 3)
    finally:
        await provider.shutdown()


async def test_evaluate_rows_stops_generating_once_one_row_fails(tmp_path):
    downstream = ScriptedDownstream(rows=ROWS * 10, hold_from=1)  # every row but the first waits
    failing = downstream.generate

    async def generate(candidate, messages, timeout=None):
        if messages[-1]["content"].endswith(" 0"):
            await asyncio.sleep(0.05)
            raise FailedPrecondition("inference refused row 0")
        return await failing(candidate, messages, timeout)

    downstream.generate = generate
    provider = await open_provider(tmp_path, downstream)
    try:
        with pytest.raises(FailedPrecondition, match="inference refused row 0"):
            await provider.evaluate_rows(SPEC, ROWS * 10, timeout=10)
        downstream.go.set()  # the held rows could go on now, if anything still ran them
        await asyncio.sleep(0.2)
        assert sum(downstream.generated.values()) == 0  # nothing generated after the failure
        assert sum(downstream.started.values()) <= 2  # generation_concurrency 2: at most one more had begun
    finally:
        await provider.shutdown()


async def test_a_service_that_is_down_is_named_in_the_error():
    port = free_port()  # nothing listens there
    mesh = MeshClient(MeshConfig(services={"scoring": {"target": f"127.0.0.1:{port}"}}))
    downstream = Downstream(mesh, Timeouts(unavailable_grace=0.3))
    try:
        with pytest.raises(DownstreamError) as caught:
            await downstream.score([ROWS[0]], ["basic::subset_of"], {})
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.message.startswith("scoring service unavailable: ")
        assert caught.value.metadata == {"service": "scoring", "code": "UNAVAILABLE"}
    finally:
        await mesh.close()
