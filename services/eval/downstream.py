"""The three services an evaluation calls, through the mesh client: datasetio (rows), inference
(generations), scoring (scores).

Each call has a timeout, and a failure is reported as a ``DownstreamError`` that names the service
("scoring service unavailable: ..."): that text becomes a failed job's reason, and the status of a
synchronous EvaluateRows. UNAVAILABLE is retried here for ``unavailable_grace_seconds`` on top
of the channel's own few retries, so a rolling restart of a peer does not fail a long job; a peer
that stays down fails it once the grace is spent.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import grpc
from google.protobuf import json_format

from services.common.errors import StackmeshError
from services.common.mesh import MeshClient, call_with_grace
from services.common.protoutil import struct
from services.eval.providers.base import Candidate
from stackmesh.datasetio.v1 import datasetio_pb2, datasetio_pb2_grpc
from stackmesh.inference.v1 import inference_pb2, inference_pb2_grpc
from stackmesh.scoring.v1 import scoring_pb2, scoring_pb2_grpc

__all__ = ["Downstream", "DownstreamError", "Timeouts", "MAX_PAGE_ROWS"]

MAX_PAGE_ROWS = 10_000  # datasetio's limit per IterRows call
T = TypeVar("T")


class DownstreamError(StackmeshError):
    """A call to another service failed; keeps that call's status code (UNAVAILABLE stays UNAVAILABLE)."""

    def __init__(self, service: str, err: grpc.aio.AioRpcError) -> None:
        code = err.code()
        details = err.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"{service} service unavailable: {details}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"{service} service did not answer in time: {details}"
        else:
            message = f"{service} service failed ({code.name}): {details}"
        super().__init__(message, reason="DOWNSTREAM_UNAVAILABLE" if code == grpc.StatusCode.UNAVAILABLE
                         else "DOWNSTREAM_FAILED", metadata={"service": service, "code": code.name})
        self.code = code
        self.service = service


class Timeouts:
    """Per-call limits (seconds)."""

    def __init__(self, datasetio: float = 60.0, generation: float = 300.0, scoring: float = 600.0,
                 unavailable_grace: float = 5.0) -> None:
        self.datasetio, self.generation, self.scoring = datasetio, generation, scoring
        self.unavailable_grace = unavailable_grace


def _message(data: dict[str, Any]) -> inference_pb2.ChatMessage:
    return json_format.ParseDict(data, inference_pb2.ChatMessage(), ignore_unknown_fields=True)


class Downstream:
    def __init__(self, mesh: MeshClient, timeouts: Timeouts | None = None) -> None:
        self.mesh = mesh
        self.timeouts = timeouts or Timeouts()
        self._stubs: dict[str, Any] = {}

    def _stub(self, service: str, cls: Callable[[grpc.aio.Channel], T]) -> T:
        stub = self._stubs.get(service)
        if stub is None:
            stub = self._stubs[service] = cls(self.mesh.channel(service))
        return stub

    async def _call(self, service: str, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call_with_grace(make, self.timeouts.unavailable_grace)
        except grpc.aio.AioRpcError as err:
            raise DownstreamError(service, err) from None

    # --- datasetio --------------------------------------------------------------------------
    async def iter_rows(self, dataset_id: str, start: int, stop: int | None,
                        page_rows: int = 1000) -> AsyncIterator[tuple[int, int, list[dict[str, Any]]]]:
        """Pages (first index, total rows, rows) of ``dataset_id`` from ``start`` up to ``stop``
        (exclusive; None: the end), in index order."""
        stub = self._stub("datasetio", datasetio_pb2_grpc.DatasetIOServiceStub)
        index = start
        while stop is None or index < stop:
            limit = min(page_rows, MAX_PAGE_ROWS, (stop - index) if stop is not None else MAX_PAGE_ROWS)
            request = datasetio_pb2.IterRowsRequest(dataset_id=dataset_id, start_index=index, limit=limit)
            reply = await self._call("datasetio", lambda: stub.IterRows(request, timeout=self.timeouts.datasetio))
            rows = [json_format.MessageToDict(r) for r in reply.rows]
            if rows:
                yield index, int(reply.total_rows), rows
            if not reply.has_more or not rows:
                return
            index = reply.next_index if reply.next_index > index else index + len(rows)

    async def total_rows(self, dataset_id: str) -> int:
        stub = self._stub("datasetio", datasetio_pb2_grpc.DatasetIOServiceStub)
        request = datasetio_pb2.IterRowsRequest(dataset_id=dataset_id, start_index=0, limit=1)
        reply = await self._call("datasetio", lambda: stub.IterRows(request, timeout=self.timeouts.datasetio))
        return int(reply.total_rows)

    # --- inference --------------------------------------------------------------------------
    async def generate(self, candidate: Candidate, messages: list[dict[str, Any]], timeout: float | None = None) -> str:
        """The candidate's answer to ``messages`` (the first choice's text)."""
        stub = self._stub("inference", inference_pb2_grpc.InferenceServiceStub)
        request = inference_pb2.ChatCompletionRequest(
            model=candidate.model, messages=[_message(m) for m in messages],
            sampling=json_format.ParseDict(candidate.sampling or {}, inference_pb2.SamplingParams()))
        limit = self.timeouts.generation if timeout is None else min(timeout, self.timeouts.generation)
        reply = await self._call("inference", lambda: stub.ChatCompletion(request, timeout=limit))
        return reply.choices[0].message.content if reply.choices else ""

    # --- scoring ----------------------------------------------------------------------------
    async def score(self, rows: list[dict[str, Any]], functions: list[str], params: dict[str, dict[str, Any]],
                    timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """fn -> {score_rows, aggregated_results} for ``rows``."""
        stub = self._stub("scoring", scoring_pb2_grpc.ScoringServiceStub)
        request = scoring_pb2.ScoreRequest(input_rows=[struct(r) for r in rows], scoring_functions=functions,
                                           params={k: struct(v) for k, v in params.items()})
        limit = self.timeouts.scoring if timeout is None else min(timeout, self.timeouts.scoring)
        reply = await self._call("scoring", lambda: stub.Score(request, timeout=limit))
        return {fn: {"score_rows": [json_format.MessageToDict(r) for r in result.score_rows],
                     "aggregated_results": json_format.MessageToDict(result.aggregated_results)}
                for fn, result in reply.results.items()}
