"""arXiv through the `arxiv` package: search and category queries, newest first.

All arXiv sources share one `arxiv.Client` behind one lock, so however many queries there are,
the API sees one request at a time with its 3-second spacing. `result_to_item` is pure.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import arxiv
import requests

from ..config import SourceSpec
from ..items import Item, split_arxiv_id, utc
from ..store import SourceState
from ..text import html_to_text
from . import Collected, Context, SourceError

API_URL = "https://export.arxiv.org/api/query?{}"
DELAY = 3.0  # arXiv's terms of use: no more than one request every three seconds


class _TimeoutSession(requests.Session):
    """The arxiv package calls `session.get` with no timeout; a hung server would hang us."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        return super().request(*args, **kwargs)


class ArxivGate:
    """One arXiv client and one lock for the whole process."""

    def __init__(self, api_url: str | None = None, delay: float = DELAY, timeout: float = 30.0,
                 retries: int = 1) -> None:
        self.client = arxiv.Client(page_size=100, delay_seconds=delay, num_retries=retries)
        self.client.query_url_format = api_url or os.environ.get("FEEDBOT_ARXIV_API_URL") \
            or API_URL
        if "{}" not in self.client.query_url_format:
            self.client.query_url_format = self.client.query_url_format.rstrip("?") + "?{}"
        self.client._session = _TimeoutSession(timeout)
        self.lock = asyncio.Lock()

    def search(self, query: str, max_results: int) -> list[arxiv.Result]:
        search = arxiv.Search(query=query, max_results=max_results,
                              sort_by=arxiv.SortCriterion.SubmittedDate,
                              sort_order=arxiv.SortOrder.Descending)
        self.client.page_size = min(100, max_results)
        return list(self.client.results(search))


def result_to_item(r: arxiv.Result, source: str, person: str = "") -> Item:
    arxiv_id, version = split_arxiv_id(r.entry_id)
    abs_url = f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else r.entry_id
    return Item(
        title=" ".join(r.title.split()), url=abs_url, source=source, kind="paper",
        authors=tuple(a.name for a in r.authors), published=utc(r.published),
        summary=html_to_text(r.summary), guid=r.entry_id, arxiv_id=arxiv_id,
        arxiv_version=version, categories=tuple(r.categories), pdf_url=r.pdf_url or "",
        person=person,
    )


def describe_error(e: Exception) -> str:
    if isinstance(e, arxiv.HTTPError):
        return f"arXiv API answered HTTP {e.status}"
    if isinstance(e, arxiv.UnexpectedEmptyPageError):
        return "arXiv API returned an unexpected empty page"
    if isinstance(e, requests.Timeout):
        return "arXiv API timed out"
    if isinstance(e, requests.ConnectionError):
        return "cannot reach the arXiv API"
    return f"{type(e).__name__}: {e}"


async def collect_arxiv(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
    gate: ArxivGate = ctx.arxiv
    async with gate.lock:
        try:
            results = await asyncio.to_thread(gate.search, spec.target, spec.max_items)
        except (arxiv.ArxivError, requests.RequestException) as e:
            raise ArxivFetchError(describe_error(e)) from e
    items = [result_to_item(r, spec.name, spec.person) for r in results]
    return Collected(items)


class ArxivFetchError(SourceError):
    pass
