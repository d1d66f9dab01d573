"""ScoringService: proto <-> domain around the core; no scoring logic here."""

from __future__ import annotations

from typing import Any

import grpc

from services.common.protoutil import struct, to_dict
from services.scoring.core import ScoringCore, ScoringResult
from services.scoring.providers.base import CallOptions
from stackmesh.scoring.v1 import scoring_pb2 as pb, scoring_pb2_grpc

__all__ = ["ScoringServicer"]

# Trace context and request ids a caller sent travel on to inference and datasetio.
_PROPAGATED = ("traceparent", "tracestate", "baggage", "x-request-id")


def _options(context: grpc.aio.ServicerContext) -> CallOptions:
    remaining = context.time_remaining()
    timeout = remaining if remaining is not None and remaining < 1e8 else None
    metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k in _PROPAGATED)
    return CallOptions.within(timeout, metadata)


def _params(request: Any) -> dict[str, dict[str, Any]]:
    return {fn_id: to_dict(value) for fn_id, value in request.params.items()}


def _results(results: dict[str, ScoringResult]) -> dict[str, pb.ScoringResult]:
    return {fn_id: pb.ScoringResult(score_rows=[struct(row) for row in result.score_rows],
                                    aggregated_results=struct(result.aggregated_results))
            for fn_id, result in results.items()}


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    def __init__(self, core: ScoringCore) -> None:
        self.core = core

    async def Score(self, request, context):
        results = await self.core.score([to_dict(row) for row in request.input_rows], list(request.scoring_functions),
                                        _params(request), _options(context))
        return pb.ScoreResponse(results=_results(results))

    async def ScoreBatch(self, request, context):
        results, rows_scored = await self.core.score_batch(request.dataset_id, list(request.scoring_functions),
                                                           _params(request), _options(context))
        return pb.ScoreBatchResponse(results=_results(results), dataset_id=request.dataset_id, rows_scored=rows_scored)
