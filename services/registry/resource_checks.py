"""Checks of a resource's own fields that need no other resource (datasets, scoring functions).

Checks that look other resources up (a shield's model, a benchmark's dataset) live in the
registry core, which holds the index.
"""

from __future__ import annotations

from google.protobuf import json_format

from services.common.dataset_purposes import check_purpose, check_rows
from services.common.errors import InvalidArgument
from stackmesh.common.v1 import common_pb2

__all__ = ["AGGREGATION_FUNCTIONS", "check_dataset", "check_aggregations"]

# The aggregation functions the scoring service implements (Llama Stack's names).
AGGREGATION_FUNCTIONS = ("accuracy", "average", "median", "categorical_count")
_URI_SCHEMES = ("file://",)


def check_dataset(resource: common_pb2.Resource) -> None:
    spec = resource.dataset
    check_purpose(spec.purpose)
    if bool(spec.uri) == bool(spec.rows):
        raise InvalidArgument(f"dataset '{resource.identifier}' needs exactly one source: a uri (file://...) or "
                              f"inline rows", reason="DATASET_SOURCE")
    if spec.uri and not spec.uri.startswith(_URI_SCHEMES):
        raise InvalidArgument(f"dataset '{resource.identifier}': uri '{spec.uri}' is not supported; use a file:// "
                              f"URI of a CSV, JSONL or Parquet file, or inline rows", reason="DATASET_URI_UNSUPPORTED",
                              metadata={"uri": spec.uri})
    if spec.rows:
        check_rows(resource.identifier, spec.purpose, (json_format.MessageToDict(row) for row in spec.rows),
                   error=InvalidArgument)


def check_aggregations(resource: common_pb2.Resource) -> None:
    value = resource.scoring_function.params.fields.get("aggregation_functions")
    if value is None:
        return
    names = [v.string_value for v in value.list_value.values] if value.WhichOneof("kind") == "list_value" else None
    unknown = [n for n in names or [] if n not in AGGREGATION_FUNCTIONS]
    if names is None or unknown:
        raise InvalidArgument(f"scoring function '{resource.identifier}': aggregation_functions must be a list of "
                              f"{', '.join(AGGREGATION_FUNCTIONS)}" + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                              reason="UNKNOWN_AGGREGATION")
