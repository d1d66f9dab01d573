"""The model-free half of an LLM judge: which row columns a prompt template reads, the prompt for a
row, and the score read out of the judge's reply.

Templates use ``str.format`` fields, as in Llama Stack: ``{input_query}``, ``{generated_answer}``,
``{expected_answer}`` — and, beyond Llama Stack, any other column of the row (``{context}``), so a
dataset with extra columns can be judged on them. Literal braces are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, Sequence

from services.common.errors import InvalidArgument
from services.scoring.providers.base import Row, as_text

__all__ = ["template_columns", "fill_prompt", "parse_judge_score"]

_FIELD_BASE = re.compile(r"[.\[]")


def template_columns(fn_id: str, template: str) -> list[str]:
    """The row columns ``template`` reads, in order of first use; INVALID_ARGUMENT when it is not a
    template ``str.format`` accepts or uses positional fields."""
    columns: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise InvalidArgument(f"prompt_template of scoring function '{fn_id}' is not a valid template ({err}); "
                              f"write literal braces as '{{{{' and '}}}}'", reason="BAD_PROMPT_TEMPLATE",
                              metadata={"scoring_fn_id": fn_id}) from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        base = _FIELD_BASE.split(field, 1)[0]
        if not base or base.isdigit():
            raise InvalidArgument(f"prompt_template of scoring function '{fn_id}' has a positional field "
                                  f"'{{{field}}}'; name a row column instead, e.g. {{generated_answer}}",
                                  reason="BAD_PROMPT_TEMPLATE", metadata={"scoring_fn_id": fn_id})
        if base not in columns:
            columns.append(base)
    return columns


def fill_prompt(template: str, row: Row, columns: Sequence[str]) -> str:
    """``template`` with each column of ``row`` it names filled in as text."""
    return template.format_map({column: as_text(row[column]) for column in columns})


def _number_or_text(value: str) -> float | str:
    try:
        number = float(value.strip())
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def parse_judge_score(reply: str, patterns: Sequence[re.Pattern[str]]) -> Any:
    """The first group of the first pattern (in order) that matches ``reply`` — a number when it
    reads as one, so average and median apply; the text otherwise ("A"); None when none match."""
    for pattern in patterns:
        match = pattern.search(reply)
        if match:
            return _number_or_text(match.group(1) if pattern.groups else match.group(0))
    return None
