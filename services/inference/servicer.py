"""InferenceService: proto <-> OpenAI dicts around the router; no provider logic here."""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidArgument
from services.inference import convert
from services.inference.router import InferenceRouter
from stackmesh.inference.v1 import inference_pb2 as pb, inference_pb2_grpc

__all__ = ["InferenceServicer"]


def _require_messages(request: pb.ChatCompletionRequest) -> None:
    if not request.messages:
        raise InvalidArgument("messages must not be empty; send at least one {role: user, content: ...}",
                              reason="MESSAGES_MISSING")
    for i, message in enumerate(request.messages):
        if message.role not in ("system", "user", "assistant", "tool"):
            raise InvalidArgument(f"messages[{i}].role '{message.role}' is not one of system, user, assistant, tool",
                                  reason="BAD_ROLE")


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, router: InferenceRouter) -> None:
        self.router = router

    async def ChatCompletion(self, request, context):
        _require_messages(request)
        provider, model = await self.router.route(request.model, "llm")
        data = await provider.chat_completion(model, convert.chat_request(request))
        return convert.chat_response(data, request.model)

    async def StreamChatCompletion(self, request, context):
        _require_messages(request)
        provider, model = await self.router.route(request.model, "llm")
        async for chunk in provider.stream_chat_completion(model, convert.chat_request(request)):
            yield convert.chat_chunk(chunk, request.model)

    async def Completion(self, request, context):
        provider, model = await self.router.route(request.model, "llm")
        data = await provider.completion(model, convert.completion_request(request))
        return convert.completion_response(data, request.model)

    async def Embeddings(self, request, context):
        if not request.input:
            raise InvalidArgument("input must hold at least one string", reason="INPUT_MISSING")
        provider, model = await self.router.route(request.model, "embedding")
        data = await provider.embeddings(model, list(request.input), request.dimensions or None)
        expected = int(model.metadata.get("embedding_dimension") or 0)
        items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        for item in items:
            got = len(item["embedding"])
            if expected and got != expected and not request.dimensions:
                raise FailedPrecondition(
                    f"model '{request.model}' is registered with embedding_dimension {expected} but its provider "
                    f"returned {got}-dimensional vectors; re-register it with the right dimension",
                    reason="EMBEDDING_DIMENSION_MISMATCH", metadata={"registered": expected, "returned": got})
        usage = data.get("usage") or {}
        return pb.EmbeddingsResponse(
            model=request.model,
            data=[pb.Embedding(index=item.get("index", i), embedding=item["embedding"]) for i, item in enumerate(items)],
            usage=pb.Usage(prompt_tokens=usage.get("prompt_tokens") or 0, total_tokens=usage.get("total_tokens") or 0))
