"""The scoring providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

_P = "services.scoring.providers"

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::basic": ProviderSpec(
        provider_type="inline::basic", api="scoring",
        config_class=f"{_P}.inline.basic.config:BasicScoringConfig",
        impl=f"{_P}.inline.basic.provider:BasicScoringProvider",
        description="basic::equality, basic::subset_of, basic::regex_parser_multiple_choice_answer, "
                    "basic::regex_parser_math_response."),
    "inline::llm-as-judge": ProviderSpec(
        provider_type="inline::llm-as-judge", api="scoring",
        config_class=f"{_P}.inline.llm_as_judge.config:LLMAsJudgeConfig",
        impl=f"{_P}.inline.llm_as_judge.provider:LLMAsJudgeProvider",
        description="A judge model (a registered LLM, through the mesh) fills a prompt template; a regex reads "
                    "its score."),
}
