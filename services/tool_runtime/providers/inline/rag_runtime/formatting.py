"""Knowledge-search results as Llama Stack's ``knowledge_search`` tool presents them to a model.

    knowledge_search tool found 2 chunks:
    BEGIN of knowledge_search tool results.
    Result 1
    Content: Employees get 25 vacation days per year.
    Metadata: {'document_id': 'handbook', 'chunk_id': '...', 'source': 'file:///...', 'position': 0}
    Result 2
    ...
    END of knowledge_search tool results.
    The above results were retrieved to help answer the user's query: "...". Use them as supporting
    information only in answering this query.

Chunks are taken best first until the token budget (``max_tokens_in_context``) would be exceeded;
"found N" counts the chunks listed.
"""

from __future__ import annotations

from typing import Any, Callable

from services.tool_runtime.providers.base import Citation

__all__ = ["CONTEXT_METADATA_EXCLUDED", "pick_within_budget", "format_results", "plain"]

# Bookkeeping keys of a chunk's metadata that mean nothing to a model.
CONTEXT_METADATA_EXCLUDED = frozenset({"token_count", "metadata_token_count", "char_start", "char_end",
                                       "chunk_tokenizer", "chunk_count", "mime_type"})


def plain(value: Any) -> Any:
    """Struct numbers come back as floats: show 3, not 3.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def pick_within_budget(citations: list[Citation], budget: int, count_tokens: Callable[[str], int]) -> list[Citation]:
    picked, tokens = [], 0
    for citation in citations:
        tokens += int(citation.metadata.get("token_count") or count_tokens(citation.text))
        if tokens > budget:
            break
        picked.append(citation)
    return picked


def _context_metadata(citation: Citation) -> dict[str, Any]:
    shown: dict[str, Any] = {"document_id": citation.document_id, "chunk_id": citation.chunk_id}
    shown.update({k: plain(v) for k, v in citation.metadata.items()
                  if k not in CONTEXT_METADATA_EXCLUDED and k not in shown})
    return shown


def format_results(query: str, picked: list[Citation]) -> str:
    parts = [f"knowledge_search tool found {len(picked)} chunks:\nBEGIN of knowledge_search tool results.\n"]
    for i, citation in enumerate(picked, start=1):
        parts.append(f"Result {i}\nContent: {citation.text}\nMetadata: {_context_metadata(citation)}\n")
    parts.append("END of knowledge_search tool results.\n")
    parts.append(f'The above results were retrieved to help answer the user\'s query: "{query}". '
                 f"Use them as supporting information only in answering this query.\n")
    return "".join(parts)
