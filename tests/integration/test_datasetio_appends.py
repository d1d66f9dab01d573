"""AppendRows over real gRPC (an in-process registry and datasetio service, see test_datasetio_service):
rows written to the real SQLite file, read back across pages and restarts, checked before anything is
written, and dropped when their dataset is unregistered."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import time

import grpc
import pytest_asyncio
from google.protobuf import json_format, struct_pb2

from stackmesh.datasetio.v1 import datasetio_pb2 as dpb
from tests.integration.test_datasetio_service import Services, expect_error, qa_rows, write_jsonl


@pytest_asyncio.fixture(scope="module")
async def svc(tmp_path_factory):
    services = await Services(tmp_path_factory.mktemp("datasetio-appends")).start()
    yield services
    await services.close()


def appended_count(db: pathlib.Path, dataset_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM appended_rows WHERE dataset_id = ?", (dataset_id,)).fetchone()[0]


async def test_append_then_read_back_and_it_survives_a_restart(svc, tmp_path):
    path = write_jsonl(tmp_path / "grow.jsonl", qa_rows(5))
    source_bytes = path.read_bytes()
    await svc.register("grow", uri=f"file://{path}")
    reply = await svc.append("grow", qa_rows(3, start=100))
    assert reply.appended == 3 and reply.total_rows == 8
    reply = await svc.append("grow", qa_rows(2, start=200))
    assert reply.appended == 2 and reply.total_rows == 10
    expected_ids = [0, 1, 2, 3, 4, 100, 101, 102, 200, 201]
    assert [r["id"] for r in await svc.read_all("grow", 3)] == expected_ids  # pages across source and appended
    page = await svc.page("grow", 4, 3)
    assert [r["id"] for r in json_format.MessageToDict(page)["rows"]] == [4, 100, 101] and page.next_index == 7
    assert path.read_bytes() == source_bytes  # the user's file is never written

    await svc.restart_datasetio()
    assert [r["id"] for r in await svc.read_all("grow")] == expected_ids
    assert (await svc.append("grow", [])).total_rows == 10  # nothing to append: a no-op that says the size


async def test_append_to_inline_dataset(svc):
    await svc.register("inline-grow", rows=qa_rows(2))
    assert (await svc.append("inline-grow", qa_rows(1, start=7))).total_rows == 3
    assert [r["id"] for r in await svc.read_all("inline-grow")] == [0, 1, 7]


async def test_bad_append_is_invalid_argument_and_writes_nothing(svc, tmp_path):
    await svc.register("strict", uri=f"file://{write_jsonl(tmp_path / 'strict.jsonl', qa_rows(4))}")
    bad = qa_rows(3, start=10)
    del bad[2]["expected_answer"]
    message, reason, metadata = await expect_error(svc.append("strict", bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "DATASET_COLUMNS_MISMATCH" and metadata["missing"] == "expected_answer"
    assert "rows[2] of this AppendRows request" in message and "nothing was appended" in message
    assert "row 6" in message  # the index the row would have had in the dataset
    assert appended_count(svc.appended_db, "strict") == 0
    assert (await svc.page("strict")).total_rows == 4


async def test_reregistered_dataset_starts_without_the_old_appended_rows(svc, tmp_path):
    path = write_jsonl(tmp_path / "again.jsonl", qa_rows(2))
    await svc.register("again", uri=f"file://{path}")
    await svc.append("again", qa_rows(4, start=50))
    assert appended_count(svc.appended_db, "again") == 4
    await svc.unregister("again")
    deadline = time.monotonic() + 10
    while appended_count(svc.appended_db, "again") and time.monotonic() < deadline:  # the watch's DELETE drops them
        await asyncio.sleep(0.05)
    assert appended_count(svc.appended_db, "again") == 0
    await svc.register("again", uri=f"file://{path}")
    assert (await svc.page("again")).total_rows == 2


async def test_rows_of_a_dataset_unregistered_while_the_service_was_down_are_dropped_at_sync(svc, tmp_path):
    path = write_jsonl(tmp_path / "offline.jsonl", qa_rows(1))
    first = await svc.register("offline", uri=f"file://{path}")
    await svc.append("offline", qa_rows(2, start=9))
    await svc.datasetio_host.stop()
    await svc.unregister("offline")
    second = await svc.register("offline", uri=f"file://{path}")  # same id, a new registration
    assert second.create_time != first.create_time
    await svc.start_datasetio()
    assert (await svc.page("offline")).total_rows == 1  # the new registration never sees the old rows
    await svc.core.lifecycle.idle()
    assert appended_count(svc.appended_db, "offline") == 0  # and the SYNCED reconcile dropped them


async def test_non_finite_numbers_are_invalid_argument(svc, tmp_path):
    await svc.register("finite", uri=f"file://{write_jsonl(tmp_path / 'finite.jsonl', qa_rows(1))}")
    row = struct_pb2.Struct()
    row.update({"input_query": "q", "expected_answer": "a", "score": float("nan")})
    call = svc.rows.AppendRows(dpb.AppendRowsRequest(dataset_id="finite", rows=[row]), timeout=10)
    message, reason, _ = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "BAD_ROW" and "rows[0]" in message and appended_count(svc.appended_db, "finite") == 0


async def test_concurrent_appends_lose_nothing_and_keep_each_batch_together(svc, tmp_path):
    await svc.register("busy", rows=qa_rows(1))
    replies = await asyncio.gather(*(svc.append("busy", qa_rows(5, start=1000 + 10 * b)) for b in range(12)))
    assert sorted(r.total_rows for r in replies) == [1 + 5 * (b + 1) for b in range(12)]
    ids = [int(r["id"]) for r in await svc.read_all("busy", 7)]
    assert len(ids) == 61 and sorted(ids[1:]) == sorted(1000 + 10 * b + i for b in range(12) for i in range(5))
    batches = [ids[1 + 5 * k:6 + 5 * k] for k in range(12)]
    assert all(batch == list(range(batch[0], batch[0] + 5)) for batch in batches)


async def test_appended_rows_of_messages_datasets_are_shape_checked(svc):
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    await svc.register("chat", rows=[{"messages": conversation}], purpose="post-training/messages")
    message, _, _ = await expect_error(svc.append("chat", [{"messages": [{"text": "no role"}]}]),
                                       grpc.StatusCode.INVALID_ARGUMENT)
    assert "{role, content}" in message
    assert (await svc.append("chat", [{"messages": conversation}])).total_rows == 2
    assert json_format.MessageToDict((await svc.page("chat", 1)).rows[0]) == {"messages": conversation}
