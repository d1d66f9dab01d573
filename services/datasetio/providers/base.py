"""The interface every datasetio provider implements, and the domain types it speaks.

A dataset's rows are its *source* rows (inline rows of the registration, or a file) followed by the
rows appended to it since it was registered. Rows are plain JSON-safe dicts (str keys; None, bool,
int, float, str, lists and dicts): exactly what a ``google.protobuf.Struct`` can carry.

Appended rows belong to one *registration* of a dataset (its ``token``, the registry's create_time):
a dataset unregistered and registered again under the same id starts with none.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, Sequence

from services.common.config import StackConfig

__all__ = ["Row", "KeptRow", "DatasetTarget", "RowPage", "AppendResult", "DatasetIOProvider", "page_of"]

Row = dict[str, Any]


class KeptRow(dict):
    """A row a provider keeps in memory between requests (file and inline rows).

    ``encoded`` is a slot for the service's wire encoding of the row: filled on the first page that
    sends the row, reused by every later page (encoding a Struct costs several times more than
    copying its bytes). Providers never read it; a row that changes must be a new object."""

    __slots__ = ("encoded",)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetTarget:
    """The registered dataset a request resolved to (from its registry resource)."""

    identifier: str
    provider_id: str
    purpose: str
    uri: str  # "" when the rows are inline
    inline_rows: Sequence[Row]  # the registration's own rows (empty when ``uri`` is set)
    # Identity of the registration (its create_time): appended rows are kept per token.
    token: str
    # Registry revision of the resource when resolved: ties appended rows to a registry state (see
    # ``DatasetIOProvider.reconcile``).
    revision: int


@dataclasses.dataclass(frozen=True)
class RowPage:
    """Rows [start, next_index) of a dataset of ``total_rows`` rows."""

    rows: list[Row]
    start: int
    next_index: int
    has_more: bool
    total_rows: int


@dataclasses.dataclass(frozen=True)
class AppendResult:
    appended: int
    total_rows: int


def page_of(source: Sequence[Row], start: int, limit: int) -> tuple[list[Row], int, int]:
    """(source rows of the page, index of the first appended row wanted, how many appended rows are
    wanted) for rows [start, start + limit) over ``source`` followed by appended rows."""
    size = len(source)
    rows = list(source[start:start + limit]) if start < size else []
    first_appended = max(start - size, 0)
    wanted_appended = max(start + limit - max(start, size), 0)
    return rows, first_appended, wanted_appended


class DatasetIOProvider(abc.ABC):
    """One configured provider instance inside the datasetio service."""

    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.defaults = defaults

    # --- life cycle (what ProviderSupervisor calls) -----------------------------------------
    def resolve_storage(self, stack: StackConfig) -> None:
        """Work out where local files go from the whole run config; called once before ``initialize``."""

    async def initialize(self) -> None:
        """Open files; must not block on remote servers being reachable."""

    async def shutdown(self) -> None:
        """Flush and release files and threads."""

    async def health(self) -> tuple[bool, str]:
        return True, ""

    # Datasets are registered, never discovered: nothing to list.
    refresh_models = False
    refresh_interval_seconds: float | None = None

    async def list_models(self) -> None:
        return None

    # --- data path --------------------------------------------------------------------------
    @abc.abstractmethod
    async def iter_rows(self, dataset: DatasetTarget, start: int, limit: int) -> RowPage:
        """Rows [start, start + limit) (``start`` >= 0, 1 <= ``limit``); past the end: an empty page
        whose ``next_index`` is ``total_rows``."""

    @abc.abstractmethod
    async def append_rows(self, dataset: DatasetTarget, rows: list[Row]) -> AppendResult:
        """Check ``rows`` against the dataset's purpose (INVALID_ARGUMENT, nothing written, when one
        does not fit), then store them durably after the existing rows."""

    # --- registrations that ended ----------------------------------------------------------
    async def forget(self, identifier: str, token: str) -> None:
        """The registration ``token`` of dataset ``identifier`` was unregistered: drop its appended rows."""

    async def reconcile(self, registered: Mapping[str, str], revision: int) -> None:
        """The registry at ``revision`` lists these datasets (identifier -> token): drop appended rows
        of registrations it no longer lists and that were seen at or before ``revision`` (rows of a
        registration newer than this view are kept: another replica may be serving it already)."""
