"""The ``remote::*`` OpenAI-compatible inference providers: one config, one adapter, many families.

``config`` and ``families`` import nothing heavy (the config check imports them); the adapter,
which needs aiohttp, is imported only when ``OpenAICompatAdapter`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.inference.providers.remote.openai_compat.config import (
    NetworkSettings,
    OpenAICompatConfig,
)
from services.inference.providers.remote.openai_compat.families import (
    REMOTE_FAMILIES,
    family_defaults,
)

if TYPE_CHECKING:
    from services.inference.providers.remote.openai_compat.adapter import OpenAICompatAdapter

__all__ = ["OpenAICompatAdapter", "OpenAICompatConfig", "NetworkSettings", "REMOTE_FAMILIES",
           "family_defaults"]


def __getattr__(name: str) -> Any:
    # Lazy: validating a run config must not pay for importing aiohttp.
    if name == "OpenAICompatAdapter":
        from services.inference.providers.remote.openai_compat.adapter import OpenAICompatAdapter
        return OpenAICompatAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
