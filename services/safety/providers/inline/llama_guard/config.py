"""Config of ``inline::llama-guard`` (Llama Stack keys)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LlamaGuardConfig"]


class LlamaGuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    excluded_categories: list[str] = Field(default_factory=list, description="Category codes (e.g. S6) left out "
                                           "of the prompt; a model answer naming only these is treated as safe.")
