"""Reading the final answer out of a math solution, and deciding whether two answers are the same.

Extraction (``extract_final_answer``), first rule that finds something:

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (braces balanced, so ``\\boxed{\\frac{1}{2}}`` works);
2. the last "final answer is X", "the answer is X" or "Answer: X" (to the end of its line);
3. the last number in the text (what lm-eval's "flexible extract" does for GSM8K-style answers).

Normalization (``normalize_answer``) follows the Minerva/Hendrycks MATH conventions Llama Stack's
``regex_parser_math_response`` also uses: math delimiters, ``\\text{}``, ``\\left``/``\\right``, spacing
commands, degrees, percent and dollar signs are dropped; ``\\dfrac``/``\\tfrac`` become ``\\frac`` and
``\\frac12`` becomes ``\\frac{1}{2}``; "x = 5" becomes "5"; thousands separators and trailing units
("5 cm", "12 apples") go. ``same_answer`` then compares numerically when both sides are numbers
(``\\frac{1}{2}``, ``1/2``, ``0.5``, ``\\sqrt{4}``), else the normalized text.
"""

from __future__ import annotations

import math
import re

__all__ = ["extract_final_answer", "normalize_answer", "as_number", "same_answer"]

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_PHRASES = [re.compile(p, re.IGNORECASE) for p in (
    r"final answer is\s*:?\s*([^\n]+)",
    r"the answer is\s*:?\s*([^\n]+)",
    r"answer\s*:\s*([^\n]+)",
)]
_UNSIGNED = r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"  # 1,234.5 but not 1,2
_NUMBER = rf"[-+]?{_UNSIGNED}"
# A sign counts only when it is not a hyphen between words or numbers ("10-3" ends in 3, not -3).
_LAST_NUMBER = re.compile(rf"(?:(?<![\w)])[-+])?{_UNSIGNED}(?:\s*/\s*\d+)?")
_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DROPPED = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "^\\circ", "^{\\circ}", "°", "\\%", "%",
            "\\$", "$", "\\displaystyle")
_UNITS = ("square", "sq", "cubic", "cm", "mm", "km", "m", "meters?", "inch(?:es)?", "in", "feet", "foot", "ft",
          "yards?", "miles?", "mph", "dollars?", "cents?", "degrees?", "units?", "seconds?", "minutes?", "hours?",
          "days?", "weeks?", "months?", "years?", "grams?", "g", "kg", "pounds?", "lbs?", "ounces?", "oz",
          "liters?", "ml", "percent")
_TRAILING_UNITS = re.compile(rf"^(.*\d)\s*(?:(?:{'|'.join(_UNITS)})(?:\^?\{{?\d\}}?)?\s*)+$", re.IGNORECASE)
_NUMBER_THEN_WORDS = re.compile(rf"^({_NUMBER}(?:\s*/\s*\d+)?)\s+[A-Za-z]{{3,}}(?:\s+[A-Za-z]+)*$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FRAC_SHORT = [(re.compile(r"\\frac\s*(\d)\s*(\d)"), r"\\frac{\1}{\2}"),
               (re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)"), r"\\frac{\1}{\2}"),
               (re.compile(r"\\frac\s*(\d)\s*\{"), r"\\frac{\1}{")]
_FRAC = re.compile(r"^([-+]?)\\frac\{([^{}]+)\}\{([^{}]+)\}$")
_SQRT = re.compile(r"^([-+]?)\\sqrt\{([^{}]+)\}$")
_SLASH = re.compile(rf"^({_NUMBER})\s*/\s*({_NUMBER})$")


def _braced(text: str, start: int) -> str | None:
    """The text inside the brace group opening at ``text[start]`` (nested braces kept)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    return None


def _last_boxed(text: str) -> str | None:
    best = -1
    for command in _BOX_COMMANDS:
        best = max(best, text.rfind(command))
    if best < 0:
        return None
    rest = best + (5 if text.startswith("\\fbox", best) else 6)
    while rest < len(text) and text[rest] == " ":
        rest += 1
    if rest < len(text) and text[rest] == "{":
        return _braced(text, rest)
    token = re.match(r"[^\s$]+", text[rest:])  # "\boxed 5"
    return token.group(0) if token else None


def extract_final_answer(text: str) -> str | None:
    """The final answer a solution states (rules in the module docstring), or None."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for phrase in _ANSWER_PHRASES:
        matches = phrase.findall(text)
        if matches:
            return matches[-1].strip()
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def normalize_answer(answer: str) -> str:
    """A canonical text form of an answer (rules in the module docstring)."""
    s = answer.strip()
    boxed = _last_boxed(s)
    if boxed is not None:
        s = boxed
    for opener, closer in (("\\(", "\\)"), ("\\[", "\\]"), ("$", "$")):
        if s.startswith(opener) and s.endswith(closer) and len(s) >= len(opener) + len(closer):
            s = s[len(opener):len(s) - len(closer)].strip()
    previous = None
    while previous != s:  # \text{\textbf{x}} unwraps from the inside out
        previous, s = s, _TEXT_COMMANDS.sub(r"\1", s)
    for token in _DROPPED:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").strip()
    if s.count("=") == 1 and len(s.split("=")[0].strip()) <= 2:  # "x = 5"
        s = s.split("=")[1].strip()
    s = s.rstrip(".").strip()
    s = _THOUSANDS.sub("", s)
    units = _TRAILING_UNITS.match(s)
    if units:
        s = units.group(1)
    words = _NUMBER_THEN_WORDS.match(s)
    if words:
        s = words.group(1)
    for pattern, replacement in _FRAC_SHORT:
        s = pattern.sub(replacement, s)
    return re.sub(r"\s+", "", s)


def _float(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def as_number(normalized: str) -> float | None:
    """The value of a normalized answer that is a number, a fraction or a square root; else None."""
    if re.fullmatch(_NUMBER, normalized):
        return _float(normalized)
    slash = _SLASH.match(normalized)
    if slash:
        num, den = _float(slash.group(1)), _float(slash.group(2))
        return None if num is None or not den else num / den
    frac = _FRAC.match(normalized)
    if frac:
        num, den = as_number(frac.group(2)), as_number(frac.group(3))
        if num is None or not den:
            return None
        return -num / den if frac.group(1) == "-" else num / den
    root = _SQRT.match(normalized)
    if root:
        value = as_number(root.group(2))
        if value is None or value < 0:
            return None
        return -math.sqrt(value) if root.group(1) == "-" else math.sqrt(value)
    return None


def same_answer(generated: str, expected: str) -> bool:
    """Whether two answers (already normalized) agree: numerically when both are numbers."""
    a, b = as_number(generated), as_number(expected)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return generated == expected
