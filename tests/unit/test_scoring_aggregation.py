"""Aggregation functions on hand-written score rows: Llama Stack's names and shapes, and answers
where Llama Stack divides by zero or fails."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.scoring.aggregation import aggregate, validate_aggregations


def rows(*scores) -> list[dict]:
    return [{"score": s} for s in scores]


def test_accuracy_counts_correct_rows():
    assert aggregate("f", rows(1.0, 0.0, 1.0, 1.0), ["accuracy"]) == {
        "accuracy": {"accuracy": 0.75, "num_correct": 3.0, "num_total": 4}}


def test_average_and_median_skip_unparsed_scores():
    result = aggregate("f", rows(1.0, None, 4.0, 5.0), ["average", "median"])
    assert result == {"average": {"average": pytest.approx(10 / 3)}, "median": {"median": 4.0}}
    assert aggregate("f", rows(2.0, 4.0), ["median"]) == {"median": {"median": 3.0}}


def test_an_unparsed_score_is_wrong_for_accuracy():
    assert aggregate("f", rows(1.0, None), ["accuracy"])["accuracy"] == {"accuracy": 0.5, "num_correct": 1.0,
                                                                       "num_total": 2}


def test_categorical_count_counts_labels():
    result = aggregate("f", rows("A", "B", "A", None, 1.0, 1), ["categorical_count"])
    assert result == {"categorical_count": {"categorical_count": {"1": 2, "A": 2, "B": 1, "null": 1}}}


def test_no_rows_give_zero_accuracy_and_null_averages():
    assert aggregate("f", [], ["accuracy", "average", "median", "categorical_count"]) == {
        "accuracy": {"accuracy": 0.0, "num_correct": 0, "num_total": 0}, "average": {"average": None},
        "median": {"median": None}, "categorical_count": {"categorical_count": {}}}


def test_label_scores_have_no_average():
    with pytest.raises(InvalidArgument, match="use categorical_count") as caught:
        aggregate("judge", rows(1.0, "A"), ["average"])
    assert caught.value.metadata["row"] == "1"


def test_names_are_validated_and_listed():
    assert validate_aggregations("f", ["accuracy", "median", "accuracy"]) == ["accuracy", "median"]
    assert validate_aggregations("f", "average") == ["average"]
    with pytest.raises(InvalidArgument) as caught:
        validate_aggregations("f", ["accuracy", "mean"])
    assert "'mean'" in caught.value.message
    assert "valid ones: accuracy, average, median, categorical_count" in caught.value.message
    with pytest.raises(InvalidArgument, match="must be a list"):
        validate_aggregations("f", [1])
