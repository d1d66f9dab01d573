"""inline::localfs reading real files in a tmp dir: value conversion per format, URIs, the file cache."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import os
import pathlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.common.errors import FailedPrecondition
from services.datasetio.providers.base import page_of
from services.datasetio.providers.inline.localfs.readers import json_safe, path_of, read_rows
from services.datasetio.providers.inline.localfs.sources import SourceFiles


def test_parquet_values_come_out_json_safe(tmp_path):
    when = datetime.datetime(2025, 3, 1, 12, 30, tzinfo=datetime.timezone.utc)
    table = pa.table({
        "ts": pa.array([when, None], pa.timestamp("us", tz="UTC")),
        "naive": pa.array([datetime.datetime(2025, 1, 2, 3, 4, 5), None], pa.timestamp("ms")),
        "day": pa.array([datetime.date(2024, 2, 29), None], pa.date32()),
        "price": pa.array([decimal.Decimal("12.50"), None], pa.decimal128(6, 2)),
        "score": pa.array([float("nan"), 1.5], pa.float64()),
        "count": pa.array([None, 7], pa.int64()),
        "blob": pa.array([b"hello", b"\xff\x00"], pa.binary()),
        "messages": [[{"role": "user", "content": "hi"}], []],
    })
    pq.write_table(table, tmp_path / "types.parquet")
    rows = read_rows(tmp_path / "types.parquet")
    assert rows[0] == {"ts": "2025-03-01T12:30:00+00:00", "naive": "2025-01-02T03:04:05", "day": "2024-02-29",
                       "price": 12.5, "score": None, "count": None, "blob": "hello",
                       "messages": [{"role": "user", "content": "hi"}]}
    assert rows[1]["ts"] is None and rows[1]["count"] == 7 and rows[1]["blob"] == "/wA="  # base64: not text
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows


def test_json_safe_handles_numpy_and_pandas_values():
    import numpy as np

    value = {"a": np.int64(3), "b": np.float32(0.5), "c": np.array([1, 2]), "d": pd.NaT,
             "e": pd.Timestamp("2024-01-01"),
             "f": float("inf"), "g": (1, np.bool_(True)), 4: "key"}
    assert json_safe(value) == {"a": 3, "b": 0.5, "c": [1, 2], "d": None, "e": "2024-01-01T00:00:00", "f": None,
                                "g": [1, True], "4": "key"}


def test_csv_keeps_na_words_as_text_and_empty_cells_missing(tmp_path):
    (tmp_path / "qa.csv").write_text('input_query,expected_answer,messages,n\n'
                                     'q1,NA,"[{""role"": ""user"", ""content"": ""hi""}]",1\n'
                                     'q2,,null,\n')
    rows = read_rows(tmp_path / "qa.csv")
    assert rows == [{"input_query": "q1", "expected_answer": "NA", "messages": '[{"role": "user", "content": "hi"}]',
                     "n": 1.0},
                    {"input_query": "q2", "expected_answer": None, "messages": "null", "n": None}]
    (tmp_path / "empty.csv").write_text("")
    assert read_rows(tmp_path / "empty.csv") == []


def test_json_files_exactly_as_written(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('\ufeff{"a": 1, "nested": {"x": [1, 2]}}\n\n{"a": NaN, "b": "only here"}\n')
    assert read_rows(path) == [{"a": 1, "nested": {"x": [1, 2]}}, {"a": None, "b": "only here"}]
    (tmp_path / "lines.json").write_text('{"a": 1}\n{"a": 2}\n')  # JSON Lines under a .json name
    assert read_rows(tmp_path / "lines.json") == [{"a": 1}, {"a": 2}]
    (tmp_path / "list.json").write_text('[{"a": 1}, {"a": 2}]')
    assert read_rows(tmp_path / "list.json") == [{"a": 1}, {"a": 2}]
    (tmp_path / "object.json").write_text('{"rows": [{"a": 1}]}')
    with pytest.raises(FailedPrecondition, match="must be a list of row objects"):
        read_rows(tmp_path / "object.json")
    (tmp_path / "scalar.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(FailedPrecondition, match="line 2 is a JSON list, not an object"):
        read_rows(tmp_path / "scalar.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"a": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(FailedPrecondition, match="not UTF-8"):
        read_rows(tmp_path / "latin1.jsonl")


def test_file_uris(tmp_path, monkeypatch):
    assert path_of("file:///data/qa.jsonl") == pathlib.Path("/data/qa.jsonl")
    assert path_of("file://localhost/data/qa.jsonl") == pathlib.Path("/data/qa.jsonl")
    assert path_of("file:///data/my%20qa.jsonl") == pathlib.Path("/data/my qa.jsonl")
    monkeypatch.chdir(tmp_path)
    assert path_of("file://sub/qa.jsonl") == pathlib.Path(os.getcwd()) / "sub" / "qa.jsonl"
    with pytest.raises(FailedPrecondition, match="not a file:// URI"):
        path_of("https://example.com/qa.jsonl")


def test_page_bounds_over_source_and_appended_rows():
    source = [{"i": i} for i in range(5)]
    assert page_of(source, 0, 3) == ([{"i": 0}, {"i": 1}, {"i": 2}], 0, 0)
    assert page_of(source, 3, 4) == ([{"i": 3}, {"i": 4}], 0, 2)
    assert page_of(source, 7, 2) == ([], 2, 2)
    assert page_of([], 0, 100) == ([], 0, 100)


async def test_file_cache_reads_once_shares_a_read_and_evicts_by_rows(tmp_path):
    def write(name: str, n: int) -> pathlib.Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
        return path

    a, b, c = write("a.jsonl", 40), write("b.jsonl", 40), write("c.jsonl", 30)
    files = SourceFiles(max_rows=80)
    first = await asyncio.gather(*(files.get(a) for _ in range(5)))  # concurrent first pages: one read
    assert files.reads == 1 and all(f is first[0] for f in first)
    await files.get(b)
    await files.get(a)  # a is the most recently used now
    assert files.reads == 2 and files.cached_rows == 80
    await files.get(c)  # 110 rows > 80: b (least recently used) goes
    assert files.cached_rows == 70 and files.reads == 3
    await files.get(b)
    assert files.reads == 4
    stat = os.stat(a)
    write("a.jsonl", 41)
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert len((await files.get(a)).rows) == 41 and files.reads == 5  # changed: read again
    assert len((await files.get(a)).rows) == 41 and files.reads == 5  # unchanged since: cached


def test_appended_rows_folder_follows_the_llama_stack_store_keys(tmp_path):
    from services.common.config import parse_config
    from services.common.provider_host import build_providers

    def folder(config: dict) -> pathlib.Path:
        stack = parse_config({"version": 2, "providers": {"datasetio": [
            {"provider_id": "localfs", "provider_type": "inline::localfs", "config": config}]},
            "storage": {"backends": {"kv_default": {"type": "kv_sqlite", "db_path": str(tmp_path / "kv" / "store.db")}},
                        "stores": {"metadata": {"backend": "kv_default"}}},
            "mesh": {"registry_db": str(tmp_path / "registry.db")}})
        provider = build_providers("datasetio", stack)["localfs"]
        provider.resolve_storage(stack)
        return provider.folder

    # Llama Stack 0.4's own entry names a backend under kvstore
    assert folder({"kvstore": {"namespace": "datasetio::localfs", "backend": "kv_default"}}) == \
        tmp_path / "kv" / "datasetio" / "datasetio__localfs"
    assert folder({"persistence": {"backend": "kv_default", "namespace": "rows"}}) == \
        tmp_path / "kv" / "datasetio" / "rows"
    assert folder({"kvstore": {"type": "sqlite", "db_path": str(tmp_path / "old" / "kv.db")}}) == \
        tmp_path / "old" / "datasetio" / "localfs"
    assert folder({}) == tmp_path / "datasetio" / "localfs"
    assert folder({"data_dir": str(tmp_path / "mine")}) == tmp_path / "mine"
