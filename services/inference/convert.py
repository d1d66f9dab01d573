"""Proto <-> OpenAI-shaped dicts, in one place."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import json_format

from stackmesh.inference.v1 import inference_pb2 as pb

__all__ = ["chat_request", "completion_request", "chat_response", "chat_chunk", "completion_response"]


def _struct(value: Any) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def _sampling(sampling: pb.SamplingParams) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("temperature", "top_p", "max_tokens", "seed", "presence_penalty", "frequency_penalty"):
        if sampling.HasField(name):
            out[name] = getattr(sampling, name)
    if sampling.stop:
        out["stop"] = list(sampling.stop)
    return out


def _response_format(fmt: pb.ResponseFormat) -> dict[str, Any] | None:
    if not fmt.type or fmt.type == "text":
        return None
    out: dict[str, Any] = {"type": fmt.type}
    if fmt.type == "json_schema":
        out["json_schema"] = {"name": fmt.name or "response", "schema": _struct(fmt.json_schema)}
    elif fmt.HasField("json_schema"):
        out["schema"] = _struct(fmt.json_schema)
    return out


def _message(msg: pb.ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.name:
        out["name"] = msg.name
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    if msg.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": c.type or "function",
                              "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in msg.tool_calls]
    return out


def chat_request(req: pb.ChatCompletionRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": [_message(m) for m in req.messages], **_sampling(req.sampling)}
    if req.tools:
        out["tools"] = [{"type": t.type or "function",
                         "function": {"name": t.function.name, "description": t.function.description,
                                      "parameters": _struct(t.function.parameters)}} for t in req.tools]
    choice = req.tool_choice.WhichOneof("choice")
    if choice == "mode":
        out["tool_choice"] = req.tool_choice.mode
    elif choice == "function_name":
        out["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.function_name}}
    fmt = _response_format(req.response_format)
    if fmt:
        out["response_format"] = fmt
    return out


def completion_request(req: pb.CompletionRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": req.prompt, **_sampling(req.sampling)}
    fmt = _response_format(req.response_format)
    if fmt:
        out["response_format"] = fmt
    return out


def _tool_calls(calls: list[dict[str, Any]] | None) -> list[pb.ToolCall]:
    out = []
    for i, call in enumerate(calls or []):
        function = call.get("function") or {}
        out.append(pb.ToolCall(id=call.get("id") or "", type=call.get("type") or "function",
                               index=call.get("index", i) or 0,
                               function=pb.FunctionCall(name=function.get("name") or "",
                                                        arguments=function.get("arguments") or "")))
    return out


def _usage(usage: dict[str, Any] | None) -> pb.Usage | None:
    if not usage:
        return None
    return pb.Usage(prompt_tokens=usage.get("prompt_tokens") or 0, completion_tokens=usage.get("completion_tokens") or 0,
                    total_tokens=usage.get("total_tokens") or 0)


def chat_response(data: dict[str, Any], model: str) -> pb.ChatCompletionResponse:
    choices = []
    for i, choice in enumerate(data.get("choices") or []):
        msg = choice.get("message") or {}
        choices.append(pb.ChatChoice(index=choice.get("index", i), finish_reason=choice.get("finish_reason") or "",
                                     message=pb.ChatMessage(role=msg.get("role") or "assistant",
                                                            content=msg.get("content") or "",
                                                            tool_calls=_tool_calls(msg.get("tool_calls")))))
    return pb.ChatCompletionResponse(id=data.get("id") or "", model=model, created=int(data.get("created") or time.time()),
                                     choices=choices, usage=_usage(data.get("usage")))


def chat_chunk(data: dict[str, Any], model: str) -> pb.ChatCompletionChunk:
    choices = []
    for i, choice in enumerate(data.get("choices") or []):
        delta = choice.get("delta") or {}
        choices.append(pb.ChatChunkChoice(index=choice.get("index", i), finish_reason=choice.get("finish_reason") or "",
                                          delta=pb.ChatDelta(role=delta.get("role") or "",
                                                             content=delta.get("content") or "",
                                                             tool_calls=_tool_calls(delta.get("tool_calls")))))
    return pb.ChatCompletionChunk(id=data.get("id") or "", model=model, created=int(data.get("created") or time.time()),
                                  choices=choices, usage=_usage(data.get("usage")))


def completion_response(data: dict[str, Any], model: str) -> pb.CompletionResponse:
    choices = [pb.CompletionChoice(index=c.get("index", i), text=c.get("text") or "",
                                   finish_reason=c.get("finish_reason") or "")
               for i, c in enumerate(data.get("choices") or [])]
    return pb.CompletionResponse(id=data.get("id") or "", model=model, created=int(data.get("created") or time.time()),
                                 choices=choices, usage=_usage(data.get("usage")))
