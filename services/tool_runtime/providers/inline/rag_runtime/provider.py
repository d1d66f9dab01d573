"""``inline::rag-runtime``: the ``builtin::rag`` tool group.

InsertDocuments reads each document (text, ``file://``, ``data:``), chunks it by tokens with
overlap, and sends the chunks, without embeddings, to the vector_io service, which embeds them
with the vector DB's model. KnowledgeSearch queries every named vector DB concurrently, merges the
hits by score, and formats them for a model prompt (see ``formatting``), citing each chunk.

The group's one tool, ``knowledge_search``, takes ``query``; the vector DBs come from the call's
``vector_db_ids`` or the group's ``args.vector_db_ids``, and ``args.query_config`` (Llama Stack's
name) may set ``max_chunks``, ``mode``, ``score_threshold`` and ``max_tokens_in_context``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from typing import Any

import grpc
from google.protobuf import json_format

from services.common.errors import InvalidArgument, StackmeshError
from services.common.protoutil import struct
from services.tool_runtime.providers.base import CallOptions, Citation, Document, InsertResult, SearchQuery, \
    SearchResult, Tool, ToolContent, ToolGroupTarget, ToolResult, ToolRuntimeProvider
from services.tool_runtime.providers.inline.rag_runtime.chunking import Tokenizer, chunk_text, load_tokenizer
from services.tool_runtime.providers.inline.rag_runtime.config import RagRuntimeConfig
from services.tool_runtime.providers.inline.rag_runtime.documents import LoadedDocument, load_document
from services.tool_runtime.providers.inline.rag_runtime.formatting import format_results, pick_within_budget, plain
from stackmesh.vector_io.v1 import vector_io_pb2 as vpb, vector_io_pb2_grpc

__all__ = ["RagRuntimeProvider", "KNOWLEDGE_SEARCH"]

log = logging.getLogger("stackmesh.tool_runtime.rag")

KNOWLEDGE_SEARCH = "knowledge_search"
_SEARCH_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1,
                             "description": "The query to search for. Can be a natural language sentence or keywords."}},
    "required": ["query"],
}
_MODES = {"vector": vpb.SEARCH_MODE_VECTOR, "keyword": vpb.SEARCH_MODE_KEYWORD, "hybrid": vpb.SEARCH_MODE_HYBRID}


def chunk_id_of(document_id: str, index: int, text: str) -> str:
    """Stable id: inserting the same document again overwrites its chunks instead of duplicating them."""
    digest = hashlib.md5(f"{document_id}\x00{index}\x00{text}".encode(), usedforsecurity=False).hexdigest()
    return str(uuid.UUID(digest))


class RagRuntimeProvider(ToolRuntimeProvider):
    supports_rag = True
    config: RagRuntimeConfig

    def __init__(self, provider_id: str, config: RagRuntimeConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self.tokenizer: Tokenizer | None = None

    async def initialize(self) -> None:
        self.tokenizer = await asyncio.to_thread(load_tokenizer, self.config.tokenizer)
        log.info("rag runtime ready provider=%s tokenizer=%s", self.provider_id, self.tokenizer.name)

    def _stub(self) -> vector_io_pb2_grpc.VectorIOServiceStub:
        assert self.mesh is not None, "attach() the mesh before use"
        return vector_io_pb2_grpc.VectorIOServiceStub(self.mesh.channel("vector_io"))

    # ------------------------------------------------------------------ insert
    def _chunks(self, loaded: LoadedDocument, extra: dict[str, Any], size: int, overlap: int) -> list[vpb.Chunk]:
        assert self.tokenizer is not None
        pieces = chunk_text(loaded.text, self.tokenizer, size, overlap)
        out = []
        for piece in pieces:
            chunk_id = chunk_id_of(loaded.document_id, piece.index, piece.text)
            metadata = {"source": loaded.source, **extra, "document_id": loaded.document_id, "chunk_id": chunk_id,
                        "position": piece.index, "chunk_count": len(pieces), "token_count": piece.token_count,
                        "char_start": piece.start, "char_end": piece.end, "mime_type": loaded.mime_type,
                        "chunk_tokenizer": self.tokenizer.name}
            out.append(vpb.Chunk(content=piece.text, metadata=struct(metadata), chunk_id=chunk_id,
                                 document_id=loaded.document_id))
        return out

    def _prepare(self, documents: list[Document], size: int, overlap: int) -> list[vpb.Chunk]:
        chunks: list[vpb.Chunk] = []
        seen: dict[str, int] = {}
        for i, doc in enumerate(documents):
            loaded = load_document(doc, i, self.config)
            if loaded.document_id in seen:
                raise InvalidArgument(f"documents[{i}] and documents[{seen[loaded.document_id]}] share document_id "
                                      f"'{loaded.document_id}'; give each document its own id",
                                      reason="DUPLICATE_DOCUMENT_ID")
            seen[loaded.document_id] = i
            chunks.extend(self._chunks(loaded, doc.metadata, size, overlap))
        return chunks

    async def insert_documents(self, vector_db_id: str, documents: list[Document], chunk_size: int,
                               chunk_overlap: int, options: CallOptions) -> InsertResult:
        if chunk_size < 0 or chunk_overlap < 0:
            raise InvalidArgument("chunk_size_in_tokens and chunk_overlap_in_tokens must not be negative",
                                  reason="BAD_CHUNKING")
        size = chunk_size or self.config.default_chunk_size_in_tokens
        # Unset overlap: the configured default, or a quarter of a size the caller chose (Llama Stack's rule).
        overlap = chunk_overlap or (size // 4 if chunk_size else self.config.default_chunk_overlap_in_tokens)
        if overlap >= size:
            raise InvalidArgument(f"chunk_overlap_in_tokens ({overlap}) must be smaller than chunk_size_in_tokens "
                                  f"({size})", reason="BAD_CHUNKING")
        chunks = await asyncio.to_thread(self._prepare, documents, size, overlap)
        stub, batch = self._stub(), self.config.insert_batch_size
        for start in range(0, len(chunks), batch):
            await stub.InsertChunks(vpb.InsertChunksRequest(vector_db_id=vector_db_id, chunks=chunks[start:start + batch]),
                                    timeout=options.timeout, metadata=options.metadata)
        log.info("inserted documents vector_db=%s documents=%d chunks=%d", vector_db_id, len(documents), len(chunks))
        return InsertResult(documents=len(documents), chunks=len(chunks))

    # ------------------------------------------------------------------ search
    async def _query(self, vector_db_id: str, query: SearchQuery, max_chunks: int,
                     options: CallOptions) -> list[Citation]:
        reply = await self._stub().QueryChunks(
            vpb.QueryChunksRequest(vector_db_id=vector_db_id, query=query.query, max_chunks=max_chunks,
                                   score_threshold=query.score_threshold, mode=query.mode),
            timeout=options.timeout, metadata=options.metadata)
        out = []
        for hit in reply.chunks:
            metadata = json_format.MessageToDict(hit.chunk.metadata)
            out.append(Citation(document_id=hit.chunk.document_id or str(metadata.get("document_id", "")),
                                vector_db_id=vector_db_id, chunk_id=hit.chunk.chunk_id or str(metadata.get("chunk_id", "")),
                                score=hit.score, text=hit.chunk.content, metadata=metadata))
        return out

    async def knowledge_search(self, query: SearchQuery, options: CallOptions) -> SearchResult:
        assert self.tokenizer is not None
        max_chunks = query.max_chunks or self.config.default_max_chunks
        per_db = await asyncio.gather(*(self._query(db, query, max_chunks, options) for db in query.vector_db_ids))
        merged = sorted((c for hits in per_db for c in hits), key=lambda c: c.score, reverse=True)[:max_chunks]
        budget = query.max_tokens_in_context or self.config.default_max_tokens_in_context
        picked = pick_within_budget(merged, budget, self.tokenizer.count)
        return SearchResult(content=format_results(query.query, picked), citations=picked)

    # ------------------------------------------------------------------ the tool group
    async def list_tools(self, group: ToolGroupTarget, options: CallOptions) -> list[Tool]:
        return [Tool(name=KNOWLEDGE_SEARCH, input_schema=_SEARCH_SCHEMA, toolgroup_id=group.toolgroup_id,
                     description="Search for information in a database.")]

    def _search_query(self, group: ToolGroupTarget, arguments: dict[str, Any]) -> SearchQuery:
        dbs = arguments.get("vector_db_ids", group.args.get("vector_db_ids") or [])
        dbs = [dbs] if isinstance(dbs, str) else dbs
        if not isinstance(dbs, list) or not all(isinstance(d, str) and d for d in dbs):
            raise InvalidArgument("vector_db_ids must be a list of vector DB ids", reason="INVALID_TOOL_ARGUMENTS",
                                  metadata={"field": "vector_db_ids"})
        if not dbs:
            raise InvalidArgument(f"knowledge_search needs vector DBs: pass \"vector_db_ids\" in the arguments, or "
                                  f"register tool group '{group.toolgroup_id}' with args {{\"vector_db_ids\": [...]}}",
                                  reason="VECTOR_DB_IDS_MISSING", metadata={"field": "vector_db_ids"})
        config = {**(group.args.get("query_config") or {}), **(arguments.get("query_config") or {})}
        mode = str(config.get("mode") or "vector").lower()
        if mode not in _MODES:
            raise InvalidArgument(f"query_config.mode '{mode}' is not one of {', '.join(_MODES)}",
                                  reason="INVALID_TOOL_ARGUMENTS", metadata={"field": "query_config.mode"})
        return SearchQuery(query=arguments["query"], vector_db_ids=tuple(dbs), mode=_MODES[mode],
                           max_chunks=int(config.get("max_chunks") or 0),
                           score_threshold=float(config.get("score_threshold") or 0.0),
                           max_tokens_in_context=int(config.get("max_tokens_in_context") or 0))

    async def invoke_tool(self, group: ToolGroupTarget, tool: str, arguments: dict[str, Any],
                          options: CallOptions) -> ToolResult:
        query = self._search_query(group, arguments)  # bad arguments: INVALID_ARGUMENT, as for any tool
        try:
            result = await self.knowledge_search(query, options)
        except StackmeshError as err:
            return ToolResult.error(f"knowledge_search failed: {err.message}", error_type=err.reason)
        except grpc.aio.AioRpcError as err:
            return ToolResult.error(f"knowledge_search failed: {err.details()}", error_type=err.code().name)
        citations = result.citations
        return ToolResult(content=[ToolContent("text", result.content)], metadata={
            "document_ids": [c.document_id for c in citations], "chunks": [c.text for c in citations],
            "scores": [c.score for c in citations], "vector_db_ids": [c.vector_db_id for c in citations],
            "chunk_ids": [c.chunk_id for c in citations],
            "positions": [plain(c.metadata.get("position")) for c in citations]})
