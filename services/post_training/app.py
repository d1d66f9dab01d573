"""Assemble the post_training process: providers (with their job stores, the mesh client and the
registry cache), router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.post_training.core import PostTrainingCore
from services.post_training.datasets import DatasetReader
from services.post_training.router import PostTrainingRouter
from services.post_training.servicer import PostTrainingServicer
from stackmesh.post_training.v1 import post_training_pb2, post_training_pb2_grpc

__all__ = ["build_post_training"]


async def build_post_training(config: StackConfig, host: ServiceHost) -> PostTrainingCore:
    runtime = ApiRuntime("post_training", config, host.health)
    for provider in runtime.providers.values():
        provider.bind(config, runtime.mesh, runtime.cache)
    core = PostTrainingCore(PostTrainingRouter(config, runtime.cache), runtime.providers, DatasetReader(runtime.mesh))
    host.add(post_training_pb2_grpc.add_PostTrainingServiceServicer_to_server, PostTrainingServicer(core),
             post_training_pb2.DESCRIPTOR.services_by_name["PostTrainingService"].full_name)
    # Providers open their stores and resume unfinished jobs here; a job reaches other services
    # only through the mesh, so nothing waits for them.
    await runtime.start()
    host.on_stop(runtime.stop)
    return core
