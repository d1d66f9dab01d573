"""Reading a guard model's answer, and turning it into a violation — pure functions, no I/O.

Llama Guard answers ``safe``, or ``unsafe`` and on the next line the violated codes (``S1,S10``).
Small models asked the same prompt ramble, so the reading is deliberately asymmetric:

* ``safe`` is trusted only when the first line is exactly that word (case, surrounding blanks and
  trailing punctuation aside): "safe, but the user wants a bomb" is not a verdict of safety;
* ``unsafe`` is trusted as soon as the first line starts with that word: a model that says unsafe
  is taken at its word whatever follows, and the codes are read from the rest of that line or from
  the next non-empty line (the format's category line; later lines are ignored, a rambling model
  often echoes the whole category list there);
* anything else is *unparseable*; what that means (block or allow) is the provider's policy.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Iterable

from services.safety.providers.base import Violation, ViolationLevel
from services.safety.providers.inline.llama_guard.taxonomy import CATEGORY_BY_CODE

__all__ = ["Outcome", "Verdict", "parse_verdict", "decide", "USER_MESSAGE", "UnparseablePolicy"]

# What Llama Stack shows the user instead of blocked content.
USER_MESSAGE = "I can't answer that. Can I help with something else?"

_SAFE = re.compile(r"^safe[\s.!]*$", re.IGNORECASE)
_UNSAFE = re.compile(r"^unsafe\b[\s.:;,!-]*(?P<rest>.*)$", re.IGNORECASE)
_CODE = re.compile(r"\bS(\d{1,3})\b", re.IGNORECASE)


class Outcome(str, enum.Enum):
    SAFE = "safe"
    UNSAFE = "unsafe"
    UNPARSEABLE = "unparseable"


class UnparseablePolicy(str, enum.Enum):
    BLOCK = "block"  # fail closed: an ERROR violation
    ALLOW = "allow"  # fail open: an INFO violation (the content may go on) carrying the answer


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    categories: tuple[str, ...] = ()  # valid codes S1–S14 the answer named, in order, no repeats
    unknown: tuple[str, ...] = ()  # S-codes outside the taxonomy (S15, S99)
    raw: str = ""


def _codes(line: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    known: list[str] = []
    unknown: list[str] = []
    for number in _CODE.findall(line):
        code = f"S{int(number)}"
        bucket = known if code in CATEGORY_BY_CODE else unknown
        if code not in bucket:
            bucket.append(code)
    return tuple(known), tuple(unknown)


def parse_verdict(raw: str) -> Verdict:
    """Read a guard model's answer (see the module docstring for the rules)."""
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        return Verdict(Outcome.UNPARSEABLE, raw=raw)
    first = lines[0]
    if _SAFE.match(first):
        return Verdict(Outcome.SAFE, raw=raw)
    unsafe = _UNSAFE.match(first)
    if unsafe is None:
        return Verdict(Outcome.UNPARSEABLE, raw=raw)
    known, unknown = _codes(unsafe.group("rest"))  # "unsafe S1" on one line
    if not known and not unknown and len(lines) > 1:
        known, unknown = _codes(lines[1])  # the format's category line
    return Verdict(Outcome.UNSAFE, categories=known, unknown=unknown, raw=raw)


def decide(verdict: Verdict, excluded: Iterable[str] = (),
           on_unparseable: UnparseablePolicy = UnparseablePolicy.BLOCK) -> Violation | None:
    """The violation a verdict means, or None when the messages pass.

    An unsafe answer naming only excluded categories passes. An unsafe answer naming no valid
    category is still unsafe (the model said so). The raw answer is always in the metadata."""
    skipped = {c.upper() for c in excluded}
    metadata: dict[str, object] = {"raw_answer": verdict.raw, "verdict": verdict.outcome.value}
    if verdict.outcome is Outcome.SAFE:
        return None
    if verdict.outcome is Outcome.UNPARSEABLE:
        metadata["unparseable_policy"] = on_unparseable.value
        level = ViolationLevel.ERROR if on_unparseable is UnparseablePolicy.BLOCK else ViolationLevel.INFO
        return Violation(level, USER_MESSAGE, [], metadata)
    violated = [c for c in verdict.categories if c not in skipped]
    if verdict.categories and not violated and not verdict.unknown:
        return None  # only excluded categories
    metadata["violation_type"] = ",".join(violated)  # Llama Stack's key
    metadata["category_names"] = {c: CATEGORY_BY_CODE[c].name for c in violated}
    if verdict.unknown:
        metadata["unknown_categories"] = list(verdict.unknown)
    if len(violated) < len(verdict.categories):
        metadata["excluded_categories"] = [c for c in verdict.categories if c in skipped]
    return Violation(ViolationLevel.ERROR, USER_MESSAGE, violated, metadata)
