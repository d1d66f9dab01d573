"""Which provider runs a scoring function, and with which params: resolved from the watched
registry cache, never by asking the registry on the hot path (except once on a local miss).

A request may name functions of several providers (``basic::subset_of`` and ``my-judge``); each is
routed on its own. ``<provider_id>/<name>`` reaches a provider's function without registering it
(``llm-as-judge/quick-check`` with all params in the request), as for every resource type.
"""

from __future__ import annotations

from typing import Any

import grpc

from services.common.errors import NotFound, Unavailable
from services.common.protoutil import to_dict
from services.common.registry_cache import RegistryCache
from services.common.resource_index import list_hint
from services.scoring.mesh_calls import downstream_error
from services.scoring.providers.base import ScoringFnTarget, ScoringProvider
from stackmesh.common.v1 import common_pb2

__all__ = ["ScoringFunctionRouter"]

SCORING_FN = common_pb2.RESOURCE_TYPE_SCORING_FUNCTION


def _not_found(fn_id: str) -> NotFound:
    return NotFound(f"scoring function '{fn_id}' not found; {list_hint(SCORING_FN)}, or register it "
                    f"with stackmesh.registry.v1.ScoringFunctionsService/RegisterScoringFunction",
                    reason="RESOURCE_NOT_FOUND", metadata={"identifier": fn_id})


class ScoringFunctionRouter:
    def __init__(self, providers: dict[str, ScoringProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache

    async def route(self, fn_id: str, override: dict[str, Any] | None) -> tuple[ScoringProvider, ScoringFnTarget]:
        """(provider, function) for ``fn_id``; the request's ``override`` params are laid over the
        registered ones key by key (``aggregation_functions`` given replaces the registered list)."""
        try:
            resource = await self.cache.resolve_fresh(SCORING_FN, fn_id)
        except NotFound:
            raise _not_found(fn_id) from None
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise _not_found(fn_id) from None
            raise downstream_error("registry", err, f"looking up scoring function '{fn_id}'") from None
        provider = self.providers.get(resource.provider_id)
        if provider is None:
            raise Unavailable(f"scoring function '{fn_id}' is served by provider '{resource.provider_id}', which this "
                              f"scoring service does not run; check the mesh config (`stackmesh providers list`)",
                              reason="PROVIDER_NOT_RUN", metadata={"scoring_fn_id": fn_id,
                                                                  "provider_id": resource.provider_id})
        registered = (to_dict(resource.scoring_function.params)
                      if resource.WhichOneof("spec") == "scoring_function" else {})
        return provider, ScoringFnTarget(identifier=fn_id, provider_id=resource.provider_id,
                                         provider_resource_id=resource.provider_resource_id or fn_id,
                                         params={**registered, **(override or {})})
