"""Turn a config file's ``registered_resources`` into registry resources (source CONFIG).

Entries bound to providers stackmesh does not run are skipped with a reason, never fatal: an
unmodified Llama Stack config must load. Entries whose ``provider_id`` key resolved empty are
dropped (Llama Stack's conditional resources, e.g. ``${env.SAFETY_MODEL:+llama-guard}``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.common import catalog
from services.common.config import StackConfig
from services.common.protoutil import MODEL_TYPES, struct
from stackmesh.common.v1 import common_pb2

__all__ = ["config_resources"]

T = common_pb2
Resource = common_pb2.Resource
# registered_resources key -> the resource type it holds (whose API serves it: catalog.RESOURCE_API)
_KIND_TYPE = {"models": T.RESOURCE_TYPE_MODEL, "shields": T.RESOURCE_TYPE_SHIELD,
              "vector_dbs": T.RESOURCE_TYPE_VECTOR_DB, "vector_stores": T.RESOURCE_TYPE_VECTOR_DB,
              "datasets": T.RESOURCE_TYPE_DATASET, "scoring_fns": T.RESOURCE_TYPE_SCORING_FUNCTION,
              "benchmarks": T.RESOURCE_TYPE_BENCHMARK, "tool_groups": T.RESOURCE_TYPE_TOOL_GROUP}


def _common(entry: BaseModel, rtype: int, identifier: str, provider_resource_id: str | None,
            metadata: dict[str, Any] | None = None) -> Resource:
    return Resource(type=rtype, identifier=identifier, provider_id=getattr(entry, "provider_id", None) or "",
                    provider_resource_id=provider_resource_id or "", source=T.RESOURCE_SOURCE_CONFIG,
                    metadata=struct(metadata))


def _convert(kind: str, entry: Any) -> Resource:
    if kind == "models":
        r = _common(entry, T.RESOURCE_TYPE_MODEL, entry.model_id, entry.provider_model_id, entry.metadata)
        r.model.model_type = MODEL_TYPES[entry.model_type]
    elif kind == "shields":
        r = _common(entry, T.RESOURCE_TYPE_SHIELD, entry.shield_id, entry.provider_shield_id)
        r.shield.params.update(entry.params)
    elif kind in ("vector_dbs", "vector_stores"):
        r = _common(entry, T.RESOURCE_TYPE_VECTOR_DB, entry.vector_db_id, entry.provider_vector_db_id)
        r.vector_db.embedding_model = entry.embedding_model
        r.vector_db.embedding_dimension = entry.embedding_dimension or 0
        r.vector_db.vector_db_name = entry.vector_db_name or ""
    elif kind == "datasets":
        r = _common(entry, T.RESOURCE_TYPE_DATASET, entry.dataset_id, None, entry.metadata)
        r.dataset.purpose = entry.purpose
        r.dataset.uri = str(entry.source.get("uri") or "")
        for row in entry.source.get("rows") or []:
            r.dataset.rows.append(struct(row))
    elif kind == "scoring_fns":
        r = _common(entry, T.RESOURCE_TYPE_SCORING_FUNCTION, entry.scoring_fn_id, entry.provider_scoring_fn_id)
        r.scoring_function.description = entry.description
        rt = entry.return_type
        r.scoring_function.return_type = (rt.get("type", "") if isinstance(rt, dict) else str(rt or ""))
        r.scoring_function.params.update(entry.params or {})
    elif kind == "benchmarks":
        r = _common(entry, T.RESOURCE_TYPE_BENCHMARK, entry.benchmark_id, entry.provider_benchmark_id, entry.metadata)
        r.benchmark.dataset_id = entry.dataset_id
        r.benchmark.scoring_functions.extend(entry.scoring_functions)
    else:  # tool_groups
        r = _common(entry, T.RESOURCE_TYPE_TOOL_GROUP, entry.toolgroup_id, None)
        r.tool_group.mcp_endpoint = str((entry.mcp_endpoint or {}).get("uri") or "")
        r.tool_group.mcp_command.extend(entry.mcp_command or [])
        r.tool_group.args.update(entry.args or {})
    return r


def config_resources(config: StackConfig) -> tuple[list[tuple[str, Resource]], list[str]]:
    """([(key path, resource)], [skipped entries with the reason]) for the config's resources.

    Provider checks (unknown, ambiguous) are left to the registry's register rule; here only what
    makes an entry inapplicable is filtered."""
    out: list[tuple[str, Resource]] = []
    skipped: list[str] = []
    unsupported = {(u.api, u.provider_id): u for u in config.unsupported}
    resources = config.registered_resources
    for kind in type(resources).model_fields:
        for i, entry in enumerate(getattr(resources, kind)):
            path = f"registered_resources.{kind}[{i}]"
            if "provider_id" in entry.model_fields_set and not entry.provider_id:
                skipped.append(f"{path}: provider_id resolved empty, entry disabled")
                continue
            api = catalog.RESOURCE_API[_KIND_TYPE[kind]]
            if (api, entry.provider_id) in unsupported:
                u = unsupported[(api, entry.provider_id)]
                skipped.append(f"{path}: provider '{u.provider_id}' ({u.provider_type}) is not supported")
                continue
            out.append((path, _convert(kind, entry)))
    return out, skipped
