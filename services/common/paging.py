"""Opaque page tokens and page-size limits shared by every List RPC."""

from __future__ import annotations

import base64

from services.common.errors import InvalidArgument

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "page_size", "encode_token", "decode_token"]

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode() if last_key else ""


def decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        raise InvalidArgument("page_token is not one this server issued; pass next_page_token unchanged") from None
