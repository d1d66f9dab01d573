"""Keyword search for providers whose store has none of its own: Okapi BM25 over chunk texts.

Tokens are lower-cased runs of word characters, as SQLite FTS5's default ``unicode61`` tokenizer
splits them, so every provider ranks the same query alike. A query matches a chunk that holds any of
its words; IDF is ``log(1 + (N - df + 0.5) / (df + 0.5))`` (never negative), k1 = 1.2, b = 0.75.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter

__all__ = ["tokenize", "query_terms", "BM25Index"]

_TOKEN = re.compile(r"\w+")
MAX_QUERY_TERMS = 32


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def query_terms(text: str) -> list[str]:
    """The distinct words of a query, in order, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(tokenize(text)))[:MAX_QUERY_TERMS]


class BM25Index:
    """An in-memory inverted index of documents keyed by integer ids."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.postings: dict[str, dict[int, int]] = {}
        self.terms: dict[int, tuple[str, ...]] = {}  # doc -> its distinct terms (for removal)
        self.lengths: dict[int, int] = {}
        self.total_length = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def add(self, doc_id: int, text: str) -> None:
        self.remove(doc_id)
        tokens = tokenize(text)
        counts = Counter(tokens)
        for term, tf in counts.items():
            self.postings.setdefault(term, {})[doc_id] = tf
        self.terms[doc_id] = tuple(counts)
        self.lengths[doc_id] = len(tokens)
        self.total_length += len(tokens)

    def remove(self, doc_id: int) -> None:
        length = self.lengths.pop(doc_id, None)
        if length is None:
            return
        self.total_length -= length
        for term in self.terms.pop(doc_id, ()):
            docs = self.postings.get(term)
            if docs is not None:
                docs.pop(doc_id, None)
                if not docs:
                    del self.postings[term]

    def search(self, text: str, k: int, total_docs: int | None = None) -> list[tuple[int, float]]:
        """(doc_id, score) of the ``k`` best documents, best first. ``total_docs`` overrides N when
        this index holds only a candidate subset of a larger collection."""
        n = max(total_docs or 0, len(self.lengths))
        if not n or k <= 0:
            return []
        average = self.total_length / max(len(self.lengths), 1) or 1.0
        scores: dict[int, float] = {}
        for term in query_terms(text):
            docs = self.postings.get(term)
            if not docs:
                continue
            idf = math.log(1.0 + (n - len(docs) + 0.5) / (len(docs) + 0.5))
            for doc_id, tf in docs.items():
                norm = self.k1 * (1.0 - self.b + self.b * self.lengths[doc_id] / average)
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf * (self.k1 + 1.0) / (tf + norm)
        return heapq.nlargest(k, scores.items(), key=lambda item: item[1])
