"""Which provider serves a request's vector DB: resolved from the watched registry cache."""

from __future__ import annotations

from services.common.errors import NotFound, Unavailable
from services.common.registry_cache import RegistryCache
from services.common.resource_index import list_hint
from services.vector_io.indexes import IndexLifecycle, target_of
from services.vector_io.providers.base import VectorDBTarget, VectorIOProvider
from stackmesh.common.v1 import common_pb2

__all__ = ["VectorDBRouter"]

VECTOR_DB = common_pb2.RESOURCE_TYPE_VECTOR_DB


class VectorDBRouter:
    def __init__(self, providers: dict[str, VectorIOProvider], cache: RegistryCache, indexes: IndexLifecycle) -> None:
        self.providers = providers
        self.cache = cache
        self.indexes = indexes

    async def route(self, vector_db_id: str) -> tuple[VectorIOProvider, VectorDBTarget]:
        """(provider, vector DB) for a request naming ``vector_db_id``; its index exists on return."""
        resource = await self.cache.resolve_fresh(VECTOR_DB, vector_db_id)
        if resource.WhichOneof("spec") != "vector_db":  # "<provider_id>/x" names no registered vector DB
            raise NotFound(f"vector DB '{vector_db_id}' not found; {list_hint(VECTOR_DB)}, or register it "
                           f"(`stackmesh vector-dbs register {vector_db_id} --embedding-model MODEL`)",
                           reason="RESOURCE_NOT_FOUND", metadata={"identifier": vector_db_id})
        provider = self.providers.get(resource.provider_id)
        if provider is None:
            raise Unavailable(f"vector DB '{vector_db_id}' is served by provider '{resource.provider_id}', which this "
                              f"vector_io service does not run; check the mesh config", reason="PROVIDER_NOT_RUN")
        db = target_of(resource)
        await self.indexes.ensure(provider, db)
        return provider, db
