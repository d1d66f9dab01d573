"""Which provider serves a request's model: resolved from the watched registry cache."""

from __future__ import annotations

from google.protobuf import json_format

from services.common.errors import InvalidArgument, PermissionDenied, Unavailable
from services.common.registry_cache import RegistryCache
from services.inference.providers.base import InferenceProvider, ModelTarget
from stackmesh.common.v1 import common_pb2

__all__ = ["InferenceRouter"]

T = common_pb2
_TYPE_NAMES = {T.MODEL_TYPE_LLM: "llm", T.MODEL_TYPE_EMBEDDING: "embedding", T.MODEL_TYPE_RERANK: "rerank"}
_WHAT_TO_USE = {"llm": "ChatCompletion/Completion (`stackmesh chat`)", "embedding": "Embeddings (`stackmesh embed`)",
                "rerank": "a rerank call"}


class InferenceRouter:
    def __init__(self, providers: dict[str, InferenceProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache

    async def route(self, model_id: str, wanted: str) -> tuple[InferenceProvider, ModelTarget]:
        """(provider, model) for a request needing a model of type ``wanted`` (llm | embedding)."""
        resource = await self.cache.resolve_fresh(T.RESOURCE_TYPE_MODEL, model_id)
        provider = self.providers.get(resource.provider_id)
        if provider is None:
            raise Unavailable(f"model '{model_id}' is served by provider '{resource.provider_id}', which this "
                              f"inference service does not run; check the mesh config", reason="PROVIDER_NOT_RUN")
        # provider_id/x routes carry no type: trust the caller's intent, the provider will complain.
        model_type = _TYPE_NAMES.get(resource.model.model_type, wanted)
        if model_type != wanted:
            raise InvalidArgument(
                f"model '{model_id}' is an {model_type} model and cannot serve this request; "
                f"use {_WHAT_TO_USE[model_type]} with it, or pick an {wanted} model (`stackmesh models list`)",
                reason="WRONG_MODEL_TYPE", metadata={"model": model_id, "model_type": model_type})
        allowed = provider.allowed_models
        if allowed is not None and resource.provider_resource_id not in allowed:
            raise PermissionDenied(f"provider '{provider.provider_id}' only allows {', '.join(allowed) or 'no models'}; "
                                   f"'{resource.provider_resource_id}' is not among them (allowed_models)",
                                   reason="MODEL_NOT_ALLOWED")
        metadata = json_format.MessageToDict(resource.metadata)
        return provider, ModelTarget(identifier=resource.identifier or model_id,
                                     provider_model_id=resource.provider_resource_id, model_type=model_type,
                                     metadata=metadata)
