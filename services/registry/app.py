"""Assemble the registry process: store, core, servicers."""

from __future__ import annotations

import logging

from services.common.config import StackConfig
from services.common.server import ServiceHost
from services.registry.core import RegistryCore
from services.registry.servicer import ProvidersServicer, RegistryServicer, make_resource_servicer
from services.registry.specs import KINDS
from services.registry.stores import describe_store, open_store
from stackmesh.registry.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["build_registry"]

log = logging.getLogger("stackmesh.registry")


async def build_registry(config: StackConfig, host: ServiceHost) -> RegistryCore:
    store = open_store(config)
    core = RegistryCore(config, store)
    skipped = await core.start()
    log.info("loaded store=%s resources=%d revision=%d", describe_store(config), len(core.index),
             core.committed_revision)
    for line in skipped:
        log.warning("config resource skipped: %s", line)
    services = registry_pb2.DESCRIPTOR.services_by_name
    for kind in KINDS:
        host.add(kind.add_to_server, make_resource_servicer(kind, core), services[f"{kind.plural}Service"].full_name)
    host.add(registry_pb2_grpc.add_ProvidersServiceServicer_to_server, ProvidersServicer(core),
             services["ProvidersService"].full_name)
    host.add(registry_pb2_grpc.add_RegistryServiceServicer_to_server, RegistryServicer(core),
             services["RegistryService"].full_name)

    async def close() -> None:
        await core.stop()
        store.close()

    host.on_stop(close)
    return core
