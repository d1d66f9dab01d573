"""Moderation results (OpenAI shape) merged from shield outcomes, and code-block extraction."""

from __future__ import annotations

from services.safety.moderation import ShieldOutcome, moderation_result
from services.safety.providers.base import Message, Violation, ViolationLevel
from services.safety.providers.inline.code_scanner.scanner import code_blocks, language_of

GUARD_CATEGORIES = {"S1": "violent_crimes", "S10": "hate"}


def test_nothing_reported_lists_what_was_checked():
    result = moderation_result([ShieldOutcome("guard", None, GUARD_CATEGORIES), ShieldOutcome("code", None, {})])
    assert not result.flagged and result.flagged_by == [] and result.user_message == ""
    assert result.categories == {"violent_crimes": False, "hate": False}
    assert result.category_scores == {"violent_crimes": 0.0, "hate": 0.0}
    assert result.metadata == {}


def test_flags_merge_across_shields():
    guard = Violation(ViolationLevel.ERROR, "I can't answer that.", ["S1"], {"raw_answer": "unsafe\nS1"})
    code = Violation(ViolationLevel.WARN, "Sorry, I found security concerns in the code.", ["CWE-78"], {})
    result = moderation_result([ShieldOutcome("code", code, {}), ShieldOutcome("guard", guard, GUARD_CATEGORIES)])
    assert result.flagged and result.flagged_by == ["code", "guard"]
    assert result.categories == {"CWE-78": True, "violent_crimes": True, "hate": False}
    assert result.category_scores == {"CWE-78": 1.0, "violent_crimes": 1.0, "hate": 0.0}
    assert result.user_message == "I can't answer that."  # the most severe violation speaks
    assert result.metadata["shields"]["guard"] == {"level": "ERROR", "categories": ["S1"],
                                                   "metadata": {"raw_answer": "unsafe\nS1"}}


def test_info_is_noted_not_flagged():
    note = Violation(ViolationLevel.INFO, "x", [], {"raw_answer": "hmm", "verdict": "unparseable"})
    result = moderation_result([ShieldOutcome("guard", note, GUARD_CATEGORIES)])
    assert not result.flagged and result.flagged_by == [] and not any(result.categories.values())
    assert result.metadata["shields"]["guard"]["metadata"]["raw_answer"] == "hmm"


def test_code_blocks_and_languages():
    text = ("Here you go:\n```python\nimport os\nos.system(cmd)\n```\nand in C:\n```c\ngets(buf);\n```\n"
            "```\nplain\n```\n```js\n\n```")
    assert code_blocks(text) == [("python", "import os\nos.system(cmd)\n"), ("c", "gets(buf);\n"), (None, "plain\n")]
    assert code_blocks("no code here") == []
    assert language_of("C++") == "cpp" and language_of("brainfuck") is None


def test_message_text_includes_tool_calls():
    assert Message("assistant", "", (("run", '{"code": "x"}'),)).text == '[tool call run({"code": "x"})]'
    assert Message("user", "hi").text == "hi"
