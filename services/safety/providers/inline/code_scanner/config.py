"""Config of ``inline::code-scanner`` (none in Llama Stack; these only tune how much is scanned, and how often at once)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CodeScannerConfig"]


class CodeScannerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code_blocks_only: bool = Field(default=False, description="Scan only fenced code blocks (```lang ... ```); "
                                   "by default a message without fences is scanned whole, as code.")
    max_concurrent_scans: int = Field(default=2, ge=1, description="Scans at once in one service process; each "
                                      "may run a semgrep process (≈ 0.3 s of one core for a short Python snippet).")
