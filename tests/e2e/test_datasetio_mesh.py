"""datasetio in the whole mesh, as real processes on 127.0.0.1, called through the gateway like a user:
registry + inference (no providers: datasets need no model) + datasetio (inline::localfs) + gateway."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from google.protobuf import json_format

from services.common.protoutil import struct
from stackmesh.client import StackmeshClientError
from stackmesh.datasetio.v1 import datasetio_pb2 as dpb, datasetio_pb2_grpc
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from tests.support.mesh import LocalMesh

pytestmark = pytest.mark.slow

PURPOSE = "eval/question-answer"


def qa_rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": i, "input_query": f"What is {i} + {i}?", "expected_answer": str(2 * i)}
            for i in range(start, start + n)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mesh")
    providers = {"inference": [],
                 "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]}
    with LocalMesh(directory, providers=providers) as running:
        yield running


@pytest.fixture(scope="module")
def channel(mesh):
    with grpc.insecure_channel(mesh.url) as channel:
        yield channel


def call(fn, request):
    try:
        return fn(request, timeout=30)
    except grpc.RpcError as err:
        raise StackmeshClientError.from_rpc_error(err) from None


def test_register_page_append_and_read_back_through_the_gateway(mesh, channel, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in qa_rows(250)))
    datasets = registry_pb2_grpc.DatasetsServiceStub(channel)
    rows = datasetio_pb2_grpc.DatasetIOServiceStub(channel)
    registered = call(datasets.RegisterDataset, rpb.RegisterDatasetRequest(
        dataset_id="arith", purpose=PURPOSE, uri=f"file://{path}")).dataset
    assert registered.provider_id == "localfs"

    seen, start, sizes = [], 0, []
    while True:  # used at once: no waiting for the watch (read-your-writes)
        reply = call(rows.IterRows, dpb.IterRowsRequest(dataset_id="arith", start_index=start, limit=100))
        sizes.append(len(reply.rows))
        seen.extend(json_format.MessageToDict(r) for r in reply.rows)
        assert reply.total_rows == 250 and reply.next_index == start + len(reply.rows)
        if not reply.has_more:
            break
        start = reply.next_index
    assert sizes == [100, 100, 50] and seen == qa_rows(250)

    appended = call(rows.AppendRows, dpb.AppendRowsRequest(dataset_id="arith",
                                                            rows=[struct(r) for r in qa_rows(2, 900)]))
    assert appended.appended == 2 and appended.total_rows == 252
    tail = call(rows.IterRows, dpb.IterRowsRequest(dataset_id="arith", start_index=248, limit=10))
    assert [r["id"] for r in json_format.MessageToDict(tail)["rows"]] == [248, 249, 900, 901]
    assert not tail.has_more and tail.next_index == 252

    with pytest.raises(StackmeshClientError) as caught:  # bad rows: nothing appended
        call(rows.AppendRows, dpb.AppendRowsRequest(dataset_id="arith", rows=[struct({"input_query": "x"})]))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "expected_answer" in caught.value.message
    assert call(rows.IterRows, dpb.IterRowsRequest(dataset_id="arith", limit=1)).total_rows == 252


def test_unknown_dataset_is_not_found_through_the_gateway(channel):
    rows = datasetio_pb2_grpc.DatasetIOServiceStub(channel)
    with pytest.raises(StackmeshClientError) as caught:
        call(rows.IterRows, dpb.IterRowsRequest(dataset_id="nope"))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and "stackmesh datasets list" in caught.value.message


def test_unregistered_dataset_stops_being_served(channel, tmp_path):
    datasets = registry_pb2_grpc.DatasetsServiceStub(channel)
    rows = datasetio_pb2_grpc.DatasetIOServiceStub(channel)
    call(datasets.RegisterDataset, rpb.RegisterDatasetRequest(dataset_id="short-lived", purpose=PURPOSE,
                                                             rows=[struct(r) for r in qa_rows(3)]))
    assert call(rows.IterRows, dpb.IterRowsRequest(dataset_id="short-lived")).total_rows == 3
    call(datasets.UnregisterDataset, rpb.UnregisterDatasetRequest(dataset_id="short-lived"))
    deadline = time.monotonic() + 5
    while True:
        try:
            call(rows.IterRows, dpb.IterRowsRequest(dataset_id="short-lived"))
        except StackmeshClientError as err:
            assert err.code == grpc.StatusCode.NOT_FOUND
            break
        assert time.monotonic() < deadline, "an unregistered dataset was still served after 5 s"
        time.sleep(0.05)
