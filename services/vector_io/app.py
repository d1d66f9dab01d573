"""Assemble the vector_io process: providers, registry cache, index life cycle, router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.vector_io.core import VectorIOCore
from services.vector_io.embedder import Embedder
from services.vector_io.indexes import IndexLifecycle
from services.vector_io.router import VectorDBRouter
from services.vector_io.servicer import VectorIOServicer
from stackmesh.vector_io.v1 import vector_io_pb2, vector_io_pb2_grpc

__all__ = ["build_vector_io"]


async def build_vector_io(config: StackConfig, host: ServiceHost) -> VectorIOCore:
    runtime = ApiRuntime("vector_io", config, host.health)
    for provider in runtime.providers.values():
        provider.resolve_storage(config)
    indexes = IndexLifecycle(runtime.providers, runtime.cache)
    runtime.cache.add_listener(indexes.on_event)
    core = VectorIOCore(VectorDBRouter(runtime.providers, runtime.cache, indexes), Embedder(runtime.mesh))
    host.add(vector_io_pb2_grpc.add_VectorIOServiceServicer_to_server, VectorIOServicer(core),
             vector_io_pb2.DESCRIPTOR.services_by_name["VectorIOService"].full_name)
    indexes.start()
    runtime.on_stop(indexes.stop)
    await runtime.start()  # providers are open before the first registry event is applied
    host.on_stop(runtime.stop)
    return core
