"""llm-as-judge without a model: prompt templates, score parsing, params checks and bounded
concurrency. ``RecordingBackend`` stands in for the mesh (inference + model lookup); the real path,
with SmolLM2 judging through the inference service, is tests/e2e/test_scoring_mesh.py."""

from __future__ import annotations

import asyncio
import re

import pytest

from services.common.errors import InvalidArgument
from services.scoring.providers.base import CallOptions, ScoringFnTarget
from services.scoring.providers.inline.llm_as_judge.config import LLMAsJudgeConfig
from services.scoring.providers.inline.llm_as_judge.judge import fill_prompt, parse_judge_score, template_columns
from services.scoring.providers.inline.llm_as_judge.provider import LLMAsJudgeProvider

PARAMS = {"judge_model": "judge-llm", "prompt_template": "Q: {input_query}\nA: {generated_answer}\nGold: "
          "{expected_answer}\nGive Score: N", "judge_score_regexes": [r"Score:\s*(\d+)"]}
ROW = {"input_query": "2+2?", "generated_answer": "4", "expected_answer": 4.0}


class RecordingBackend:
    """Answers every judge call with ``reply`` after ``delay`` s, recording prompts and peak concurrency."""

    def __init__(self, reply: str = "Looks right. Score: 5", delay: float = 0.0) -> None:
        self.reply, self.delay = reply, delay
        self.prompts: list[str] = []
        self.checked: list[str] = []
        self.in_flight = self.peak = 0

    async def require_llm(self, model_id: str, role: str) -> None:
        self.checked.append(model_id)

    async def chat(self, model_id, prompt, *, temperature, max_tokens, options, timeout_cap, doing) -> str:
        self.prompts.append(prompt)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return self.reply


def judge(backend: RecordingBackend, concurrency: int = 4) -> LLMAsJudgeProvider:
    provider = LLMAsJudgeProvider("llm-as-judge", LLMAsJudgeConfig(concurrency=concurrency), {})
    provider.bind(backend)
    return provider


def test_judge_score_regexes_take_the_first_group_of_the_first_match():
    patterns = [re.compile(r"Score:\s*(\d+(?:\.\d+)?)"), re.compile(r"Grade: ([A-F])")]
    assert parse_judge_score("Reasoning... Score: 4", patterns) == 4.0
    assert parse_judge_score("Score: 2.5 then Score: 3", patterns) == 2.5
    assert parse_judge_score("Grade: B", patterns) == "B"  # a label stays text
    assert parse_judge_score("I cannot judge this", patterns) is None
    assert parse_judge_score("CORRECT", [re.compile("CORRECT|WRONG")]) == "CORRECT"  # no group: the match


def test_templates_read_named_columns():
    assert template_columns("j", "{input_query} {generated_answer} {input_query} {{literal}}") == [
        "input_query", "generated_answer"]
    assert fill_prompt("{a} vs {b}", {"a": 1.0, "b": "x", "c": "unused"}, ["a", "b"]) == "1 vs x"
    with pytest.raises(InvalidArgument, match="not a valid template"):
        template_columns("j", "Score {oops")
    with pytest.raises(InvalidArgument, match="positional field"):
        template_columns("j", "Score {}")


async def test_judge_scores_each_row_with_feedback():
    backend = RecordingBackend()
    fn = await judge(backend).prepare(ScoringFnTarget("my-judge", "llm-as-judge", "my-judge", PARAMS))
    assert fn.required_columns == ("input_query", "generated_answer", "expected_answer")
    assert backend.checked == ["judge-llm"]
    results = await fn.score([ROW, ROW], CallOptions())
    assert results == [{"score": 5.0, "judge_feedback": "Looks right. Score: 5"}] * 2
    assert backend.prompts[0] == "Q: 2+2?\nA: 4\nGold: 4\nGive Score: N"


async def test_missing_params_are_named():
    with pytest.raises(InvalidArgument) as caught:
        await judge(RecordingBackend()).prepare(ScoringFnTarget("llm-as-judge::base", "llm-as-judge",
                                                                "llm-as-judge::base", {"judge_model": "m"}))
    assert "needs params prompt_template, judge_score_regexes" in caught.value.message
    with pytest.raises(InvalidArgument, match="has no parameter 'judge_modle'"):
        await judge(RecordingBackend()).prepare(ScoringFnTarget("j", "llm-as-judge", "j",
                                                                {**PARAMS, "judge_modle": "x"}))


async def test_rows_are_judged_with_bounded_concurrency():
    backend = RecordingBackend(delay=0.02)
    provider = judge(backend, concurrency=3)
    fn = await provider.prepare(ScoringFnTarget("j", "llm-as-judge", "j", PARAMS))
    # two requests at once still share the provider's bound
    await asyncio.gather(fn.score([ROW] * 10, CallOptions()), fn.score([ROW] * 10, CallOptions()))
    assert len(backend.prompts) == 20
    assert backend.peak == 3


async def test_a_failed_judge_call_stops_the_batch():
    class Failing(RecordingBackend):
        async def chat(self, *args, **kwargs) -> str:
            if len(self.prompts) >= 2:
                raise InvalidArgument("boom")
            return await super().chat(*args, **kwargs)

    backend = Failing(delay=0.01)
    fn = await judge(backend, concurrency=1).prepare(ScoringFnTarget("j", "llm-as-judge", "j", PARAMS))
    with pytest.raises(InvalidArgument, match="boom"):
        await fn.score([ROW] * 50, CallOptions())
    assert len(backend.prompts) == 2
