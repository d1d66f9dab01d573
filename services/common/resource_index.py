"""An in-memory index of resources, and the one resolution rule every component applies.

The registry keeps its authoritative copy in a ``ResourceIndex``; every cache that follows the
registry's watch (gateway, API services) keeps one too, so a data request resolves its resource
locally with exactly the registry's rule:

1. the identifier, verbatim;
2. ``provider_id/x`` where ``provider_id`` is a configured provider of the right API — routed there
   even when ``x`` is not registered (that provider's ``allowed_models`` still applies);
3. the short name of a discovered model: a unique DISCOVERED resource whose ``provider_resource_id``
   equals the request's id (``all-MiniLM-L6-v2`` for ``sentence-transformers/all-MiniLM-L6-v2``);
   several providers listing that name is an error naming them. Registered aliases do not count
   (registering ``my-embed`` -> ``all-MiniLM-L6-v2`` must not make the short name ambiguous).
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterable

from services.common import catalog
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from stackmesh.common.v1 import common_pb2

__all__ = ["ResourceIndex", "list_hint", "require_llm"]

Resource = common_pb2.Resource

_LIST_COMMANDS = {
    common_pb2.RESOURCE_TYPE_MODEL: "stackmesh models list",
    common_pb2.RESOURCE_TYPE_SHIELD: "stackmesh shields list",
    common_pb2.RESOURCE_TYPE_VECTOR_DB: "stackmesh vector-dbs list",
    common_pb2.RESOURCE_TYPE_DATASET: "stackmesh datasets list",
    common_pb2.RESOURCE_TYPE_SCORING_FUNCTION: "stackmesh scoring-functions list",
    common_pb2.RESOURCE_TYPE_BENCHMARK: "stackmesh benchmarks list",
    common_pb2.RESOURCE_TYPE_TOOL_GROUP: "stackmesh toolgroups list",
}


def list_hint(resource_type: int) -> str:
    return f"list them with `{_LIST_COMMANDS.get(resource_type, 'stackmesh models list')}`"


_LLM_TYPES = (common_pb2.MODEL_TYPE_LLM, common_pb2.MODEL_TYPE_UNSPECIFIED)


def require_llm(model: Resource, subject: str, need: str = "choose a model whose type is llm", *,
                unspecified_ok: bool = True) -> None:
    """INVALID_ARGUMENT (NOT_AN_LLM) unless ``model`` is an LLM; ``subject`` names it in the message
    ("the judge model 'x'"), ``need`` says what the caller needs. A bare ``provider_id/x`` route (no
    spec) passes: its type is unknown until inference serves it."""
    if model.WhichOneof("spec") != "model":
        return
    model_type = model.model.model_type
    if model_type == common_pb2.MODEL_TYPE_LLM or (unspecified_ok and model_type in _LLM_TYPES):
        return
    kind = common_pb2.ModelType.Name(model_type).removeprefix("MODEL_TYPE_").lower()
    article = "an" if kind[:1] in "aeiou" else "a"
    raise InvalidArgument(f"{subject} is {article} {kind} model, not an LLM; {need} "
                          f"({list_hint(common_pb2.RESOURCE_TYPE_MODEL)})",
                          reason="NOT_AN_LLM", metadata={"model": model.identifier, "model_type": kind})


class ResourceIndex:
    """Resources by (type, identifier), with a secondary index on provider_resource_id."""

    def __init__(self) -> None:
        self._by_id: dict[int, dict[str, Resource]] = {}
        self._by_provider_id: dict[tuple[int, str], set[str]] = {}
        self._sorted: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_id.values())

    def clear(self) -> None:
        self._by_id.clear()
        self._by_provider_id.clear()
        self._sorted.clear()

    def put(self, resource: Resource) -> None:
        self.delete(resource.type, resource.identifier)
        self._by_id.setdefault(resource.type, {})[resource.identifier] = resource
        if resource.source == common_pb2.RESOURCE_SOURCE_DISCOVERED:
            key = (resource.type, resource.provider_resource_id or resource.identifier)
            self._by_provider_id.setdefault(key, set()).add(resource.identifier)
        self._sorted.pop(resource.type, None)

    def delete(self, resource_type: int, identifier: str) -> Resource | None:
        old = self._by_id.get(resource_type, {}).pop(identifier, None)
        if old is not None:
            key = (resource_type, old.provider_resource_id or old.identifier)
            ids = self._by_provider_id.get(key)
            if ids is not None:
                ids.discard(identifier)
                if not ids:
                    del self._by_provider_id[key]
            self._sorted.pop(resource_type, None)
        return old

    def get(self, resource_type: int, identifier: str) -> Resource | None:
        return self._by_id.get(resource_type, {}).get(identifier)

    def all(self, resource_type: int | None = None) -> Iterable[Resource]:
        if resource_type is not None:
            return list(self._by_id.get(resource_type, {}).values())
        return [r for by_id in self._by_id.values() for r in by_id.values()]

    def page(self, resource_type: int, after: str, limit: int,
             keep: Callable[[Resource], bool] | None = None) -> tuple[list[Resource], str]:
        """Resources sorted by identifier, strictly after ``after``; returns (page, last id or "")."""
        ids = self._sorted.get(resource_type)
        if ids is None:
            ids = self._sorted[resource_type] = sorted(self._by_id.get(resource_type, {}))
        by_id = self._by_id.get(resource_type, {})
        out: list[Resource] = []
        i = bisect.bisect_right(ids, after) if after else 0
        while i < len(ids) and len(out) < limit:
            resource = by_id[ids[i]]
            if keep is None or keep(resource):
                out.append(resource)
            i += 1
        more = i < len(ids)
        return out, (out[-1].identifier if out and more else "")

    def resolve(self, resource_type: int, identifier: str, provider_ids: Iterable[str]) -> Resource:
        """Apply the resolution rule (module docstring); raise NotFound/FailedPrecondition."""
        name = catalog.RESOURCE_NAMES.get(resource_type, "resource")
        if not identifier:
            raise NotFound(f"no {name} id given; {list_hint(resource_type)}", reason="RESOURCE_ID_MISSING")
        found = self.get(resource_type, identifier)
        if found is not None:
            return found
        prefix, sep, rest = identifier.partition("/")
        if sep and rest and prefix in set(provider_ids):
            return Resource(type=resource_type, identifier=identifier, provider_id=prefix,
                            provider_resource_id=rest)
        matches = sorted(self._by_provider_id.get((resource_type, identifier), ()))
        if len(matches) == 1:
            return self._by_id[resource_type][matches[0]]
        if len(matches) > 1:
            raise FailedPrecondition(
                f"{name} '{identifier}' is ambiguous: it is served as {', '.join(repr(m) for m in matches)}; "
                f"use one of those identifiers", reason="AMBIGUOUS_RESOURCE",
                metadata={"identifier": identifier, "candidates": ",".join(matches)})
        raise NotFound(f"{name} '{identifier}' not found; {list_hint(resource_type)}, or register it",
                       reason="RESOURCE_NOT_FOUND", metadata={"identifier": identifier})
