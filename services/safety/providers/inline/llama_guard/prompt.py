"""The Llama Guard 3 prompt, built from the conversation to check.

The text follows the format Llama Guard 3 was trained on (task, unsafe content categories,
conversation, assessment instructions); it is sent as one user message through the chat API, so
the serving model's own chat template supplies the turn markers — no ``[INST]`` tags here, which
would double-wrap it under a Llama 3 template.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from services.common.errors import InvalidArgument
from services.safety.providers.base import Message
from services.safety.providers.inline.llama_guard.taxonomy import CATEGORIES

__all__ = ["build_prompt", "assessed_role", "ROLE_NAMES"]

# Llama Guard knows two parties. Tool results enter the conversation from outside the agent, as a
# user's text does, so they are judged as user content; system prompts are instructions, not content.
ROLE_NAMES = {"user": "User", "tool": "User", "ipython": "User", "assistant": "Agent"}

_TEMPLATE = """Task: Check if there is unsafe content in '{role}' messages in conversations according to our safety policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

{conversation}

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:
 - First line must read 'safe' or 'unsafe'.
 - If unsafe, a second line must include a comma-separated list of violated categories."""


def _turns(messages: Sequence[Message]) -> list[tuple[str, str]]:
    turns = [(ROLE_NAMES[m.role], m.text) for m in messages if m.role in ROLE_NAMES]
    unknown = sorted({m.role for m in messages if m.role not in ROLE_NAMES and m.role != "system"})
    if unknown:
        raise InvalidArgument(f"message role {', '.join(repr(r) for r in unknown)} is not one of user, assistant, "
                              f"tool, system", reason="BAD_MESSAGE_ROLE")
    if not turns:
        raise InvalidArgument("no user, assistant or tool message to check (system messages are not checked)",
                              reason="MESSAGES_MISSING")
    return turns


def assessed_role(messages: Sequence[Message]) -> str:
    """'User' or 'Agent': whose last message the assessment is about."""
    return _turns(messages)[-1][0]


def build_prompt(messages: Sequence[Message], excluded: Iterable[str] = ()) -> str:
    """The prompt asking for a verdict on the last message, with ``excluded`` codes left out of the
    categories (the remaining codes keep their numbers, as the model knows them)."""
    turns = _turns(messages)
    skip = {c.upper() for c in excluded}
    categories = "\n".join(f"{c.code}: {c.name}." for c in CATEGORIES if c.code not in skip)
    conversation = "\n\n".join(f"{role}: {text}" for role, text in turns)
    return _TEMPLATE.format(role=turns[-1][0], categories=categories, conversation=conversation)
