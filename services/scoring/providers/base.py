"""The interface every scoring provider implements, and the domain types it speaks.

A provider owns a family of scoring functions. It lists its well-known ones (``basic::equality``)
for the registry, and turns a resolved function (a registry resource plus the request's params)
into a ``PreparedFunction``: params checked, regexes compiled, the columns it reads known — so every
mistake in a request surfaces before the first row is scored or the first judge call is paid for.
The service (``services.scoring.core``) checks the rows' columns, calls ``score`` and aggregates.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import re
import time
from typing import Any, Awaitable, Callable, Iterable, Protocol, Sequence, TypeVar

from services.common.errors import DeadlineExceeded, InvalidArgument
from services.common.protoutil import struct
from stackmesh.common.v1 import common_pb2

__all__ = ["FunctionDef", "ScoringFnTarget", "CallOptions", "PreparedFunction", "ScoringProvider", "JudgeBackend",
           "Row", "ScoreRow", "as_text", "check_params", "compile_regexes", "map_bounded"]

Row = dict[str, Any]
ScoreRow = dict[str, Any]
T = TypeVar("T")
# Llama Stack's params carry a "type" tag (basic, regex_parser, llm_as_judge); accepted and ignored.
COMMON_PARAMS = frozenset({"type", "aggregation_functions"})


@dataclasses.dataclass(frozen=True)
class FunctionDef:
    """A scoring function a provider brings by itself, as the registry lists it."""

    identifier: str
    description: str
    return_type: str
    params: dict[str, Any]

    def to_resource(self) -> common_pb2.Resource:
        return common_pb2.Resource(
            type=common_pb2.RESOURCE_TYPE_SCORING_FUNCTION, identifier=self.identifier,
            provider_resource_id=self.identifier, scoring_function=common_pb2.ScoringFunctionSpec(
                description=self.description, return_type=self.return_type, params=struct(self.params)))


@dataclasses.dataclass(frozen=True)
class ScoringFnTarget:
    """A function a request names, resolved: whom it runs on and with which params."""

    identifier: str  # the id the request used (``my-judge``)
    provider_id: str
    provider_resource_id: str  # what the provider knows it as (``basic::regex_parser_multiple_choice_answer``)
    params: dict[str, Any]  # registered params with the request's override laid over them


@dataclasses.dataclass(frozen=True)
class CallOptions:
    """The caller's deadline (``time.monotonic`` seconds, None: none) and trace metadata, passed on
    to every downstream call the request makes."""

    deadline: float | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    @classmethod
    def within(cls, timeout: float | None, metadata: Sequence[tuple[str, str]] = ()) -> "CallOptions":
        return cls(None if timeout is None else time.monotonic() + timeout, tuple(metadata))

    def remaining(self, cap: float | None, doing: str) -> float | None:
        """Seconds a downstream call may take: the caller's time left, at most ``cap``."""
        if self.deadline is None:
            return cap
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no time left for {doing}; give the call a longer deadline",
                                   reason="DEADLINE_EXCEEDED")
        return left if cap is None else min(left, cap)


class JudgeBackend(Protocol):
    """What a provider that asks a model needs from the mesh (``services.scoring.mesh_calls``)."""

    async def require_llm(self, model_id: str, role: str) -> None:
        """Raise unless ``model_id`` is a registered LLM (``role`` says what it is for, in the error)."""

    async def chat(self, model_id: str, prompt: str, *, temperature: float | None, max_tokens: int | None,
                   options: CallOptions, timeout_cap: float | None, doing: str) -> str:
        """The model's reply to one user message; errors name ``doing`` and the service at fault."""


class PreparedFunction(abc.ABC):
    """One scoring function ready to score rows; params already validated."""

    def __init__(self, target: ScoringFnTarget, required_columns: Iterable[str],
                 aggregation_functions: Sequence[str]) -> None:
        self.target = target
        self.required_columns = tuple(required_columns)  # the columns every row must hold (non-null)
        self.aggregation_functions = list(aggregation_functions)

    @abc.abstractmethod
    async def score(self, rows: Sequence[Row], options: CallOptions) -> list[ScoreRow]:
        """One score row (with at least ``score``) per input row, in order."""


class ScoringProvider(abc.ABC):
    """One configured scoring provider instance inside the scoring service."""

    discovered_type = common_pb2.RESOURCE_TYPE_SCORING_FUNCTION
    refresh_models = False
    refresh_interval_seconds: float | None = None

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults

    def bind(self, backend: JudgeBackend) -> None:
        """Hand the provider the mesh (inference, model checks); called once before ``initialize``."""

    async def initialize(self) -> None:
        """Inline scoring holds no files or connections."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def health(self) -> tuple[bool, str]:
        return True, ""

    @abc.abstractmethod
    def function_defs(self) -> list[FunctionDef]:
        """The functions this provider lists by itself."""

    async def list_resources(self) -> list[common_pb2.Resource]:
        """What ``ProviderSupervisor`` syncs into the registry as DISCOVERED."""
        return [fn.to_resource() for fn in self.function_defs()]

    @abc.abstractmethod
    async def prepare(self, target: ScoringFnTarget) -> PreparedFunction:
        """Check ``target.params`` and return the function; raise InvalidArgument naming what is wrong."""


def as_text(value: Any) -> str:
    """A cell as text: rows from CSV hold strings, rows from JSON hold numbers (Struct numbers are
    doubles, so 42 arrives as 42.0 and is shown as "42")."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_params(fn_id: str, params: dict[str, Any], accepted: Iterable[str]) -> None:
    """Reject keys a function does not read: a typo (``judge_modle``) must not pass silently."""
    allowed = set(accepted) | COMMON_PARAMS
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidArgument(f"scoring function '{fn_id}' has no parameter {', '.join(repr(k) for k in unknown)}; "
                              f"it accepts {', '.join(sorted(allowed - {'type'}))}", reason="UNKNOWN_SCORING_PARAM",
                              metadata={"scoring_fn_id": fn_id, "params": ",".join(unknown)})


def compile_regexes(fn_id: str, name: str, value: Any) -> list[re.Pattern[str]]:
    """``value`` as a list of compiled regexes; a wrong type or a bad regex is INVALID_ARGUMENT."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"parameter '{name}' of scoring function '{fn_id}' must be a non-empty list of "
                              f"regular expressions", reason="BAD_SCORING_PARAM",
                              metadata={"scoring_fn_id": fn_id, "param": name})
    out = []
    for pattern in value:
        try:
            out.append(re.compile(pattern))
        except re.error as err:
            raise InvalidArgument(f"parameter '{name}' of scoring function '{fn_id}' holds an invalid regular "
                                  f"expression {pattern!r}: {err}", reason="BAD_SCORING_PARAM",
                                  metadata={"scoring_fn_id": fn_id, "param": name}) from None
    return out


async def map_bounded(fn: Callable[[int, T], Awaitable[Any]], items: Sequence[T], limit: int) -> list[Any]:
    """``[await fn(i, item) ...]`` with at most ``limit`` in flight, results in order. The first
    failure cancels the rest and is raised: a failed batch must not keep spending judge calls."""
    results: list[Any] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        for i, item in pending:  # one shared iterator: each item is taken by exactly one worker
            results[i] = await fn(i, item)

    tasks = [asyncio.create_task(worker()) for _ in range(min(limit, len(items)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results
