"""eval in the whole mesh, as real processes on 127.0.0.1, called through the gateway like a user:
registry + inference (SmolLM2 via llama-cpp, MiniLM) + datasetio (localfs) + scoring (basic) +
eval (meta-reference) + gateway. A 20-question JSONL dataset is registered, a benchmark with
basic::subset_of is run with SmolLM2 at temperature 0, and the job is followed, cancelled, killed,
resumed, and starved of a downstream service.

The module's tests share one mesh and run in file order; the one that stops scoring runs last.
"""

from __future__ import annotations

import json
import pathlib
import time

import grpc
import pytest
from google.protobuf import json_format

from services.common.protoutil import struct
from stackmesh.client import StackmeshClient, StackmeshClientError
from stackmesh.eval.v1 import eval_pb2 as epb, eval_pb2_grpc
from stackmesh.inference.v1 import inference_pb2 as ipb
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from tests.support.mesh import DEFAULT_PROVIDERS, LocalMesh, ServiceProcess, free_port

pytestmark = pytest.mark.slow

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"
DATASET = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "eval" / "simple_questions.jsonl"
QUESTIONS = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
BENCHMARK = "simple-qa"
SUBSET_OF = "basic::subset_of"
JOB_DONE = (epb.JOB_STATE_COMPLETED, epb.JOB_STATE_FAILED, epb.JOB_STATE_CANCELLED)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("eval-mesh")
    providers = {
        "inference": DEFAULT_PROVIDERS["inference"],
        "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}}],
        "eval": [{"provider_id": "meta-reference", "provider_type": "inline::meta-reference",
                  "config": {"heartbeat_seconds": 0.5, "unavailable_grace_seconds": 2.0}}],
    }
    with LocalMesh(directory, providers=providers) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh):
    with StackmeshClient(mesh.url) as sm:
        deadline = time.monotonic() + 90  # discovery of the inline models and scoring functions is asynchronous
        while time.monotonic() < deadline:
            models = {m.identifier for m in sm.list("models")} | {m.provider_resource_id for m in sm.list("models")}
            functions = {f.identifier for f in sm.list("scoring-functions")}
            if {CHAT_MODEL, EMBED_MODEL} <= models and SUBSET_OF in functions:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"models/scoring functions not discovered: {models} {functions}")
        yield sm


@pytest.fixture(scope="module")
def evals(mesh):
    channel = grpc.insecure_channel(mesh.url)
    yield eval_pb2_grpc.EvalServiceStub(channel)
    channel.close()


def call(fn, request, timeout: float = 60):
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as err:
        raise StackmeshClientError.from_rpc_error(err) from None


def expect_error(code: grpc.StatusCode, fn, *args, **kwargs) -> StackmeshClientError:
    with pytest.raises(StackmeshClientError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def register_dataset(client: StackmeshClient, dataset_id: str) -> None:
    stub = registry_pb2_grpc.DatasetsServiceStub(client.channel)
    call(stub.RegisterDataset, rpb.RegisterDatasetRequest(dataset_id=dataset_id, purpose="eval/question-answer",
                                                           uri=f"file://{DATASET}"))


def register_benchmark(client: StackmeshClient, benchmark_id: str, dataset_id: str, functions: list[str]):
    stub = registry_pb2_grpc.BenchmarksServiceStub(client.channel)
    return call(stub.RegisterBenchmark, rpb.RegisterBenchmarkRequest(benchmark_id=benchmark_id, dataset_id=dataset_id,
                                                                      scoring_functions=functions))


@pytest.fixture(scope="module")
def benchmark(client):
    register_dataset(client, "simple-questions")
    register_benchmark(client, BENCHMARK, "simple-questions", [SUBSET_OF])
    return BENCHMARK


def config(model: str = CHAT_MODEL, max_tokens: int = 32, num_examples: int = 0) -> epb.BenchmarkConfig:
    return epb.BenchmarkConfig(
        eval_candidate=epb.ModelCandidate(
            model=model, sampling=ipb.SamplingParams(temperature=0.0, max_tokens=max_tokens),
            system_message=ipb.ChatMessage(role="system", content="Answer the question in a few words.")),
        num_examples=num_examples)


def run_eval(evals, benchmark_id: str, cfg: epb.BenchmarkConfig) -> epb.Job:
    return call(evals.RunEval, epb.RunEvalRequest(benchmark_id=benchmark_id, benchmark_config=cfg)).job


def watch(evals, job_id: str, timeout: float = 300) -> list[epb.Job]:
    return [step.job for step in evals.WatchJob(epb.WatchJobRequest(job_id=job_id), timeout=timeout)]


def status(evals, job_id: str) -> epb.Job:
    return call(evals.JobStatus, epb.JobStatusRequest(job_id=job_id)).job


def wait_for(evals, job_id: str, predicate, timeout: float = 120) -> epb.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = status(evals, job_id)
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
        time.sleep(0.1)


def result(evals, job_id: str) -> tuple[list[str], list[float], dict]:
    reply = call(evals.JobResult, epb.JobResultRequest(job_id=job_id))
    generated = [g["generated_answer"] for g in json_format.MessageToDict(reply)["generations"]]
    scores = reply.scores[SUBSET_OF]
    return generated, [r["score"] for r in json_format.MessageToDict(scores)["scoreRows"]], \
        json_format.MessageToDict(scores.aggregated_results)


@pytest.fixture(scope="module")
def first_run(evals, benchmark):
    job = run_eval(evals, benchmark, config())
    assert job.state == epb.JOB_STATE_SCHEDULED and job.benchmark_id == BENCHMARK and job.model == CHAT_MODEL
    return job, watch(evals, job.job_id)


@pytest.mark.timeout(600)
def test_run_eval_through_the_gateway_scores_the_real_generations(evals, first_run):
    job, steps = first_run
    last = steps[-1]
    assert last.state == epb.JOB_STATE_COMPLETED, last.error
    assert (last.rows_done, last.rows_total) == (20, 20)
    progress = [s.rows_done for s in steps if s.state == epb.JOB_STATE_IN_PROGRESS]
    assert progress == sorted(progress) and len(set(progress)) >= 10 and all(s.rows_total == 20 for s in steps[1:])
    generated, scores, aggregated = result(evals, job.job_id)
    assert len(generated) == len(scores) == 20
    for question, text, score in zip(QUESTIONS, generated, scores):  # scored from the actual generations
        assert score == (1.0 if question["expected_answer"] in text else 0.0), (question, text, score)
    accuracy = aggregated["accuracy"]["accuracy"]  # aggregation name -> {accuracy, num_correct, num_total}
    assert 0.0 <= accuracy <= 1.0 and accuracy == pytest.approx(sum(scores) / 20)
    assert last.start_time.seconds and last.end_time.ToNanoseconds() >= last.start_time.ToNanoseconds()


@pytest.mark.timeout(600)
def test_a_rerun_scores_the_same_rows_the_same_way(evals, first_run):
    job, _ = first_run
    again = run_eval(evals, BENCHMARK, config())
    assert again.job_id != job.job_id
    assert watch(evals, again.job_id)[-1].state == epb.JOB_STATE_COMPLETED
    assert result(evals, again.job_id) == result(evals, job.job_id)
    listed = call(evals.ListJobs, epb.ListJobsRequest(benchmark_id=BENCHMARK, page_size=1))
    assert [j.job_id for j in listed.jobs] == [again.job_id] and listed.next_page_token  # newest first


@pytest.mark.timeout(300)
def test_cancel_a_running_job(evals, benchmark):
    job = run_eval(evals, benchmark, config())
    wait_for(evals, job.job_id, lambda j: j.state == epb.JOB_STATE_IN_PROGRESS and j.rows_done >= 1)
    cancelled = call(evals.JobCancel, epb.JobCancelRequest(job_id=job.job_id)).job
    assert cancelled.state == epb.JOB_STATE_CANCELLED and cancelled.rows_done < 20
    time.sleep(3)  # generation has stopped: no more rows land
    later = status(evals, job.job_id)
    assert later.state == epb.JOB_STATE_CANCELLED and later.rows_done == cancelled.rows_done
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, call, evals.JobResult, epb.JobResultRequest(job_id=job.job_id))


@pytest.mark.timeout(600)
def test_kill_9_mid_job_then_restart_resumes_it(mesh, evals, first_run):
    job = run_eval(evals, BENCHMARK, config())
    before = wait_for(evals, job.job_id, lambda j: j.rows_done >= 3)
    mesh.services["eval"].kill9()
    mesh.services["eval"].start()
    steps = watch(evals, job.job_id)
    last = steps[-1]
    assert last.state == epb.JOB_STATE_COMPLETED, last.error  # resumed, not lost
    assert steps[0].rows_done >= before.rows_done  # the rows made before the kill were kept
    assert result(evals, job.job_id) == result(evals, first_run[0].job_id)


@pytest.mark.timeout(600)
def test_a_second_replica_adopts_the_job_of_a_killed_one_and_only_it_runs_it(mesh, evals, first_run):
    """Two eval replicas share the job store; replica 1 dies mid-job, replica 2 (alive all along)
    adopts the job at once; replica 1 comes back and must leave it alone."""
    replica = ServiceProcess("eval", mesh.config, free_port(), mesh.directory).start()
    channel = grpc.insecure_channel(replica.address)
    try:
        direct = eval_pb2_grpc.EvalServiceStub(channel)
        job = run_eval(evals, BENCHMARK, config())  # the gateway sends it to replica 1
        wait_for(evals, job.job_id, lambda j: j.rows_done >= 3)
        mesh.services["eval"].kill9()
        adopting = f"adopting eval job job={job.job_id}"
        deadline = time.monotonic() + 60
        while adopting not in replica.log_path.read_text():  # replica 2 sees the holder's pid is gone
            assert time.monotonic() < deadline, "replica 2 did not adopt the job of the killed replica"
            time.sleep(0.1)
        mesh.services["eval"].start()  # back while replica 2 runs the job: it must leave it alone
        last = watch(direct, job.job_id)[-1]
        assert last.state == epb.JOB_STATE_COMPLETED, last.error
        assert result(direct, job.job_id) == result(evals, first_run[0].job_id)
        assert adopting not in mesh.services["eval"].log_path.read_text()
        assert replica.log_path.read_text().count(adopting) == 1  # one replica resumed it, once
    finally:
        channel.close()
        replica.stop()


@pytest.mark.timeout(120)
def test_bad_input_is_refused_with_the_right_code(client, evals, benchmark):
    err = expect_error(grpc.StatusCode.NOT_FOUND, register_benchmark, client, "no-data", "missing-dataset", [SUBSET_OF])
    assert "missing-dataset" in err.message
    err = expect_error(grpc.StatusCode.NOT_FOUND, register_benchmark, client, "no-fn", "simple-questions",
                       ["basic::no_such_function"])
    assert "basic::no_such_function" in err.message
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, run_eval, evals, benchmark, config(model=EMBED_MODEL))
    assert EMBED_MODEL in err.message and "embedding" in err.message
    err = expect_error(grpc.StatusCode.NOT_FOUND, run_eval, evals, "no-such-benchmark", config())
    assert "no-such-benchmark" in err.message
    expect_error(grpc.StatusCode.NOT_FOUND, run_eval, evals, benchmark, config(model="no-such-model"))
    expect_error(grpc.StatusCode.NOT_FOUND, status, evals, "no-such-job")


@pytest.mark.timeout(120)
def test_evaluate_rows_synchronously(evals, benchmark):
    rows = [struct(q) for q in QUESTIONS[:2]]
    reply = call(evals.EvaluateRows, epb.EvaluateRowsRequest(benchmark_id=benchmark, input_rows=rows,
                                                             benchmark_config=config(max_tokens=8)), timeout=120)
    assert len(reply.generations) == 2 and len(reply.scores[SUBSET_OF].score_rows) == 2


@pytest.mark.timeout(300)
def test_a_stopped_downstream_service_fails_the_job_naming_it(mesh, evals, benchmark):
    mesh.services["scoring"].stop()
    try:
        job = run_eval(evals, benchmark, config(max_tokens=4, num_examples=2))
        last = watch(evals, job.job_id)[-1]
        assert last.state == epb.JOB_STATE_FAILED
        assert last.error.startswith("scoring service unavailable"), last.error
        assert last.rows_done == 2  # the generations were made and kept
    finally:
        mesh.services["scoring"].start()
