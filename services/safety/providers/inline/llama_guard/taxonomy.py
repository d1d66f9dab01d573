"""The Llama Guard 3 hazard taxonomy (S1–S14, from the MLCommons AI safety taxonomy).

The names are the short ones the Llama Guard 3 model card puts in its prompt (the model was trained
on them); ``moderation_name`` is their snake_case form, used as category keys in moderation results.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["Category", "CATEGORIES", "CATEGORY_BY_CODE", "moderation_name", "validate_codes"]


@dataclasses.dataclass(frozen=True)
class Category:
    code: str  # "S1"
    name: str  # "Violent Crimes"

    @property
    def moderation_name(self) -> str:
        return moderation_name(self.name)


CATEGORIES: tuple[Category, ...] = tuple(Category(f"S{i}", name) for i, name in enumerate([
    "Violent Crimes",
    "Non-Violent Crimes",
    "Sex Crimes",
    "Child Exploitation",
    "Defamation",
    "Specialized Advice",
    "Privacy",
    "Intellectual Property",
    "Indiscriminate Weapons",
    "Hate",
    "Self-Harm",
    "Sexual Content",
    "Elections",
    "Code Interpreter Abuse",
], start=1))

CATEGORY_BY_CODE: dict[str, Category] = {c.code: c for c in CATEGORIES}


def moderation_name(name: str) -> str:
    """'Non-Violent Crimes' -> 'non_violent_crimes'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def validate_codes(codes: list[str], where: str) -> list[str]:
    """Upper-cased codes; ValueError naming the unknown ones and the valid set."""
    normalized = [str(c).strip().upper() for c in codes]
    unknown = [c for c in normalized if c not in CATEGORY_BY_CODE]
    if unknown:
        raise ValueError(f"{where}: unknown Llama Guard categor{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(unknown)}; valid codes are S1–S14 "
                         f"({', '.join(f'{c.code} {c.name}' for c in CATEGORIES)})")
    return normalized
