"""The shape of a base model (parameters, layers, widths, vocabulary), read without loading it.

A request's memory estimate needs these numbers before anything is queued, in milliseconds: a
GGUF's header is parsed here directly (``gguf.GGUFReader`` maps and decodes every field and takes
seconds), a transformers folder's from ``config.json`` and the safetensors headers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import struct
from typing import Any, BinaryIO

__all__ = ["ModelShape", "gguf_shape", "folder_shape", "shape_of"]

# GGUF value types -> struct format of a scalar (strings and arrays handled apart)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclasses.dataclass(frozen=True)
class ModelShape:
    architecture: str
    params: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // max(self.heads, 1)


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    return f.read(_read(f, "<Q")).decode("utf-8", "replace")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = _read(f, "<I"), _read(f, "<Q")
        if item in _SCALARS:  # skipped, only the length is kept (token scores, types)
            f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _value(f, item)
        return count
    raise ValueError(f"unknown GGUF value type {kind}")


@functools.lru_cache(maxsize=32)
def _gguf_cached(path: str, size: int, mtime: float) -> ModelShape:
    with open(path, "rb", buffering=1 << 20) as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        _read(f, "<I")  # version
        n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _string(f)
            fields[key] = _value(f, _read(f, "<I"))
        params = 0
        for _ in range(n_tensors):
            _string(f)
            dims = [_read(f, "<Q") for _ in range(_read(f, "<I"))]
            _read(f, "<I"), _read(f, "<Q")  # type, offset
            count = 1
            for d in dims:
                count *= d
            params += count
    arch = str(fields.get("general.architecture", "llama"))

    def get(name: str, default: int = 0) -> int:
        return int(fields.get(f"{arch}.{name}", default) or default)

    heads = get("attention.head_count", 1)
    vocab = get("vocab_size") or int(fields.get("tokenizer.ggml.tokens", 0))
    return ModelShape(arch, params, get("embedding_length"), get("block_count"), heads,
                      get("attention.head_count_kv", heads), get("feed_forward_length"), vocab)


def gguf_shape(path: str | pathlib.Path) -> ModelShape:
    stat = pathlib.Path(path).stat()
    return _gguf_cached(str(path), stat.st_size, stat.st_mtime)


def _safetensors_params(folder: pathlib.Path) -> int:
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(_read(f, "<Q")))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for d in info.get("shape", []):
                    count *= int(d)
                total += count
    return total


def folder_shape(path: str | pathlib.Path) -> ModelShape:
    folder = pathlib.Path(path)
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)
    hidden, layers = int(config.get("hidden_size", 0)), int(config.get("num_hidden_layers", 0))
    heads = int(config.get("num_attention_heads", 1))
    vocab, inter = int(config.get("vocab_size", 0)), int(config.get("intermediate_size", 4 * hidden))
    params = _safetensors_params(folder)
    if not params:  # no safetensors (a .bin model): the usual decoder formula
        params = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2) + layers * (
            4 * hidden * hidden + 3 * hidden * inter)
    return ModelShape(str(config.get("model_type", "")), params, hidden, layers, heads,
                      int(config.get("num_key_value_heads", heads)), inter, vocab)


def shape_of(kind: str, path: str) -> ModelShape:
    """The shape of a base given as in ``BaseSource`` (kind "gguf" or "transformers")."""
    return gguf_shape(path) if kind == "gguf" else folder_shape(path)
