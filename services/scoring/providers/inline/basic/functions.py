"""The four ``basic::*`` scoring functions: their definitions and how each scores one row.

Each row function reads ``generated_answer`` and ``expected_answer`` and returns a score row with
``score`` 1.0 or 0.0; the regex parsers add ``parsed_answer`` (what they read, or null), so a wrong
score can be explained from the results alone.

Multiple choice uses Llama Stack's multilingual "Answer: X" markers with its template, made a little
stricter and a little more forgiving: the letter may be wrapped as "(B)", "**B**" or "$B$", and must
not run on into a word (Llama Stack reads "Answer: because" as "b"). Arabic, Bengali and full-width
letters count as A-D.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from services.scoring.providers.base import FunctionDef, Row, ScoreRow, as_text
from services.scoring.providers.inline.basic.math_answer import extract_final_answer, normalize_answer, same_answer

__all__ = ["EQUALITY", "SUBSET_OF", "MULTIPLE_CHOICE", "MATH_RESPONSE", "FUNCTION_DEFS", "ALIASES",
           "MULTILINGUAL_ANSWER_REGEXES", "MULTILINGUAL_ANSWER_PATTERN_TEMPLATE", "DEFAULT_CHOICE_REGEXES",
           "equality", "subset_of", "multiple_choice", "math_response"]

EQUALITY = "basic::equality"
SUBSET_OF = "basic::subset_of"
MULTIPLE_CHOICE = "basic::regex_parser_multiple_choice_answer"
MATH_RESPONSE = "basic::regex_parser_math_response"

MULTILINGUAL_ANSWER_REGEXES = [
    # Llama Stack's second "Answer" holds an invisible Korean character; spelled out here so it survives editors.
    r"The best answer is ", r"Answer\s*:", r"Answer[\s\u3164\u200b\ufeff]*:",
    r"উত্তর\s*:", r"उत्तर\s*:", r"উত্তরঃ", r"উত্তর\s*:", r"Antwort\s*:", r"답변\s*:", r"정답\s*:", r"답\s*:",
    r"答案\s*：", r"答案\s*:", r"答\s*：", r"答\s*:", r"答复\s*：", r"答曰\s*：", r"الإجابة:", r"الجواب:", r"إجابة:",
    r"الإجابة النهائية:", r"الإجابة الصحيحة:", r"الإجابة الصحيحة هي:", r"الإجابة هي:", r"Respuesta\s*:",
    r"Risposta\s*:", r"答え\s*:", r"答え\s*：", r"回答\s*:", r"回答\s*：", r"解答\s*:", r"Jawaban\s*:", r"Réponse\s*:",
    r"Resposta\s*:", r"Jibu\s*:", r"Idahun\s*:", r"Ìdáhùn\s*:", r"Idáhùn\s*:", r"Àmọ̀nà\s*:", r"Àdáhùn\s*:",
    r"Ànúgọ\s*:", r"Àṣàyàn\s*:",
]
MULTILINGUAL_ANSWER_PATTERN_TEMPLATE = (
    r"(?i){}\s*[(*$]*\s*([A-D]|[أ-د]|[অ]|[ব]|[ড]|[ঢ]|[Ａ]|[Ｂ]|[Ｃ]|[Ｄ])(?![A-Za-z])")
DEFAULT_CHOICE_REGEXES = [MULTILINGUAL_ANSWER_PATTERN_TEMPLATE.format(x) for x in MULTILINGUAL_ANSWER_REGEXES]
_LETTERS = {"أ": "A", "ب": "B", "ج": "C", "د": "D", "অ": "A", "ব": "B", "ড": "C", "ঢ": "D",
            "Ａ": "A", "Ｂ": "B", "Ｃ": "C", "Ｄ": "D"}

FUNCTION_DEFS = [
    FunctionDef(EQUALITY, "Returns 1.0 if the generated answer equals the expected answer, else 0.0.", "number",
                {"aggregation_functions": ["accuracy"]}),
    FunctionDef(SUBSET_OF, "Returns 1.0 if the expected answer is contained in the generated answer "
                           "(case-sensitive), else 0.0.", "number", {"aggregation_functions": ["accuracy"]}),
    FunctionDef(MULTIPLE_CHOICE, "Extracts the answer letter from 'Answer: X' (in many languages, or the "
                                 "parsing_regexes given) and compares it with the expected answer.", "number",
                {"parsing_regexes": DEFAULT_CHOICE_REGEXES, "aggregation_functions": ["accuracy"]}),
    FunctionDef(MATH_RESPONSE, "Extracts the final answer of a math solution (\\boxed{}, 'The answer is', "
                               "'Answer:', or the parsing_regexes given), normalizes both answers and compares "
                               "them, numerically where they are numbers.", "number",
                {"aggregation_functions": ["accuracy"]}),
]
# Llama Stack's provider_resource_ids, so a run config written for it registers the same functions.
ALIASES = {"equality": EQUALITY, "subset-of": SUBSET_OF, "subset_of": SUBSET_OF,
           "regex-parser-multiple-choice-answer": MULTIPLE_CHOICE,
           "regex_parser_multiple_choice_answer": MULTIPLE_CHOICE,
           "regex-parser-math-response": MATH_RESPONSE, "regex_parser_math_response": MATH_RESPONSE}


def _score(ok: bool) -> float:
    return 1.0 if ok else 0.0


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    scalar = (str, int, float)
    # A generated answer is text; an expected one read from JSON may be a number (42.0): compare as text.
    return isinstance(a, scalar) and isinstance(b, scalar) and as_text(a).strip() == as_text(b).strip()


def equality(row: Row) -> ScoreRow:
    return {"score": _score(_same(row["generated_answer"], row["expected_answer"]))}


def subset_of(row: Row) -> ScoreRow:
    return {"score": _score(as_text(row["expected_answer"]) in as_text(row["generated_answer"]))}


def _first_match(patterns: Sequence[re.Pattern[str]], text: str) -> str | None:
    """Group "X", else group 1, else the whole match, of the first pattern (in order) that matches."""
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            if "X" in pattern.groupindex:
                return match.group("X")
            return match.group(1) if pattern.groups else match.group(0)
    return None


def _choice(text: str) -> str:
    text = text.strip()
    text = _LETTERS.get(text, text)
    return text.upper() if len(text) == 1 and text.isascii() and text.isalpha() else text


def multiple_choice(row: Row, patterns: Sequence[re.Pattern[str]]) -> ScoreRow:
    parsed = _first_match(patterns, as_text(row["generated_answer"]))
    ok = parsed is not None and _choice(parsed) == _choice(as_text(row["expected_answer"]))
    return {"score": _score(ok), "parsed_answer": parsed}


def math_response(row: Row, patterns: Sequence[re.Pattern[str]] | None) -> ScoreRow:
    generated = as_text(row["generated_answer"])
    parsed = _first_match(patterns, generated) if patterns else extract_final_answer(generated)
    expected = as_text(row["expected_answer"])
    ok = parsed is not None and same_answer(normalize_answer(parsed), normalize_answer(expected))
    return {"score": _score(ok), "parsed_answer": parsed}
