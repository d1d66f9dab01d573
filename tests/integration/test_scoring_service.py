"""The scoring service in this process against a real registry on 127.0.0.1 (inference and
datasetio deliberately not running): discovery of basic::*, routing to both providers, every
request mistake answered before any work, and a downstream service that is down named as such."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2

from services.common.protoutil import struct
from services.common.server import ServiceHost
from services.scoring.app import build_scoring
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from stackmesh.scoring.v1 import scoring_pb2 as spb, scoring_pb2_grpc
from tests.conftest import make_config
from tests.support.mesh import free_port

PROVIDERS = {
    "inference": [{"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp"},
                  {"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"}],
    "scoring": [{"provider_id": "basic", "provider_type": "inline::basic"},
                {"provider_id": "llm-as-judge", "provider_type": "inline::llm-as-judge", "config": {"concurrency": 2}}],
}
JUDGE = {"judge_model": "judge-llm", "prompt_template": "Is {generated_answer} right for {expected_answer}? Score: N",
         "judge_score_regexes": [r"Score:\s*(\d)"]}
RESOURCES = {
    "models": [{"model_id": "judge-llm", "provider_id": "llama-cpp", "provider_model_id": "smol", "model_type": "llm"},
               {"model_id": "embedder", "provider_id": "sentence-transformers", "provider_model_id": "mini",
                "model_type": "embedding", "metadata": {"embedding_dimension": 384}}],
    "scoring_fns": [
        {"scoring_fn_id": "my-mc", "provider_id": "basic",
         "provider_scoring_fn_id": "basic::regex_parser_multiple_choice_answer",
         "params": {"parsing_regexes": [r"Option ([A-D])"], "aggregation_functions": ["accuracy"]}},
    ],
}


def S(value: dict) -> struct_pb2.Struct:
    return struct(value)


def qa(generated, expected, query="q") -> dict:
    return {"input_query": query, "generated_answer": generated, "expected_answer": expected}


@pytest.fixture
async def scoring(tmp_path, inproc):
    registry_host, _ = await inproc.registry(make_config(tmp_path, PROVIDERS, RESOURCES))
    down = free_port()  # nothing listens here: inference and datasetio are "down"
    config = make_config(tmp_path, PROVIDERS, RESOURCES, mesh={
        "registry": {"target": f"127.0.0.1:{registry_host.port}"},
        "services": {"inference": {"target": f"127.0.0.1:{down}"}, "datasetio": {"target": f"127.0.0.1:{down}"}}})
    host = ServiceHost("scoring", "127.0.0.1", 0, grace_seconds=0.5)
    await build_scoring(config, host)
    await host.start(install_signal_handlers=False)
    await host.set_serving(True)
    inproc.hosts.append(host)
    stub = scoring_pb2_grpc.ScoringServiceStub(inproc.channel(host.port))
    functions = registry_pb2_grpc.ScoringFunctionsServiceStub(inproc.channel(registry_host.port))
    await functions.RegisterScoringFunction(rpb.RegisterScoringFunctionRequest(
        scoring_fn_id="my-judge", provider_id="llm-as-judge", params=S(JUDGE)), timeout=5)
    for _ in range(200):  # discovery and the service's first registry sync are asynchronous
        try:
            listed = await functions.ListScoringFunctions(rpb.ListScoringFunctionsRequest(), timeout=5)
            if len(listed.scoring_functions) >= 7:  # 4 basic, base, my-mc, my-judge
                await stub.Score(spb.ScoreRequest(input_rows=[S(qa("a", "a"))], scoring_functions=["basic::equality"]),
                                 timeout=5)
                break
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    return stub, functions


async def error_of(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_builtin_functions_are_discovered(scoring):
    _, functions = scoring
    listed = (await functions.ListScoringFunctions(rpb.ListScoringFunctionsRequest(), timeout=5)).scoring_functions
    by_id = {f.identifier: f for f in listed}
    for fn_id in ("basic::equality", "basic::subset_of", "basic::regex_parser_multiple_choice_answer",
                  "basic::regex_parser_math_response"):
        assert by_id[fn_id].source == common_pb2.RESOURCE_SOURCE_DISCOVERED
        assert by_id[fn_id].provider_id == "basic"
        assert by_id[fn_id].scoring_function.description
    assert by_id["llm-as-judge::base"].provider_id == "llm-as-judge"
    assert by_id["my-mc"].source == common_pb2.RESOURCE_SOURCE_CONFIG


async def test_score_routes_each_function_and_aggregates(scoring):
    stub, _ = scoring
    rows = [S(qa("Option B, since Paris", "B")), S(qa("Option C", "B"))]
    reply = await stub.Score(spb.ScoreRequest(
        input_rows=rows, scoring_functions=["basic::subset_of", "my-mc", "basic::equality"],
        params={"basic::equality": S({"aggregation_functions": ["average", "categorical_count"]})}), timeout=10)
    assert set(reply.results) == {"basic::subset_of", "my-mc", "basic::equality"}
    assert [r["score"] for r in reply.results["basic::subset_of"].score_rows] == [1.0, 0.0]
    mc = reply.results["my-mc"]
    assert [(r["score"], r["parsed_answer"]) for r in mc.score_rows] == [(1.0, "B"), (0.0, "C")]
    assert dict(mc.aggregated_results["accuracy"]) == {"accuracy": 0.5, "num_correct": 1.0, "num_total": 2.0}
    eq = reply.results["basic::equality"].aggregated_results
    assert set(eq) == {"average", "categorical_count"}  # the request's list replaced the default accuracy
    assert dict(eq["categorical_count"]["categorical_count"]) == {"0": 2.0}


async def test_request_mistakes_are_answered_before_any_work(scoring):
    stub, _ = scoring

    def score(fns, rows=(qa("a", "a"),), params=None):
        return stub.Score(spb.ScoreRequest(input_rows=[S(r) for r in rows], scoring_functions=fns,
                                           params={k: S(v) for k, v in (params or {}).items()}), timeout=10)

    err = await error_of(score(["basic::nope"]))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "'basic::nope'" in err.details() and "stackmesh scoring-functions list" in err.details()
    err = await error_of(score(["basic::equality"], rows=[qa("a", "a"), {"generated_answer": "x"}]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input_rows[1]" in err.details() and "'expected_answer'" in err.details()
    err = await error_of(score(["basic::equality"], params={"basic::subset_of": {}}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'basic::subset_of'" in err.details()
    err = await error_of(score(["basic::equality"], params={"basic::equality": {"aggregation_functions": ["p99"]}}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "accuracy, average, median" in err.details()
    err = await error_of(score([]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # judge mistakes: no inference call is made (inference is down, so one would be UNAVAILABLE)
    err = await error_of(score(["llm-as-judge::base"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "judge_model, prompt_template, judge_score_regexes" in err.details()
    err = await error_of(score(["my-judge"], params={"my-judge": {"judge_model": "embedder"}}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'embedder'" in err.details() and "not an LLM" in err.details()
    err = await error_of(score(["my-judge"], params={"my-judge": {"judge_model": "ghost"}}))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "'ghost'" in err.details()
    err = await error_of(score(["my-judge"], rows=[{"generated_answer": "a"}]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'expected_answer'" in err.details()


async def test_downstream_services_that_are_down_are_named(scoring):
    stub, _ = scoring
    err = await error_of(stub.Score(spb.ScoreRequest(input_rows=[S(qa("a", "a"))], scoring_functions=["my-judge"]),
                                    timeout=20))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "inference service is unavailable" in err.details() and "my-judge" in err.details()
    err = await error_of(stub.ScoreBatch(spb.ScoreBatchRequest(dataset_id="qa", scoring_functions=["basic::equality"]),
                                         timeout=20))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "datasetio service is unavailable" in err.details()
    err = await error_of(stub.ScoreBatch(spb.ScoreBatchRequest(scoring_functions=["basic::equality"]), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "dataset_id" in err.details()
