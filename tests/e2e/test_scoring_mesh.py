"""Scoring in the whole mesh, as real processes on 127.0.0.1, called through the gateway like a user:
registry + inference (SmolLM2 as the judge, MiniLM embeddings) + datasetio (localfs) + scoring
(basic, llm-as-judge) + gateway.

The judge tests assert the plumbing — a score row per input, the reply verbatim as judge_feedback,
the score parsed when the regex matches — not the judgement of a 135M-parameter model."""

from __future__ import annotations

import json
import re
import time

import grpc
import pytest

from services.common.protoutil import struct
from stackmesh.client import StackmeshClient, StackmeshClientError
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from stackmesh.scoring.v1 import scoring_pb2 as spb, scoring_pb2_grpc
from tests.support.mesh import DEFAULT_PROVIDERS, LocalMesh

pytestmark = pytest.mark.slow

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"
BASIC = ["basic::equality", "basic::subset_of", "basic::regex_parser_multiple_choice_answer",
         "basic::regex_parser_math_response"]
ROWS = [
    {"input_query": "What is the capital of France?", "generated_answer": "The capital of France is Paris.",
     "expected_answer": "Paris"},
    {"input_query": "What is 2 + 2?", "generated_answer": "5", "expected_answer": "4"},
]
JUDGE_TEMPLATE = ("Question: {input_query}\nReference answer: {expected_answer}\nStudent answer: {generated_answer}\n"
                  "Grade the student answer from 1 (wrong) to 5 (right). Reply exactly as 'Score: N'.")
JUDGE_REGEXES = [r"(?i)score\D{0,5}([1-5])", r"([1-5])"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    providers = {
        "inference": DEFAULT_PROVIDERS["inference"],
        "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}},
                    {"provider_id": "llm-as-judge", "provider_type": "inline::llm-as-judge",
                     "config": {"concurrency": 2, "max_tokens": 24}}],
    }
    with LocalMesh(tmp_path_factory.mktemp("mesh"), providers=providers) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh):
    with StackmeshClient(mesh.url) as sm:
        deadline = time.monotonic() + 60  # discovery of models and scoring functions is asynchronous
        while time.monotonic() < deadline and (
                len(sm.list("models")) < 2 or not set(BASIC) <= {f.identifier for f in sm.list("scoring-functions")}):
            time.sleep(0.1)
        yield sm


@pytest.fixture(scope="module")
def scoring(client):
    return scoring_pb2_grpc.ScoringServiceStub(client.channel)


def call(fn, request, timeout: float = 120):
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as err:
        raise StackmeshClientError.from_rpc_error(err) from None


def score(scoring, rows, functions, params=None, timeout: float = 120) -> spb.ScoreResponse:
    return call(scoring.Score, spb.ScoreRequest(input_rows=[struct(r) for r in rows], scoring_functions=functions,
                                                params={k: struct(v) for k, v in (params or {}).items()}), timeout)


def test_basic_functions_are_listed_as_discovered(client):
    functions = {f.identifier: f for f in client.list("scoring-functions")}
    for fn_id in BASIC:
        assert functions[fn_id].source == common_pb2.RESOURCE_SOURCE_DISCOVERED
        assert functions[fn_id].provider_id == "basic"
        assert functions[fn_id].scoring_function.return_type == "number"
    assert functions["llm-as-judge::base"].provider_id == "llm-as-judge"


def test_score_with_subset_of_through_the_gateway(scoring):
    reply = score(scoring, ROWS, ["basic::subset_of"])
    result = reply.results["basic::subset_of"]
    assert [row["score"] for row in result.score_rows] == [1.0, 0.0]
    assert dict(result.aggregated_results["accuracy"]) == {"accuracy": 0.5, "num_correct": 1.0, "num_total": 2.0}


def test_llm_as_judge_scores_rows_with_smollm2(client, scoring):
    functions = registry_pb2_grpc.ScoringFunctionsServiceStub(client.channel)
    call(functions.RegisterScoringFunction, rpb.RegisterScoringFunctionRequest(
        scoring_fn_id="smol-judge", provider_id="llm-as-judge", description="SmolLM2 grades 1-5",
        params=struct({"judge_model": CHAT_MODEL, "prompt_template": JUDGE_TEMPLATE,
                       "judge_score_regexes": JUDGE_REGEXES, "aggregation_functions": ["categorical_count"]})))
    # One request, two providers: each function is routed to its own.
    reply = score(scoring, ROWS, ["smol-judge", "basic::equality"], timeout=300)
    judged = reply.results["smol-judge"]
    assert len(judged.score_rows) == len(ROWS)
    for row in judged.score_rows:
        feedback = row["judge_feedback"]
        assert isinstance(feedback, str) and feedback.strip()
        match = next((m for m in (re.search(p, feedback) for p in JUDGE_REGEXES) if m), None)
        if match:
            assert row["score"] == float(match.group(1))
        else:
            assert row["score"] is None
    counts = dict(judged.aggregated_results["categorical_count"]["categorical_count"])
    assert sum(counts.values()) == len(ROWS)
    assert [row["score"] for row in reply.results["basic::equality"].score_rows] == [0.0, 0.0]


def test_unknown_scoring_function_is_not_found(scoring):
    with pytest.raises(StackmeshClientError) as caught:
        score(scoring, ROWS, ["basic::no-such-function"])
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert "basic::no-such-function" in caught.value.message
    assert "stackmesh scoring-functions list" in caught.value.message


def test_embedding_model_as_judge_is_invalid_argument(scoring):
    params = {"judge_model": EMBED_MODEL, "prompt_template": JUDGE_TEMPLATE, "judge_score_regexes": JUDGE_REGEXES}
    with pytest.raises(StackmeshClientError) as caught:
        score(scoring, ROWS, ["llm-as-judge::base"], {"llm-as-judge::base": params})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert EMBED_MODEL in caught.value.message and "not an LLM" in caught.value.message


def test_score_batch_over_registered_datasets(client, mesh, scoring):
    datasets = registry_pb2_grpc.DatasetsServiceStub(client.channel)
    call(datasets.RegisterDataset, rpb.RegisterDatasetRequest(
        dataset_id="qa-inline", purpose="eval/question-answer", rows=[struct(r) for r in ROWS]))
    reply = call(scoring.ScoreBatch, spb.ScoreBatchRequest(dataset_id="qa-inline",
                                                           scoring_functions=["basic::subset_of"]))
    assert reply.dataset_id == "qa-inline" and reply.rows_scored == 2
    assert [row["score"] for row in reply.results["basic::subset_of"].score_rows] == [1.0, 0.0]

    # A file larger than one IterRows page (10,000 rows): ScoreBatch reads every page.
    path = mesh.directory / "mc.jsonl"
    total = 10_050
    with path.open("w") as out:
        for i in range(total):
            out.write(json.dumps({"input_query": f"q{i}", "generated_answer": f"Answer: {'ABCD'[i % 4]}",
                                  "expected_answer": "A"}) + "\n")
    call(datasets.RegisterDataset, rpb.RegisterDatasetRequest(
        dataset_id="mc-file", purpose="eval/question-answer", uri=path.as_uri()))
    reply = call(scoring.ScoreBatch, spb.ScoreBatchRequest(
        dataset_id="mc-file", scoring_functions=["basic::regex_parser_multiple_choice_answer"]), timeout=300)
    assert reply.rows_scored == total
    accuracy = reply.results["basic::regex_parser_multiple_choice_answer"].aggregated_results["accuracy"]
    assert accuracy["num_total"] == total and accuracy["num_correct"] == (total + 3) // 4

    with pytest.raises(StackmeshClientError) as caught:
        call(scoring.ScoreBatch, spb.ScoreBatchRequest(dataset_id="no-such-dataset",
                                                       scoring_functions=["basic::equality"]))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and "no-such-dataset" in caught.value.message
