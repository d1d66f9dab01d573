"""The datasetio service over real gRPC: an in-process registry and datasetio service on 127.0.0.1,
datasets registered with the registry's DatasetsService, real CSV/JSONL/Parquet files in tmp dirs and
the real appended-rows SQLite file."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import grpc
import pandas as pd
import pytest
import pytest_asyncio
from google.protobuf import json_format

from services.common.errors import error_info_from_rpc_error
from services.common.protoutil import struct
from services.common.server import ServiceHost
from stackmesh.datasetio.v1 import datasetio_pb2 as dpb, datasetio_pb2_grpc
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from tests.conftest import make_config

PURPOSE = "eval/question-answer"
PROVIDERS = {"datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]}


def qa_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "input_query": f"What is {i} + {i}?", "expected_answer": str(2 * i), "score": i / 4,
             "tags": ["math", f"t{i % 3}"]} for i in range(start, start + n)]


def write_jsonl(path: pathlib.Path, rows: list[dict[str, Any]]) -> pathlib.Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


class Services:
    """A registry and a datasetio service in this event loop; the datasetio one can be restarted."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.hosts: list[ServiceHost] = []
        self.channels: list[grpc.aio.Channel] = []
        self.datasetio_host: ServiceHost | None = None
        self.core: Any = None

    async def start(self) -> "Services":
        from services.registry.app import build_registry

        registry = ServiceHost("registry", "127.0.0.1", 0, grace_seconds=0.5)
        await build_registry(make_config(self.directory, providers=PROVIDERS), registry)
        await registry.start(install_signal_handlers=False)
        await registry.set_serving(True)
        self.hosts.append(registry)
        self.config = make_config(self.directory, providers=PROVIDERS,
                                  mesh={"registry": {"target": f"127.0.0.1:{registry.port}"}})
        self.datasets = registry_pb2_grpc.DatasetsServiceStub(self._channel(registry.port))
        await self.start_datasetio()
        return self

    def _channel(self, port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(channel)
        return channel

    async def start_datasetio(self) -> None:
        from services.datasetio.app import build_datasetio

        host = ServiceHost("datasetio", "127.0.0.1", 0, grace_seconds=0.5)
        self.core = await build_datasetio(self.config, host)
        await host.start(install_signal_handlers=False)
        await host.set_serving(True)
        self.datasetio_host = host
        self.rows = datasetio_pb2_grpc.DatasetIOServiceStub(self._channel(host.port))
        assert await self.core.router.cache.wait_synced(10), "datasetio never reached the registry"

    async def restart_datasetio(self) -> None:
        await self.datasetio_host.stop()
        await self.start_datasetio()

    @property
    def provider(self) -> Any:
        return self.core.router.providers["localfs"]

    @property
    def appended_db(self) -> pathlib.Path:
        return self.directory / "datasetio" / "localfs" / "appended.db"

    async def register(self, dataset_id: str, *, uri: str = "", rows: list[dict] | None = None,
                       purpose: str = PURPOSE) -> Any:
        reply = await self.datasets.RegisterDataset(rpb.RegisterDatasetRequest(
            dataset_id=dataset_id, purpose=purpose, uri=uri, rows=[struct(r) for r in rows or []]), timeout=10)
        return reply.dataset

    async def unregister(self, dataset_id: str) -> None:
        await self.datasets.UnregisterDataset(rpb.UnregisterDatasetRequest(dataset_id=dataset_id), timeout=10)

    async def page(self, dataset_id: str, start: int = 0, limit: int = 0) -> dpb.IterRowsResponse:
        return await self.rows.IterRows(dpb.IterRowsRequest(dataset_id=dataset_id, start_index=start, limit=limit),
                                        timeout=30)

    async def read_all(self, dataset_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        out, start = [], 0
        while True:
            reply = await self.page(dataset_id, start, limit)
            out.extend(json_format.MessageToDict(r) for r in reply.rows)
            if not reply.has_more:
                return out
            start = reply.next_index

    async def append(self, dataset_id: str, rows: list[dict[str, Any]]) -> dpb.AppendRowsResponse:
        return await self.rows.AppendRows(dpb.AppendRowsRequest(dataset_id=dataset_id, rows=[struct(r) for r in rows]),
                                          timeout=30)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        if self.datasetio_host is not None:
            await self.datasetio_host.stop()
        for host in reversed(self.hosts):
            await host.stop()


@pytest_asyncio.fixture(scope="module")
async def svc(tmp_path_factory):
    services = await Services(tmp_path_factory.mktemp("datasetio")).start()
    yield services
    await services.close()


async def expect_error(coro, code: grpc.StatusCode) -> tuple[str, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro
    assert caught.value.code() == code, caught.value.details()
    info = error_info_from_rpc_error(caught.value)
    return caught.value.details(), info.reason if info else "", dict(info.metadata) if info else {}


# ----------------------------------------------------------------------------- paging
async def test_paging_over_1000_rows_returns_every_row_once_in_order(svc, tmp_path):
    rows = qa_rows(1000)
    await svc.register("thousand", uri=f"file://{write_jsonl(tmp_path / 'thousand.jsonl', rows)}")
    reads_before = svc.provider.files.reads
    seen, start, pages = [], 0, []
    while True:
        reply = await svc.page("thousand", start, 128)
        pages.append((start, len(reply.rows), reply.next_index, reply.has_more, reply.total_rows))
        seen.extend(json_format.MessageToDict(r) for r in reply.rows)
        if not reply.has_more:
            break
        start = reply.next_index
    assert [p[1] for p in pages] == [128] * 7 + [104]  # the last page is short
    assert all(next_index == s + n for s, n, next_index, _, _ in pages)
    assert [p[3] for p in pages] == [True] * 7 + [False] and {p[4] for p in pages} == {1000}
    assert [r["id"] for r in seen] == list(range(1000)) and seen == rows
    assert svc.provider.files.reads - reads_before == 1  # eight pages, one read of the file


async def test_page_size_default_clamp_and_bounds(svc, tmp_path):
    await svc.register("big", uri=f"file://{write_jsonl(tmp_path / 'big.jsonl', qa_rows(12_000))}")
    assert len((await svc.page("big")).rows) == 100  # limit 0: the default page
    reply = await svc.page("big", 500, 50_000)  # above the maximum: clamped to 10,000
    assert len(reply.rows) == 10_000 and reply.next_index == 10_500 and reply.has_more
    reply = await svc.page("big", 11_990, 100)
    assert len(reply.rows) == 10 and reply.next_index == 12_000 and not reply.has_more
    for start in (12_000, 50_000):  # at or past the end: an empty page
        reply = await svc.page("big", start, 10)
        assert not reply.rows and not reply.has_more and reply.next_index == 12_000 and reply.total_rows == 12_000
    message, reason, _ = await expect_error(svc.page("big", -1, 10), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "BAD_START_INDEX" and "start_index" in message
    _, reason, _ = await expect_error(svc.page("big", 0, -5), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "BAD_PAGE_LIMIT"


async def test_a_page_of_large_rows_stays_under_the_default_4mib_message_limit(svc, tmp_path):
    rows = [{"input_query": f"q{i} " + "x" * 300_000, "expected_answer": str(i)} for i in range(30)]
    await svc.register("wide", uri=f"file://{write_jsonl(tmp_path / 'wide.jsonl', rows)}")
    reply = await svc.page("wide", 0, 30)
    assert 0 < len(reply.rows) < 30 and reply.ByteSize() < 4 * 1024 * 1024
    assert reply.has_more and reply.next_index == len(reply.rows)
    assert [r["expected_answer"] for r in await svc.read_all("wide", 30)] == [str(i) for i in range(30)]


# ----------------------------------------------------------------------------- sources
async def test_csv_jsonl_json_and_parquet_give_the_same_rows(svc, tmp_path):
    rows = [{"id": i, "input_query": f"Capital of country {i}?", "expected_answer": ["Paris", "NA", "None"][i % 3],
             "score": 0.5 * i, "comment": "" if i % 2 else "checked"} for i in range(25)]
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "qa.csv", index=False)
    frame.to_csv(tmp_path / "qa.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "qa.parquet", index=False)
    write_jsonl(tmp_path / "qa.jsonl", rows)
    (tmp_path / "qa.json").write_text(json.dumps(rows))
    got = {}
    for suffix in ("csv", "tsv", "jsonl", "json", "parquet"):
        await svc.register(f"qa-{suffix}", uri=f"file://{tmp_path / f'qa.{suffix}'}")
        got[suffix] = await svc.read_all(f"qa-{suffix}", 10)
    expected = [{**row, "comment": row["comment"] or None} for row in rows]  # an empty CSV cell is missing ...
    assert got["csv"] == got["tsv"] == expected
    assert got["jsonl"] == got["json"] == got["parquet"] == rows
    assert got["csv"][1]["expected_answer"] == "NA" and got["csv"][2]["expected_answer"] == "None"  # ... "NA" is text


async def test_inline_rows_and_relative_paths(svc, tmp_path, monkeypatch):
    rows = qa_rows(3)
    await svc.register("inline", rows=rows)
    assert await svc.read_all("inline") == rows
    write_jsonl(tmp_path / "relative.jsonl", qa_rows(2))
    monkeypatch.chdir(tmp_path)  # a relative file:// path is relative to the service's working directory
    await svc.register("relative", uri="file://relative.jsonl")
    assert [r["id"] for r in await svc.read_all("relative")] == [0, 1]


async def test_a_changed_file_is_read_again(svc, tmp_path):
    path = write_jsonl(tmp_path / "changing.jsonl", qa_rows(3))
    await svc.register("changing", uri=f"file://{path}")
    assert (await svc.page("changing")).total_rows == 3
    write_jsonl(path, qa_rows(5))
    assert (await svc.page("changing")).total_rows == 5


async def test_file_without_the_purpose_columns_is_failed_precondition(svc, tmp_path):
    path = write_jsonl(tmp_path / "no-answer.jsonl", [{"input_query": "2+2?", "answer": "4"}])
    await svc.register("no-answer", uri=f"file://{path}")
    message, reason, metadata = await expect_error(svc.page("no-answer"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "DATASET_COLUMNS_MISMATCH" and metadata["missing"] == "expected_answer"
    assert "expected_answer" in message and "it has: answer, input_query" in message and str(path) in message
    await expect_error(svc.append("no-answer", [{"input_query": "a", "expected_answer": "b"}]),
                       grpc.StatusCode.FAILED_PRECONDITION)  # a source that cannot be served takes no appends
    path.write_text(json.dumps({"input_query": "2+2?", "expected_answer": "4"}) + "\n")  # fixed: served again
    assert (await svc.page("no-answer")).total_rows == 1


async def test_missing_file_unknown_extension_and_bad_lines(svc, tmp_path):
    missing = tmp_path / "nowhere" / "gone.jsonl"
    await svc.register("gone", uri=f"file://{missing}")
    message, reason, metadata = await expect_error(svc.page("gone"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "DATASET_FILE_MISSING" and str(missing) in message and "'gone'" in message
    assert metadata["path"] == str(missing)
    missing.parent.mkdir()
    write_jsonl(missing, qa_rows(1))  # created later: served from then on
    assert (await svc.page("gone")).total_rows == 1

    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    await svc.register("sheet", uri=f"file://{tmp_path / 'sheet.xlsx'}")
    message, reason, _ = await expect_error(svc.page("sheet"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "DATASET_FORMAT_UNSUPPORTED" and ".xlsx" in message and ".parquet" in message

    (tmp_path / "broken.jsonl").write_text(json.dumps(qa_rows(1)[0]) + "\n{not json\n")
    await svc.register("broken", uri=f"file://{tmp_path / 'broken.jsonl'}")
    message, reason, _ = await expect_error(svc.page("broken"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "DATASET_FILE_INVALID" and "line 2" in message


async def test_unknown_dataset_is_not_found_with_a_hint(svc):
    for call in (svc.page("no-such-dataset"), svc.append("no-such-dataset", qa_rows(1))):
        message, reason, _ = await expect_error(call, grpc.StatusCode.NOT_FOUND)
        assert reason == "RESOURCE_NOT_FOUND" and "no-such-dataset" in message and "stackmesh datasets list" in message
