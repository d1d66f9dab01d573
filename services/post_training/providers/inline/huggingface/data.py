"""Conversations to training tensors: the base model's own chat template, loss on assistant tokens only.

Supervised fine-tuning teaches the model to *answer*: the system prompt and user turns are context,
not targets. Each conversation is rendered once with the chat template; the characters of every
assistant turn (from after the template's assistant header to the end of the turn, its end-of-turn
token included, so the model learns to stop) are found by rendering the prefixes, and a token is a
target when it starts inside such a span. Every other label is -100 (ignored by the loss).

Truncation keeps the first ``max_seq_len`` tokens; a conversation left without any target token is
skipped (it would only add a NaN to the loss).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable, Sequence

__all__ = ["Example", "parse_messages", "assistant_spans", "encode_conversation", "encode_rows", "collate",
           "epoch_order", "batches_in_epoch", "IGNORE_INDEX", "RowError"]

IGNORE_INDEX = -100


class RowError(ValueError):
    """A row that cannot be trained on; the message names the row."""


@dataclasses.dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def parse_messages(value: Any, index: int) -> list[dict[str, str]]:
    """A row's ``messages``: a list of {role, content}, or its JSON text (CSV files keep it so)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError(f"row {index}: messages is text that is not JSON") from None
    if not isinstance(value, list) or not value:
        raise RowError(f"row {index}: messages must be a non-empty list of {{role, content}}")
    out = []
    for message in value:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RowError(f"row {index}: every message needs a role and a content")
        content = message["content"]
        if isinstance(content, list):  # [{type: text, text: ...}] parts: keep the text
            content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        out.append({"role": str(message["role"]), "content": str(content)})
    if not any(m["role"] == "assistant" for m in out):
        raise RowError(f"row {index}: the conversation has no assistant turn to learn")
    return out


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    if not messages and not generation_prompt:
        return ""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception:  # noqa: BLE001 - some templates refuse an empty or assistant-first list
        if not messages:
            return ""
        raise


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """(rendered conversation, [start, end) character spans of the assistant turns' targets)."""
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], generation_prompt=True)
        upto = _render(tokenizer, messages[:i + 1])
        if not (full.startswith(upto) and upto.startswith(prompt)):
            raise RowError("the base model's chat template does not render a conversation as an extension of its "
                           "beginning; cannot tell assistant tokens apart")
        spans.append((len(prompt), len(upto)))
    return full, spans


def encode_conversation(tokenizer: Any, messages: list[dict[str, str]], max_seq_len: int) -> Example | None:
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:max_seq_len]
    labels = []
    for token, (start, _end) in zip(ids, encoded["offset_mapping"]):
        labels.append(token if any(a <= start < b for a, b in spans) else IGNORE_INDEX)
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return Example(ids, labels)


def encode_rows(tokenizer: Any, rows: Iterable[dict[str, Any]], max_seq_len: int) -> tuple[list[Example], int]:
    """(examples, rows skipped because truncation left no assistant token)."""
    examples, skipped = [], 0
    for index, row in enumerate(rows):
        if "messages" not in row:
            raise RowError(f"row {index} has no messages column (it has: {', '.join(sorted(row)) or 'nothing'})")
        example = encode_conversation(tokenizer, parse_messages(row["messages"], index), max_seq_len)
        if example is None:
            skipped += 1
        else:
            examples.append(example)
    return examples, skipped


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors of one batch (padding: pad_id, label -100, attention 0)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def epoch_order(count: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The order examples are visited in ``epoch`` (0-based): a function of (seed, epoch) only, so a
    resumed job continues exactly where it stopped."""
    if not shuffle:
        return list(range(count))
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator).tolist()


def batches_in_epoch(count: int, batch_size: int) -> int:
    return math.ceil(count / batch_size)
