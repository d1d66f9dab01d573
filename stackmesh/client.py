"""A small typed Python client for a stackmesh gateway (used by the CLI and the tests).

    from stackmesh.client import StackmeshClient
    with StackmeshClient("127.0.0.1:50051") as sm:
        print(sm.chat("SmolLM2-135M-Instruct", "What is the capital of France?"))
        vector = sm.embed("all-MiniLM-L6-v2", ["hello"])[0]

Errors arrive as ``StackmeshClientError`` with the gRPC code, the message and the server's
``ErrorInfo`` reason and metadata.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import grpc
from google.protobuf import json_format, struct_pb2

from stackmesh.common.v1 import common_pb2
from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from stackmesh.tool_runtime.v1 import tool_runtime_pb2 as tpb, tool_runtime_pb2_grpc
from stackmesh.vector_io.v1 import vector_io_pb2 as vpb, vector_io_pb2_grpc
from stackmesh.client_errors import StackmeshClientError, call as _call
from stackmesh.client_evaluation import EvaluationCalls
from stackmesh.client_training import TrainingCalls

__all__ = ["StackmeshClient", "StackmeshClientError", "DEFAULT_URL", "RESOURCE_COLLECTIONS"]

DEFAULT_URL = "127.0.0.1:50051"
MODEL_TYPES = {"llm": common_pb2.MODEL_TYPE_LLM, "embedding": common_pb2.MODEL_TYPE_EMBEDDING,
               "rerank": common_pb2.MODEL_TYPE_RERANK}

SEARCH_MODES = {"vector": vpb.SEARCH_MODE_VECTOR, "keyword": vpb.SEARCH_MODE_KEYWORD, "hybrid": vpb.SEARCH_MODE_HYBRID}

# CLI collection name -> (stub, Name, Plural, list response field)
RESOURCE_COLLECTIONS: dict[str, tuple[Any, str, str, str]] = {
    "models": (registry_pb2_grpc.ModelsServiceStub, "Model", "Models", "models"),
    "shields": (registry_pb2_grpc.ShieldsServiceStub, "Shield", "Shields", "shields"),
    "vector-dbs": (registry_pb2_grpc.VectorDBsServiceStub, "VectorDB", "VectorDBs", "vector_dbs"),
    "datasets": (registry_pb2_grpc.DatasetsServiceStub, "Dataset", "Datasets", "datasets"),
    "scoring-functions": (registry_pb2_grpc.ScoringFunctionsServiceStub, "ScoringFunction", "ScoringFunctions",
                          "scoring_functions"),
    "benchmarks": (registry_pb2_grpc.BenchmarksServiceStub, "Benchmark", "Benchmarks", "benchmarks"),
    "toolgroups": (registry_pb2_grpc.ToolGroupsServiceStub, "ToolGroup", "ToolGroups", "tool_groups"),
}


class StackmeshClient(EvaluationCalls, TrainingCalls):
    """Calls through one gateway channel; shields, datasets, scoring and eval come from EvaluationCalls,
    fine-tuning jobs from TrainingCalls."""

    def __init__(self, url: str | None = None, timeout: float = 120.0) -> None:
        self.url = url or os.environ.get("STACKMESH_URL") or DEFAULT_URL
        self.timeout = timeout
        self.channel = grpc.insecure_channel(self.url, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.providers_stub = registry_pb2_grpc.ProvidersServiceStub(self.channel)
        self.vector_io = vector_io_pb2_grpc.VectorIOServiceStub(self.channel)
        self.tool_runtime = tool_runtime_pb2_grpc.ToolRuntimeServiceStub(self.channel)
        self._init_evaluation_stubs()
        self._init_training_stubs()

    def __enter__(self) -> "StackmeshClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # ------------------------------------------------------------------ resources
    def list(self, collection: str, provider_id: str = "") -> list[common_pb2.Resource]:
        stub_cls, _, plural, field = RESOURCE_COLLECTIONS[collection]
        stub = stub_cls(self.channel)
        request_cls = getattr(rpb, f"List{plural}Request")
        out, token = [], ""
        while True:
            reply = _call(getattr(stub, f"List{plural}"), request_cls(page_token=token, provider_id=provider_id),
                          timeout=self.timeout)
            out.extend(getattr(reply, field))
            token = reply.next_page_token
            if not token:
                return out

    def get(self, collection: str, identifier: str) -> common_pb2.Resource:
        stub_cls, name, _, _ = RESOURCE_COLLECTIONS[collection]
        request_cls = getattr(rpb, f"Get{name}Request")
        id_field = request_cls.DESCRIPTOR.fields[0].name
        reply = _call(getattr(stub_cls(self.channel), f"Get{name}"), request_cls(**{id_field: identifier}),
                      timeout=self.timeout)
        return getattr(reply, reply.DESCRIPTOR.fields[0].name)

    def unregister(self, collection: str, identifier: str) -> None:
        stub_cls, name, _, _ = RESOURCE_COLLECTIONS[collection]
        request_cls = getattr(rpb, f"Unregister{name}Request")
        id_field = request_cls.DESCRIPTOR.fields[0].name
        _call(getattr(stub_cls(self.channel), f"Unregister{name}"), request_cls(**{id_field: identifier}),
              timeout=self.timeout)

    def register_model(self, model_id: str, *, provider_id: str = "", provider_model_id: str = "",
                       model_type: str = "llm", metadata: dict[str, Any] | None = None) -> common_pb2.Resource:
        meta = struct_pb2.Struct()
        meta.update(metadata or {})
        request = rpb.RegisterModelRequest(model_id=model_id, provider_id=provider_id,
                                           provider_model_id=provider_model_id,
                                           model_type=MODEL_TYPES[model_type], metadata=meta)
        return _call(registry_pb2_grpc.ModelsServiceStub(self.channel).RegisterModel, request,
                     timeout=self.timeout).model

    def register_vector_db(self, vector_db_id: str, embedding_model: str, *, provider_id: str = "",
                           embedding_dimension: int = 0) -> common_pb2.Resource:
        request = rpb.RegisterVectorDBRequest(vector_db_id=vector_db_id, embedding_model=embedding_model,
                                              provider_id=provider_id, embedding_dimension=embedding_dimension)
        return _call(registry_pb2_grpc.VectorDBsServiceStub(self.channel).RegisterVectorDB, request,
                     timeout=self.timeout).vector_db

    def register_tool_group(self, toolgroup_id: str, *, provider_id: str = "", mcp_endpoint: str = "",
                            mcp_command: list[str] | None = None) -> common_pb2.Resource:
        request = rpb.RegisterToolGroupRequest(toolgroup_id=toolgroup_id, provider_id=provider_id,
                                               mcp_endpoint=mcp_endpoint, mcp_command=mcp_command or [])
        return _call(registry_pb2_grpc.ToolGroupsServiceStub(self.channel).RegisterToolGroup, request,
                     timeout=self.timeout).tool_group

    def providers(self, api: str = "") -> list[common_pb2.Provider]:
        return list(_call(self.providers_stub.ListProviders, rpb.ListProvidersRequest(api=api),
                          timeout=self.timeout).providers)

    # ------------------------------------------------------------------ inference
    @staticmethod
    def chat_request(model: str, prompt: str | list[dict[str, str]], *, system: str | None = None,
                     max_tokens: int | None = None, temperature: float | None = None) -> ipb.ChatCompletionRequest:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if system:
            messages = [{"role": "system", "content": system}, *messages]
        sampling = ipb.SamplingParams()
        if max_tokens is not None:
            sampling.max_tokens = max_tokens
        if temperature is not None:
            sampling.temperature = temperature
        return ipb.ChatCompletionRequest(model=model, messages=[ipb.ChatMessage(**m) for m in messages],
                                         sampling=sampling)

    def chat(self, model: str, prompt: str | list[dict[str, str]], **kwargs: Any) -> str:
        reply = _call(self.inference.ChatCompletion, self.chat_request(model, prompt, **kwargs), timeout=self.timeout)
        return reply.choices[0].message.content

    def stream_chat(self, model: str, prompt: str | list[dict[str, str]], **kwargs: Any) -> Iterator[str]:
        call = self.inference.StreamChatCompletion(self.chat_request(model, prompt, **kwargs), timeout=self.timeout)
        try:
            for chunk in call:
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield choice.delta.content
        except grpc.RpcError as err:
            raise StackmeshClientError.from_rpc_error(err) from None

    def embed(self, model: str, inputs: list[str]) -> list[list[float]]:
        reply = _call(self.inference.Embeddings, ipb.EmbeddingsRequest(model=model, input=inputs), timeout=self.timeout)
        return [list(item.embedding) for item in reply.data]

    # ------------------------------------------------------------------ tools and RAG
    def list_tools(self, toolgroup_id: str = "") -> tpb.ListRuntimeToolsResponse:
        return _call(self.tool_runtime.ListRuntimeTools, tpb.ListRuntimeToolsRequest(toolgroup_id=toolgroup_id),
                     timeout=self.timeout)

    def invoke_tool(self, tool_name: str, arguments: dict[str, Any] | None = None,
                    toolgroup_id: str = "") -> tpb.InvokeToolResponse:
        args = struct_pb2.Struct()
        args.update(arguments or {})
        return _call(self.tool_runtime.InvokeTool, tpb.InvokeToolRequest(
            tool_name=tool_name, arguments=args, toolgroup_id=toolgroup_id), timeout=self.timeout)

    def insert_documents(self, vector_db_id: str, documents: list[dict[str, str]], *,
                         chunk_size_in_tokens: int = 0, chunk_overlap_in_tokens: int = 0) -> tpb.InsertDocumentsResponse:
        """documents: [{"document_id", "content"}] or [{"document_id", "uri": "file:///..."}]."""
        return _call(self.tool_runtime.InsertDocuments, tpb.InsertDocumentsRequest(
            vector_db_id=vector_db_id, documents=[tpb.RAGDocument(**d) for d in documents],
            chunk_size_in_tokens=chunk_size_in_tokens, chunk_overlap_in_tokens=chunk_overlap_in_tokens),
            timeout=self.timeout)

    def knowledge_search(self, query: str, vector_db_ids: list[str], *, max_chunks: int = 0,
                         mode: str = "vector") -> tpb.KnowledgeSearchResponse:
        return _call(self.tool_runtime.KnowledgeSearch, tpb.KnowledgeSearchRequest(
            query=query, vector_db_ids=vector_db_ids, max_chunks=max_chunks, mode=SEARCH_MODES[mode]),
            timeout=self.timeout)

    def insert_chunks(self, vector_db_id: str, chunks: list[dict[str, Any]]) -> vpb.InsertChunksResponse:
        """chunks: [{"content", "document_id"?, "chunk_id"?, "metadata"?: dict, "embedding"?: [float]}]."""
        messages = []
        for chunk in chunks:
            fields = dict(chunk)
            metadata = struct_pb2.Struct()
            metadata.update(fields.pop("metadata", None) or {})
            messages.append(vpb.Chunk(metadata=metadata, **fields))
        return _call(self.vector_io.InsertChunks, vpb.InsertChunksRequest(vector_db_id=vector_db_id, chunks=messages),
                     timeout=self.timeout)

    def query_chunks(self, vector_db_id: str, query: str, *, max_chunks: int = 0, mode: str = "vector",
                     score_threshold: float = 0.0, query_embedding: list[float] | None = None) -> vpb.QueryChunksResponse:
        return _call(self.vector_io.QueryChunks, vpb.QueryChunksRequest(
            vector_db_id=vector_db_id, query=query, max_chunks=max_chunks, mode=SEARCH_MODES[mode],
            score_threshold=score_threshold, query_embedding=query_embedding or []), timeout=self.timeout)

    @staticmethod
    def to_dict(message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
