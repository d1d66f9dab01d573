"""Config of ``inline::llama-guard`` (Llama Stack's key, plus how to treat an answer that is no verdict)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.safety.providers.inline.llama_guard.taxonomy import validate_codes

__all__ = ["LlamaGuardConfig"]


class LlamaGuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    excluded_categories: list[str] = Field(default_factory=list, description="Category codes (e.g. S6) left out "
                                           "of the prompt; a model answer naming only these is treated as safe.")
    on_unparseable: Literal["block", "allow"] = Field(
        default="block", description="What an answer that is neither 'safe' nor 'unsafe' means (small models "
        "ramble). 'block' (default, fail closed): an ERROR violation, because a guard that cannot read its "
        "classifier must not let content through. 'allow' (fail open): an INFO violation, which lets the "
        "content go on. Either way the raw answer is in the violation's metadata.")
    max_tokens: int = Field(default=48, ge=4, le=1024, description="Tokens the model may answer with: 'unsafe' "
                            "and all fourteen codes fit in ~45 Llama 3 tokens; more only lets a small model ramble.")
    timeout_seconds: float = Field(default=60.0, gt=0, description="Limit on the model call when the caller "
                                   "sets no deadline.")

    @field_validator("excluded_categories")
    @classmethod
    def _known_codes(cls, codes: list[str]) -> list[str]:
        return validate_codes(codes, "excluded_categories")
