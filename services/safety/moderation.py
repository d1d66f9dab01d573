"""Moderation in OpenAI's shape (``/v1/moderations``), built from shield runs — pure functions.

One result per input text. Each shield that ran contributes its whole category set (false unless
reported, so a client sees what was checked); an input is flagged when some shield reported a
violation of level WARN or above (INFO is a note: the content may go on). Scores are 1.0 for a
reported category, 0.0 otherwise: shields give verdicts, not probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from services.safety.providers.base import Violation, ViolationLevel

__all__ = ["ShieldOutcome", "ModerationResult", "moderation_result"]


@dataclasses.dataclass(frozen=True)
class ShieldOutcome:
    """What one shield said about one input."""

    shield_id: str
    violation: Violation | None
    # code -> moderation name, for every category the shield checks ({} for open sets such as CWE ids).
    categories: dict[str, str]


@dataclasses.dataclass
class ModerationResult:
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    user_message: str
    flagged_by: list[str]
    metadata: dict[str, Any]


def moderation_result(outcomes: list[ShieldOutcome]) -> ModerationResult:
    """Merge the outcomes of every shield run on one input."""
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    flagged_by: list[str] = []
    shields: dict[str, Any] = {}
    worst: Violation | None = None
    for outcome in outcomes:
        for name in outcome.categories.values():
            categories.setdefault(name, False)
            scores.setdefault(name, 0.0)
        violation = outcome.violation
        if violation is None:
            continue
        shields[outcome.shield_id] = {"level": violation.level.name, "categories": list(violation.categories),
                                      "metadata": violation.metadata}
        if violation.level < ViolationLevel.WARN:
            continue
        flagged_by.append(outcome.shield_id)
        for code in violation.categories:
            name = outcome.categories.get(code, code)
            categories[name] = True
            scores[name] = 1.0
        if worst is None or violation.level > worst.level:
            worst = violation
    return ModerationResult(flagged=bool(flagged_by), categories=categories, category_scores=scores,
                            user_message=worst.user_message if worst else "", flagged_by=flagged_by,
                            metadata={"shields": shields} if shields else {})
