"""Tool arguments checked against the tool's input JSON schema before any server sees them."""

from __future__ import annotations

import json
import logging
from typing import Any

import jsonschema
from jsonschema import exceptions as schema_errors

from services.common.errors import InvalidArgument
from services.tool_runtime.providers.base import Tool

__all__ = ["validate_arguments", "json_numbers"]

log = logging.getLogger("stackmesh.tool_runtime")


def json_numbers(value: Any) -> Any:
    """protobuf Struct holds every number as a double: give integral ones back as ints, so a schema's
    ``integer`` and a server's ``int`` parameter accept ``2`` sent as ``2.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_numbers(v) for v in value]
    return value


def _field(error: schema_errors.ValidationError) -> str:
    """Dotted path of the offending argument; for a missing or unexpected one, its name."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [p for p in error.validator_value if p not in error.instance]
        path += missing[:1]
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set((error.schema.get("properties") or {}))
        extra = sorted(k for k in error.instance if k not in known)
        path += extra[:1]
    return ".".join(path) or "(arguments)"


def validate_arguments(tool: Tool, arguments: dict[str, Any]) -> None:
    """Raise INVALID_ARGUMENT naming the first bad field; a server's broken schema is not the caller's
    fault, so it is logged and the call goes through unchecked."""
    schema = tool.input_schema or {"type": "object"}
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except schema_errors.SchemaError as err:
        log.warning("tool schema invalid, arguments not checked tool=%s toolgroup=%s error=%s",
                    tool.name, tool.toolgroup_id, err.message)
        return
    error = schema_errors.best_match(cls(schema).iter_errors(arguments))
    if error is None:
        return
    field = _field(error)
    expected = json.dumps(error.schema, sort_keys=True)
    if len(expected) > 300:
        expected = expected[:297] + "..."
    raise InvalidArgument(
        f"argument '{field}' of tool '{tool.name}' is invalid: {error.message} (schema: {expected}); "
        f"see the tool's input_schema with `stackmesh tools list --group {tool.toolgroup_id} --json`",
        reason="INVALID_TOOL_ARGUMENTS", metadata={"field": field, "tool": tool.name, "toolgroup_id": tool.toolgroup_id})
