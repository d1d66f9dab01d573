"""From dataset rows to chat requests and scoring rows (Llama Stack's column names)."""

from __future__ import annotations

import json

import pytest

from services.common.errors import InvalidArgument
from services.eval.providers.base import Candidate
from services.eval.rows import chat_messages, scoring_row

SYSTEM = {"role": "system", "content": "Answer with one word."}


def test_question_answer_row_becomes_system_then_user_turn():
    row = {"input_query": "What is the capital of France?", "expected_answer": "Paris"}
    assert chat_messages(Candidate("m", system_message=SYSTEM), row, 0) == [
        SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
    assert chat_messages(Candidate("m"), row, 0) == [{"role": "user", "content": "What is the capital of France?"}]
    assert scoring_row(row, "Paris.") == {"input_query": "What is the capital of France?",
                                          "expected_answer": "Paris", "generated_answer": "Paris."}


@pytest.mark.parametrize("encode", [lambda m: m, json.dumps], ids=["list", "json-string"])
def test_messages_answer_rows(encode):
    turns = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
             {"role": "user", "content": "3+3?"}]
    row = {"messages": encode(turns), "expected_answer": "6"}
    assert chat_messages(Candidate("m", system_message=SYSTEM), row, 3) == [SYSTEM, *turns]
    assert scoring_row(row, "6")["input_query"] == "3+3?"  # the last user turn is the question


def test_a_conversation_with_its_own_system_turn_keeps_it():
    turns = [{"role": "system", "content": "Pirate voice."}, {"role": "user", "content": "hi"}]
    assert chat_messages(Candidate("m", system_message=SYSTEM), {"messages": turns}, 0) == turns


def test_bad_rows_name_the_row():
    with pytest.raises(InvalidArgument, match="row 4 has neither input_query nor messages"):
        chat_messages(Candidate("m"), {"question": "x"}, 4)
    with pytest.raises(InvalidArgument, match="row 2: column messages is not valid JSON"):
        chat_messages(Candidate("m"), {"messages": "[{"}, 2)
