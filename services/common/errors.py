"""The one error hierarchy of stackmesh, and its mapping to gRPC status codes.

    StackmeshError                      (INTERNAL)
    ├── InvalidArgument                 (INVALID_ARGUMENT)  bad request fields
    │   └── ConfigError                                     bad config file; carries the key path
    ├── NotFound                        (NOT_FOUND)         unknown resource/provider; says how to list
    ├── AlreadyExists                   (ALREADY_EXISTS)    same id, different spec; names the fields
    ├── FailedPrecondition              (FAILED_PRECONDITION) wrong-type use, ambiguous provider, ...
    ├── PermissionDenied                (PERMISSION_DENIED) e.g. a model not in allowed_models
    ├── Unavailable                     (UNAVAILABLE)       a provider or service is down
    ├── DeadlineExceeded                (DEADLINE_EXCEEDED)
    ├── ResourceExhausted               (RESOURCE_EXHAUSTED) over a capacity limit (memory, steps, queue)
    └── Unimplemented                   (UNIMPLEMENTED)     the provider cannot do this operation

Every error carries a machine-readable ``reason`` and ``metadata``; on the wire it becomes a
``google.rpc.Status`` with one ``google.rpc.ErrorInfo`` (domain ``stackmesh.dev``) in the
``grpc-status-details-bin`` trailer, so clients in any language can branch on it.
"""

from __future__ import annotations

from typing import Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "ERROR_DOMAIN",
    "StackmeshError",
    "InvalidArgument",
    "ConfigError",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "PermissionDenied",
    "Unavailable",
    "DeadlineExceeded",
    "ResourceExhausted",
    "Unimplemented",
    "to_grpc_status",
    "error_info_from_rpc_error",
]

ERROR_DOMAIN = "stackmesh.dev"


class StackmeshError(Exception):
    """Base of every error stackmesh reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(StackmeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class ConfigError(InvalidArgument):
    """A config file is wrong; ``path`` is the dotted key path of the offending entry."""

    default_reason = "INVALID_CONFIG"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message, metadata={"path": path})
        self.path = path


class NotFound(StackmeshError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(StackmeshError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(StackmeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(StackmeshError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unavailable(StackmeshError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(StackmeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class ResourceExhausted(StackmeshError):
    """A request over a capacity limit: worth retrying smaller or later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unimplemented(StackmeshError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


def to_grpc_status(error: StackmeshError) -> grpc.Status:
    """The rich status (code, message, ErrorInfo detail) for ``error``."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN,
                                       metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])
    return rpc_status.to_status(status)


def error_info_from_rpc_error(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a stackmesh server attached to ``err``, if any."""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except Exception:  # a status that does not parse is treated as no detail
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
