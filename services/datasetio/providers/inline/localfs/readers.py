"""Reading a dataset file into JSON-safe rows: CSV/TSV (pandas), JSONL/JSON (json), Parquet (pyarrow).

The format is chosen by extension. Every value comes out as what a ``google.protobuf.Struct`` can
carry: NaN/inf and missing cells -> None, numpy scalars -> Python, timestamps/dates -> ISO 8601
strings, Decimal -> float, bytes -> UTF-8 text (base64 when not text).

Choices that differ from "pandas defaults everywhere", and why:
- JSONL and JSON are parsed with the standard library, not ``pandas.read_json``: each row stays
  exactly as written (no NaN-filled columns for keys a row lacks, nested objects and ints intact,
  no date guessing), and it is faster.
- CSV keeps pandas' number inference (so ``id,score`` columns are numbers, as in JSONL and Parquet)
  but only an empty cell is missing: pandas' default NA strings ("NA", "None", "null", "n/a" ...)
  are legitimate answers in eval datasets and stay text.
Problems with the file itself are FAILED_PRECONDITION naming the path: the dataset is registered
but cannot be served until the file is fixed.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import os
import pathlib
import urllib.parse
import uuid
from typing import Any

from services.common.errors import FailedPrecondition

__all__ = ["FORMATS", "path_of", "format_of", "read_rows", "json_safe"]

FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                           ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def path_of(uri: str) -> pathlib.Path:
    """The local path of a ``file://`` URI (``file:///abs``, ``file://localhost/abs``, percent-escapes
    decoded); a relative path is taken relative to this service's working directory."""
    if not uri.startswith("file://"):
        raise FailedPrecondition(f"uri '{uri}' is not a file:// URI; inline::localfs reads local files only",
                                 reason="DATASET_URI_UNSUPPORTED", metadata={"uri": uri})
    rest = uri[len("file://"):]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost"):]
    path = pathlib.Path(urllib.parse.unquote(rest)).expanduser()
    return path if path.is_absolute() else pathlib.Path(os.getcwd()) / path


def format_of(path: pathlib.Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FailedPrecondition(f"dataset file {path} has extension '{path.suffix}', which inline::localfs cannot "
                                 f"read; use one of {', '.join(FORMATS)}", reason="DATASET_FORMAT_UNSUPPORTED",
                                 metadata={"path": str(path)})
    return fmt


def _bad_file(path: pathlib.Path, problem: str) -> FailedPrecondition:
    return FailedPrecondition(f"dataset file {path} cannot be read: {problem}; fix the file (it is re-read when it "
                              f"changes)", reason="DATASET_FILE_INVALID", metadata={"path": str(path)})


def json_safe(value: Any) -> Any:
    """``value`` as JSON-safe Python (see the module docstring)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return _json_safe_other(value)


def _json_safe_other(value: Any) -> Any:
    import numpy as np
    import pandas as pd

    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return pd.Timedelta(value).isoformat()
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def _nonfinite(_constant: str) -> None:
    return None  # NaN, Infinity, -Infinity (Python's json accepts them; a Struct row has no NaN)


def _jsonl(path: pathlib.Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_nonfinite)
        except json.JSONDecodeError as err:
            raise _bad_file(path, f"line {number} is not JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise _bad_file(path, f"line {number} is a JSON {type(row).__name__}, not an object; each line is one row "
                                  f"object")
        rows.append(row)
    return rows


def _json(path: pathlib.Path, text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text, parse_constant=_nonfinite)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON Lines under a .json name
            return _jsonl(path, text)
        raise _bad_file(path, f"not JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(data, list) or any(not isinstance(row, dict) for row in data):
        raise _bad_file(path, "a .json dataset must be a list of row objects (or use .jsonl, one object per line)")
    return data


def _csv(path: pathlib.Path, separator: str) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep=separator, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, ValueError) as err:
        raise _bad_file(path, f"not valid {'TSV' if separator == chr(9) else 'CSV'} ({err})") from None
    return [{str(k): json_safe(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _parquet(path: pathlib.Path) -> list[dict[str, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pyarrow.ArrowException as err:
        raise _bad_file(path, f"not valid Parquet ({err})") from None
    return [{str(k): json_safe(v) for k, v in row.items()} for row in table.to_pylist()]


def read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """Every row of the file at ``path`` (blocking: call it from a worker thread)."""
    fmt = format_of(path)
    try:
        if fmt in ("jsonl", "json"):
            text = path.read_text(encoding="utf-8-sig")
            return _jsonl(path, text) if fmt == "jsonl" else _json(path, text)
        if fmt in ("csv", "tsv"):
            return _csv(path, "," if fmt == "csv" else "\t")
        return _parquet(path)
    except FileNotFoundError:
        raise FailedPrecondition(f"dataset file {path} does not exist; create it or re-register the dataset with "
                                 f"the right file:// URI", reason="DATASET_FILE_MISSING",
                                 metadata={"path": str(path)}) from None
    except UnicodeDecodeError as err:
        raise _bad_file(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (PermissionError, IsADirectoryError) as err:
        raise _bad_file(path, err.strerror or type(err).__name__) from None
