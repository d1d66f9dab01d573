"""The error a stackmesh client call raises, read from the server's google.rpc.Status."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = ["StackmeshClientError", "call"]


@dataclasses.dataclass
class StackmeshClientError(Exception):
    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "StackmeshClientError":
        reason, metadata = "", {}
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
        return cls(err.code(), err.details() or "", reason, metadata)  # type: ignore[attr-defined]


def call(fn: Any, request: Any, **kwargs: Any) -> Any:
    """``fn(request)``, with a gRPC error turned into a StackmeshClientError."""
    try:
        return fn(request, **kwargs)
    except grpc.RpcError as err:
        raise StackmeshClientError.from_rpc_error(err) from None
