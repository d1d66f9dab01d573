"""The eval API independent of gRPC: checks a request, resolves what it names, hands it to the
provider running the benchmark (or holding the job).

Job ids are unique across providers (random), so a job request without a benchmark asks each
provider in turn; with one eval provider per service, as usual, that is one store lookup.
"""

from __future__ import annotations

import dataclasses
from typing import Any, AsyncIterator

from services.common.errors import InvalidArgument, NotFound
from services.common.paging import page_across_providers
from services.eval.providers.base import (Candidate, EvalProvider, EvalResult, JobInfo, JobResult, RunSpec,
                                          job_not_found)
from services.eval.router import EvalRouter

__all__ = ["EvalCore", "RunRequest"]

MAX_INLINE_ROWS = 10_000


class RunRequest:
    """A BenchmarkConfig in domain terms."""

    def __init__(self, candidate: Candidate, scoring_params: dict[str, dict[str, Any]], num_examples: int) -> None:
        self.candidate, self.scoring_params, self.num_examples = candidate, scoring_params, num_examples


class EvalCore:
    def __init__(self, router: EvalRouter) -> None:
        self.router = router
        self.providers = router.providers

    async def _spec(self, benchmark_id: str, request: RunRequest,
                    functions: list[str] | None = None) -> tuple[EvalProvider, RunSpec]:
        if request.num_examples < 0:
            raise InvalidArgument("benchmark_config.num_examples must not be negative (0: every row)",
                                  reason="BAD_NUM_EXAMPLES")
        provider, benchmark = await self.router.benchmark(benchmark_id)
        await self.router.check_candidate(request.candidate.model)
        if functions:
            benchmark = dataclasses.replace(benchmark, scoring_functions=tuple(functions))
        self.router.check_scoring_params(benchmark, request.scoring_params, list(benchmark.scoring_functions))
        return provider, RunSpec(benchmark, request.candidate, request.scoring_params, request.num_examples)

    async def run_eval(self, benchmark_id: str, request: RunRequest) -> JobInfo:
        provider, spec = await self._spec(benchmark_id, request)
        return await provider.run_eval(spec)

    async def evaluate_rows(self, benchmark_id: str, rows: list[dict[str, Any]], functions: list[str],
                            request: RunRequest, timeout: float | None) -> EvalResult:
        if len(rows) > MAX_INLINE_ROWS:
            raise InvalidArgument(f"input_rows holds {len(rows)} rows; at most {MAX_INLINE_ROWS} per call (run a "
                                  f"job over a dataset for more)", reason="TOO_MANY_ROWS")
        provider, spec = await self._spec(benchmark_id, request, functions)
        return await provider.evaluate_rows(spec, rows, timeout)

    async def _find(self, job_id: str, benchmark_id: str) -> tuple[EvalProvider, JobInfo]:
        if not job_id:
            raise InvalidArgument("job_id is required", reason="JOB_ID_MISSING")
        for provider in self.providers.values():
            info = await provider.get_job(job_id)
            if info is not None:
                if benchmark_id and info.benchmark_id != benchmark_id:
                    raise NotFound(f"eval job '{job_id}' is a job of benchmark '{info.benchmark_id}', not "
                                   f"'{benchmark_id}'", reason="JOB_NOT_FOUND",
                                   metadata={"job_id": job_id, "benchmark_id": benchmark_id})
                return provider, info
        raise job_not_found(job_id)

    async def job_status(self, job_id: str, benchmark_id: str) -> JobInfo:
        return (await self._find(job_id, benchmark_id))[1]

    async def watch_job(self, job_id: str, benchmark_id: str) -> AsyncIterator[JobInfo]:
        provider, _ = await self._find(job_id, benchmark_id)
        async for info in provider.watch_job(job_id):
            yield info

    async def job_result(self, job_id: str, benchmark_id: str) -> JobResult:
        provider, _ = await self._find(job_id, benchmark_id)
        return await provider.job_result(job_id)

    async def cancel_job(self, job_id: str, benchmark_id: str) -> JobInfo:
        provider, _ = await self._find(job_id, benchmark_id)
        return await provider.cancel_job(job_id)

    async def list_jobs(self, benchmark_id: str, requested_size: int, token: str) -> tuple[list[JobInfo], str]:
        """Newest first within each provider; providers in id order (one page may span two)."""
        return await page_across_providers(
            self.providers, requested_size, token,
            lambda provider, cursor, limit: provider.list_jobs(benchmark_id, cursor, limit))
