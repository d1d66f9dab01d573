"""Turn a RAG document into text: inline content, ``file://`` URIs on this service's filesystem,
or ``data:`` URIs (how a client sends a local file to a service on another machine).

Plain text and Markdown are read as UTF-8; PDFs (by MIME type, ``.pdf`` or the ``%PDF`` magic)
through pypdf, page texts joined by blank lines. Remote ``http(s)`` URIs are refused: the service
does not fetch from the network on a caller's behalf.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import mimetypes
import os
import pathlib
import urllib.parse
import urllib.request

from services.common.errors import InvalidArgument
from services.tool_runtime.providers.base import Document
from services.tool_runtime.providers.inline.rag_runtime.config import RagRuntimeConfig

__all__ = ["LoadedDocument", "load_document"]

PDF = "application/pdf"
_TEXT_SUFFIXES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown", ".pdf": PDF}


@dataclasses.dataclass(frozen=True)
class LoadedDocument:
    document_id: str
    text: str
    mime_type: str
    source: str  # the URI, or "inline"


def _bad(where: str, message: str, reason: str = "BAD_DOCUMENT") -> InvalidArgument:
    return InvalidArgument(f"{where}: {message}", reason=reason)


def _mime_of(name: str, declared: str, data: bytes) -> str:
    if declared:
        return declared.split(";")[0].strip().lower()
    if data[:5] == b"%PDF-":
        return PDF
    suffix = pathlib.PurePath(name).suffix.lower()
    return _TEXT_SUFFIXES.get(suffix) or mimetypes.guess_type(name)[0] or "text/plain"


def _pdf_text(data: bytes, where: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()
    except (PdfReadError, ValueError, KeyError) as err:
        raise _bad(where, f"not a readable PDF ({err})") from None


def _decode(data: bytes, mime: str, where: str) -> str:
    if mime == PDF:
        return _pdf_text(data, where)
    if not (mime.startswith("text/") or mime in ("application/json", "application/x-ndjson", "application/xml")):
        raise _bad(where, f"unsupported type {mime}; send text, Markdown or PDF", "UNSUPPORTED_DOCUMENT_TYPE")
    return data.decode("utf-8-sig", errors="replace")


def _read_file(uri: str, config: RagRuntimeConfig, where: str) -> tuple[bytes, str]:
    if not config.allow_file_uris:
        raise _bad(where, "file:// URIs are turned off on this service (allow_file_uris: false); send the "
                          "content or a data: URI", "FILE_URIS_DISABLED")
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise _bad(where, f"file URI host '{parsed.netloc}' is not this machine; use file:///absolute/path")
    path = pathlib.Path(urllib.request.url2pathname(parsed.path)).resolve()
    roots = [pathlib.Path(r).expanduser().resolve() for r in config.file_uri_roots]
    if roots and not any(path == r or r in path.parents for r in roots):
        raise _bad(where, f"{path} is outside the allowed file_uri_roots", "FILE_OUTSIDE_ROOTS")
    try:
        if path.is_dir():
            raise _bad(where, f"{path} is a directory; send one document per file")
        if path.stat().st_size > config.max_document_bytes:
            raise _bad(where, f"{path} is larger than max_document_bytes ({config.max_document_bytes})")
        return path.read_bytes(), path.name
    except OSError as err:
        raise _bad(where, f"cannot read {path} on the tool_runtime service's machine: {err.strerror}",
                   "DOCUMENT_UNREADABLE") from None


def _read_data_uri(uri: str, config: RagRuntimeConfig, where: str) -> tuple[bytes, str]:
    header, comma, payload = uri[len("data:"):].partition(",")
    if not comma:
        raise _bad(where, "malformed data: URI (no comma)")
    params = header.split(";")
    try:
        data = (base64.b64decode(payload, validate=True) if "base64" in params[1:]
                else urllib.parse.unquote_to_bytes(payload))
    except (binascii.Error, ValueError):
        raise _bad(where, "data: URI has invalid base64") from None
    if len(data) > config.max_document_bytes:
        raise _bad(where, f"document is larger than max_document_bytes ({config.max_document_bytes})")
    return data, params[0]


def load_document(doc: Document, index: int, config: RagRuntimeConfig) -> LoadedDocument:
    """Read and decode ``doc`` (the ``index``-th of its request, for messages); blocking."""
    where = f"documents[{index}]" + (f" ('{doc.document_id}')" if doc.document_id else "")
    if doc.content and doc.uri:
        raise _bad(where, "set either content or uri, not both")
    if doc.content:
        mime = (doc.mime_type or "text/plain").lower()
        if mime == PDF:
            raise _bad(where, "PDF content cannot travel in the text field; send it as a data: or file:// URI")
        text, source, name = doc.content, "inline", ""
    elif doc.uri:
        scheme = urllib.parse.urlparse(doc.uri).scheme.lower()
        if scheme == "file":
            data, name = _read_file(doc.uri, config, where)
            mime = _mime_of(name, doc.mime_type, data)
        elif scheme == "data":
            data, declared = _read_data_uri(doc.uri, config, where)
            name, mime = "", _mime_of("", doc.mime_type or declared, data)
        else:
            raise _bad(where, f"URI scheme '{scheme}' is not supported; use file:// or data:, or send the text "
                              f"as content (this service does not fetch from the network)", "UNSUPPORTED_URI")
        text, source = _decode(data, mime, where), doc.uri if scheme == "file" else "data-uri"
    else:
        raise _bad(where, "a document needs content or a uri", "DOCUMENT_EMPTY")
    if not text.strip():
        raise _bad(where, "the document has no text (a scanned PDF needs OCR first)", "DOCUMENT_EMPTY")
    document_id = doc.document_id or (os.path.basename(name) if name else
                                      "doc-" + hashlib.sha256(text.encode()).hexdigest()[:12])
    return LoadedDocument(document_id=document_id, text=text, mime_type=mime, source=source)
