"""``inline::localfs``: dataset rows from the registration (inline rows) or a local file, plus appended rows.

Source rows come from the registry resource (inline) or from a ``file://`` CSV/TSV, JSONL/JSON or
Parquet file (``readers``), cached per file version (``sources``). A file's rows are checked against
the dataset's purpose when the file is opened (once per file version): a file that lacks a column
is FAILED_PRECONDITION naming the columns. Appended rows live in ``appended.db`` in the provider's
data folder (``appended``), after the source rows.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Mapping, Sequence

from services.common.config import StackConfig
from services.common.dataset_purposes import check_rows
from services.common.errors import FailedPrecondition, InvalidArgument, StackmeshError
from services.common.storage import data_dir
from services.datasetio.providers.base import AppendResult, DatasetIOProvider, DatasetTarget, Row, RowPage, page_of
from services.datasetio.providers.inline.localfs.appended import AppendedRows, Worker
from services.datasetio.providers.inline.localfs.config import LocalFSConfig
from services.datasetio.providers.inline.localfs.readers import path_of
from services.datasetio.providers.inline.localfs.sources import SourceFiles

__all__ = ["LocalFSProvider"]

log = logging.getLogger("stackmesh.datasetio.localfs")


def _about(dataset: DatasetTarget, error: StackmeshError) -> StackmeshError:
    """``error`` (about a file, possibly shared by several datasets) restated for ``dataset``."""
    if error.message.startswith(f"dataset '{dataset.identifier}'"):
        return error
    return type(error)(f"dataset '{dataset.identifier}': {error.message}", reason=error.reason,
                       metadata={**error.metadata, "dataset_id": dataset.identifier})


class LocalFSProvider(DatasetIOProvider):
    config: LocalFSConfig

    def __init__(self, provider_id: str, config: LocalFSConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self.folder: pathlib.Path | None = None
        self.files = SourceFiles(config.cache_max_rows)
        self._worker = Worker(f"datasetio-{provider_id}")
        self._store: AppendedRows | None = None

    # ----------------------------------------------------------------- life cycle
    def resolve_storage(self, stack: StackConfig) -> None:
        if self.config.data_dir:
            self.folder = pathlib.Path(self.config.data_dir).expanduser()
            return
        self.folder = data_dir(stack, self.provider_id, api="datasetio", persistence=self.config.persistence,
                               kvstore=self.config.kvstore)

    async def initialize(self) -> None:
        folder = self.folder or pathlib.Path("datasetio") / self.provider_id
        self._store = await self._worker.run(AppendedRows, folder / "appended.db")
        log.info("appended rows store open provider=%s path=%s", self.provider_id, self._store.path)

    async def shutdown(self) -> None:
        if self._store is not None:
            await self._worker.run(self._store.close)
            self._store = None
        self._worker.close()
        self.files.clear()

    async def health(self) -> tuple[bool, str]:
        return (True, "") if self._store is not None else (False, "the appended-rows store is not open")

    @property
    def store(self) -> AppendedRows:
        if self._store is None:
            raise FailedPrecondition(f"datasetio provider '{self.provider_id}' is not open", reason="PROVIDER_CLOSED")
        return self._store

    # ----------------------------------------------------------------- source rows
    async def source_rows(self, dataset: DatasetTarget) -> Sequence[Row]:
        """The dataset's own rows: inline, or the file's (checked against the purpose)."""
        if not dataset.uri:
            return dataset.inline_rows
        try:
            loaded = await self.files.get(path_of(dataset.uri))
        except StackmeshError as err:
            raise _about(dataset, err) from None
        key = (dataset.identifier, dataset.purpose)
        if key not in loaded.checks:
            try:
                check_rows(dataset.identifier, dataset.purpose, loaded.rows, error=FailedPrecondition)
                loaded.checks[key] = None
            except StackmeshError as err:
                err.message += f" (file {loaded.path}; fix the file or register it with the right purpose)"
                err.metadata["path"] = str(loaded.path)
                loaded.checks[key] = err
        problem = loaded.checks[key]
        if problem is not None:
            raise type(problem)(problem.message, reason=problem.reason, metadata=problem.metadata)
        return loaded.rows

    # ----------------------------------------------------------------- data path
    async def iter_rows(self, dataset: DatasetTarget, start: int, limit: int) -> RowPage:
        source = await self.source_rows(dataset)
        rows, first_appended, wanted = page_of(source, start, limit)
        appended_count, appended = await self._worker.run(self.store.read, dataset.identifier, dataset.token,
                                                          first_appended, wanted)
        total = len(source) + appended_count
        rows.extend(appended)
        next_index = start + len(rows) if start < total else total
        return RowPage(rows=rows, start=start, next_index=next_index, has_more=next_index < total, total_rows=total)

    async def append_rows(self, dataset: DatasetTarget, rows: list[Row]) -> AppendResult:
        source = await self.source_rows(dataset)  # a source that cannot be served takes no appends either
        if not rows:
            count = await self._worker.run(self.store.count, dataset.identifier, dataset.token)
            return AppendResult(appended=0, total_rows=len(source) + count)

        def check(count_before: int) -> None:
            try:
                check_rows(dataset.identifier, dataset.purpose, rows, first_index=len(source) + count_before,
                           error=InvalidArgument)
            except InvalidArgument as err:
                position = int(err.metadata.get("row", len(source) + count_before)) - len(source) - count_before
                err.message += f" (rows[{position}] of this AppendRows request; nothing was appended)"
                err.metadata["request_row"] = str(position)
                raise

        count = await self._worker.run(self.store.append, dataset.identifier, dataset.token, dataset.revision,
                                       rows, check)
        log.info("rows appended dataset=%s provider=%s rows=%d appended_total=%d", dataset.identifier,
                 self.provider_id, len(rows), count)
        return AppendResult(appended=len(rows), total_rows=len(source) + count)

    # ----------------------------------------------------------------- ended registrations
    async def forget(self, identifier: str, token: str) -> None:
        dropped = await self._worker.run(self.store.forget, identifier, token)
        if dropped:
            log.info("appended rows dropped (dataset unregistered) dataset=%s provider=%s rows=%d", identifier,
                     self.provider_id, dropped)

    async def reconcile(self, registered: Mapping[str, str], revision: int) -> None:
        for identifier, token in await self._worker.run(self.store.stale, registered, revision):
            await self.forget(identifier, token)
