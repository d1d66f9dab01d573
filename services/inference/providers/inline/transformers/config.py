"""Config of ``inline::transformers``: serves fine-tuned models (base + LoRA adapter) with transformers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TransformersConfig"]


class TransformersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_loaded_bases: int = Field(default=2, ge=1, description="Base models kept in memory; adapters of one base "
                                  "share its weights.")
    torch_threads: int | None = Field(default=None, ge=1, description="Threads for generation (default: torch's).")
    max_new_tokens: int = Field(default=256, ge=1, description="Generation length when a request gives none.")
