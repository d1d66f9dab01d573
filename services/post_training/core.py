"""The post_training API independent of gRPC: checks a fine-tuning request completely before
anything is queued, then hands it to the provider; finds jobs for the other calls.

A request is refused up front, with the code a user can act on, rather than queued to fail later:
bad values and limits (INVALID_ARGUMENT), unknown names (NOT_FOUND), ids already taken
(ALREADY_EXISTS), models or datasets that cannot be used (FAILED_PRECONDITION), and memory or
queue limits (RESOURCE_EXHAUSTED).

Job ids are unique across providers (a client-chosen id is checked against all of them), so a
job request asks each provider in turn; with one provider, as usual, that is one store lookup.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from google.protobuf import json_format

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from services.common.paging import page_across_providers
from services.post_training.datasets import DatasetReader
from services.post_training.providers.base import Artifacts, JobInfo, PostTrainingProvider, TrainingSpec, job_not_found
from services.post_training.router import PostTrainingRouter
from services.post_training.spec import FineTuneRequest, normalized
from stackmesh.common.v1 import common_pb2

__all__ = ["PostTrainingCore"]


class PostTrainingCore:
    def __init__(self, router: PostTrainingRouter, providers: dict[str, PostTrainingProvider],
                 reader: DatasetReader) -> None:
        self.router = router
        self.providers = providers
        self.reader = reader

    def _provider(self, metadata: dict[str, Any]) -> PostTrainingProvider:
        """The provider that runs a new job: the only one, or the one metadata.provider_id names."""
        wanted = str(metadata.get("provider_id") or "")
        if wanted:
            if wanted not in self.providers:
                raise InvalidArgument(f"metadata.provider_id '{wanted}' is not a post_training provider of this "
                                      f"service (those are: {', '.join(sorted(self.providers))})",
                                      reason="PROVIDER_NOT_FOUND")
            return self.providers[wanted]
        if len(self.providers) == 1:
            return next(iter(self.providers.values()))
        if not self.providers:
            raise FailedPrecondition("this post_training service runs no provider; configure one under "
                                     "providers.post_training", reason="NO_PROVIDER")
        raise FailedPrecondition(f"several post_training providers are configured ({', '.join(sorted(self.providers))})"
                                 f"; name one in the request's metadata.provider_id", reason="PROVIDER_AMBIGUOUS")

    async def supervised_fine_tune(self, request: FineTuneRequest) -> JobInfo:
        fields = normalized(request)
        provider = self._provider(request.metadata)
        if request.job_id:
            for other in self.providers.values():
                if await other.get_job(request.job_id) is not None:
                    raise AlreadyExists(f"job_id '{request.job_id}' is already used by a job; pick a new id or "
                                        f"leave job_id empty for a generated one", reason="JOB_EXISTS",
                                        metadata={"job_id": request.job_id})
        base = await self.router.base_model(request.model)
        await self.router.training_dataset(request.dataset_id, "dataset")
        if request.validation_dataset_id:
            await self.router.training_dataset(request.validation_dataset_id, "validation dataset")
        serving = ""
        if request.output_model:
            await self.router.check_output_model(request.output_model)
            serving = self.router.serving_provider(getattr(provider.config, "inference_provider_id", None))
        rows = await self.reader.count(request.dataset_id)
        if rows == 0:
            raise FailedPrecondition(f"dataset '{request.dataset_id}' has no rows to train on",
                                     reason="DATASET_EMPTY", metadata={"dataset_id": request.dataset_id})
        spec = TrainingSpec(base=base, inference_provider_id=serving, **fields)
        await provider.check(spec, rows)
        return await provider.submit(spec, request.job_id, rows)

    async def _find(self, job_id: str) -> tuple[PostTrainingProvider, JobInfo]:
        if not job_id:
            raise InvalidArgument("job_id is required", reason="JOB_ID_MISSING")
        for provider in self.providers.values():
            info = await provider.get_job(job_id)
            if info is not None:
                return provider, info
        raise job_not_found(job_id)

    async def job_status(self, job_id: str) -> JobInfo:
        return (await self._find(job_id))[1]

    async def watch_job(self, job_id: str) -> AsyncIterator[JobInfo]:
        provider, _ = await self._find(job_id)
        async for info in provider.watch_job(job_id):
            yield info

    async def cancel_job(self, job_id: str) -> JobInfo:
        provider, _ = await self._find(job_id)
        return await provider.cancel_job(job_id)

    async def artifacts(self, job_id: str) -> Artifacts:
        provider, _ = await self._find(job_id)
        return await provider.artifacts(job_id)

    def models_of_job(self, job_id: str) -> list[str]:
        """Registered models whose metadata says they were made by ``job_id``."""
        out = []
        for resource in self.router.cache.index.all(common_pb2.RESOURCE_TYPE_MODEL):
            metadata = json_format.MessageToDict(resource.metadata)
            if str(metadata.get("post_training_job") or "") == job_id:
                out.append(resource.identifier)
        return sorted(out)

    async def delete_artifacts(self, job_id: str) -> int:
        provider, _ = await self._find(job_id)
        return await provider.delete_artifacts(job_id, self.models_of_job(job_id))

    async def list_jobs(self, requested_size: int, token: str) -> tuple[list[JobInfo], str]:
        """Newest first within each provider; providers in id order (one page may span two)."""
        return await page_across_providers(
            self.providers, requested_size, token, lambda provider, cursor, limit: provider.list_jobs(cursor, limit))
