"""The interface every safety provider implements, and the plain types it speaks.

A provider serves shields (registry resources): given a conversation it returns a ``Violation``
or None (the messages passed). The servicer converts protos to these types once; the router picks
the provider of a shield; moderation (OpenAI shape) is built from the same shield runs.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, Sequence

from services.common.mesh import MeshClient
from services.common.registry_cache import RegistryCache

__all__ = ["CallOptions", "ShieldTarget", "Message", "ViolationLevel", "Violation", "SafetyProvider"]


@dataclasses.dataclass(frozen=True)
class CallOptions:
    """What a provider needs of the caller's request when it calls further through the mesh."""

    timeout: float | None = None  # seconds left of the caller's deadline
    metadata: tuple[tuple[str, str], ...] = ()  # trace context to pass on


@dataclasses.dataclass(frozen=True)
class ShieldTarget:
    """The registered shield a request resolved to."""

    shield_id: str
    provider_id: str
    # What the provider knows the shield by: for llama-guard, the model it asks.
    provider_shield_id: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Message:
    """One message of the conversation to check; tool calls are kept as (name, JSON arguments)."""

    role: str
    content: str
    tool_calls: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        """Content plus the tool calls it makes: a call's arguments can carry what a shield must see
        (code handed to an interpreter, a request to a search tool)."""
        calls = "\n".join(f"[tool call {name}({arguments})]" for name, arguments in self.tool_calls)
        return f"{self.content}\n{calls}" if self.content and calls else (self.content or calls)


class ViolationLevel(enum.IntEnum):
    """Ordered: moderation flags WARN and above; INFO is a note, the content may go on."""

    INFO = 1
    WARN = 2
    ERROR = 3


@dataclasses.dataclass
class Violation:
    level: ViolationLevel
    user_message: str
    categories: list[str] = dataclasses.field(default_factory=list)  # codes or rule ids
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


class SafetyProvider(abc.ABC):
    """One configured provider instance inside the safety service."""

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults
        self.mesh: MeshClient | None = None
        self.cache: RegistryCache | None = None

    def attach(self, mesh: MeshClient, cache: RegistryCache) -> None:
        """Give the provider the process's mesh client and registry cache (llama-guard asks a model)."""
        self.mesh = mesh
        self.cache = cache

    # --- life cycle (what ProviderSupervisor expects) -------------------------------------------
    async def initialize(self) -> None:
        """Prepare; must not block on other services being reachable."""

    async def shutdown(self) -> None:
        """Release what was prepared."""

    async def health(self) -> tuple[bool, str]:
        return True, ""

    refresh_models = False
    refresh_interval_seconds: float | None = None
    allowed_models: list[str] | None = None

    async def list_models(self) -> None:
        return None  # shields are registered, never discovered

    # --- shields --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def run_shield(self, shield: ShieldTarget, messages: Sequence[Message], params: dict[str, Any],
                         options: CallOptions) -> Violation | None:
        """Check ``messages``; None when they pass. Raise a StackmeshError when the check itself
        could not run: an error is never reported as a verdict."""

    def moderation_categories(self, shield: ShieldTarget) -> dict[str, str]:
        """Every category code ``shield`` can report -> its name in moderation results (those not
        reported appear there as false). Providers with an open set of codes return {}."""
        return {}
