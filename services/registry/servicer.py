"""Proto <-> registry core, for the seven resource services, ProvidersService and RegistryService."""

from __future__ import annotations

import asyncio
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.paging import decode_token, encode_token, page_size
from services.registry.core import RegistryCore
from services.registry.specs import ResourceKind
from stackmesh.registry.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["make_resource_servicer", "ProvidersServicer", "RegistryServicer"]

R = registry_pb2


def make_resource_servicer(kind: ResourceKind, core: RegistryCore) -> Any:
    """A servicer for one resource type, built from the ``KINDS`` table."""
    messages = R.DESCRIPTOR.message_types_by_name

    def response(name: str):
        from google.protobuf import message_factory

        return message_factory.GetMessageClass(messages[name])

    register_resp = response(f"Register{kind.name}Response")
    get_resp = response(f"Get{kind.name}Response")
    list_resp = response(f"List{kind.plural}Response")
    unregister_resp = response(f"Unregister{kind.name}Response")

    async def register(self, request, context):
        return register_resp(**{kind.field: await core.register(kind.to_resource(request))})

    async def get(self, request, context):
        return get_resp(**{kind.field: core.get(kind.type, getattr(request, kind.id_field))})

    async def list_(self, request, context):
        keep = (lambda r: r.provider_id == request.provider_id) if request.provider_id else None
        items, last = core.index.page(kind.type, decode_token(request.page_token), page_size(request.page_size), keep)
        return list_resp(**{kind.list_field: items, "next_page_token": encode_token(last)})

    async def unregister(self, request, context):
        await core.unregister(kind.type, getattr(request, kind.id_field))
        return unregister_resp()

    methods = {f"Register{kind.name}": register, f"Get{kind.name}": get,
               f"List{kind.plural}": list_, f"Unregister{kind.name}": unregister}
    return type(f"{kind.plural}Servicer", (kind.servicer,), methods)()


class ProvidersServicer(registry_pb2_grpc.ProvidersServiceServicer):
    def __init__(self, core: RegistryCore) -> None:
        self.core = core

    async def ListProviders(self, request, context):
        providers = [p for p in self.core.providers() if not request.api or p.api == request.api]
        return R.ListProvidersResponse(providers=providers)

    async def GetProvider(self, request, context):
        matches = [p for p in self.core.providers()
                   if p.provider_id == request.provider_id and (not request.api or p.api == request.api)]
        if len(matches) > 1:
            raise FailedPrecondition(f"several APIs have a provider '{request.provider_id}' "
                                     f"({', '.join(p.api for p in matches)}); pass api to choose one",
                                     reason="AMBIGUOUS_PROVIDER")
        if matches:
            return R.GetProviderResponse(provider=matches[0])
        raise NotFound(f"provider '{request.provider_id}' is not configured; list them with `stackmesh providers list`",
                       reason="PROVIDER_NOT_FOUND")


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, core: RegistryCore) -> None:
        self.core = core

    async def ResolveResource(self, request, context):
        return R.ResolveResourceResponse(resource=self.core.resolve(request.type, request.identifier))

    async def GetRevision(self, request, context):
        return R.GetRevisionResponse(revision=self.core.committed_revision)

    async def WatchResources(self, request, context):
        async for event in self.core.watch(request.since_revision):
            yield event

    async def SyncDiscoveredResources(self, request, context):
        added, updated, removed = await self.core.sync_discovered(request.provider_id, request.type, request.resources)
        return R.SyncDiscoveredResourcesResponse(added=added, updated=updated, removed=removed,
                                                 revision=self.core.committed_revision)

    async def AcquireLease(self, request, context):
        if not request.name or not request.holder or request.ttl_seconds <= 0:
            raise InvalidArgument("a lease needs a name, a holder and a positive ttl_seconds")
        granted, holder = await asyncio.to_thread(self.core.store.acquire_lease, request.name, request.holder,
                                                  request.ttl_seconds)
        return R.AcquireLeaseResponse(granted=granted, holder=holder)

    async def ReportProviderHealth(self, request, context):
        for report in request.reports:
            self.core.report_health(report.api, report.provider_id, report.health, report.message)
        return R.ReportProviderHealthResponse()

