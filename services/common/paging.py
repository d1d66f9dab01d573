"""Opaque page tokens and page-size limits shared by every List RPC."""

from __future__ import annotations

import base64
import json
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from services.common.errors import InvalidArgument

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "page_size", "encode_token", "decode_token",
           "page_across_providers", "decode_time_cursor", "newest_first_page"]

T = TypeVar("T")

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


_FOREIGN_TOKEN = "page_token is not one this server issued; pass next_page_token unchanged"


async def page_across_providers(providers: Mapping[str, Any], requested_size: int, token: str,
                                fetch: Callable[[Any, str, int], Awaitable[tuple[list[T], str]]]) -> tuple[list[T], str]:
    """One page of a list that spans providers: providers in id order, each paged by its own cursor
    (``fetch(provider, cursor, limit) -> (items, next_cursor)``); one page may span two providers.
    The token carries the provider id and that provider's cursor."""
    limit = page_size(requested_size)
    order = sorted(providers)
    provider_id, cursor = (order[0] if order else ""), ""
    if token:
        try:
            decoded = json.loads(decode_token(token))
        except ValueError:
            raise InvalidArgument(_FOREIGN_TOKEN, reason="BAD_PAGE_TOKEN") from None
        if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(v, str) for v in decoded)):
            raise InvalidArgument(_FOREIGN_TOKEN, reason="BAD_PAGE_TOKEN")
        provider_id, cursor = decoded
        if provider_id not in providers:
            raise InvalidArgument(f"page_token names provider {provider_id!r}, which this service does not run; "
                                  "start again without a token", reason="BAD_PAGE_TOKEN")
    out: list[T] = []
    for index in range(order.index(provider_id) if order else 0, len(order)):
        provider_id = order[index]
        items, cursor = await fetch(providers[provider_id], cursor, limit - len(out))
        out.extend(items)
        if cursor:
            return out, encode_token(json.dumps([provider_id, cursor]))
        cursor = ""
        if len(out) >= limit:
            following = order[index + 1:]
            return out, encode_token(json.dumps([following[0], ""])) if following else ""
    return out, ""


def decode_time_cursor(cursor: str) -> tuple[float, str] | None:
    """A provider's cursor into a newest-first list: "<create_time>|<id>" of the last item seen."""
    if not cursor:
        return None
    stamp, _, identifier = cursor.partition("|")
    try:
        return float(stamp), identifier
    except ValueError:
        raise InvalidArgument(_FOREIGN_TOKEN, reason="BAD_PAGE_TOKEN") from None


def newest_first_page(items: list[Any], limit: int) -> tuple[list[Any], str]:
    """``items`` read with ``limit + 1``: the page, and the cursor after it ("" at the end). Items
    have ``create_time`` and ``job_id``."""
    page = items[:limit]
    return page, (f"{page[-1].create_time!r}|{page[-1].job_id}" if len(items) > limit and page else "")
