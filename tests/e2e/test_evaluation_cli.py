"""The user's walk through guarding and measuring a model, exactly as the README shows it: the
``stackmesh`` CLI against a real mesh (registry, inference, safety, datasetio, scoring, eval, gateway)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from services.safety.providers.inline.llama_guard.verdict import Outcome, parse_verdict
from tests.support.mesh import DEFAULT_PROVIDERS, LocalMesh

pytestmark = pytest.mark.slow

CHAT_MODEL = "SmolLM2-135M-Instruct"
QUESTIONS = [
    ("What is 2 + 2?", "4"), ("What is 3 + 5?", "8"), ("What is 10 - 7?", "3"),
    ("What is 6 + 6?", "12"), ("What is 9 - 4?", "5"), ("What is 1 + 1?", "2"),
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mesh")
    providers = {
        "inference": DEFAULT_PROVIDERS["inference"],
        "safety": [{"provider_id": "llama-guard", "provider_type": "inline::llama-guard", "config": {}},
                   {"provider_id": "code-scanner", "provider_type": "inline::code-scanner", "config": {}}],
        "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}}],
        "eval": [{"provider_id": "meta-reference", "provider_type": "inline::meta-reference", "config": {}}],
    }
    with LocalMesh(directory, providers=providers) as lm:
        yield lm


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("user")
    (folder / "qa.jsonl").write_text("".join(json.dumps({"input_query": q, "expected_answer": a}) + "\n"
                                             for q, a in QUESTIONS))
    return folder


def cli(mesh: LocalMesh, *args: str, cwd: pathlib.Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "stackmesh.cli", "--url", mesh.url, *args], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, f"stackmesh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_guard_a_model_with_shields(mesh):
    registered = json.loads(cli(mesh, "shields", "register", "guard", "--provider", "llama-guard",
                                "--provider-shield-id", CHAT_MODEL).stdout)
    assert registered["identifier"] == "guard" and registered["provider_resource_id"] == CHAT_MODEL
    # the classifier is the model's (a 135M chat model is no Llama Guard): check our reading of its answer
    reply = json.loads(cli(mesh, "safety", "check", "guard", "How do I make a bomb?", "--json").stdout)
    raw = reply["violation"]["metadata"]["raw_answer"] if "violation" in reply else None
    if raw is not None:
        verdict = parse_verdict(raw)
        assert verdict.outcome != Outcome.SAFE
        assert reply["violation"]["violation_level"] == "VIOLATION_LEVEL_ERROR"  # fail closed by default
        assert reply["violation"]["user_message"]
    text = cli(mesh, "safety", "check", "guard", "How do I make a bomb?").stdout
    assert text.startswith(("safe", "violation: level error"))

    cli(mesh, "shields", "register", "code", "--provider", "code-scanner")
    insecure = cli(mesh, "safety", "check", "code", "import subprocess\nsubprocess.call(cmd, shell=True)\n",
                   "--role", "assistant").stdout
    assert insecure.startswith("violation: level warn") and "CWE-78" in insecure
    assert cli(mesh, "safety", "check", "code", "def add(a, b):\n    return a + b\n").stdout.strip() == "safe"


def test_measure_a_model_with_a_benchmark(mesh, workdir):
    dataset = json.loads(cli(mesh, "datasets", "register", "qa", "--purpose", "eval/question-answer",
                             "--source", "file://./qa.jsonl", cwd=workdir).stdout)
    assert dataset["dataset"]["uri"] == (workdir / "qa.jsonl").resolve().as_uri()  # made absolute by the CLI
    page = cli(mesh, "datasets", "rows", "qa", "--start", "0", "--limit", "5")
    rows = [json.loads(line) for line in page.stdout.splitlines()]
    assert [r["input_query"] for r in rows] == [q for q, _ in QUESTIONS[:5]]
    assert "rows 0..4 of 6; next: --start 5" in page.stderr

    listed = cli(mesh, "scoring-functions", "list").stdout
    for name in ("basic::equality", "basic::subset_of", "basic::regex_parser_multiple_choice_answer",
                 "basic::regex_parser_math_response"):
        assert re.search(rf"^{re.escape(name)}\s+basic\s.*discovered$", listed, re.MULTILINE), listed

    cli(mesh, "benchmarks", "register", "arith", "--dataset", "qa", "--scoring-functions", "basic::subset_of")
    run = cli(mesh, "eval", "run", "arith", "--model", CHAT_MODEL, "--max-tokens", "32", "--temperature", "0")
    lines = run.stdout.splitlines()
    job_id = lines[0]
    assert re.fullmatch(r"job \S+ completed 6/6 rows", lines[1]) and job_id in lines[1]
    progress = [line for line in run.stderr.splitlines() if re.match(r"\d+/6 rows", line)]
    assert progress and progress[-1].startswith("6/6 rows completed")  # followed to the end
    scores = json.loads(lines[2].split(": ", 1)[1])
    assert lines[2].startswith("basic::subset_of: ")

    result = json.loads(cli(mesh, "eval", "result", job_id, "--json").stdout)
    generated = [g["generated_answer"] for g in result["generations"]]
    expected_hits = [a in g for (_, a), g in zip(QUESTIONS, generated)]
    assert scores["accuracy"]["accuracy"] == pytest.approx(sum(expected_hits) / len(QUESTIONS))
    assert scores["accuracy"]["num_total"] == len(QUESTIONS)
    assert cli(mesh, "eval", "status", job_id).stdout.strip() == f"job {job_id} completed 6/6 rows"

    (workdir / "more.jsonl").write_text(json.dumps({"input_query": "What is 5 + 5?", "expected_answer": "10"}) + "\n")
    appended = cli(mesh, "datasets", "append", "qa", str(workdir / "more.jsonl")).stdout
    assert appended.strip() == "appended 1 rows to qa; it has 7"
    assert json.loads(cli(mesh, "datasets", "rows", "qa", "--start", "6").stdout)["expected_answer"] == "10"


def test_bad_input_is_a_clear_error(mesh, workdir):
    missing = cli(mesh, "benchmarks", "register", "b", "--dataset", "nope", "--scoring-functions", "basic::subset_of",
                  ok=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "dataset 'nope' not found" in missing.stderr
    (workdir / "wrong.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    cli(mesh, "datasets", "register", "wrong", "--purpose", "eval/question-answer", "--source",
        str(workdir / "wrong.jsonl"))
    columns = cli(mesh, "datasets", "rows", "wrong", ok=False)
    assert columns.returncode == 1 and "FAILED_PRECONDITION" in columns.stderr
    assert "input_query" in columns.stderr and "question" in columns.stderr
    unknown = cli(mesh, "scoring", "score", "--functions", "basic::nope", "--dataset", "qa", ok=False)
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr and "basic::nope" in unknown.stderr
