"""What an eval request names, checked before a job exists (registry answers given as resources)."""

from __future__ import annotations

import grpc
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.eval.providers.base import BenchmarkTarget
from services.eval.router import EvalRouter
from stackmesh.common.v1 import common_pb2 as T

RESOURCES = {
    (T.RESOURCE_TYPE_MODEL, "chat"): T.Resource(identifier="chat", model=T.ModelSpec(model_type=T.MODEL_TYPE_LLM)),
    (T.RESOURCE_TYPE_MODEL, "embed"): T.Resource(identifier="embed",
                                                 model=T.ModelSpec(model_type=T.MODEL_TYPE_EMBEDDING)),
    (T.RESOURCE_TYPE_MODEL, "llama-cpp/other"): T.Resource(identifier="llama-cpp/other", provider_id="llama-cpp"),
    (T.RESOURCE_TYPE_BENCHMARK, "qa"): T.Resource(
        identifier="qa", provider_id="meta-reference",
        benchmark=T.BenchmarkSpec(dataset_id="questions", scoring_functions=["basic::subset_of"])),
    (T.RESOURCE_TYPE_BENCHMARK, "orphan"): T.Resource(identifier="orphan", provider_id="meta-reference",
                                                      benchmark=T.BenchmarkSpec(dataset_id="gone",
                                                                                scoring_functions=["f"])),
    (T.RESOURCE_TYPE_BENCHMARK, "elsewhere"): T.Resource(identifier="elsewhere", provider_id="other-eval",
                                                         benchmark=T.BenchmarkSpec(dataset_id="questions")),
    (T.RESOURCE_TYPE_DATASET, "questions"): T.Resource(identifier="questions"),
}


class RegistryAnswers:
    """Stands in for the registry cache: answers from RESOURCES, a miss as the registry's NOT_FOUND."""

    async def resolve_fresh(self, resource_type: int, identifier: str) -> T.Resource:
        found = RESOURCES.get((resource_type, identifier))
        if found is None:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="not found")
        return found


@pytest.fixture
def router() -> EvalRouter:
    return EvalRouter({"meta-reference": object()}, RegistryAnswers())  # type: ignore[arg-type]


async def test_a_benchmark_resolves_to_its_provider_dataset_and_functions(router):
    provider, benchmark = await router.benchmark("qa")
    assert benchmark == BenchmarkTarget("qa", "questions", ("basic::subset_of",))
    assert provider is router.providers["meta-reference"]


async def test_benchmark_errors(router):
    with pytest.raises(NotFound, match="benchmark 'nope' not found; list them with `stackmesh benchmarks list`"):
        await router.benchmark("nope")
    with pytest.raises(FailedPrecondition, match="reads dataset 'gone', which is no longer registered"):
        await router.benchmark("orphan")
    with pytest.raises(Unavailable, match="eval provider 'other-eval'"):
        await router.benchmark("elsewhere")
    with pytest.raises(InvalidArgument):
        await router.benchmark("")


async def test_the_candidate_must_be_an_llm(router):
    await router.check_candidate("chat")
    await router.check_candidate("llama-cpp/other")  # routed to a provider: inference decides
    with pytest.raises(InvalidArgument, match="model 'embed' is an embedding model, not an LLM; an eval candidate must be an LLM"):
        await router.check_candidate("embed")
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        await router.check_candidate("ghost")
    with pytest.raises(InvalidArgument, match="eval_candidate.model is required"):
        await router.check_candidate("")


def test_scoring_params_must_name_the_benchmarks_functions(router):
    benchmark = BenchmarkTarget("qa", "questions", ("basic::subset_of",))
    router.check_scoring_params(benchmark, {"basic::subset_of": {}}, ["basic::subset_of"])
    with pytest.raises(InvalidArgument, match="'basic::equality'"):
        router.check_scoring_params(benchmark, {"basic::equality": {}}, ["basic::subset_of"])
