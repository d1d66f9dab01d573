"""What the scoring service asks of the rest of the mesh: judge replies (inference), dataset rows
(datasetio) and model lookups (the registry cache) — each within the caller's deadline, each
failure turned into the error hierarchy with a message that says which service and what for.

A downstream status keeps its code (the dataset is NOT_FOUND, the model is INVALID_ARGUMENT for
chat) and its ErrorInfo reason; UNAVAILABLE says which service is down, so "scoring failed" never
hides "datasetio is not running".
"""

from __future__ import annotations

from typing import Any

import grpc

from services.common import errors as E
from services.common.errors import error_info_from_rpc_error
from services.common.mesh import MeshClient
from services.common.protoutil import to_dict
from services.common.registry_cache import RegistryCache
from services.common.resource_index import list_hint, require_llm
from services.scoring.providers.base import CallOptions
from stackmesh.common.v1 import common_pb2
from stackmesh.datasetio.v1 import datasetio_pb2, datasetio_pb2_grpc
from stackmesh.inference.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["MeshBackend", "downstream_error", "PAGE_ROWS", "PAGE_TIMEOUT_SECONDS"]

PAGE_ROWS = 10_000  # the most IterRows returns per call
PAGE_TIMEOUT_SECONDS = 60.0  # per page, when the caller set no deadline
MODEL = common_pb2.RESOURCE_TYPE_MODEL
_BY_CODE: dict[grpc.StatusCode, type[E.StackmeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: E.InvalidArgument, grpc.StatusCode.NOT_FOUND: E.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: E.AlreadyExists, grpc.StatusCode.FAILED_PRECONDITION: E.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: E.PermissionDenied, grpc.StatusCode.UNAVAILABLE: E.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: E.DeadlineExceeded, grpc.StatusCode.UNIMPLEMENTED: E.Unimplemented,
}


def downstream_error(service: str, err: grpc.aio.AioRpcError, doing: str) -> E.StackmeshError:
    """The error to report when the ``service`` call made for ``doing`` failed with ``err``."""
    code = err.code()
    details = err.details() or code.name
    info = error_info_from_rpc_error(err)
    metadata: dict[str, Any] = {**(dict(info.metadata) if info else {}), "service": service}
    reason = info.reason if info and info.reason else code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        return E.Unavailable(f"the {service} service is unavailable ({details}); {doing} needs it — check that it "
                             f"runs and is reachable (`stackmesh providers list`)", reason="SERVICE_UNAVAILABLE",
                             metadata=metadata)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return E.DeadlineExceeded(f"{doing} ran out of time waiting for the {service} service; give the call a "
                                  f"longer deadline", reason=reason, metadata=metadata)
    return _BY_CODE.get(code, E.StackmeshError)(f"{doing} failed: {details}", reason=reason, metadata=metadata)


class MeshBackend:
    """The scoring service's client side of the mesh, shared by the core and the providers."""

    def __init__(self, mesh: MeshClient, cache: RegistryCache) -> None:
        self.mesh = mesh
        self.cache = cache

    async def require_llm(self, model_id: str, role: str) -> None:
        try:
            model = await self.cache.resolve_fresh(MODEL, model_id)
        except E.NotFound:
            raise E.NotFound(f"the {role}, '{model_id}', is not a registered model; {list_hint(MODEL)}",
                             reason="MODEL_NOT_FOUND", metadata={"model_id": model_id}) from None
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise E.NotFound(f"the {role}, '{model_id}', is not a registered model; {list_hint(MODEL)}",
                                 reason="MODEL_NOT_FOUND", metadata={"model_id": model_id}) from None
            raise downstream_error("registry", err, f"looking up the {role} '{model_id}'") from None
        require_llm(model, f"the {role}, '{model_id}',")

    async def chat(self, model_id: str, prompt: str, *, temperature: float | None, max_tokens: int | None,
                   options: CallOptions, timeout_cap: float | None, doing: str) -> str:
        sampling = inference_pb2.SamplingParams()
        if temperature is not None:
            sampling.temperature = temperature
        if max_tokens is not None:
            sampling.max_tokens = max_tokens
        request = inference_pb2.ChatCompletionRequest(
            model=model_id, messages=[inference_pb2.ChatMessage(role="user", content=prompt)], sampling=sampling)
        stub = inference_pb2_grpc.InferenceServiceStub(self.mesh.channel("inference"))
        try:
            reply = await stub.ChatCompletion(request, timeout=options.remaining(timeout_cap, doing),
                                              metadata=options.metadata)
        except grpc.aio.AioRpcError as err:
            raise downstream_error("inference", err, doing) from None
        if not reply.choices:
            raise E.FailedPrecondition(f"{doing}: model '{model_id}' returned no choices", reason="EMPTY_COMPLETION",
                                       metadata={"model_id": model_id})
        return reply.choices[0].message.content

    async def dataset_rows(self, dataset_id: str, options: CallOptions) -> list[dict[str, Any]]:
        """Every row of ``dataset_id``, read a page of ``PAGE_ROWS`` at a time."""
        stub = datasetio_pb2_grpc.DatasetIOServiceStub(self.mesh.channel("datasetio"))
        rows: list[dict[str, Any]] = []
        start = 0
        while True:
            doing = f"reading dataset '{dataset_id}' from row {start}"
            try:
                page = await stub.IterRows(
                    datasetio_pb2.IterRowsRequest(dataset_id=dataset_id, start_index=start, limit=PAGE_ROWS),
                    timeout=options.remaining(PAGE_TIMEOUT_SECONDS, doing), metadata=options.metadata)
            except grpc.aio.AioRpcError as err:
                raise downstream_error("datasetio", err, doing) from None
            rows.extend(to_dict(row) for row in page.rows)
            if not page.has_more:
                return rows
            if page.next_index <= start:
                raise E.FailedPrecondition(f"{doing}: the datasetio service did not move past row {start}",
                                           reason="DATASET_PAGING_STUCK", metadata={"dataset_id": dataset_id})
            start = page.next_index
