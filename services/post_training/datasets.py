"""Training rows from the datasetio service (``IterRows`` pages through the mesh).

Rows are read once, when a job first starts, and written to the job's folder: a resumed job trains
on the very rows it started with, whatever happened to the dataset meanwhile, and the training
worker needs no mesh connection. A failure names the service and keeps its status code, so it
reads well as a failed job's reason.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from services.common.errors import StackmeshError
from services.common.mesh import MeshClient, call_with_grace
from stackmesh.datasetio.v1 import datasetio_pb2, datasetio_pb2_grpc

__all__ = ["DatasetReader", "DatasetIOError", "PAGE_ROWS"]

PAGE_ROWS = 1000


class DatasetIOError(StackmeshError):
    """A datasetio call failed; keeps that call's status code."""

    def __init__(self, dataset_id: str, err: grpc.aio.AioRpcError) -> None:
        code = err.code()
        verb = "unavailable" if code == grpc.StatusCode.UNAVAILABLE else f"failed ({code.name})"
        super().__init__(f"datasetio service {verb} reading dataset '{dataset_id}': {err.details() or code.name}",
                         reason="DOWNSTREAM_UNAVAILABLE" if code == grpc.StatusCode.UNAVAILABLE
                         else "DOWNSTREAM_FAILED", metadata={"service": "datasetio", "code": code.name})
        self.code = code


class DatasetReader:
    """``unavailable_grace`` (seconds): how long an UNAVAILABLE datasetio is retried; the job path
    rides out a restart of datasetio, a request being checked answers at once."""

    def __init__(self, mesh: MeshClient, timeout: float = 60.0, unavailable_grace: float = 0.0) -> None:
        self.mesh = mesh
        self.timeout = timeout
        self.unavailable_grace = unavailable_grace

    def _stub(self) -> datasetio_pb2_grpc.DatasetIOServiceStub:
        return datasetio_pb2_grpc.DatasetIOServiceStub(self.mesh.channel("datasetio"))

    async def _page(self, dataset_id: str, start: int, limit: int) -> datasetio_pb2.IterRowsResponse:
        request = datasetio_pb2.IterRowsRequest(dataset_id=dataset_id, start_index=start, limit=limit)
        try:
            return await call_with_grace(lambda: self._stub().IterRows(request, timeout=self.timeout),
                                         self.unavailable_grace)
        except grpc.aio.AioRpcError as err:
            raise DatasetIOError(dataset_id, err) from None

    async def count(self, dataset_id: str) -> int:
        """How many rows ``dataset_id`` has now."""
        return int((await self._page(dataset_id, 0, 1)).total_rows)

    async def rows(self, dataset_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Every row of ``dataset_id`` (at most ``limit``), in order."""
        out: list[dict[str, Any]] = []
        index = 0
        while limit is None or len(out) < limit:
            page_rows = PAGE_ROWS if limit is None else min(PAGE_ROWS, limit - len(out))
            reply = await self._page(dataset_id, index, page_rows)
            out.extend(json_format.MessageToDict(row) for row in reply.rows)
            if not reply.has_more or not reply.rows:
                break
            index = reply.next_index if reply.next_index > index else index + len(reply.rows)
        return out
