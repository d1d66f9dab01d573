"""``inline::llm-as-judge``: a registered LLM grades each row.

Every function on this provider is a judge: ``llm-as-judge::base`` is listed as the starting point,
and any function registered here (``my-judge``) is one too, defined entirely by its params:

    judge_model          a registered LLM, called through the inference service
    prompt_template      str.format template over the row's columns (see ``judge.py``)
    judge_score_regexes  the score is the first group of the first regex that matches the reply
    aggregation_functions  optional; none by default (a judge's scale is the user's choice)

Each row gets ``{score, judge_feedback}`` (the reply verbatim; ``score`` is null when no regex
matched). Rows are judged ``concurrency`` at a time per request, and never more than that many per
provider across requests, so one large batch cannot swamp the inference service.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from services.common.errors import InvalidArgument, Unavailable
from services.scoring.aggregation import validate_aggregations
from services.scoring.providers.base import (CallOptions, FunctionDef, JudgeBackend, PreparedFunction, Row,
                                             ScoreRow, ScoringFnTarget, ScoringProvider, check_params,
                                             compile_regexes, map_bounded)
from services.scoring.providers.inline.llm_as_judge.config import LLMAsJudgeConfig
from services.scoring.providers.inline.llm_as_judge.judge import fill_prompt, parse_judge_score, template_columns

__all__ = ["LLMAsJudgeProvider", "BASE", "JUDGE_PARAMS"]

BASE = "llm-as-judge::base"
JUDGE_PARAMS = ("judge_model", "prompt_template", "judge_score_regexes")


class _JudgeFunction(PreparedFunction):
    def __init__(self, target: ScoringFnTarget, aggregations: list[str], provider: "LLMAsJudgeProvider",
                 backend: JudgeBackend, model: str, template: str, columns: list[str], patterns: list[Any]) -> None:
        super().__init__(target, columns, aggregations)
        self.provider, self.backend = provider, backend
        self.model, self.template, self.columns, self.patterns = model, template, columns, patterns

    async def score(self, rows: Sequence[Row], options: CallOptions) -> list[ScoreRow]:
        config: LLMAsJudgeConfig = self.provider.config

        async def judge(i: int, row: Row) -> ScoreRow:
            prompt = fill_prompt(self.template, row, self.columns)
            async with self.provider.gate:
                reply = await self.backend.chat(
                    self.model, prompt, temperature=config.temperature, max_tokens=config.max_tokens,
                    options=options, timeout_cap=config.request_timeout_seconds,
                    doing=f"judging row {i} for scoring function '{self.target.identifier}' "
                          f"with model '{self.model}'")
            return {"score": parse_judge_score(reply, self.patterns), "judge_feedback": reply}

        return await map_bounded(judge, rows, config.concurrency)


class LLMAsJudgeProvider(ScoringProvider):
    def __init__(self, provider_id: str, config: LLMAsJudgeConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self.backend: JudgeBackend | None = None
        self.gate = asyncio.Semaphore(config.concurrency)

    def bind(self, backend: JudgeBackend) -> None:
        self.backend = backend

    def function_defs(self) -> list[FunctionDef]:
        return [FunctionDef(BASE, "A judge model grades each row: register a function on this provider (or pass "
                                  "params) with judge_model, prompt_template and judge_score_regexes.", "number",
                            {})]

    async def prepare(self, target: ScoringFnTarget) -> PreparedFunction:
        fn_id, params = target.identifier, target.params
        check_params(fn_id, params, JUDGE_PARAMS)
        missing = [name for name in JUDGE_PARAMS if not params.get(name)]
        if missing:
            raise InvalidArgument(
                f"LLM-as-judge scoring function '{fn_id}' needs params {', '.join(missing)}; register the function "
                f"with them or pass them in the request's params for '{fn_id}'", reason="JUDGE_PARAMS_MISSING",
                metadata={"scoring_fn_id": fn_id, "missing": ",".join(missing)})
        model, template = params["judge_model"], params["prompt_template"]
        for name, value in (("judge_model", model), ("prompt_template", template)):
            if not isinstance(value, str):
                raise InvalidArgument(f"parameter '{name}' of scoring function '{fn_id}' must be a string",
                                      reason="BAD_SCORING_PARAM", metadata={"scoring_fn_id": fn_id, "param": name})
        patterns = compile_regexes(fn_id, "judge_score_regexes", params["judge_score_regexes"])
        columns = template_columns(fn_id, template)
        aggregations = validate_aggregations(fn_id, params.get("aggregation_functions", []))
        if self.backend is None:
            raise Unavailable(f"provider '{self.provider_id}' is not connected to the mesh", reason="NOT_BOUND")
        await self.backend.require_llm(model, f"judge model of scoring function '{fn_id}'")
        return _JudgeFunction(target, aggregations, self, self.backend, model, template, columns, patterns)
