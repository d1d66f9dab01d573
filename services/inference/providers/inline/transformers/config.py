"""Config of ``inline::transformers``: serves fine-tuned models (base + LoRA adapter) with transformers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TransformersConfig"]


class TransformersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_loaded_bases: int = Field(default=2, ge=1, description="Base models kept in memory; adapters of one base "
                                  "share its weights.")
    torch_threads: int | None = Field(default=None, ge=1, description="Threads for generation (default: torch's).")
    max_new_tokens: int = Field(default=256, ge=1, description="Generation length when a request gives none.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        default="float32", description="dtype weights are loaded in. float32 is the fastest on CPUs without bf16 "
        "units and matches how post_training trains; bfloat16 halves memory; auto keeps the folder's dtype.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Temperature when a request gives none; "
                               "0 is greedy (Llama Stack's default sampling strategy).")
