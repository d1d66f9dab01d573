"""Assemble the datasetio process: providers, registry cache, appended-rows life cycle, router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.datasetio.core import DatasetIOCore
from services.datasetio.lifecycle import AppendedRowsLifecycle
from services.datasetio.router import DatasetRouter
from services.datasetio.servicer import DatasetIOServicer
from stackmesh.datasetio.v1 import datasetio_pb2, datasetio_pb2_grpc

__all__ = ["build_datasetio"]


async def build_datasetio(config: StackConfig, host: ServiceHost) -> DatasetIOCore:
    runtime = ApiRuntime("datasetio", config, host.health)
    for provider in runtime.providers.values():
        provider.resolve_storage(config)
    lifecycle = AppendedRowsLifecycle(runtime.providers, runtime.cache)
    runtime.cache.add_listener(lifecycle.on_event)
    core = DatasetIOCore(DatasetRouter(runtime.providers, runtime.cache), lifecycle)
    host.add(datasetio_pb2_grpc.add_DatasetIOServiceServicer_to_server, DatasetIOServicer(core),
             datasetio_pb2.DESCRIPTOR.services_by_name["DatasetIOService"].full_name)
    lifecycle.start()
    runtime.on_stop(lifecycle.stop)
    await runtime.start()  # providers are open before the first registry event is applied
    host.on_stop(runtime.stop)
    return core
