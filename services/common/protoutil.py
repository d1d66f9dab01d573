"""Small protobuf helpers shared by services."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from stackmesh.common.v1 import common_pb2

__all__ = ["struct", "to_dict", "timestamp", "MODEL_TYPES", "MODEL_TYPE_NAMES"]

MODEL_TYPES = {"llm": common_pb2.MODEL_TYPE_LLM, "embedding": common_pb2.MODEL_TYPE_EMBEDDING,
               "rerank": common_pb2.MODEL_TYPE_RERANK}
MODEL_TYPE_NAMES = {v: k for k, v in MODEL_TYPES.items()}


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from seconds since the epoch; None stays None (the field is left unset)."""
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        out.update(value)
    return out


def to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
