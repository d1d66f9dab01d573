"""From a dataset row to a chat request, and from a generation to the row scoring reads.

Columns are Llama Stack's: eval/question-answer rows carry ``input_query`` and ``expected_answer``;
eval/messages-answer rows carry ``messages`` (a list of {role, content}, or that list as a JSON
string, as Llama Stack's CSV datasets keep it) and ``expected_answer``. The generated text goes to
``generated_answer``. The row is recognised by its columns, not by the dataset's purpose, so rows
given inline to EvaluateRows need no dataset at all.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from services.common.errors import InvalidArgument
from services.eval.providers.base import Candidate

__all__ = ["chat_messages", "scoring_row", "GENERATED", "EXPECTED", "QUERY"]

QUERY, EXPECTED, GENERATED = "input_query", "expected_answer", "generated_answer"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI-style content parts: keep the text ones
        return "".join(p.get("text", "") for p in value if isinstance(p, Mapping))
    return "" if value is None else str(value)


def _messages(row: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    value = row["messages"]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise InvalidArgument(f"row {index}: column messages is not valid JSON ({err.msg})",
                                  reason="BAD_ROW", metadata={"row": index}) from None
    if not isinstance(value, list) or not value or not all(isinstance(m, Mapping) and "role" in m for m in value):
        raise InvalidArgument(f"row {index}: column messages must be a non-empty list of {{role, content}}",
                              reason="BAD_ROW", metadata={"row": index})
    return [{"role": str(m["role"]), "content": _text(m.get("content"))} for m in value]


def chat_messages(candidate: Candidate, row: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    """The conversation sent for ``row``: the candidate's system message (unless the row's own
    conversation starts with one), then the row's turns or one user turn with its question."""
    if "messages" in row and row["messages"] not in (None, ""):
        turns = _messages(row, index)
    elif QUERY in row:
        turns = [{"role": "user", "content": _text(row[QUERY])}]
    else:
        raise InvalidArgument(f"row {index} has neither input_query nor messages (it has: "
                              f"{', '.join(sorted(row)) or 'no columns'})", reason="BAD_ROW", metadata={"row": index})
    system = candidate.system_message
    if system and system.get("content") and turns[0]["role"] != "system":
        turns = [{"role": system.get("role") or "system", "content": _text(system["content"])}, *turns]
    return turns


def scoring_row(row: Mapping[str, Any], generated: str) -> dict[str, Any]:
    """{input_query, expected_answer, generated_answer}: what scoring functions read."""
    query = row.get(QUERY)
    if query is None and "messages" in row:
        try:
            turns = _messages(row, 0)
        except InvalidArgument:
            turns = []
        users = [t["content"] for t in turns if t["role"] == "user"]
        query = users[-1] if users else ""
    expected = row.get(EXPECTED)
    return {QUERY: _text(query), EXPECTED: "" if expected is None else expected, GENERATED: generated}
