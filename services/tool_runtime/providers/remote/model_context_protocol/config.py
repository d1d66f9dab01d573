"""Config of ``remote::model-context-protocol`` (Llama Stack passes none: every field has a default)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MCPConfig"]


class MCPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connect_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Time allowed to start a stdio server or reach an HTTP one and finish "
        "the MCP handshake.")
    list_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Time allowed for one tools/list; a group slower than this lands in the "
        "`errors` of a fanned-out ListRuntimeTools.")
    call_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Longest a tool call may run (the caller's deadline applies too).")
    python_uses_service_interpreter: bool = Field(
        default=True, description="Run a stdio command whose program is `python` or `python3` with this "
        "service's own interpreter, so `python -m some_mcp_server` finds the packages installed beside stackmesh.")
