"""The tool_runtime providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

PROVIDERS: dict[str, ProviderSpec] = {}
