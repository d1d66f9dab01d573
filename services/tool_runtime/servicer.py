"""ToolRuntimeService: proto <-> domain types around the router; no provider logic here."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from services.common.errors import InvalidArgument
from services.common.paging import decode_token, encode_token, page_size
from services.common.protoutil import struct
from services.tool_runtime.arguments import json_numbers
from services.tool_runtime.providers.base import CallOptions, Document, SearchQuery, Tool
from services.tool_runtime.router import ToolRuntimeRouter
from stackmesh.tool_runtime.v1 import tool_runtime_pb2 as pb, tool_runtime_pb2_grpc

__all__ = ["ToolRuntimeServicer", "call_options"]

# Trace context passed on to the services this one calls (vector_io, inference).
_PROPAGATED = ("traceparent", "tracestate", "baggage")


def call_options(context: grpc.aio.ServicerContext) -> CallOptions:
    remaining = context.time_remaining()
    metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k in _PROPAGATED)
    return CallOptions(timeout=remaining if remaining is not None and remaining < 1e8 else None, metadata=metadata)


def _tool_def(tool: Tool) -> pb.ToolDef:
    return pb.ToolDef(name=tool.name, description=tool.description, input_schema=struct(tool.input_schema),
                      toolgroup_id=tool.toolgroup_id)


def _page(tools: list[Tool], request: pb.ListRuntimeToolsRequest) -> tuple[list[Tool], str]:
    """Tools ordered by (group, name); the token is the last key of the page."""
    ordered = sorted(tools, key=lambda t: (t.toolgroup_id, t.name))
    after = decode_token(request.page_token)
    if after:
        ordered = [t for t in ordered if f"{t.toolgroup_id}\x00{t.name}" > after]
    size = page_size(request.page_size)
    page = ordered[:size]
    more = len(ordered) > size
    return page, encode_token(f"{page[-1].toolgroup_id}\x00{page[-1].name}") if more and page else ""


class ToolRuntimeServicer(tool_runtime_pb2_grpc.ToolRuntimeServiceServicer):
    def __init__(self, router: ToolRuntimeRouter) -> None:
        self.router = router

    async def ListRuntimeTools(self, request, context):
        options = call_options(context)
        if request.toolgroup_id:
            tools, errors = await self.router.list_group(request.toolgroup_id, options), []
        else:
            tools, errors = await self.router.list_all(options)
        page, token = _page(tools, request)
        return pb.ListRuntimeToolsResponse(
            tools=[_tool_def(t) for t in page], next_page_token=token,
            # Reported once, with the first page: a client concatenating pages sees each failure once.
            errors=[] if request.page_token else [pb.ToolGroupError(toolgroup_id=g, message=m) for g, m in errors])

    async def InvokeTool(self, request, context):
        arguments = json_numbers(json_format.MessageToDict(request.arguments))
        result = await self.router.invoke(request.tool_name, arguments, request.toolgroup_id, call_options(context))
        return pb.InvokeToolResponse(content=[pb.ToolContent(type=c.type, text=c.text) for c in result.content],
                                     is_error=result.is_error, error_message=result.error_message,
                                     metadata=struct(result.metadata))

    async def InsertDocuments(self, request, context):
        if not request.vector_db_id:
            raise InvalidArgument("vector_db_id is empty; list vector DBs with `stackmesh vector-dbs list`",
                                  reason="VECTOR_DB_ID_MISSING")
        if not request.documents:
            raise InvalidArgument("documents is empty; send at least one {document_id, content | uri}",
                                  reason="DOCUMENTS_MISSING")
        await self.router.check_vector_dbs([request.vector_db_id])
        documents = [Document(document_id=d.document_id, content=d.content, uri=d.uri, mime_type=d.mime_type,
                              metadata=json_numbers(json_format.MessageToDict(d.metadata))) for d in request.documents]
        provider = await self.router.rag_provider()
        result = await provider.insert_documents(request.vector_db_id, documents, request.chunk_size_in_tokens,
                                                 request.chunk_overlap_in_tokens, call_options(context))
        return pb.InsertDocumentsResponse(documents=result.documents, chunks=result.chunks)

    async def KnowledgeSearch(self, request, context):
        if not request.query.strip():
            raise InvalidArgument("query is empty", reason="QUERY_MISSING")
        if not request.vector_db_ids:
            raise InvalidArgument("vector_db_ids is empty; name at least one vector DB (`stackmesh vector-dbs list`)",
                                  reason="VECTOR_DB_IDS_MISSING")
        if request.max_chunks < 0 or request.max_tokens_in_context < 0:
            raise InvalidArgument("max_chunks and max_tokens_in_context must not be negative", reason="BAD_LIMIT")
        await self.router.check_vector_dbs(list(request.vector_db_ids))
        query = SearchQuery(query=request.query, vector_db_ids=tuple(request.vector_db_ids),
                            max_chunks=request.max_chunks, mode=request.mode, score_threshold=request.score_threshold,
                            max_tokens_in_context=request.max_tokens_in_context)
        provider = await self.router.rag_provider()
        result = await provider.knowledge_search(query, call_options(context))
        return pb.KnowledgeSearchResponse(content=result.content, citations=[
            pb.Citation(document_id=c.document_id, vector_db_id=c.vector_db_id, chunk_id=c.chunk_id, score=c.score,
                        text=c.text, metadata=struct(c.metadata)) for c in result.citations])
