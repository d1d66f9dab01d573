"""The page-token rules every List RPC shares, and paging a list that spans several providers."""

from __future__ import annotations

import base64
import json

import pytest

from services.common.errors import InvalidArgument
from services.common.paging import page_across_providers


class Provider:
    """Items newest first; the cursor is the index of the next item."""

    def __init__(self, items: list[str]) -> None:
        self.items = items

    async def page(self, cursor: str, limit: int) -> tuple[list[str], str]:
        start = int(cursor or 0)
        chunk = self.items[start:start + limit]
        return chunk, str(start + limit) if start + limit < len(self.items) else ""


PROVIDERS = {"b": Provider(["b1", "b2", "b3"]), "a": Provider(["a1", "a2"])}


async def fetch(provider: Provider, cursor: str, limit: int):
    return await provider.page(cursor, limit)


async def test_pages_walk_every_provider_in_id_order_and_may_span_two():
    seen, token, pages = [], "", 0
    while True:
        page, token = await page_across_providers(PROVIDERS, 2, token, fetch)
        seen += page
        pages += 1
        assert len(page) <= 2
        if not token:
            break
    assert seen == ["a1", "a2", "b1", "b2", "b3"] and pages == 3


def token_of(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize("value", [[["a"], ""], ["a", 5], {"a": ""}, ["a"], "a", None])
async def test_tokens_of_the_wrong_shape_are_invalid_argument_not_internal(value):
    with pytest.raises(InvalidArgument, match="page_token is not one this server issued") as caught:
        await page_across_providers(PROVIDERS, 2, token_of(value), fetch)
    assert caught.value.reason == "BAD_PAGE_TOKEN"


async def test_a_token_naming_a_provider_this_service_does_not_run_says_so():
    with pytest.raises(InvalidArgument, match="provider 'gone', which this service does not run"):
        await page_across_providers(PROVIDERS, 2, token_of(["gone", ""]), fetch)


async def test_undecodable_tokens_are_invalid_argument():
    for token in ("%%%", base64.urlsafe_b64encode(b"not json").decode()):
        with pytest.raises(InvalidArgument, match="page_token is not one this server issued"):
            await page_across_providers(PROVIDERS, 2, token, fetch)


def test_a_providers_cursor_resumes_after_the_last_item_of_a_page():
    from services.common.paging import decode_time_cursor, newest_first_page

    class Job:
        def __init__(self, create_time: float, job_id: str) -> None:
            self.create_time, self.job_id = create_time, job_id

    read = [Job(3.25, "c"), Job(2.0, "b"), Job(2.0, "a")]  # limit 2, read with limit + 1
    page, cursor = newest_first_page(read, 2)
    assert [j.job_id for j in page] == ["c", "b"] and decode_time_cursor(cursor) == (2.0, "b")
    assert newest_first_page(read[:2], 2) == (read[:2], "")  # nothing beyond: no cursor
    assert decode_time_cursor("") is None
    with pytest.raises(InvalidArgument, match="page_token is not one this server issued"):
        decode_time_cursor("yesterday|b")
