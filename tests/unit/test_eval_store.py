"""The eval job store: state transitions, conditional writes, claims, paging (a real SQLite file)."""

from __future__ import annotations

import pathlib
import threading

import pytest

from services.eval.providers.base import BenchmarkTarget, Candidate, JobState, RunSpec
from services.eval.providers.inline.meta_reference.store import JobStore

SPEC = RunSpec(BenchmarkTarget("bench", "questions", ("basic::subset_of",)),
               Candidate("SmolLM2", {"temperature": 0.0, "max_tokens": 8}, {"role": "system", "content": "Be brief."}),
               {"basic::subset_of": {"aggregation_functions": ["accuracy"]}}, 5)
A, B = "host:1:aaaa", "host:2:bbbb"


@pytest.fixture
def store(tmp_path: pathlib.Path):
    s = JobStore(tmp_path / "eval" / "jobs.db")
    yield s
    s.close()


def row(i: int) -> dict:
    return {"input_query": f"q{i}", "expected_answer": f"a{i}", "generated_answer": f"g{i}"}


def test_spec_round_trips_through_json(store):
    store.create("j1", SPEC, A, 100.0)
    assert store.spec("j1") == SPEC


def test_life_of_a_job(store):
    job = store.create("j1", SPEC, A, 100.0)
    assert (job.state, job.rows_done, job.rows_total, job.model, job.benchmark_id) == \
        (JobState.SCHEDULED, 0, 0, "SmolLM2", "bench")
    assert job.start_time is None and job.end_time is None
    started = store.start("j1", A, 3, 101.0)
    assert started.state == JobState.IN_PROGRESS and started.rows_total == 3 and started.start_time == 101.0
    for i in (2, 0):
        store.add_rows("j1", A, [(i, row(i))])
    again = store.add_rows("j1", A, [(0, row(0))])  # a row written twice counts once
    assert again.rows_done == 2
    assert list(store.done_rows("j1")) == [0, 2]  # dataset order, whatever the completion order
    store.add_rows("j1", A, [(1, row(1))])
    scores = {"basic::subset_of": {"score_rows": [{"score": 1.0}] * 3, "aggregated_results": {"accuracy": 1.0}}}
    done = store.finish("j1", A, JobState.COMPLETED, 105.0, scores=scores, timings={"total_s": 5.0})
    assert (done.state, done.rows_done, done.end_time) == (JobState.COMPLETED, 3, 105.0)
    assert store.scores("j1") == scores and store.timings("j1") == {"total_s": 5.0}
    assert store.active() == []  # a finished job is nobody's to run


def test_a_cancelled_job_is_never_written_over(store):
    store.create("j1", SPEC, A, 100.0)
    store.start("j1", A, 3, 101.0)
    store.add_rows("j1", A, [(0, row(0))])
    cancelled = store.cancel("j1", "cancelled by request", 102.0)
    assert cancelled.state == JobState.CANCELLED and cancelled.error == "cancelled by request"
    assert store.add_rows("j1", A, [(1, row(1))]) is None  # the runner learns it lost the job ...
    assert list(store.done_rows("j1")) == [0]  # ... and its row was not kept
    assert store.finish("j1", A, JobState.COMPLETED, 103.0) is None
    assert store.get("j1").state == JobState.CANCELLED
    assert store.cancel("j1", "again", 104.0).error == "cancelled by request"  # terminal stays as it is


def test_only_the_holder_writes(store):
    store.create("j1", SPEC, A, 100.0)
    assert store.start("j1", B, 3, 101.0) is None
    store.start("j1", A, 3, 101.0)
    assert store.add_rows("j1", B, [(0, row(0))]) is None
    assert store.finish("j1", B, JobState.FAILED, 102.0, error="x") is None


def test_claims_are_compare_and_set(store):
    store.create("j1", SPEC, A, 100.0)
    (seen,) = store.active()
    assert seen == ("j1", A, 100.0, 1)
    assert store.claim(seen, B, 200.0)
    assert not store.claim(seen, "host:3:cccc", 200.0)  # read before B's claim: loses
    (now,) = store.active()
    assert now[1] == B and now[3] == 2  # attempts counts the adoption
    assert store.start("j1", A, 3, 201.0) is None  # the old holder can no longer write


def test_concurrent_claims_from_two_connections_one_wins(tmp_path):
    first = JobStore(tmp_path / "jobs.db")
    first.create("j1", SPEC, A, 100.0)
    (seen,) = first.active()
    stores = [JobStore(tmp_path / "jobs.db") for _ in range(4)]
    wins: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def claim(s: JobStore, holder: str) -> None:
        barrier.wait()
        wins.append(s.claim(seen, holder, 200.0))

    threads = [threading.Thread(target=claim, args=(s, f"host:{10 + i}:x")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]
    for s in [first, *stores]:
        s.close()


def test_heartbeat_renews_only_listed_jobs_and_release_hands_over(store):
    store.create("j1", SPEC, A, 100.0)
    store.create("j2", SPEC, A, 100.5)
    assert store.heartbeat(A, ["j1"], 150.0) == {"j1"}
    beats = {job_id: beat for job_id, _, beat, _ in store.active()}
    assert beats == {"j1": 150.0, "j2": 100.5}
    store.cancel("j1", "cancelled by request", 151.0)
    assert store.heartbeat(A, ["j1", "j2"], 152.0) == {"j2"}  # the runner of j1 learns it is gone
    store.create("j3", SPEC, "another-replica", 153.0)
    assert store.release(A) == ["j2"]  # every active job A holds, nobody else's
    assert sorted(store.active()) == [("j2", None, None, 0), ("j3", "another-replica", 153.0, 1)]


def test_pages_newest_first(store):
    for i in range(5):
        store.create(f"j{i}", SPEC, A, 100.0 + (i // 2))  # two pairs share a create time
    other = RunSpec(BenchmarkTarget("other", "d", ("f",)), Candidate("m"))
    store.create("x", other, A, 99.0)
    seen, cursor = [], None
    while True:
        page = store.page("bench", cursor, 2)
        if not page:
            break
        seen += [j.job_id for j in page]
        cursor = (page[-1].create_time, page[-1].job_id)
    assert seen == ["j4", "j3", "j2", "j1", "j0"]
    assert [j.job_id for j in store.page("", None, 10)][-1] == "x"
