"""Score and ScoreBatch, independent of gRPC: route each function, check params and rows before any
work is done, score with every function at once, aggregate.

Order of checks, so a bad request costs nothing: the function list and params map, then each
function (found? params valid? judge model an LLM?), then (ScoreBatch) the dataset's rows, then every
row for the columns each function reads — only then is the first row scored or judge called.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from services.common.errors import InvalidArgument, StackmeshError
from services.scoring.aggregation import aggregate
from services.scoring.mesh_calls import MeshBackend
from services.scoring.providers.base import CallOptions, PreparedFunction, Row, ScoreRow, map_bounded
from services.scoring.router import ScoringFunctionRouter

__all__ = ["ScoringCore", "ScoringResult"]


@dataclasses.dataclass
class ScoringResult:
    score_rows: list[ScoreRow]
    aggregated_results: dict[str, Any]


def _functions(functions: Sequence[str], params: dict[str, dict[str, Any]]) -> list[str]:
    names = list(dict.fromkeys(functions))
    if not names or not all(names):
        raise InvalidArgument("scoring_functions must name at least one scoring function (and no empty names), "
                              "e.g. basic::equality", reason="SCORING_FUNCTIONS_MISSING")
    stray = sorted(set(params) - set(names))
    if stray:
        raise InvalidArgument(f"params are given for {', '.join(repr(s) for s in stray)}, which scoring_functions "
                              f"does not name; add it there or drop its params", reason="STRAY_SCORING_PARAMS",
                              metadata={"scoring_fn_ids": ",".join(stray)})
    return names


def _check_rows(prepared: list[PreparedFunction], rows: Sequence[Row], where: Callable[[int], str]) -> None:
    for i, row in enumerate(rows):
        for fn in prepared:
            for column in fn.required_columns:
                if row.get(column) is None:
                    raise InvalidArgument(
                        f"{where(i)} has no '{column}' column, which scoring function '{fn.target.identifier}' "
                        f"reads (the row has: {', '.join(sorted(row)) or 'no columns'})", reason="ROW_COLUMN_MISSING",
                        metadata={"row": i, "column": column, "scoring_fn_id": fn.target.identifier})


class ScoringCore:
    def __init__(self, router: ScoringFunctionRouter, backend: MeshBackend) -> None:
        self.router = router
        self.backend = backend

    async def _prepare(self, functions: Sequence[str], params: dict[str, dict[str, Any]]) -> list[PreparedFunction]:
        prepared = []
        for fn_id in _functions(functions, params):
            provider, target = await self.router.route(fn_id, params.get(fn_id))
            prepared.append(await provider.prepare(target))
        return prepared

    async def _run(self, prepared: list[PreparedFunction], rows: Sequence[Row],
                   options: CallOptions) -> dict[str, ScoringResult]:
        async def run_one(_: int, fn: PreparedFunction) -> list[ScoreRow]:
            return await fn.score(rows, options)

        # Every function at once: a judge's calls and basic's regexes overlap; the first failure cancels all.
        scored = await map_bounded(run_one, prepared, len(prepared))
        results = {}
        for fn, score_rows in zip(prepared, scored):
            if len(score_rows) != len(rows):
                raise StackmeshError(f"scoring function '{fn.target.identifier}' returned {len(score_rows)} score "
                                     f"rows for {len(rows)} rows", reason="SCORE_ROW_COUNT_MISMATCH")
            results[fn.target.identifier] = ScoringResult(
                score_rows, aggregate(fn.target.identifier, score_rows, fn.aggregation_functions))
        return results

    async def score(self, rows: Sequence[Row], functions: Sequence[str], params: dict[str, dict[str, Any]],
                    options: CallOptions) -> dict[str, ScoringResult]:
        """Results by function id for ``rows`` given in the request."""
        prepared = await self._prepare(functions, params)
        _check_rows(prepared, rows, lambda i: f"input_rows[{i}]")
        return await self._run(prepared, rows, options)

    async def score_batch(self, dataset_id: str, functions: Sequence[str], params: dict[str, dict[str, Any]],
                          options: CallOptions) -> tuple[dict[str, ScoringResult], int]:
        """(results by function id, rows scored) over every row of a registered dataset."""
        if not dataset_id:
            raise InvalidArgument("dataset_id is required: the registered dataset whose rows to score; "
                                  "list them with `stackmesh datasets list`", reason="DATASET_ID_MISSING")
        prepared = await self._prepare(functions, params)
        rows = await self.backend.dataset_rows(dataset_id, options)
        _check_rows(prepared, rows, lambda i: f"row {i} of dataset '{dataset_id}'")
        return await self._run(prepared, rows, options), len(rows)
