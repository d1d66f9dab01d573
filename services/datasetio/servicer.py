"""DatasetIOService: proto <-> domain around the core; no paging or storage logic here.

One wire rule lives here because it is about the wire: a reply stays under ``PAGE_MAX_BYTES``
(below gRPC's default 4 MiB receive limit, so any client can read any page). When ``limit`` rows
would not fit, the page ends early — at least one row — and ``next_index``/``has_more`` say where
to go on, exactly as for a page cut by ``limit``.
"""

from __future__ import annotations

from typing import Iterable

from google.protobuf import json_format, struct_pb2

from services.common.errors import InvalidArgument
from services.datasetio.core import DatasetIOCore
from services.datasetio.providers.base import KeptRow, Row, RowPage
from stackmesh.datasetio.v1 import datasetio_pb2 as pb, datasetio_pb2_grpc

__all__ = ["DatasetIOServicer", "PAGE_MAX_BYTES", "page_reply", "rows_in"]

PAGE_MAX_BYTES = 4_000_000  # 4 MiB is 4,194,304; the rest is room for the reply's other fields
_ROW_OVERHEAD = 6  # field tag + length prefix of one row (a length under 2**35)


def encoded(row: Row) -> bytes:
    """The row as a serialized Struct, memoized on rows the provider keeps (``KeptRow``)."""
    data = getattr(row, "encoded", None)
    if data is None:
        message = struct_pb2.Struct()
        message.update(row)
        data = message.SerializeToString()
        if isinstance(row, KeptRow):
            row.encoded = data
    return data


def page_reply(page: RowPage, max_bytes: int = PAGE_MAX_BYTES) -> pb.IterRowsResponse:
    reply = pb.IterRowsResponse(total_rows=page.total_rows)
    size = 0
    for row in page.rows:
        data = encoded(row)
        size += len(data) + _ROW_OVERHEAD
        if size > max_bytes and reply.rows:
            break
        reply.rows.add().MergeFromString(data)
    sent = len(reply.rows)
    if sent < len(page.rows):
        reply.next_index, reply.has_more = page.start + sent, True
    else:
        reply.next_index, reply.has_more = page.next_index, page.has_more
    return reply


def rows_in(messages: Iterable[struct_pb2.Struct]) -> list[Row]:
    rows = []
    for index, message in enumerate(messages):
        try:
            rows.append(json_format.MessageToDict(message))
        except ValueError as err:  # NaN or infinity: JSON (and the stored rows) cannot hold them
            raise InvalidArgument(f"rows[{index}] cannot be stored ({err}); numbers must be finite, send null for a "
                                  f"missing value", reason="BAD_ROW", metadata={"request_row": index}) from None
    return rows


class DatasetIOServicer(datasetio_pb2_grpc.DatasetIOServiceServicer):
    def __init__(self, core: DatasetIOCore) -> None:
        self.core = core

    async def IterRows(self, request, context):
        page = await self.core.iter_rows(request.dataset_id, request.start_index, request.limit)
        return page_reply(page)

    async def AppendRows(self, request, context):
        result = await self.core.append_rows(request.dataset_id, rows_in(request.rows))
        return pb.AppendRowsResponse(appended=result.appended, total_rows=result.total_rows)
