"""The public surface of the mesh: which gRPC service is forwarded to which backend, and how."""

from __future__ import annotations

import dataclasses

from stackmesh.common.v1 import common_pb2
from stackmesh.datasetio.v1 import datasetio_pb2
from stackmesh.eval.v1 import eval_pb2
from stackmesh.inference.v1 import inference_pb2
from stackmesh.post_training.v1 import post_training_pb2
from stackmesh.registry.v1 import registry_pb2
from stackmesh.safety.v1 import safety_pb2
from stackmesh.scoring.v1 import scoring_pb2
from stackmesh.tool_runtime.v1 import tool_runtime_pb2
from stackmesh.vector_io.v1 import vector_io_pb2

__all__ = ["Route", "PUBLIC_ROUTES", "peek_resource_id", "public_service_names"]


@dataclasses.dataclass(frozen=True)
class Route:
    backend: str  # "registry" or an API name
    client_streaming: bool
    server_streaming: bool
    # Resource type named by field 1 of the request, for provider-aware routing (0 = none).
    resource_type: int = 0


# Public services and their backends. The internal RegistryService is not exposed.
_PUBLIC = [
    (registry_pb2, name, "registry", 0) for name in (
        "ModelsService", "ShieldsService", "VectorDBsService", "DatasetsService", "ScoringFunctionsService",
        "BenchmarksService", "ToolGroupsService", "ProvidersService")
] + [
    (inference_pb2, "InferenceService", "inference", common_pb2.RESOURCE_TYPE_MODEL),
    (safety_pb2, "SafetyService", "safety", common_pb2.RESOURCE_TYPE_SHIELD),
    (vector_io_pb2, "VectorIOService", "vector_io", common_pb2.RESOURCE_TYPE_VECTOR_DB),
    (datasetio_pb2, "DatasetIOService", "datasetio", common_pb2.RESOURCE_TYPE_DATASET),
    # A scoring call names several functions, possibly of several providers; eval requests name
    # jobs, which live in the eval tier's store: neither routes by field 1.
    (scoring_pb2, "ScoringService", "scoring", 0),
    (eval_pb2, "EvalService", "eval", 0),
    (post_training_pb2, "PostTrainingService", "post_training", 0),
    (tool_runtime_pb2, "ToolRuntimeService", "tool_runtime", 0),
]


def _build() -> dict[str, Route]:
    routes = {}
    for module, service_name, backend, resource_type in _PUBLIC:
        service = module.DESCRIPTOR.services_by_name[service_name]
        for method in service.methods:
            routes[f"/{service.full_name}/{method.name}"] = Route(
                backend, method.client_streaming, method.server_streaming, resource_type)
    return routes


PUBLIC_ROUTES: dict[str, Route] = _build()


def public_service_names() -> list[str]:
    return sorted({path.split("/")[1] for path in PUBLIC_ROUTES})


def peek_resource_id(request: bytes) -> str:
    """Field 1 of a serialized request when it is a string (every data request puts its resource id
    there), read without parsing the rest of the message."""
    if not request or request[0] != 0x0A:  # field 1, wire type 2 (length-delimited)
        return ""
    length, shift, i = 0, 0, 1
    while i < len(request):
        byte = request[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
    try:
        return request[i:i + length].decode()
    except UnicodeDecodeError:
        return ""
