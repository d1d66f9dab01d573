"""VectorIOService: proto <-> domain around the core; no search or storage logic here."""

from __future__ import annotations

from google.protobuf import json_format

from services.common.errors import InvalidArgument
from services.common.protoutil import struct
from services.vector_io.core import ChunkInput, VectorIOCore
from services.vector_io.providers.base import ScoredChunk, SearchMode
from stackmesh.vector_io.v1 import vector_io_pb2 as pb, vector_io_pb2_grpc

__all__ = ["VectorIOServicer"]

_MODES = {pb.SEARCH_MODE_UNSPECIFIED: SearchMode.VECTOR, pb.SEARCH_MODE_VECTOR: SearchMode.VECTOR,
          pb.SEARCH_MODE_KEYWORD: SearchMode.KEYWORD, pb.SEARCH_MODE_HYBRID: SearchMode.HYBRID}


def _chunk_in(chunk: pb.Chunk) -> ChunkInput:
    return ChunkInput(content=chunk.content, metadata=json_format.MessageToDict(chunk.metadata),
                      embedding=chunk.embedding, chunk_id=chunk.chunk_id, document_id=chunk.document_id)


def _scored_out(hit: ScoredChunk) -> pb.ScoredChunk:
    chunk = hit.chunk
    return pb.ScoredChunk(score=hit.score, chunk=pb.Chunk(content=chunk.content, metadata=struct(chunk.metadata),
                                                          chunk_id=chunk.chunk_id, document_id=chunk.document_id))


def _timeout(context) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


class VectorIOServicer(vector_io_pb2_grpc.VectorIOServiceServicer):
    def __init__(self, core: VectorIOCore) -> None:
        self.core = core

    async def InsertChunks(self, request, context):
        chunk_ids = await self.core.insert(request.vector_db_id, [_chunk_in(c) for c in request.chunks],
                                           timeout=_timeout(context), metadata=context.invocation_metadata() or ())
        return pb.InsertChunksResponse(inserted=len(chunk_ids), chunk_ids=chunk_ids)

    async def QueryChunks(self, request, context):
        mode = _MODES.get(request.mode)
        if mode is None:
            raise InvalidArgument(f"unknown search mode {request.mode}; use vector, keyword or hybrid",
                                  reason="BAD_SEARCH_MODE")
        hits = await self.core.query(request.vector_db_id, request.query, mode=mode,
                                     query_embedding=request.query_embedding, max_chunks=request.max_chunks,
                                     score_threshold=request.score_threshold, timeout=_timeout(context),
                                     metadata=context.invocation_metadata() or ())
        return pb.QueryChunksResponse(chunks=[_scored_out(hit) for hit in hits])
