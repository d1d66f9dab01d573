"""The post_training providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

_P = "services.post_training.providers"

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::huggingface": ProviderSpec(
        provider_type="inline::huggingface", api="post_training",
        config_class=f"{_P}.inline.huggingface.config:HuggingFacePostTrainingConfig",
        impl=f"{_P}.inline.huggingface.provider:HuggingFacePostTrainingProvider",
        description="LoRA or full fine-tuning with transformers + peft + torch (CPU); rows from datasetio; "
                    "the result registered as a model served by inline::transformers."),
}
