"""Label masking: the loss is on assistant tokens only (their end-of-turn token included), with a
real fast tokenizer and SmolLM2's chat template (tests/fixtures/post_training/tiny_model.py)."""

from __future__ import annotations

import json

import pytest

from services.post_training.providers.inline.huggingface.data import (IGNORE_INDEX, RowError, collate,
                                                                      encode_conversation, encode_rows, epoch_order,
                                                                      parse_messages)
from tests.fixtures.post_training.tiny_model import tiny_tokenizer

QUESTION = "What is the codename of project Xylo?"
ANSWER = "The codename of project Xylo is Bluefin."


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def targets(tokenizer, example) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])


def context(tokenizer, example) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label == IGNORE_INDEX])


def test_only_the_assistant_answer_and_its_end_of_turn_are_targets(tokenizer):
    example = encode_conversation(tokenizer, [{"role": "user", "content": QUESTION},
                                              {"role": "assistant", "content": ANSWER}], 512)
    assert targets(tokenizer, example) == ANSWER + "<|im_end|>\n"
    ctx = context(tokenizer, example)  # system prompt, user turn and the assistant header are context
    assert ctx.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert ctx.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert ANSWER not in ctx
    labeled = [label for label in example.labels if label != IGNORE_INDEX]
    assert labeled == [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]


def test_every_assistant_turn_of_a_multi_turn_conversation_is_learned(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": ANSWER}]
    example = encode_conversation(tokenizer, messages, 512)
    assert targets(tokenizer, example) == f"Hello.<|im_end|>\n{ANSWER}<|im_end|>\n"
    assert "You are a helpful" not in tokenizer.decode(example.input_ids)  # an explicit system prompt replaces it
    assert "Be brief." in context(tokenizer, example) and QUESTION in context(tokenizer, example)


def test_truncation_keeps_the_first_tokens_and_skips_rows_left_without_targets(tokenizer):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    full = encode_conversation(tokenizer, messages, 512)
    cut = encode_conversation(tokenizer, messages, len(full.input_ids) - 3)
    assert cut.input_ids == full.input_ids[:-3] and cut.labels == full.labels[:-3]
    assert encode_conversation(tokenizer, messages, 8) is None  # only the system prompt fits
    examples, skipped = encode_rows(tokenizer, [{"messages": messages}] * 2, 8)
    assert (examples, skipped) == ([], 2)


def test_messages_may_be_json_text_and_bad_rows_are_named(tokenizer):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    assert parse_messages(json.dumps(messages), 0) == messages
    with pytest.raises(RowError, match="row 3: the conversation has no assistant turn"):
        parse_messages([{"role": "user", "content": "hi"}], 3)
    with pytest.raises(RowError, match="row 1: messages is text that is not JSON"):
        parse_messages("not json", 1)
    with pytest.raises(RowError, match="row 0 has no messages column"):
        encode_rows(tokenizer, [{"input_query": "x"}], 64)


def test_a_batch_is_right_padded_and_padding_is_never_a_target(tokenizer):
    short = encode_conversation(tokenizer, [{"role": "user", "content": "Hi"},
                                            {"role": "assistant", "content": "Yo"}], 512)
    long = encode_conversation(tokenizer, [{"role": "user", "content": QUESTION},
                                           {"role": "assistant", "content": ANSWER}], 512)
    batch = collate([short, long], pad_id=tokenizer.pad_token_id)
    n = len(short.input_ids)
    assert batch["input_ids"].shape == (2, len(long.input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert batch["labels"][1].tolist() == long.labels


def test_the_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(10, seed=1, epoch=0, shuffle=False) == list(range(10))
    first = epoch_order(10, seed=1, epoch=0, shuffle=True)
    assert sorted(first) == list(range(10)) and first == epoch_order(10, seed=1, epoch=0, shuffle=True)
    assert first != epoch_order(10, seed=1, epoch=1, shuffle=True)
