"""basic::* scoring functions on hand-written rows, as a user sees them through the provider."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.scoring.providers.base import CallOptions, ScoringFnTarget
from services.scoring.providers.inline.basic.config import BasicScoringConfig
from services.scoring.providers.inline.basic.math_answer import extract_final_answer, normalize_answer, same_answer
from services.scoring.providers.inline.basic.provider import BasicScoringProvider
from stackmesh.common.v1 import common_pb2


def provider() -> BasicScoringProvider:
    return BasicScoringProvider("basic", BasicScoringConfig(), {})


async def score(fn_id: str, rows: list[dict], params: dict | None = None, base: str | None = None) -> list[dict]:
    target = ScoringFnTarget(fn_id, "basic", base or fn_id, params or {})
    prepared = await provider().prepare(target)
    return await prepared.score(rows, CallOptions())


def row(generated, expected) -> dict:
    return {"generated_answer": generated, "expected_answer": expected}


async def test_lists_the_four_functions_with_their_defaults():
    resources = await provider().list_resources()
    ids = [r.identifier for r in resources]
    assert ids == ["basic::equality", "basic::subset_of", "basic::regex_parser_multiple_choice_answer",
                   "basic::regex_parser_math_response"]
    for resource in resources:
        assert resource.type == common_pb2.RESOURCE_TYPE_SCORING_FUNCTION
        assert resource.provider_resource_id == resource.identifier
        assert resource.scoring_function.return_type == "number"
        assert resource.scoring_function.description
        assert list(resource.scoring_function.params["aggregation_functions"]) == ["accuracy"]
    choice = resources[2].scoring_function.params["parsing_regexes"]
    assert len(choice) > 40 and any("Antwort" in r for r in choice)


async def test_equality_compares_whole_answers_and_numbers_as_text():
    rows = [row("Paris", "Paris"), row("paris", "Paris"), row("Paris.", "Paris"), row("42", 42.0), row(" 7", "7")]
    assert [r["score"] for r in await score("basic::equality", rows)] == [1.0, 0.0, 0.0, 1.0, 1.0]


async def test_subset_of_is_case_sensitive_containment():
    rows = [row("The capital is Paris.", "Paris"), row("the capital is paris", "Paris"), row("Lyon", "Paris"),
            row("It costs 42 dollars", 42.0)]
    assert [r["score"] for r in await score("basic::subset_of", rows)] == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("generated,expected,want,parsed", [
    ("Let me think. Answer: B", "B", 1.0, "B"),
    ("answer: c", "C", 1.0, "c"),
    ("Answer:(D)", "D", 1.0, "D"),
    ("Answer: **A**", "A", 1.0, "A"),
    ("The best answer is C.", "C", 1.0, "C"),
    ("Antwort: A", "A", 1.0, "A"),
    ("答案：B", "B", 1.0, "B"),
    ("الإجابة: ب", "B", 1.0, "ب"),
    ("Answer: Ｃ", "C", 1.0, "Ｃ"),
    ("Answer: because it is B", "B", 0.0, None),  # "because" is no letter answer (Llama Stack reads "b")
    ("I pick B", "B", 0.0, None),
    ("Answer: A", "B", 0.0, "A"),
])
async def test_multiple_choice_reads_the_answer_letter(generated, expected, want, parsed):
    [result] = await score("basic::regex_parser_multiple_choice_answer", [row(generated, expected)])
    assert result == {"score": want, "parsed_answer": parsed}


async def test_multiple_choice_parsing_regexes_override_the_defaults():
    rows = [row("Option (B) is right", "B"), row("Answer: B", "B")]
    results = await score("basic::regex_parser_multiple_choice_answer", rows,
                          {"parsing_regexes": [r"Option \(([A-D])\)"]})
    assert [r["score"] for r in results] == [1.0, 0.0]


async def test_registered_function_names_its_base_and_brings_params():
    results = await score("my-mc", [row("Option B", "B")], {"parsing_regexes": [r"Option ([A-D])"]},
                          base="basic::regex_parser_multiple_choice_answer")
    assert results[0]["score"] == 1.0
    # Llama Stack's provider_resource_ids work too
    assert (await score("ls-subset", [row("xyz", "y")], base="subset-of"))[0]["score"] == 1.0
    with pytest.raises(FailedPrecondition, match="not a basic function"):
        await score("my-fn", [row("a", "a")], base="my-fn")


@pytest.mark.parametrize("generated,expected,want", [
    ("So the final answer is $\\boxed{\\frac{1}{2}}$.", "0.5", 1.0),
    ("We get \\boxed{\\dfrac{3}{4}} in the end", "\\frac34", 1.0),
    ("The answer is 1,234.", "1234", 1.0),
    ("Answer: $18.00", "18", 1.0),
    ("The answer is 50%", "50", 1.0),
    ("Thus x = 5.", "5", 1.0),  # last number
    ("Answer: x = 5", "5", 1.0),
    ("She has 12 apples left. The answer is 12 apples.", "12", 1.0),
    ("The area is \\boxed{10 \\text{ cm}^2}", "10", 1.0),
    ("The answer is \\boxed{\\sqrt{4}}", "2", 1.0),
    ("The answer is 3/4", "0.75", 1.0),
    ("The answer is \\boxed{x^2+1}", "x^2 + 1", 1.0),
    ("The answer is 7", "8", 0.0),
    ("I do not know", "8", 0.0),
    ("First 10-3 = 7, then the total is 70", "70", 1.0),
])
async def test_math_response_extracts_and_normalizes(generated, expected, want):
    [result] = await score("basic::regex_parser_math_response", [row(generated, expected)])
    assert result["score"] == want, result


def test_math_extraction_rules():
    assert extract_final_answer("a \\boxed{1} then \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}"  # the last box
    assert extract_final_answer("The answer is: 4\nmore text 9") == "4"  # a stated answer beats the last number
    assert extract_final_answer("no numbers here") is None
    assert normalize_answer("$\\left( 1, 2 \\right)$") == "(1,2)"
    assert same_answer(normalize_answer("\\frac{1}{3}"), normalize_answer("0.3333333"))
    assert not same_answer(normalize_answer("1,2"), normalize_answer("12"))  # a pair is not a thousands number


async def test_math_parsing_regexes_override_extraction():
    results = await score("basic::regex_parser_math_response",
                          [row("RESULT=<9>", "9"), row("The answer is 9", "9")], {"parsing_regexes": [r"<(\d+)>"]})
    assert [r["score"] for r in results] == [1.0, 0.0]


async def test_bad_params_are_invalid_argument():
    with pytest.raises(InvalidArgument, match="invalid regular expression"):
        await score("basic::regex_parser_multiple_choice_answer", [], {"parsing_regexes": ["("]})
    with pytest.raises(InvalidArgument, match="has no parameter 'parsing_regex'"):
        await score("basic::regex_parser_multiple_choice_answer", [], {"parsing_regex": ["x"]})
    with pytest.raises(InvalidArgument, match="valid ones: accuracy, average, median, categorical_count"):
        await score("basic::equality", [], {"aggregation_functions": ["mean"]})
    with pytest.raises(InvalidArgument, match="has no parameter"):
        await score("basic::equality", [], {"parsing_regexes": ["x"]})  # equality reads no regexes


async def test_large_batches_score_off_the_event_loop():
    rows = [row(f"Answer: {'ABCD'[i % 4]}", "A") for i in range(2000)]
    results = await score("basic::regex_parser_multiple_choice_answer", rows)
    assert sum(r["score"] for r in results) == 500
