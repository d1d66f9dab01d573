"""Assemble the inference process: providers, registry cache, router, servicer."""

from __future__ import annotations

from services.common.config import StackConfig
from services.common.provider_host import ApiRuntime
from services.common.server import ServiceHost
from services.inference.router import InferenceRouter
from services.inference.servicer import InferenceServicer
from stackmesh.inference.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["build_inference"]


async def build_inference(config: StackConfig, host: ServiceHost) -> InferenceRouter:
    runtime = ApiRuntime("inference", config, host.health)
    router = InferenceRouter(runtime.providers, runtime.cache)
    host.add(inference_pb2_grpc.add_InferenceServiceServicer_to_server, InferenceServicer(router),
             inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name)
    await runtime.start()
    host.on_stop(runtime.stop)
    return router
