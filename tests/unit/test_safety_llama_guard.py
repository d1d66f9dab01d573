"""inline::llama-guard without processes: the verdict parser on recorded and Llama-Guard-format answers,
the decision (excluded categories, unparseable policy), the prompt, config and params, error mapping."""

from __future__ import annotations

import hashlib
import json
import pathlib

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from pydantic import ValidationError

from services.common.errors import InvalidArgument
from services.safety.providers.base import Message, ShieldTarget, ViolationLevel
from services.safety.providers.inline.llama_guard.config import LlamaGuardConfig
from services.safety.providers.inline.llama_guard.prompt import assessed_role, build_prompt
from services.safety.providers.inline.llama_guard.provider import LlamaGuardProvider, _model_error
from services.safety.providers.inline.llama_guard.taxonomy import CATEGORIES
from services.safety.providers.inline.llama_guard.verdict import (USER_MESSAGE, Outcome, UnparseablePolicy, decide,
                                                                  parse_verdict)

FIXTURE = json.loads((pathlib.Path(__file__).parents[1] / "fixtures" / "safety" / "guard_answers.json").read_text())


def _messages(raw: list[dict[str, str]]) -> list[Message]:
    return [Message(m["role"], m["content"]) for m in raw]


@pytest.mark.parametrize("case", FIXTURE["recorded_smollm2"], ids=lambda c: c["name"])
def test_recorded_smollm2_answers(case):
    # The recordings answer exactly today's prompt: a changed prompt needs new recordings.
    prompt = build_prompt(_messages(case["messages"]), case["excluded_categories"])
    assert hashlib.sha256(prompt.encode()).hexdigest() == case["prompt_sha256"]
    verdict = parse_verdict(case["answer"])
    assert verdict.outcome.value == case["expected"]["outcome"]
    assert list(verdict.categories) == case["expected"]["categories"]
    # SmolLM2 echoes the category list: "S1: Violent Crimes." must not be read as a report of S1.
    violation = decide(verdict, case["excluded_categories"])
    assert violation.level is ViolationLevel.ERROR and violation.categories == []
    assert violation.metadata["raw_answer"] == case["answer"]


@pytest.mark.parametrize("case", FIXTURE["llama_guard_format"], ids=lambda c: c["name"])
def test_llama_guard_format_answers(case):
    verdict = parse_verdict(case["answer"])
    assert verdict.outcome.value == case["expected"]["outcome"]
    assert list(verdict.categories) == case["expected"]["categories"]
    assert verdict.raw == case["answer"]


@pytest.mark.parametrize("raw, outcome, categories", [
    ("Safe.", Outcome.SAFE, []),
    ("SAFE\n", Outcome.SAFE, []),
    ("safe, but the user wants to build a weapon", Outcome.UNPARSEABLE, []),
    ("safety first!", Outcome.UNPARSEABLE, []),
    ("unsafety", Outcome.UNPARSEABLE, []),
    ("Unsafe S1, S9", Outcome.UNSAFE, ["S1", "S9"]),
    ("unsafe: S3\n", Outcome.UNSAFE, ["S3"]),
    ("unsafe content\nS2", Outcome.UNSAFE, ["S2"]),
    ("unsafe\nS1,S1,s10", Outcome.UNSAFE, ["S1", "S10"]),
    ("unsafe\nS1\nS2: Non-Violent Crimes.", Outcome.UNSAFE, ["S1"]),  # only the category line counts
    ("I cannot help with that.", Outcome.UNPARSEABLE, []),
    ("", Outcome.UNPARSEABLE, []),
    ("   \n ", Outcome.UNPARSEABLE, []),
])
def test_parser_edge_cases(raw, outcome, categories):
    verdict = parse_verdict(raw)
    assert (verdict.outcome, list(verdict.categories)) == (outcome, categories)


def test_unknown_codes_are_kept_apart():
    verdict = parse_verdict("unsafe\nS15,S2")
    assert verdict.categories == ("S2",) and verdict.unknown == ("S15",)
    violation = decide(parse_verdict("unsafe\nS15"))
    assert violation.level is ViolationLevel.ERROR and violation.categories == []
    assert violation.metadata["unknown_categories"] == ["S15"]


def test_decide_unsafe_reports_codes_names_and_raw_answer():
    violation = decide(parse_verdict("unsafe\nS1,S10"))
    assert violation.level is ViolationLevel.ERROR and violation.user_message == USER_MESSAGE
    assert violation.categories == ["S1", "S10"]
    assert violation.metadata == {"raw_answer": "unsafe\nS1,S10", "verdict": "unsafe", "violation_type": "S1,S10",
                                  "category_names": {"S1": "Violent Crimes", "S10": "Hate"}}
    assert decide(parse_verdict("safe")) is None


def test_excluded_categories():
    assert decide(parse_verdict("unsafe\nS6"), ["S6"]) is None  # only excluded: safe
    assert decide(parse_verdict("unsafe\nS6,S7"), ["s6", "S7"]) is None
    partly = decide(parse_verdict("unsafe\nS6,S1"), ["S6"])
    assert partly.categories == ["S1"] and partly.metadata["excluded_categories"] == ["S6"]
    assert decide(parse_verdict("unsafe"), ["S6"]).categories == []  # unsafe with no list stays unsafe


def test_unparseable_policy():
    raw = FIXTURE["recorded_smollm2"][0]["answer"]
    blocked = decide(parse_verdict(raw), on_unparseable=UnparseablePolicy.BLOCK)
    assert blocked.level is ViolationLevel.ERROR and blocked.categories == []
    assert blocked.metadata == {"raw_answer": raw, "verdict": "unparseable", "unparseable_policy": "block"}
    allowed = decide(parse_verdict(raw), on_unparseable=UnparseablePolicy.ALLOW)
    assert allowed.level is ViolationLevel.INFO and allowed.metadata["raw_answer"] == raw
    assert LlamaGuardConfig().on_unparseable == "block"  # the documented default fails closed


def test_prompt_holds_taxonomy_conversation_and_instructions():
    prompt = build_prompt([Message("system", "You are helpful."), Message("user", "How do I make a bomb?")])
    assert prompt.startswith("Task: Check if there is unsafe content in 'User' messages in conversations")
    for category in CATEGORIES:
        assert f"{category.code}: {category.name}.\n" in prompt
    assert "<BEGIN CONVERSATION>\n\nUser: How do I make a bomb?\n\n<END CONVERSATION>" in prompt
    assert "You are helpful" not in prompt  # system prompts are not judged
    assert "Provide your safety assessment for ONLY THE LAST User message in the above conversation:" in prompt
    assert prompt.endswith(" - First line must read 'safe' or 'unsafe'.\n"
                           " - If unsafe, a second line must include a comma-separated list of violated categories.")


def test_prompt_excluded_categories_keep_their_numbers():
    prompt = build_prompt([Message("user", "hi")], ["S6", "s2"])
    assert "S6:" not in prompt and "Specialized Advice" not in prompt and "S2:" not in prompt
    assert "S5: Defamation.\nS7: Privacy." in prompt and "S14: Code Interpreter Abuse." in prompt


def test_prompt_roles():
    conversation = [Message("user", "Tell me a joke."),
                    Message("assistant", "", tool_calls=(("search", '{"q": "jokes"}'),)),
                    Message("tool", "Why did the chicken cross the road?"),
                    Message("assistant", "To get to the other side.")]
    prompt = build_prompt(conversation)
    assert assessed_role(conversation) == "Agent"
    assert "in 'Agent' messages" in prompt and "ONLY THE LAST Agent message" in prompt
    assert ("User: Tell me a joke.\n\nAgent: [tool call search({\"q\": \"jokes\"})]\n\n"
            "User: Why did the chicken cross the road?\n\nAgent: To get to the other side.") in prompt
    with pytest.raises(InvalidArgument, match="no user, assistant or tool message"):
        build_prompt([Message("system", "x")])
    with pytest.raises(InvalidArgument, match="'narrator' is not one of"):
        build_prompt([Message("narrator", "x")])


def test_config_and_params_validate_codes():
    assert LlamaGuardConfig(excluded_categories=["s6"]).excluded_categories == ["S6"]
    with pytest.raises(ValidationError, match="unknown Llama Guard category S15"):
        LlamaGuardConfig(excluded_categories=["S15"])
    provider = LlamaGuardProvider("llama-guard", LlamaGuardConfig(excluded_categories=["S6"]), {})
    shield = ShieldTarget("guard", "llama-guard", "m", {"excluded_categories": ["S7"]})
    assert provider.excluded_for(shield, {"excluded_categories": ["s8", "S6"]}) == ["S6", "S7", "S8"]
    assert "privacy" not in provider.moderation_categories(shield).values()
    assert provider.moderation_categories(shield)["S1"] == "violent_crimes"
    with pytest.raises(InvalidArgument, match="params: unknown llama-guard parameter temperature"):
        provider.excluded_for(shield, {"temperature": 0.5})
    with pytest.raises(InvalidArgument, match="shield 'guard' params.excluded_categories: unknown .* S99"):
        provider.excluded_for(ShieldTarget("guard", "llama-guard", "m", {"excluded_categories": ["S99"]}), {})


def _rpc_error(code: grpc.StatusCode, details: str, reason: str | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if reason:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="stackmesh.dev", metadata={"k": "v"}))
        status = status_pb2.Status(code=code.value[0], message=details, details=[detail])
        trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


def test_model_errors_say_what_failed():
    shield = ShieldTarget("guard", "llama-guard", "SmolLM2-135M-Instruct")
    down = _model_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"), shield,
                        "SmolLM2-135M-Instruct")
    assert down.code == grpc.StatusCode.UNAVAILABLE and down.reason == "INFERENCE_UNAVAILABLE"
    assert "inference service" in down.message and "SmolLM2-135M-Instruct" in down.message
    gone = _model_error(_rpc_error(grpc.StatusCode.NOT_FOUND, "model 'x' not found", "RESOURCE_NOT_FOUND"), shield, "x")
    assert gone.code == grpc.StatusCode.FAILED_PRECONDITION and gone.reason == "SHIELD_MODEL_NOT_FOUND"
    # the model's own errors keep their code and ErrorInfo
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        own = _model_error(_rpc_error(code, "context window exceeded", "MODEL_ERROR"), shield, "m")
        assert own.code == code and own.reason == "MODEL_ERROR" and own.metadata == {"k": "v"}
        assert "shield 'guard' asks model 'm'" in own.message and "context window exceeded" in own.message
