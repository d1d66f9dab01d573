"""Config of ``inline::llm-as-judge``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LLMAsJudgeConfig"]


class LLMAsJudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(default=4, ge=1, le=256, description="Rows judged at the same time.")
    temperature: float | None = Field(
        default=0.0, ge=0.0, le=2.0,
        description="Sampling temperature of judge calls; 0 makes a judgement reproducible. null: the model's default.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Longest judge reply, in tokens; null: the inference provider's default.")
    request_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Longest wait for one judge reply (shorter when the caller's deadline is).")
