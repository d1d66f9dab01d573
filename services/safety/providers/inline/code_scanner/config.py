"""Config of ``inline::code-scanner`` (none in Llama Stack either)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["CodeScannerConfig"]


class CodeScannerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
