"""Config of ``inline::basic`` (none in Llama Stack either)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["BasicScoringConfig"]


class BasicScoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
