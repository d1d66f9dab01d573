"""Config of ``inline::sentence-transformers``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SentenceTransformersConfig"]


class SentenceTransformersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trust_remote_code: bool = Field(default=False, description="Allow model code shipped with a local model directory.")
    batch_size: int = Field(default=32, ge=1, description="Sentences encoded per forward pass.")
    device: str = Field(default="cpu", description="torch device.")
