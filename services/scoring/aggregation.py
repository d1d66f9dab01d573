"""Aggregation functions: one number (or count table) per scoring function over all its score rows.

The names and result shapes are Llama Stack's, so results read the same:

    accuracy           {"accuracy": mean score, "num_correct": sum of scores, "num_total": rows}
    average            {"average": mean of the non-null scores}
    median             {"median": median of the non-null scores}
    categorical_count  {"categorical_count": {score as text: rows}}

Where Llama Stack divides by zero or fails on a judge that could not be parsed, these answer:
a null score (a judge reply no regex matched) counts as wrong for accuracy, is left out of average
and median (null when nothing is left), and is counted as "null" by categorical_count. A score that
is not a number (a judge grading "A"/"B") has no accuracy, average or median: INVALID_ARGUMENT
pointing at categorical_count.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Iterable, Sequence

from services.common.errors import InvalidArgument

__all__ = ["AGGREGATIONS", "aggregate", "validate_aggregations"]

ScoreRows = Sequence[dict[str, Any]]


def _numbers(fn_id: str, aggregation: str, rows: ScoreRows) -> list[float | None]:
    out: list[float | None] = []
    for i, row in enumerate(rows):
        score = row.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise InvalidArgument(
                f"aggregation '{aggregation}' of scoring function '{fn_id}' needs numeric scores, but score row {i} "
                f"holds {score!r}; use categorical_count for scores that are labels", reason="NON_NUMERIC_SCORE",
                metadata={"scoring_fn_id": fn_id, "aggregation": aggregation, "row": i})
        out.append(None if score is None else float(score))
    return out


def _accuracy(fn_id: str, rows: ScoreRows) -> dict[str, Any]:
    scores = _numbers(fn_id, "accuracy", rows)
    correct = sum(s for s in scores if s is not None)
    return {"accuracy": correct / len(scores) if scores else 0.0, "num_correct": correct, "num_total": len(scores)}


def _average(fn_id: str, rows: ScoreRows) -> dict[str, Any]:
    scores = [s for s in _numbers(fn_id, "average", rows) if s is not None]
    return {"average": sum(scores) / len(scores) if scores else None}


def _median(fn_id: str, rows: ScoreRows) -> dict[str, Any]:
    scores = [s for s in _numbers(fn_id, "median", rows) if s is not None]
    return {"median": statistics.median(scores) if scores else None}


def _label(score: Any) -> str:
    if score is None:
        return "null"
    if isinstance(score, float) and score.is_integer():
        return str(int(score))  # 1.0 and 1 are one category
    return str(score)


def _categorical_count(fn_id: str, rows: ScoreRows) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for row in rows:
        label = _label(row.get("score"))
        counts[label] = counts.get(label, 0) + 1
    return {"categorical_count": dict(sorted(counts.items()))}


AGGREGATIONS: dict[str, Callable[[str, ScoreRows], dict[str, Any]]] = {
    "accuracy": _accuracy,
    "average": _average,
    "median": _median,
    "categorical_count": _categorical_count,
}


def validate_aggregations(fn_id: str, names: Any) -> list[str]:
    """``names`` as a list of known aggregation names, else INVALID_ARGUMENT listing the valid ones."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidArgument(f"aggregation_functions of scoring function '{fn_id}' must be a list of names "
                              f"({', '.join(AGGREGATIONS)})", reason="BAD_AGGREGATION",
                              metadata={"scoring_fn_id": fn_id})
    unknown = [n for n in names if n not in AGGREGATIONS]
    if unknown:
        raise InvalidArgument(f"unknown aggregation function(s) {', '.join(repr(n) for n in unknown)} for scoring "
                              f"function '{fn_id}'; valid ones: {', '.join(AGGREGATIONS)}",
                              reason="UNKNOWN_AGGREGATION",
                              metadata={"scoring_fn_id": fn_id, "unknown": ",".join(unknown),
                                        "valid": ",".join(AGGREGATIONS)})
    return list(dict.fromkeys(names))


def aggregate(fn_id: str, rows: ScoreRows, names: Iterable[str]) -> dict[str, Any]:
    """Aggregation name -> its result, for each of ``names`` (already validated)."""
    return {name: AGGREGATIONS[name](fn_id, rows) for name in names}
