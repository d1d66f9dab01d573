"""The interface every inference provider implements.

Requests and responses are plain dicts in the OpenAI shape (``/v1/chat/completions`` etc.): the
servicer converts protos to and from that shape once, and every provider — inline libraries or
OpenAI-compatible servers — speaks it natively.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, AsyncIterator

from services.common.errors import Unimplemented

__all__ = ["DiscoveredModel", "ModelTarget", "InferenceProvider"]


@dataclasses.dataclass(frozen=True)
class DiscoveredModel:
    """A model a provider lists by itself (source DISCOVERED in the registry)."""

    provider_model_id: str
    model_type: str = "llm"  # llm | embedding | rerank
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelTarget:
    """The model a request resolved to."""

    identifier: str
    provider_model_id: str
    model_type: str  # llm | embedding | rerank
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


class InferenceProvider(abc.ABC):
    """One configured provider instance inside the inference service."""

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults

    # --- life cycle -------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Prepare; must not block on remote servers being reachable."""

    async def shutdown(self) -> None:
        """Release connections, files and threads."""

    async def health(self) -> tuple[bool, str]:
        """(healthy, reason) — inline providers are healthy once initialized."""
        return True, ""

    # --- discovery --------------------------------------------------------------------------
    @property
    def refresh_models(self) -> bool:
        """Whether the service should re-list this provider's models periodically."""
        return bool(getattr(self.config, "refresh_models", False))

    @property
    def refresh_interval_seconds(self) -> float | None:
        return getattr(self.config, "refresh_interval_seconds", None)

    @property
    def allowed_models(self) -> list[str] | None:
        return getattr(self.config, "allowed_models", None)

    async def list_models(self) -> list[DiscoveredModel] | None:
        """The provider's models, or None when it cannot list (its entries are then kept).

        Raise ``Unavailable`` when the provider should list but is unreachable."""
        return None

    # --- data path --------------------------------------------------------------------------
    async def chat_completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        raise Unimplemented(f"provider '{self.provider_id}' does not do chat completion")

    def stream_chat_completion(self, model: ModelTarget, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise Unimplemented(f"provider '{self.provider_id}' does not stream chat completion")

    async def completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        raise Unimplemented(f"provider '{self.provider_id}' does not do text completion")

    async def embeddings(self, model: ModelTarget, inputs: list[str], dimensions: int | None) -> dict[str, Any]:
        """OpenAI embeddings response: {"data": [{"index", "embedding"}], "usage": {...}}."""
        raise Unimplemented(f"provider '{self.provider_id}' does not do embeddings")
