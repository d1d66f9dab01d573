"""What stackmesh knows how to run: APIs, their services and ports, and their provider tables.

Each API service declares its providers as data in ``services/<api>/providers/table.py``
(``PROVIDERS: dict[provider_type, ProviderSpec]``); this module only knows where those tables are.
Config classes are imported to validate configs; implementations only when a service starts.
"""

from __future__ import annotations

import dataclasses
import importlib
from functools import cache
from typing import Any

from stackmesh.common.v1 import common_pb2

__all__ = [
    "ProviderSpec", "API_SERVICES", "DEFAULT_PORTS", "RESOURCE_API", "RESOURCE_NAMES",
    "provider_table", "find_provider_spec", "import_object", "served_apis",
]


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    """One provider type an API service can run."""

    provider_type: str
    api: str
    config_class: str  # "module:Class", a pydantic model; must import without heavy libraries
    impl: str  # "module:Class" or "module:factory"
    description: str
    # Extra values passed to the implementation (e.g. a remote family's default base URL).
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


# api -> module holding its provider table. An API missing here is not served by stackmesh yet.
API_SERVICES: dict[str, str] = {
    "inference": "services.inference.providers.table",
    "safety": "services.safety.providers.table",
    "vector_io": "services.vector_io.providers.table",
    "datasetio": "services.datasetio.providers.table",
    "scoring": "services.scoring.providers.table",
    "eval": "services.eval.providers.table",
    "post_training": "services.post_training.providers.table",
    "tool_runtime": "services.tool_runtime.providers.table",
}

# Default port of each process on 127.0.0.1 (the gateway's is the public one).
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 50051,
    "registry": 50052,
    "inference": 50053,
    "safety": 50054,
    "vector_io": 50055,
    "datasetio": 50056,
    "scoring": 50057,
    "eval": 50058,
    "post_training": 50059,
    "tool_runtime": 50060,
}

T = common_pb2
RESOURCE_API: dict[int, str] = {
    T.RESOURCE_TYPE_MODEL: "inference",
    T.RESOURCE_TYPE_SHIELD: "safety",
    T.RESOURCE_TYPE_VECTOR_DB: "vector_io",
    T.RESOURCE_TYPE_DATASET: "datasetio",
    T.RESOURCE_TYPE_SCORING_FUNCTION: "scoring",
    T.RESOURCE_TYPE_BENCHMARK: "eval",
    T.RESOURCE_TYPE_TOOL_GROUP: "tool_runtime",
}
# Human names used in messages ("model 'x' not found").
RESOURCE_NAMES: dict[int, str] = {
    T.RESOURCE_TYPE_MODEL: "model",
    T.RESOURCE_TYPE_SHIELD: "shield",
    T.RESOURCE_TYPE_VECTOR_DB: "vector DB",
    T.RESOURCE_TYPE_DATASET: "dataset",
    T.RESOURCE_TYPE_SCORING_FUNCTION: "scoring function",
    T.RESOURCE_TYPE_BENCHMARK: "benchmark",
    T.RESOURCE_TYPE_TOOL_GROUP: "tool group",
}


def import_object(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@cache
def provider_table(api: str) -> dict[str, ProviderSpec]:
    """The provider types the service of ``api`` can run ({} when stackmesh does not serve it)."""
    module = API_SERVICES.get(api)
    if module is None:
        return {}
    return dict(importlib.import_module(module).PROVIDERS)


def find_provider_spec(api: str, provider_type: str) -> ProviderSpec | None:
    return provider_table(api).get(provider_type)


def served_apis() -> list[str]:
    return list(API_SERVICES)
