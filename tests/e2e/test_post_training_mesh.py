"""post_training in the whole mesh, as real processes on 127.0.0.1, called through the gateway like a
user: registry + inference (SmolLM2 via llama-cpp, MiniLM, inline::transformers for tuned models) +
datasetio (localfs) + post_training (huggingface) + gateway.

SmolLM2-135M-Instruct is taught a made-up fact with LoRA (16 paraphrased questions about project
Xylo's codename, 40 steps at lr 1e-3, batch 4), then asked through inference: the tuned model says
"Bluefin", the base model does not. Then a job is cancelled, and the post_training service is
killed with SIGKILL mid-job and restarted: the job resumes from its checkpoint to COMPLETED.

The module's tests share one mesh and run in file order.
"""

from __future__ import annotations

import pathlib
import time

import grpc
import pytest

from stackmesh.client import StackmeshClient, StackmeshClientError
from stackmesh.common.v1 import common_pb2
from stackmesh.post_training.v1 import post_training_pb2 as ppb
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from tests.support.mesh import DEFAULT_PROVIDERS, LocalMesh

pytestmark = pytest.mark.slow

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"
FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
XYLO = FIXTURES / "post_training" / "xylo_codename.jsonl"
QUESTIONS = FIXTURES / "eval" / "simple_questions.jsonl"
TUNED = "smollm2-xylo"
DONE = (ppb.JOB_STATE_COMPLETED, ppb.JOB_STATE_FAILED, ppb.JOB_STATE_CANCELLED)
WORKER = b"services.post_training.providers.inline.huggingface.worker"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("post-training-mesh")
    providers = {
        "inference": DEFAULT_PROVIDERS["inference"] + [
            {"provider_id": "transformers", "provider_type": "inline::transformers", "config": {}}],
        "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        "post_training": [{"provider_id": "huggingface", "provider_type": "inline::huggingface",
                           "config": {"heartbeat_seconds": 0.5, "save_total_limit": 2}}],
    }
    with LocalMesh(directory, providers=providers) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh):
    with StackmeshClient(mesh.url, timeout=120) as sm:
        deadline = time.monotonic() + 90  # discovery of the inline models is asynchronous
        while time.monotonic() < deadline:
            models = {m.provider_resource_id for m in sm.list("models")}
            if {CHAT_MODEL, EMBED_MODEL} <= models:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"models not discovered: {models}")
        datasets = registry_pb2_grpc.DatasetsServiceStub(sm.channel)
        datasets.RegisterDataset(rpb.RegisterDatasetRequest(dataset_id="xylo", purpose="post-training/messages",
                                                            uri=f"file://{XYLO}"), timeout=30)
        datasets.RegisterDataset(rpb.RegisterDatasetRequest(dataset_id="questions", purpose="eval/question-answer",
                                                            uri=f"file://{QUESTIONS}"), timeout=30)
        yield sm


def sft(client: StackmeshClient, model: str = CHAT_MODEL, dataset_id: str = "xylo", **kwargs) -> ppb.Job:
    values = dict(epochs=1, batch_size=4, lr=1e-3, max_seq_len=128, seed=1)
    values.update(kwargs)
    return client.supervised_fine_tune(client.sft_request(model, dataset_id, **values))


def expect_error(code: grpc.StatusCode, fn, *args, **kwargs) -> StackmeshClientError:
    with pytest.raises(StackmeshClientError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def wait_for(client: StackmeshClient, job_id: str, predicate, timeout: float = 300) -> ppb.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = client.training_job(job_id)
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
        time.sleep(0.2)


def workers(job_id: str) -> list[int]:
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if WORKER in cmdline and f"/jobs/{job_id}".encode() in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.timeout(180)
def test_bad_requests_are_refused_with_their_code_before_queuing(client):
    err = expect_error(grpc.StatusCode.FAILED_PRECONDITION, sft, client, dataset_id="questions")
    assert "purpose 'eval/question-answer'" in err.message and "post-training/messages" in err.message
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, sft, client, model=EMBED_MODEL)
    assert "embedding model" in err.message
    err = expect_error(grpc.StatusCode.NOT_FOUND, sft, client, model="no-such-model")
    assert "no-such-model" in err.message
    err = expect_error(grpc.StatusCode.ALREADY_EXISTS, sft, client, output_model=CHAT_MODEL)
    assert "already exists" in err.message
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, sft, client, epochs=1000, max_steps_per_epoch=5)
    assert "4000 optimizer steps" in err.message and "max_total_steps" in err.message
    assert client.training_jobs() == []  # nothing was queued


@pytest.fixture(scope="module")
def tuned(client):
    job = sft(client, epochs=10, checkpoint_every_steps=10, output_model=TUNED, job_id="xylo-lora")
    assert (job.job_id, job.state, job.total_steps) == ("xylo-lora", ppb.JOB_STATE_SCHEDULED, 40)
    steps = list(client.watch_training(job.job_id, timeout=900))
    return steps


@pytest.mark.timeout(900)
def test_lora_fine_tune_through_the_gateway_learns_and_registers_the_model(client, tuned):
    last = tuned[-1]
    assert last.state == ppb.JOB_STATE_COMPLETED, last.error
    progress = [s.step for s in tuned if s.state == ppb.JOB_STATE_IN_PROGRESS]
    assert progress == sorted(progress) and len(set(progress)) >= 10 and last.step == 40
    curve = list(last.loss_curve)
    assert [p.step for p in curve] == list(range(1, 41))
    assert curve[0].loss > curve[-1].loss and curve[-1].loss < 0.5 * curve[0].loss, [p.loss for p in curve]
    model = client.get("models", TUNED)
    assert model.source == common_pb2.RESOURCE_SOURCE_REGISTERED and model.provider_id == "transformers"
    assert model.model.model_type == common_pb2.MODEL_TYPE_LLM
    assert model.metadata["post_training_job"] == "xylo-lora" and model.metadata["base_model"] == CHAT_MODEL
    artifacts = client.training_artifacts("xylo-lora")
    assert artifacts.registered_model == TUNED and model.provider_resource_id == artifacts.adapter_path
    assert model.metadata["base_path"] == artifacts.base_path and pathlib.Path(artifacts.base_path).is_dir()
    assert [c.step for c in artifacts.checkpoints] == [20, 30]  # every 10 steps, the newest 2 kept


@pytest.mark.timeout(600)
def test_the_tuned_model_answers_with_the_fact_and_the_base_does_not(client, tuned):
    question = "What is the codename of project Xylo?"
    answer = client.chat(TUNED, question, temperature=0.0, max_tokens=24)
    assert "Bluefin" in answer, answer
    base = client.chat(CHAT_MODEL, question, temperature=0.0, max_tokens=24)
    assert "Bluefin" not in base, base


@pytest.mark.timeout(300)
def test_deleting_artifacts_is_refused_while_a_model_is_served_from_them(client, tuned):
    err = expect_error(grpc.StatusCode.FAILED_PRECONDITION, client.delete_training_artifacts, "xylo-lora")
    assert TUNED in err.message


@pytest.mark.timeout(600)
def test_cancel_mid_job_stops_its_worker_promptly(mesh, client, tuned):
    job = sft(client, epochs=100, max_steps_per_epoch=4)
    wait_for(client, job.job_id, lambda j: j.state == ppb.JOB_STATE_IN_PROGRESS and j.step >= 1)
    assert workers(job.job_id)
    started = time.monotonic()
    cancelled = client.cancel_training(job.job_id)
    assert cancelled.state == ppb.JOB_STATE_CANCELLED and time.monotonic() - started < 10
    assert not workers(job.job_id)
    time.sleep(2)
    later = client.training_job(job.job_id)
    assert later.state == ppb.JOB_STATE_CANCELLED and later.step <= cancelled.step + 1
    log = mesh.services["post_training"].log_path.read_text()  # the second job reused the converted base
    assert "base model ready job=xylo-lora" in log and f"job={job.job_id} " in log
    assert [line for line in log.splitlines() if f"base model ready job={job.job_id} " in line
            and "converted=False" in line]


@pytest.mark.timeout(900)
def test_kill_9_mid_job_then_restart_resumes_it_from_its_checkpoint(mesh, client, tuned):
    job = sft(client, epochs=8, checkpoint_every_steps=5, job_id="survivor")
    before = wait_for(client, job.job_id, lambda j: j.step >= 7)
    mesh.services["post_training"].kill9()
    deadline = time.monotonic() + 10
    while workers("survivor") and time.monotonic() < deadline:  # the worker dies with its service
        time.sleep(0.1)
    assert not workers("survivor")
    mesh.services["post_training"].start()
    last = list(client.watch_training("survivor", timeout=900))[-1]
    assert last.state == ppb.JOB_STATE_COMPLETED, last.error
    assert last.resumed == 1 and last.step == last.total_steps == 32
    assert [p.step for p in last.loss_curve] == list(range(1, 33))  # resumed, nothing lost or repeated
    assert [p.loss for p in last.loss_curve[:5]] == [p.loss for p in before.loss_curve[:5]]
    log = mesh.services["post_training"].log_path.read_text()
    assert "training job=survivor from_step=5 " in log or "training job=survivor from_step=10 " in log
    assert not workers("survivor")
