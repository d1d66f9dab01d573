"""Which provider serves a shield: resolved from the watched registry cache, never by a registry call
on the hot path (a local miss asks the registry once, for read-your-writes)."""

from __future__ import annotations

from services.common.errors import NotFound, Unavailable
from services.common.protoutil import to_dict
from services.common.registry_cache import RegistryCache
from services.common.resource_index import list_hint
from services.safety.providers.base import SafetyProvider, ShieldTarget
from stackmesh.common.v1 import common_pb2

__all__ = ["ShieldRouter", "SHIELD"]

SHIELD = common_pb2.RESOURCE_TYPE_SHIELD


def _target(resource: common_pb2.Resource) -> ShieldTarget:
    return ShieldTarget(shield_id=resource.identifier, provider_id=resource.provider_id,
                        provider_shield_id=resource.provider_resource_id or resource.identifier,
                        params=to_dict(resource.shield.params))


class ShieldRouter:
    def __init__(self, providers: dict[str, SafetyProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache

    async def route(self, shield_id: str) -> tuple[SafetyProvider, ShieldTarget]:
        """(provider, shield) for a request naming ``shield_id``."""
        resource = await self.cache.resolve_fresh(SHIELD, shield_id)
        if resource.WhichOneof("spec") != "shield":  # "<provider_id>/x" names no registered shield
            raise NotFound(f"shield '{shield_id}' not found; {list_hint(SHIELD)}, or register it "
                           f"(`stackmesh shields register {shield_id} --provider-id PROVIDER`)",
                           reason="RESOURCE_NOT_FOUND", metadata={"identifier": shield_id})
        return self._bind(resource)

    def _bind(self, resource: common_pb2.Resource) -> tuple[SafetyProvider, ShieldTarget]:
        provider = self.providers.get(resource.provider_id)
        if provider is None:
            raise Unavailable(f"shield '{resource.identifier}' is served by provider '{resource.provider_id}', which "
                              f"this safety service does not run; check the mesh config", reason="PROVIDER_NOT_RUN",
                              metadata={"shield_id": resource.identifier})
        return provider, _target(resource)

    async def served(self) -> list[tuple[SafetyProvider, ShieldTarget]]:
        """Every registered shield this service's providers serve, by identifier."""
        if not await self.cache.wait_synced(2.0):
            raise Unavailable("this service has not reached the registry yet; retry in a moment",
                              reason="REGISTRY_NOT_SYNCED")
        resources = sorted(self.cache.index.all(SHIELD), key=lambda r: r.identifier)
        return [self._bind(r) for r in resources if r.provider_id in self.providers]
