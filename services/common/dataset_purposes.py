"""What rows a dataset of each purpose must have (Llama Stack's purposes), checked in one place.

The registry checks inline rows when a dataset is registered; the datasetio service checks file
rows when it opens the file (the registry may not see the file) and when rows are appended.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from services.common.errors import FailedPrecondition, InvalidArgument

__all__ = ["PURPOSES", "check_purpose", "check_rows"]

# purpose -> {column: what it holds}; every listed column is required.
PURPOSES: dict[str, dict[str, str]] = {
    "eval/question-answer": {"input_query": "the question (text)", "expected_answer": "the reference answer (text)"},
    "eval/messages-answer": {"messages": "the conversation (a list of {role, content})",
                             "expected_answer": "the reference answer (text)"},
    "post-training/messages": {"messages": "the conversation to learn (a list of {role, content}), "
                                           "ending with an assistant turn"},
}


def check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise InvalidArgument(f"unknown dataset purpose '{purpose}'; one of {', '.join(PURPOSES)}",
                              reason="UNKNOWN_PURPOSE", metadata={"purpose": purpose})


def _shape_problem(column: str, value: Any) -> str | None:
    if column == "messages":
        if isinstance(value, str):  # CSV files keep the list as JSON text
            try:
                value = json.loads(value)
            except ValueError:
                return "must be a list of {role, content} objects (or its JSON text)"
        if not isinstance(value, list) or not value:
            return "must be a non-empty list of {role, content}"
        if any(not isinstance(m, Mapping) or "role" not in m or "content" not in m for m in value):
            return "must be a list of {role, content} objects"
        return None
    if value is None:
        return "is empty"
    return None


def check_rows(dataset_id: str, purpose: str, rows: Iterable[Mapping[str, Any]], *, first_index: int = 0,
               error: type = FailedPrecondition) -> None:
    """Raise ``error`` naming the first row whose columns do not fit ``purpose``."""
    check_purpose(purpose)
    required = PURPOSES[purpose]
    for offset, row in enumerate(rows):
        index = first_index + offset
        missing = [column for column in required if column not in row]
        if missing:
            has = ", ".join(sorted(row)) or "no columns"
            need = "; ".join(f"{c}: {required[c]}" for c in missing)
            raise error(f"dataset '{dataset_id}' (purpose {purpose}): row {index} lacks column(s) "
                        f"{', '.join(missing)} (it has: {has}); needs {need}",
                        reason="DATASET_COLUMNS_MISMATCH",
                        metadata={"dataset_id": dataset_id, "purpose": purpose, "missing": ",".join(missing),
                                  "row": index})
        for column in required:
            problem = _shape_problem(column, row[column])
            if problem:
                raise error(f"dataset '{dataset_id}' (purpose {purpose}): row {index}: column {column} {problem}",
                            reason="DATASET_COLUMNS_MISMATCH",
                            metadata={"dataset_id": dataset_id, "purpose": purpose, "row": index})
