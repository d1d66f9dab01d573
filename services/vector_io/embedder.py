"""Embedding chunks and queries with a vector DB's embedding model, through the inference service.

The texts go to ``stackmesh.inference.v1.InferenceService/Embeddings`` over the mesh client's
``inference`` channel (round robin over its replicas, retried on UNAVAILABLE), in batches of
``batch_size`` with a few batches in flight, all within the caller's deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

import numpy as np

from services.common.errors import DeadlineExceeded, FailedPrecondition
from services.common.mesh import MeshClient
from services.vector_io.providers.base import VectorDBTarget
from stackmesh.inference.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["Embedder"]

# Trace context and request ids a caller sent travel on to the inference service.
_PROPAGATED = ("traceparent", "tracestate", "x-request-id")


class Embedder:
    def __init__(self, mesh: MeshClient, batch_size: int = 128, in_flight: int = 4) -> None:
        self.mesh = mesh
        self.batch_size = batch_size
        self.in_flight = in_flight
        self._stub: inference_pb2_grpc.InferenceServiceStub | None = None

    @property
    def stub(self) -> inference_pb2_grpc.InferenceServiceStub:
        if self._stub is None:
            self._stub = inference_pb2_grpc.InferenceServiceStub(self.mesh.channel("inference"))
        return self._stub

    async def embed(self, db: VectorDBTarget, texts: Sequence[str], timeout: float | None = None,
                    metadata: Sequence[tuple[str, str]] = ()) -> np.ndarray:
        """float32 array (len(texts), db.dimension); row i embeds texts[i]."""
        out = np.empty((len(texts), db.dimension), dtype=np.float32)
        deadline = None if timeout is None else time.monotonic() + timeout
        forwarded = tuple((k, v) for k, v in metadata if k in _PROPAGATED)
        gate = asyncio.Semaphore(self.in_flight)

        async def batch(start: int) -> None:
            async with gate:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceeded(f"no time left to embed chunks of vector DB '{db.identifier}'")
                part = list(texts[start:start + self.batch_size])
                reply = await self.stub.Embeddings(
                    inference_pb2.EmbeddingsRequest(model=db.embedding_model, input=part),
                    timeout=remaining, metadata=forwarded)
                if len(reply.data) != len(part):
                    raise FailedPrecondition(f"model '{db.embedding_model}' returned {len(reply.data)} embeddings "
                                             f"for {len(part)} texts", reason="EMBEDDING_COUNT_MISMATCH")
                for item in reply.data:
                    if len(item.embedding) != db.dimension:
                        raise FailedPrecondition(
                            f"model '{db.embedding_model}' returned {len(item.embedding)}-dimensional vectors but "
                            f"vector DB '{db.identifier}' holds {db.dimension}; register a vector DB for this model",
                            reason="EMBEDDING_DIMENSION_MISMATCH",
                            metadata={"expected": db.dimension, "returned": len(item.embedding)})
                    out[start + item.index] = item.embedding

        await asyncio.gather(*(batch(start) for start in range(0, len(texts), self.batch_size)))
        return out
