"""``inline::basic``: scoring by rule, no model involved.

It lists the four ``basic::*`` functions (``functions.py``). A function registered on this provider
names one of them as its ``provider_scoring_fn_id`` and brings its own params (e.g. ``parsing_regexes``
for a benchmark that answers "Option: B"); Llama Stack's own ids (``subset-of``) name them too.
Rows are scored in a worker thread: ten thousand rows times forty regexes must not stall the
event loop that serves other requests.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Sequence

from services.common.errors import FailedPrecondition
from services.scoring.aggregation import validate_aggregations
from services.scoring.providers.base import (CallOptions, FunctionDef, PreparedFunction, Row, ScoreRow,
                                             ScoringFnTarget, ScoringProvider, check_params, compile_regexes)
from services.scoring.providers.inline.basic import functions as fns

__all__ = ["BasicScoringProvider"]

_ANSWER_COLUMNS = ("generated_answer", "expected_answer")
_DEFS = {fn.identifier: fn for fn in fns.FUNCTION_DEFS}


class _RowFunction(PreparedFunction):
    def __init__(self, target: ScoringFnTarget, aggregations: list[str], score_row: Callable[[Row], ScoreRow]) -> None:
        super().__init__(target, _ANSWER_COLUMNS, aggregations)
        self._score_row = score_row

    def _score_all(self, rows: Sequence[Row]) -> list[ScoreRow]:
        return [self._score_row(row) for row in rows]

    async def score(self, rows: Sequence[Row], options: CallOptions) -> list[ScoreRow]:
        if len(rows) < 256:
            return self._score_all(rows)
        return await asyncio.to_thread(self._score_all, rows)


class BasicScoringProvider(ScoringProvider):
    def function_defs(self) -> list[FunctionDef]:
        return list(fns.FUNCTION_DEFS)

    def base_function(self, target: ScoringFnTarget) -> str:
        """The ``basic::*`` function ``target`` runs."""
        name = target.provider_resource_id or target.identifier
        base = name if name in _DEFS else fns.ALIASES.get(name)
        if base is None:
            raise FailedPrecondition(
                f"scoring function '{target.identifier}' is registered on provider '{self.provider_id}' as "
                f"'{name}', which is not a basic function; register it with provider_scoring_fn_id one of "
                f"{', '.join(_DEFS)}", reason="UNKNOWN_BASE_SCORING_FUNCTION",
                metadata={"scoring_fn_id": target.identifier, "provider_scoring_fn_id": name})
        return base

    async def prepare(self, target: ScoringFnTarget) -> PreparedFunction:
        base = self.base_function(target)
        params: dict[str, Any] = {**_DEFS[base].params, **target.params}
        check_params(target.identifier, params, ("parsing_regexes",) if base in _REGEX_FUNCTIONS else ())
        aggregations = validate_aggregations(target.identifier, params.get("aggregation_functions", []))
        return _RowFunction(target, aggregations, _BUILDERS[base](target.identifier, params))


def _multiple_choice(fn_id: str, params: dict[str, Any]) -> Callable[[Row], ScoreRow]:
    # An empty list (what Llama Stack's params model serializes by default) means the defaults.
    regexes = params.get("parsing_regexes") or fns.DEFAULT_CHOICE_REGEXES
    return functools.partial(fns.multiple_choice, patterns=compile_regexes(fn_id, "parsing_regexes", regexes))


def _math_response(fn_id: str, params: dict[str, Any]) -> Callable[[Row], ScoreRow]:
    given = params.get("parsing_regexes")
    return functools.partial(fns.math_response,
                             patterns=compile_regexes(fn_id, "parsing_regexes", given) if given else None)


# base function -> (fn_id, params) -> the row scorer
_BUILDERS: dict[str, Callable[[str, dict[str, Any]], Callable[[Row], ScoreRow]]] = {
    fns.EQUALITY: lambda fn_id, params: fns.equality,
    fns.SUBSET_OF: lambda fn_id, params: fns.subset_of,
    fns.MULTIPLE_CHOICE: _multiple_choice,
    fns.MATH_RESPONSE: _math_response,
}
_REGEX_FUNCTIONS = (fns.MULTIPLE_CHOICE, fns.MATH_RESPONSE)
