"""What a fine-tuning request names, resolved from the watched registry cache and the run config:
the base model's weights on this machine, the datasets, the output model id, and the
``inline::transformers`` inference provider that will serve the result.

Checking here, before a job exists, turns the mistakes a user makes into immediate errors:
NOT_FOUND for an unknown model or dataset, INVALID_ARGUMENT for an embedding model,
FAILED_PRECONDITION for a model whose weights are not local or a dataset of another purpose,
ALREADY_EXISTS for an output model id that is taken.
"""

from __future__ import annotations

import pathlib

import grpc
from google.protobuf import json_format

from services.common.config import ProviderEntry, StackConfig
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.registry_cache import RegistryCache, resolve_named
from services.common.resource_index import require_llm
from services.post_training.providers.base import BaseSource
from stackmesh.common.v1 import common_pb2

__all__ = ["PostTrainingRouter", "TUNABLE_PROVIDER_TYPES", "SERVING_PROVIDER_TYPE"]

T = common_pb2
TUNABLE_PROVIDER_TYPES = ("inline::llama-cpp", "inline::transformers")
SERVING_PROVIDER_TYPE = "inline::transformers"
TRAINING_PURPOSE = "post-training/messages"


class PostTrainingRouter:
    def __init__(self, stack: StackConfig, cache: RegistryCache) -> None:
        self.stack = stack
        self.cache = cache

    async def _resolve(self, resource_type: int, identifier: str, what: str) -> common_pb2.Resource:
        return await resolve_named(self.cache, resource_type, identifier, what)

    def _inference_provider(self, provider_id: str) -> ProviderEntry | None:
        return next((p for p in self.stack.providers.get("inference", []) if p.provider_id == provider_id), None)

    # --- the base model -----------------------------------------------------------------------
    async def base_model(self, model: str) -> BaseSource:
        """Where the weights of ``model`` are, or why it cannot be fine-tuned here."""
        resource = await self._resolve(T.RESOURCE_TYPE_MODEL, model, "model")
        require_llm(resource, f"model '{model}'", "only an LLM (model_type llm) can be fine-tuned with supervised "
                    "chat data")
        entry = self._inference_provider(resource.provider_id)
        provider_type = entry.provider_type if entry else "unknown"
        if entry is None or provider_type not in TUNABLE_PROVIDER_TYPES:
            raise FailedPrecondition(
                f"model '{model}' is served by provider '{resource.provider_id}' ({provider_type}), whose weights are "
                f"not on this machine; post_training fine-tunes models of {' or '.join(TUNABLE_PROVIDER_TYPES)} "
                f"(a GGUF file, or a transformers folder)", reason="MODEL_NOT_LOCAL",
                metadata={"model": model, "provider_id": resource.provider_id, "provider_type": provider_type})
        provider_model_id = resource.provider_resource_id or resource.identifier
        if provider_type == "inline::llama-cpp":
            return self._gguf(model, resource.provider_id, entry, provider_model_id)
        return self._transformers(model, resource, provider_model_id)

    def _gguf(self, model: str, provider_id: str, entry: ProviderEntry, provider_model_id: str) -> BaseSource:
        from services.inference.providers.inline.llama_cpp.config import LlamaCppConfig
        from services.inference.providers.inline.llama_cpp.provider import packaged_smollm2_path

        config = LlamaCppConfig.model_validate(entry.config)
        if provider_model_id == config.model_name:
            path = pathlib.Path(config.model_path).expanduser() if config.model_path else packaged_smollm2_path()
        else:
            path = pathlib.Path(provider_model_id).expanduser()
        if path.suffix != ".gguf" or not path.is_file():
            raise FailedPrecondition(f"model '{model}' (llama-cpp provider '{provider_id}') has no GGUF file at "
                                     f"'{path}'; register it with a provider_model_id that is the path of a .gguf "
                                     f"file", reason="MODEL_FILE_MISSING", metadata={"model": model, "path": str(path)})
        stat = path.resolve().stat()
        return BaseSource(model, provider_id, "gguf", str(path.resolve()), stat.st_size, stat.st_mtime)

    def _transformers(self, model: str, resource: common_pb2.Resource, folder: str) -> BaseSource:
        path = pathlib.Path(folder).expanduser()
        metadata = json_format.MessageToDict(resource.metadata)
        if (path / "adapter_config.json").is_file():  # a LoRA adapter: tune its merged form, if any
            merged = str(metadata.get("merged_path") or "")
            if not merged:
                base = metadata.get("base_model") or metadata.get("base_path") or "its base model"
                raise FailedPrecondition(f"model '{model}' is a LoRA adapter over {base}; fine-tune {base} instead, "
                                         f"or a merged model (train with lora.merge_output)",
                                         reason="MODEL_IS_ADAPTER", metadata={"model": model})
            path = pathlib.Path(merged)
        if not (path / "config.json").is_file():
            raise FailedPrecondition(f"model '{model}' (transformers provider '{resource.provider_id}') has no "
                                     f"transformers folder at '{path}' (no config.json)", reason="MODEL_FILE_MISSING",
                                     metadata={"model": model, "path": str(path)})
        return BaseSource(model, resource.provider_id, "transformers", str(path.resolve()))

    # --- datasets, output model, serving provider -------------------------------------------
    async def training_dataset(self, dataset_id: str, field: str) -> None:
        """Raise unless ``dataset_id`` is a registered dataset of purpose post-training/messages."""
        resource = await self._resolve(T.RESOURCE_TYPE_DATASET, dataset_id, "dataset")
        purpose = resource.dataset.purpose if resource.WhichOneof("spec") == "dataset" else ""
        if purpose != TRAINING_PURPOSE:
            raise FailedPrecondition(f"{field} '{dataset_id}' has purpose '{purpose or 'unknown'}'; fine-tuning "
                                     f"needs a dataset of purpose {TRAINING_PURPOSE} (rows with a messages column "
                                     f"ending in an assistant turn)", reason="DATASET_PURPOSE_MISMATCH",
                                     metadata={"dataset_id": dataset_id, "purpose": purpose})

    async def check_output_model(self, output_model: str) -> None:
        """Raise ALREADY_EXISTS when ``output_model`` already names a model."""
        if not output_model:
            return
        try:
            resource = await self.cache.resolve_fresh(T.RESOURCE_TYPE_MODEL, output_model)
        except NotFound:
            return
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise Unavailable(f"registry unavailable while checking output_model '{output_model}': "
                              f"{err.details()}", reason="REGISTRY_UNAVAILABLE") from None
        if resource.WhichOneof("spec") != "model":  # "<provider_id>/x" routing, not a registration
            raise InvalidArgument(f"output_model '{output_model}' starts with the id of provider "
                                  f"'{resource.provider_id}/'; choose an id without that prefix",
                                  reason="BAD_OUTPUT_MODEL", metadata={"output_model": output_model})
        raise AlreadyExists(f"output_model '{output_model}' already exists (served by provider "
                            f"'{resource.provider_id}'); choose a new id, or unregister that model first",
                            reason="OUTPUT_MODEL_EXISTS", metadata={"output_model": output_model})

    def serving_provider(self, configured: str | None) -> str:
        """The inline::transformers inference provider that will serve tuned models."""
        serving = [p.provider_id for p in self.stack.providers.get("inference", [])
                   if p.provider_type == SERVING_PROVIDER_TYPE]
        if configured:
            if configured not in serving:
                raise FailedPrecondition(f"inference_provider_id '{configured}' of this post_training provider is "
                                         f"not an {SERVING_PROVIDER_TYPE} inference provider of the run config "
                                         f"(those are: {', '.join(serving) or 'none'})",
                                         reason="SERVING_PROVIDER_MISSING")
            return configured
        if len(serving) == 1:
            return serving[0]
        if not serving:
            raise FailedPrecondition(f"output_model needs an {SERVING_PROVIDER_TYPE} inference provider to serve the "
                                     f"tuned model, and the run config has none; add one under providers.inference, "
                                     f"or leave output_model empty to keep only the artifacts",
                                     reason="SERVING_PROVIDER_MISSING")
        raise FailedPrecondition(f"several {SERVING_PROVIDER_TYPE} inference providers are configured "
                                 f"({', '.join(serving)}); set inference_provider_id in the post_training provider's "
                                 f"config", reason="SERVING_PROVIDER_AMBIGUOUS")
