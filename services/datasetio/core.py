"""IterRows and AppendRows, independent of gRPC: request checks and page sizes, then the provider.

Page size: ``limit`` 0 is the default page (100 rows); a limit above 10,000 is clamped to 10,000
rather than refused — the reply's ``next_index``/``has_more`` tell the caller exactly where to go
on, so a client asking for "everything" simply pages. A negative limit or start is INVALID_ARGUMENT.
"""

from __future__ import annotations

from typing import Any

from services.common.errors import InvalidArgument
from services.datasetio.lifecycle import AppendedRowsLifecycle
from services.datasetio.providers.base import AppendResult, RowPage
from services.datasetio.router import DatasetRouter

__all__ = ["DatasetIOCore", "DEFAULT_PAGE_ROWS", "MAX_PAGE_ROWS"]

DEFAULT_PAGE_ROWS = 100
MAX_PAGE_ROWS = 10_000


def page_limit(limit: int) -> int:
    if limit < 0:
        raise InvalidArgument(f"limit must be 0 (the default page of {DEFAULT_PAGE_ROWS} rows) or positive, not "
                              f"{limit}", reason="BAD_PAGE_LIMIT", metadata={"limit": limit})
    return DEFAULT_PAGE_ROWS if limit == 0 else min(limit, MAX_PAGE_ROWS)


class DatasetIOCore:
    def __init__(self, router: DatasetRouter, lifecycle: AppendedRowsLifecycle | None = None) -> None:
        self.router = router
        self.lifecycle = lifecycle  # the service's garbage collector of appended rows (tests wait on it)

    async def iter_rows(self, dataset_id: str, start_index: int, limit: int) -> RowPage:
        if start_index < 0:
            raise InvalidArgument(f"start_index must be 0 or more, not {start_index}", reason="BAD_START_INDEX",
                                  metadata={"start_index": start_index})
        rows = page_limit(limit)
        provider, dataset = await self.router.route(dataset_id)
        return await provider.iter_rows(dataset, start_index, rows)

    async def append_rows(self, dataset_id: str, rows: list[dict[str, Any]]) -> AppendResult:
        provider, dataset = await self.router.route(dataset_id)
        return await provider.append_rows(dataset, rows)
