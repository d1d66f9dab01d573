"""Per-type knowledge of resources: how a register request or a config entry becomes a Resource,
what must hold for it to be valid, and which fields count as its spec.

One table (``KINDS``) drives the seven public resource services; nothing is written per type twice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from services.common.protoutil import to_dict
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["ResourceKind", "KINDS", "KIND_BY_TYPE", "spec_diff"]

T = common_pb2
R = registry_pb2
Resource = common_pb2.Resource


@dataclasses.dataclass(frozen=True)
class ResourceKind:
    """How one resource type appears on the public API."""

    type: int
    name: str  # "Model" -> RegisterModel, GetModel, ...
    plural: str  # "Models" -> ListModels
    id_field: str  # request field holding the identifier
    field: str  # response field holding one resource
    list_field: str  # list response field
    servicer: type
    add_to_server: Callable[..., None]
    to_resource: Callable[[Any], Resource]  # register request -> resource (provider may be empty)


def _model(req: R.RegisterModelRequest) -> Resource:
    return Resource(type=T.RESOURCE_TYPE_MODEL, identifier=req.model_id, provider_id=req.provider_id,
                    provider_resource_id=req.provider_model_id, metadata=req.metadata,
                    model=T.ModelSpec(model_type=req.model_type))


def _shield(req: R.RegisterShieldRequest) -> Resource:
    return Resource(type=T.RESOURCE_TYPE_SHIELD, identifier=req.shield_id, provider_id=req.provider_id,
                    provider_resource_id=req.provider_shield_id, metadata=req.metadata,
                    shield=T.ShieldSpec(params=req.params))


def _vector_db(req: R.RegisterVectorDBRequest) -> Resource:
    return Resource(type=T.RESOURCE_TYPE_VECTOR_DB, identifier=req.vector_db_id, provider_id=req.provider_id,
                    provider_resource_id=req.provider_vector_db_id, metadata=req.metadata,
                    vector_db=T.VectorDBSpec(embedding_model=req.embedding_model,
                                             embedding_dimension=req.embedding_dimension,
                                             vector_db_name=req.vector_db_name))


def _dataset(req: R.RegisterDatasetRequest) -> Resource:
    return Resource(type=T.RESOURCE_TYPE_DATASET, identifier=req.dataset_id, provider_id=req.provider_id,
                    metadata=req.metadata, dataset=T.DatasetSpec(purpose=req.purpose, uri=req.uri, rows=req.rows))


def _scoring_function(req: R.RegisterScoringFunctionRequest) -> Resource:
    return Resource(type=T.RESOURCE_TYPE_SCORING_FUNCTION, identifier=req.scoring_fn_id,
                    provider_id=req.provider_id, provider_resource_id=req.provider_scoring_fn_id,
                    metadata=req.metadata, scoring_function=T.ScoringFunctionSpec(
                        description=req.description, return_type=req.return_type, params=req.params))


def _benchmark(req: R.RegisterBenchmarkRequest) -> Resource:
    return Resource(type=T.RESOURCE_TYPE_BENCHMARK, identifier=req.benchmark_id, provider_id=req.provider_id,
                    provider_resource_id=req.provider_benchmark_id, metadata=req.metadata,
                    benchmark=T.BenchmarkSpec(dataset_id=req.dataset_id, scoring_functions=req.scoring_functions))


def _tool_group(req: R.RegisterToolGroupRequest) -> Resource:
    return Resource(type=T.RESOURCE_TYPE_TOOL_GROUP, identifier=req.toolgroup_id, provider_id=req.provider_id,
                    metadata=req.metadata, tool_group=T.ToolGroupSpec(mcp_endpoint=req.mcp_endpoint, args=req.args,
                                                              mcp_command=req.mcp_command))


G = registry_pb2_grpc
KINDS: list[ResourceKind] = [
    ResourceKind(T.RESOURCE_TYPE_MODEL, "Model", "Models", "model_id", "model", "models",
                 G.ModelsServiceServicer, G.add_ModelsServiceServicer_to_server, _model),
    ResourceKind(T.RESOURCE_TYPE_SHIELD, "Shield", "Shields", "shield_id", "shield", "shields",
                 G.ShieldsServiceServicer, G.add_ShieldsServiceServicer_to_server, _shield),
    ResourceKind(T.RESOURCE_TYPE_VECTOR_DB, "VectorDB", "VectorDBs", "vector_db_id", "vector_db", "vector_dbs",
                 G.VectorDBsServiceServicer, G.add_VectorDBsServiceServicer_to_server, _vector_db),
    ResourceKind(T.RESOURCE_TYPE_DATASET, "Dataset", "Datasets", "dataset_id", "dataset", "datasets",
                 G.DatasetsServiceServicer, G.add_DatasetsServiceServicer_to_server, _dataset),
    ResourceKind(T.RESOURCE_TYPE_SCORING_FUNCTION, "ScoringFunction", "ScoringFunctions", "scoring_fn_id",
                 "scoring_function", "scoring_functions", G.ScoringFunctionsServiceServicer,
                 G.add_ScoringFunctionsServiceServicer_to_server, _scoring_function),
    ResourceKind(T.RESOURCE_TYPE_BENCHMARK, "Benchmark", "Benchmarks", "benchmark_id", "benchmark", "benchmarks",
                 G.BenchmarksServiceServicer, G.add_BenchmarksServiceServicer_to_server, _benchmark),
    ResourceKind(T.RESOURCE_TYPE_TOOL_GROUP, "ToolGroup", "ToolGroups", "toolgroup_id", "tool_group",
                 "tool_groups", G.ToolGroupsServiceServicer, G.add_ToolGroupsServiceServicer_to_server, _tool_group),
]
KIND_BY_TYPE = {kind.type: kind for kind in KINDS}


def _spec_view(resource: Resource) -> dict[str, Any]:
    spec_name = resource.WhichOneof("spec")
    return {
        "provider_id": resource.provider_id,
        "provider_resource_id": resource.provider_resource_id,
        "owner": resource.owner,
        "metadata": to_dict(resource.metadata),
        "spec": (spec_name, to_dict(getattr(resource, spec_name)) if spec_name else {}),
    }


def spec_diff(old: Resource, new: Resource) -> list[str]:
    """Names of the fields whose values differ between two resources of one identifier."""
    a, b = _spec_view(old), _spec_view(new)
    diff = [k for k in ("provider_id", "provider_resource_id", "owner", "metadata") if a[k] != b[k]]
    if a["spec"] != b["spec"]:
        (name, fa), (_, fb) = a["spec"], b["spec"]
        keys = sorted(set(fa) | set(fb))
        diff.extend(f"{name}.{k}" for k in keys if fa.get(k) != fb.get(k))
    return diff
