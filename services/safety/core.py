"""The safety service's operations on domain types: run one shield; moderate texts with shields."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any, Sequence

from services.common.errors import FailedPrecondition, InvalidArgument
from services.safety.moderation import ModerationResult, ShieldOutcome, moderation_result
from services.safety.providers.base import CallOptions, Message, SafetyProvider, ShieldTarget, Violation
from services.safety.router import ShieldRouter

__all__ = ["SafetyCore", "Moderation"]

# Shield runs of one moderation call in flight at once (llama-guard runs queue at the inference service).
MODERATION_CONCURRENCY = 8


@dataclasses.dataclass
class Moderation:
    id: str
    model: str  # the shield asked for, or the shields that ran, comma-separated
    results: list[ModerationResult]


class SafetyCore:
    def __init__(self, router: ShieldRouter) -> None:
        self.router = router

    async def run_shield(self, shield_id: str, messages: Sequence[Message], params: dict[str, Any],
                         options: CallOptions) -> Violation | None:
        if not messages:
            raise InvalidArgument("messages is empty; give at least one message to check", reason="MESSAGES_MISSING")
        provider, shield = await self.router.route(shield_id)
        return await provider.run_shield(shield, messages, params, options)

    async def moderate(self, model: str, inputs: Sequence[str], options: CallOptions) -> Moderation:
        """Moderate each input with shield ``model``, or with every shield this service serves when empty."""
        if not inputs:
            raise InvalidArgument("input is empty; give at least one text to moderate", reason="INPUT_MISSING")
        shields: list[tuple[SafetyProvider, ShieldTarget]]
        if model:
            shields = [await self.router.route(model)]
        else:
            shields = await self.router.served()
            if not shields:
                raise FailedPrecondition("no shield is registered for this safety service; register one "
                                         "(`stackmesh shields register ID --provider-id PROVIDER`) or name one in "
                                         "model", reason="NO_SHIELDS")
        gate = asyncio.Semaphore(MODERATION_CONCURRENCY)

        async def run(provider: SafetyProvider, shield: ShieldTarget, text: str) -> ShieldOutcome:
            async with gate:
                violation = await provider.run_shield(shield, [Message("user", text)], {}, options)
            return ShieldOutcome(shield.shield_id, violation, provider.moderation_categories(shield))

        outcomes = await asyncio.gather(*(run(p, s, text) for text in inputs for p, s in shields))
        per_input = [list(outcomes[i * len(shields):(i + 1) * len(shields)]) for i in range(len(inputs))]
        return Moderation(f"modr-{uuid.uuid4().hex}", model or ",".join(s.shield_id for _, s in shields),
                          [moderation_result(o) for o in per_input])
