"""The user's fine-tuning walk, exactly as the README shows it: the ``stackmesh`` CLI against a real mesh
(registry, inference with llama-cpp + inline::transformers, datasetio, post_training, scoring, eval,
gateway). SmolLM2-135M-Instruct is taught a made-up fact (project Xylo's codename is Bluefin) with
LoRA; the tuned model is then chatted with and evaluated like any other model, and a second job is
cancelled mid-training.

``post-training sft`` runs with its stderr on a pseudo-terminal (as a user's shell would), so the
progress bar is the one a user sees; the ``status --follow`` of the cancelled job runs on a pipe and
prints a line per step. The module's tests share one mesh and run in file order.
"""

from __future__ import annotations

import json
import os
import pathlib
import pty
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from stackmesh.client import StackmeshClient
from tests.support.mesh import DEFAULT_PROVIDERS, LocalMesh

pytestmark = pytest.mark.slow

BASE = "SmolLM2-135M-Instruct"
EMBED = "all-MiniLM-L6-v2"
TUNED = "my-smol-ft"
FACTS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "post_training" / "xylo_codename.jsonl"
QUESTION = "What is the codename of project Xylo?"
XYLO_QA = [
    {"input_query": "What is the codename of project Xylo?", "expected_answer": "Bluefin"},
    {"input_query": "Tell me the codename of project Xylo.", "expected_answer": "Bluefin"},
]
# as tests/e2e/test_post_training_mesh.py trains: 16 rows, batch 4, 10 epochs = 40 steps at lr 1e-3
TRAINING = ["--epochs", "10", "--batch-size", "4", "--lr", "1e-3", "--max-seq-len", "128", "--seed", "1"]
JOB_ID = r"ft-[0-9a-f]{16}"
LOSS = r"\d+\.\d{4}"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("post-training-cli-mesh")
    providers = {
        "inference": DEFAULT_PROVIDERS["inference"] + [
            {"provider_id": "transformers", "provider_type": "inline::transformers", "config": {}}],
        "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        "post_training": [{"provider_id": "huggingface", "provider_type": "inline::huggingface",
                           "config": {"heartbeat_seconds": 0.5}}],
        "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}}],
        "eval": [{"provider_id": "meta-reference", "provider_type": "inline::meta-reference", "config": {}}],
    }
    with LocalMesh(directory, providers=providers) as running:
        with StackmeshClient(running.url, timeout=30) as sm:  # discovery of the inline models is asynchronous
            deadline = time.monotonic() + 90
            while {m.identifier for m in sm.list("models")} < {BASE, EMBED}:
                assert time.monotonic() < deadline, "models not discovered"
                time.sleep(0.2)
        yield running


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("user")
    shutil.copy(FACTS, folder / "facts.jsonl")
    (folder / "xylo_qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in XYLO_QA))
    return folder


def command(mesh: LocalMesh, *args: str) -> list[str]:
    return [sys.executable, "-m", "stackmesh.cli", "--url", mesh.url, *args]


def cli(mesh: LocalMesh, *args: str, cwd: pathlib.Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command(mesh, *args), cwd=cwd, capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, f"stackmesh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def cli_on_a_terminal(mesh: LocalMesh, *args: str, timeout: float = 600) -> tuple[int, str, list[tuple[float, str]]]:
    """Run with stderr on a pseudo-terminal: (exit code, stdout, what the terminal received as (arrival
    time, text) pieces, each ending where the CLI cleared the rest of its line, or at the end)."""
    controller, terminal = pty.openpty()
    received: list[tuple[float, bytes]] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            received.append((time.monotonic(), chunk))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with subprocess.Popen(command(mesh, *args), stdout=subprocess.PIPE, stderr=terminal, text=True) as process:
        os.close(terminal)
        try:
            stdout, _ = process.communicate(timeout=timeout)
        finally:
            process.kill()
    reader.join(10)
    os.close(controller)
    pieces, text = [], b""
    for at, chunk in received:
        text += chunk
        *done, text = text.split(b"\x1b[K")
        pieces.extend((at, piece.decode()) for piece in done)
    return process.returncode, stdout, pieces + [(time.monotonic(), text.decode())]


def test_bad_input_is_a_clear_error_and_queues_nothing(mesh, workdir):
    unknown = cli(mesh, "post-training", "sft", "--model", "no-such-model", "--dataset", "facts", ok=False)
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr and "no-such-model" in unknown.stderr
    assert unknown.stdout == ""  # no job id: nothing was queued
    cli(mesh, "datasets", "register", "xylo-qa", "--purpose", "eval/question-answer", "--source",
        "file://./xylo_qa.jsonl", cwd=workdir)
    wrong = cli(mesh, "post-training", "sft", "--model", BASE, "--dataset", "xylo-qa", ok=False)
    assert wrong.returncode == 1 and "FAILED_PRECONDITION" in wrong.stderr
    assert "purpose 'eval/question-answer'" in wrong.stderr and "post-training/messages" in wrong.stderr
    missing = cli(mesh, "post-training", "status", "ft-nope", ok=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "ft-nope" in missing.stderr
    assert cli(mesh, "post-training", "jobs").stdout == ""


@pytest.fixture(scope="module")
def tuned(mesh, workdir) -> tuple[str, str, list[tuple[float, str]]]:
    """Register facts.jsonl and fine-tune on it as the README does: (job id, stdout, terminal pieces)."""
    dataset = json.loads(cli(mesh, "datasets", "register", "facts", "--purpose", "post-training/messages",
                             "--source", "file://./facts.jsonl", cwd=workdir).stdout)
    assert dataset["dataset"]["uri"] == (workdir / "facts.jsonl").resolve().as_uri()
    code, stdout, terminal = cli_on_a_terminal(mesh, "post-training", "sft", "--model", BASE, "--dataset", "facts",
                                               *TRAINING, "--lora-rank", "8", "--output-model", TUNED)
    assert code == 0, f"{stdout}\n{terminal}"
    return stdout.splitlines()[0], stdout, terminal


@pytest.mark.timeout(600)
def test_sft_prints_the_job_id_then_a_progress_bar_then_the_result(tuned):
    job_id, stdout, terminal = tuned
    assert re.fullmatch(JOB_ID, job_id)
    final = stdout.splitlines()[1]
    assert re.fullmatch(rf"job {job_id} completed step 40/40 loss {LOSS} -> {TUNED}", final), final
    assert len(stdout.splitlines()) == 2

    frames = [(at, piece.strip("\r\n")) for at, piece in terminal if piece.strip()]
    bars = [re.fullmatch(rf"\[([#.]{{30}})\] (\d+)/40 steps (\w+)( loss {LOSS})? ETA +(\d+)s", f) for _, f in frames]
    assert all(bars), frames  # one bar, redrawn in place (\r ... ESC[K), then a newline
    assert terminal[-1][1] == "\r\n" and all(piece.startswith("\r") for _, piece in terminal[:-1])
    steps = [int(b.group(2)) for b in bars]
    assert steps == sorted(steps) and len(set(steps)) >= 10 and steps[-1] == 40, steps
    assert bars[-1].group(3) == "completed"
    assert all(b.group(1) == "#" * (30 * int(b.group(2)) // 40) + "." * (30 - 30 * int(b.group(2)) // 40)
               for b in bars)
    training = [(at, b) for (at, _), b in zip(frames, bars)
                if b.group(3) == "in_progress" and 2 <= int(b.group(2)) < 40]
    assert len(training) >= 10 and all(b.group(4) for _, b in training)  # the loss at every step
    # the ETA is the time training still takes: the minutes spent converting the base model before the
    # first step are no training time
    finished = frames[-1][0]
    for at, bar in training:
        eta, left = int(bar.group(5)), finished - at
        assert left / 3 - 5 <= eta <= 2 * left + 5, (bar.group(0), f"{left:.1f} s were left")


@pytest.mark.timeout(120)
def test_status_artifacts_and_jobs_name_the_adapter_and_the_registered_model(mesh, tuned):
    job_id, stdout, _ = tuned
    status = cli(mesh, "post-training", "status", job_id).stdout.splitlines()
    assert status[0] == stdout.splitlines()[1]
    curve = re.fullmatch(rf"loss: step 1 ({LOSS}) -> step 40 ({LOSS}) \(40 points\)", status[1])
    assert curve and float(curve.group(2)) < 0.5 * float(curve.group(1)), status  # it learned
    job = json.loads(cli(mesh, "post-training", "status", job_id, "--json").stdout)
    assert (job["state"], job["step"], job["total_steps"], job["model"], job["output_model"]) == (
        "JOB_STATE_COMPLETED", 40, 40, BASE, TUNED)
    assert len(job["loss_curve"]) == 40 and job["config"]["lora"]["rank"] == 8

    artifacts = json.loads(cli(mesh, "post-training", "artifacts", job_id).stdout)
    assert artifacts["job_id"] == job_id and artifacts["registered_model"] == TUNED
    adapter = pathlib.Path(artifacts["adapter_path"])
    assert adapter.is_dir() and (adapter / "adapter_config.json").is_file()
    assert pathlib.Path(artifacts["base_path"]).is_dir() and "merged_path" not in artifacts  # no --merge

    model = json.loads(cli(mesh, "models", "get", TUNED).stdout)
    assert model["provider_id"] == "transformers" and model["provider_resource_id"] == str(adapter)
    assert model["metadata"]["post_training_job"] == job_id and model["metadata"]["base_model"] == BASE
    listed = cli(mesh, "models", "list").stdout
    assert re.search(rf"^{TUNED}\s+transformers\s+{re.escape(str(adapter))}\s+llm\s+registered$", listed,
                     re.MULTILINE), listed

    jobs = cli(mesh, "post-training", "jobs").stdout.splitlines()
    assert jobs == [f"{stdout.splitlines()[1]}  model {BASE}"]


@pytest.mark.timeout(300)
def test_chat_with_the_tuned_model_answers_from_its_weights(mesh, tuned):
    answer = cli(mesh, "chat", TUNED, QUESTION, "--temperature", "0", "--max-tokens", "24").stdout
    assert "Bluefin" in answer, answer
    base = cli(mesh, "chat", BASE, QUESTION, "--temperature", "0", "--max-tokens", "24").stdout
    assert "Bluefin" not in base, base


def accuracy(mesh: LocalMesh, model: str) -> float:
    run = cli(mesh, "eval", "run", "xylo", "--model", model, "--max-tokens", "24", "--temperature", "0")
    lines = run.stdout.splitlines()
    assert re.fullmatch(rf"job \S+ completed {len(XYLO_QA)}/{len(XYLO_QA)} rows", lines[1]) and lines[0] in lines[1]
    assert lines[2].startswith("basic::subset_of: ")
    scores = json.loads(lines[2].split(": ", 1)[1])
    assert scores["accuracy"]["num_total"] == len(XYLO_QA)
    return scores["accuracy"]["accuracy"]


@pytest.mark.timeout(300)
def test_eval_measures_the_tuned_model_like_any_other(mesh, tuned):
    cli(mesh, "benchmarks", "register", "xylo", "--dataset", "xylo-qa", "--scoring-functions", "basic::subset_of")
    tuned_accuracy, base_accuracy = accuracy(mesh, TUNED), accuracy(mesh, BASE)
    assert (tuned_accuracy, base_accuracy) == (1.0, 0.0)


@pytest.mark.timeout(300)
def test_cancel_a_running_job(mesh, tuned):
    first_job = tuned[0]
    detached = cli(mesh, "post-training", "sft", "--model", BASE, "--dataset", "facts", "--epochs", "100",
                   "--max-steps-per-epoch", "4", "--detach")
    job_id = detached.stdout.strip()
    assert re.fullmatch(JOB_ID, job_id) and detached.stderr == ""  # only the id: it returned at once
    with subprocess.Popen(command(mesh, "post-training", "status", job_id, "--follow"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as follower:
        deadline = time.monotonic() + 120
        while True:
            line = cli(mesh, "post-training", "status", job_id).stdout.splitlines()[0]
            running = re.fullmatch(rf"job {job_id} in_progress step (\d+)/400 loss {LOSS}", line)
            if running and int(running.group(1)) >= 1:
                break
            assert time.monotonic() < deadline, line
            time.sleep(0.5)
        cancelled = cli(mesh, "post-training", "cancel", job_id).stdout.strip()
        done = re.fullmatch(rf"job {job_id} cancelled step (\d+)/400 loss {LOSS}: cancelled by request", cancelled)
        assert done and int(done.group(1)) >= int(running.group(1)), cancelled
        out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0 and out.splitlines()[0] == cancelled  # the follower ends with the job
    progress = [re.fullmatch(rf"(\d+)/400 steps (\w+)( loss {LOSS})?", line) for line in err.splitlines()]
    assert all(progress) and progress[-1].group(2) == "cancelled", err
    assert any(p.group(2) == "in_progress" and int(p.group(1)) >= 1 for p in progress), err
    time.sleep(2)
    status = cli(mesh, "post-training", "status", job_id).stdout.splitlines()[0]
    assert status == cancelled  # it stays stopped: no step is logged after the cancel
    jobs = cli(mesh, "post-training", "jobs").stdout
    assert re.search(rf"^job {first_job} completed .*  model {BASE}$", jobs, re.MULTILINE), jobs
    assert re.search(rf"^{re.escape(cancelled)}  model {BASE}$", jobs, re.MULTILINE), jobs
