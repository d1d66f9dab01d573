"""What an eval request names, resolved from the watched registry cache: the benchmark (and so the
eval provider that runs it, and its dataset), and the candidate model, which must be an LLM.

Checking here, before a job exists, turns the mistakes a user makes into immediate errors
(NOT_FOUND for an unknown benchmark or model, INVALID_ARGUMENT for an embedding model) instead
of jobs that fail later.
"""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.registry_cache import RegistryCache, resolve_named
from services.common.resource_index import list_hint, require_llm
from services.eval.providers.base import BenchmarkTarget, EvalProvider
from stackmesh.common.v1 import common_pb2

__all__ = ["EvalRouter"]

T = common_pb2


class EvalRouter:
    def __init__(self, providers: dict[str, EvalProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache

    async def _resolve(self, resource_type: int, identifier: str, what: str) -> common_pb2.Resource:
        return await resolve_named(self.cache, resource_type, identifier, what)

    async def benchmark(self, benchmark_id: str) -> tuple[EvalProvider, BenchmarkTarget]:
        """The provider running ``benchmark_id`` and the benchmark's dataset and scoring functions."""
        if not benchmark_id:
            raise InvalidArgument(f"benchmark_id is required; {list_hint(T.RESOURCE_TYPE_BENCHMARK)}",
                                  reason="BENCHMARK_ID_MISSING")
        resource = await self._resolve(T.RESOURCE_TYPE_BENCHMARK, benchmark_id, "benchmark")
        if resource.WhichOneof("spec") != "benchmark":  # "<provider_id>/x" names no registered benchmark
            raise NotFound(f"benchmark '{benchmark_id}' not found; {list_hint(T.RESOURCE_TYPE_BENCHMARK)}, or "
                           f"register it with a dataset and scoring functions", reason="RESOURCE_NOT_FOUND",
                           metadata={"identifier": benchmark_id})
        provider = self.providers.get(resource.provider_id)
        if provider is None:
            raise Unavailable(f"benchmark '{benchmark_id}' is served by eval provider '{resource.provider_id}', which "
                              f"this eval service does not run; check the mesh config", reason="PROVIDER_NOT_RUN")
        spec = resource.benchmark
        await self._dataset(benchmark_id, spec.dataset_id)
        return provider, BenchmarkTarget(benchmark_id, spec.dataset_id, tuple(spec.scoring_functions))

    async def _dataset(self, benchmark_id: str, dataset_id: str) -> None:
        try:
            await self._resolve(T.RESOURCE_TYPE_DATASET, dataset_id, "dataset")
        except NotFound:
            raise FailedPrecondition(f"benchmark '{benchmark_id}' reads dataset '{dataset_id}', which is no longer "
                                     f"registered; register the dataset again or register another benchmark",
                                     reason="DATASET_NOT_FOUND",
                                     metadata={"benchmark_id": benchmark_id, "dataset_id": dataset_id}) from None

    async def check_candidate(self, model: str) -> None:
        """Raise unless ``model`` is a registered (or routable) LLM."""
        if not model:
            raise InvalidArgument("benchmark_config.eval_candidate.model is required: the model to evaluate",
                                  reason="CANDIDATE_MODEL_MISSING")
        resource = await self._resolve(T.RESOURCE_TYPE_MODEL, model, "model")
        require_llm(resource, f"model '{model}'", "an eval candidate must be an LLM (model_type llm) that answers "
                    "chat completions")

    def check_scoring_params(self, benchmark: BenchmarkTarget, params: dict[str, dict], functions: list[str]) -> None:
        unknown = sorted(set(params) - set(functions))
        if unknown:
            raise InvalidArgument(f"scoring_params name {', '.join(repr(f) for f in unknown)}, which benchmark "
                                  f"'{benchmark.benchmark_id}' does not score with (it uses "
                                  f"{', '.join(functions)})", reason="UNKNOWN_SCORING_PARAMS",
                                  metadata={"functions": ",".join(unknown)})
