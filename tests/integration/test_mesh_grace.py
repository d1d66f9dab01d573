"""A peer that restarts: long jobs retry an UNAVAILABLE peer for a grace period (``call_with_grace``),
over real gRPC on loopback. The peer is a stand-in DatasetIO server (named as such) that starts
late, so the reader first meets a closed port, as during a rolling restart."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from services.common.config import MeshConfig, ServiceTarget
from services.common.mesh import MeshClient
from services.post_training.datasets import DatasetIOError, DatasetReader
from stackmesh.datasetio.v1 import datasetio_pb2, datasetio_pb2_grpc
from tests.support.mesh import free_port


class StandInDatasetIO(datasetio_pb2_grpc.DatasetIOServiceServicer):
    """Stand-in: three rows for dataset 'facts', NOT_FOUND for anything else."""

    async def IterRows(self, request, context):
        if request.dataset_id != "facts":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"dataset '{request.dataset_id}' not found")
        rows = [{"n": i} for i in range(3)][request.start_index:request.start_index + request.limit]
        reply = datasetio_pb2.IterRowsResponse(total_rows=3, next_index=request.start_index + len(rows))
        for row in rows:
            reply.rows.add().update(row)
        return reply


async def serve_later(port: int, delay: float) -> grpc.aio.Server:
    await asyncio.sleep(delay)
    server = grpc.aio.server()
    datasetio_pb2_grpc.add_DatasetIOServiceServicer_to_server(StandInDatasetIO(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def mesh_for(port: int) -> MeshClient:
    return MeshClient(MeshConfig(services={"datasetio": ServiceTarget(target=f"127.0.0.1:{port}")}))


async def test_a_reader_with_grace_waits_for_datasetio_to_come_back():
    port = free_port()
    mesh = mesh_for(port)
    starting = asyncio.create_task(serve_later(port, 2.0))
    try:
        rows = await DatasetReader(mesh, timeout=5, unavailable_grace=15).rows("facts")
        assert rows == [{"n": 0.0}, {"n": 1.0}, {"n": 2.0}]
    finally:
        server = await starting
        await server.stop(None)
        await mesh.close()


async def test_without_grace_or_past_it_the_error_names_datasetio():
    port = free_port()
    mesh = mesh_for(port)
    try:
        for grace in (0.0, 1.0):
            began = time.monotonic()
            with pytest.raises(DatasetIOError, match="datasetio service unavailable reading dataset 'facts'") as caught:
                await DatasetReader(mesh, timeout=5, unavailable_grace=grace).count("facts")
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - began < grace + 5  # gives up once the grace is spent
    finally:
        await mesh.close()


async def test_other_errors_are_not_retried():
    port = free_port()
    server = await serve_later(port, 0)
    mesh = mesh_for(port)
    try:
        began = time.monotonic()
        with pytest.raises(DatasetIOError, match=r"datasetio service failed \(NOT_FOUND\)"):
            await DatasetReader(mesh, timeout=5, unavailable_grace=30).rows("missing")
        assert time.monotonic() - began < 5
    finally:
        await server.stop(None)
        await mesh.close()
