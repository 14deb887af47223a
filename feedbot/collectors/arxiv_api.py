"""arXiv through the `arxiv` package: search and category queries, newest first.

All arXiv sources share one `arxiv.Client` behind one lock, so however many queries there are,
the API sees one request at a time with its 3-second spacing. The people's author queries that
are due together go out as one request (`au:"A" OR au:"B" OR ...`) and each result is handed
to the people among its authors. `result_to_item`, `author_query`, `name_key` and `attribute`
are pure.
"""

from __future__ import annotations

import asyncio
import os
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import arxiv
import requests
from lxml import etree

from ..config import SourceSpec
from ..items import Item, split_arxiv_id, utc
from ..store import SourceState
from ..text import html_to_text, shorten
from . import Collected, Context, SourceError

API_URL = "https://export.arxiv.org/api/query?{}"
DELAY = 3.0  # arXiv's terms of use: no more than one request every three seconds
MAX_PAGE = 2000  # the most results arXiv's API returns for one request
AUTHOR_BATCH = 20  # names per batched author query: one request, a URL well under 2 KB
BATCH_MAX_RESULTS = 1000  # results asked for in one batched author query (20 people × 50)
ATOM_FEED = "{http://www.w3.org/2005/Atom}feed"


class ArxivNotAFeed(requests.RequestException):
    """arXiv answered 200 with something that is not an Atom feed (a maintenance page, nothing)."""


class _TimeoutSession(requests.Session):
    """The arxiv package calls `session.get` with no timeout; a hung server would hang us. It
    also reads any 200 as a feed, so a maintenance page or an empty body would pass for "no
    results": such an answer raises ArxivNotAFeed here, before the package parses it."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        response = super().request(*args, **kwargs)
        if response.status_code == 200:
            problem = not_a_feed(response.content)
            if problem:
                raise ArxivNotAFeed(problem, response=response)
        return response


def not_a_feed(content: bytes) -> str:
    """'' when `content` is an Atom document, else what it is instead, in words. Pure."""
    if not content.strip():
        return "an empty response"
    parser = etree.XMLPullParser(events=("start",), recover=True, resolve_entities=False,
                                 no_network=True)
    root = None
    try:
        parser.feed(content[:65536])  # the root element is all we look at
        root = next((el for _, el in parser.read_events()), None)
    except etree.LxmlError:
        pass
    if root is not None and root.tag == ATOM_FEED:
        return ""
    what = f"a <{str(root.tag).rpartition('}')[2]}> document" if root is not None else "not XML"
    text = html_to_text(content[:4096].decode("utf-8", "replace"))
    text = shorten("".join(c for c in text if c.isprintable()), 80)
    return f"{what} ({text})" if text else what


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
        """Newest first; one page as big as `max_results` (up to arXiv's 2000), so one request.

        Runs in a worker thread with `lock` held. arXiv answers a bad query with its error feed
        and HTTP 400, which the client raises as `arxiv.HTTPError`."""
        search = arxiv.Search(query=query, max_results=max_results,
                              sort_by=arxiv.SortCriterion.SubmittedDate,
                              sort_order=arxiv.SortOrder.Descending)
        self.client.page_size = max(1, min(MAX_PAGE, max_results))
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
    if isinstance(e, ArxivNotAFeed):
        return f"arXiv answered with something that is not a feed: {e}"
    if isinstance(e, arxiv.HTTPError):
        return f"arXiv API answered HTTP {e.status}"
    if isinstance(e, arxiv.UnexpectedEmptyPageError):
        return "arXiv API returned an unexpected empty page"
    if isinstance(e, requests.Timeout):
        return "arXiv API timed out"
    if isinstance(e, requests.ConnectionError):
        return "cannot reach the arXiv API"
    return f"{type(e).__name__}: {e}"


async def gated_search(gate: ArxivGate, query: str, max_results: int) -> list[arxiv.Result]:
    """One search through the shared lock (so one request at a time, spaced by the client)."""
    async with gate.lock:
        try:
            return await asyncio.to_thread(gate.search, query, max_results)
        except (arxiv.ArxivError, requests.RequestException) as e:
            raise ArxivFetchError(describe_error(e)) from e


async def collect_arxiv(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
    results = await gated_search(ctx.arxiv, spec.target, spec.max_items)
    items = [result_to_item(r, spec.name, spec.person) for r in results]
    return Collected(items)


# --- the people's author queries, batched -------------------------------------------------------

_AUTHOR_TARGET = re.compile(r'au:"([^"]+)"')
_NOT_NAME = re.compile(r"[^\w\s-]|[\d_]")
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})


def author_name(spec: SourceSpec) -> str | None:
    """The arXiv name of a person's author query (`au:"Name"`, as config writes it), else None."""
    if spec.kind != "arxiv" or not spec.person:
        return None
    m = _AUTHOR_TARGET.fullmatch(spec.target.strip())
    return m.group(1).strip() if m else None


def author_query(names: Sequence[str]) -> str:
    """`au:"A" OR au:"B" OR ...`: one arXiv search for every paper by any of `names`."""
    return " OR ".join(f'au:"{n}"' for n in names)


def name_key(name: str) -> tuple[str, str] | None:
    """(surname, first initial) of a name, normalised: NFKD, accents stripped, casefolded,
    only letters, spaces and hyphens kept. "Yann LeCun", "Y. LeCun" and "LeCun, Yann" all give
    ("lecun", "y"); "Jr."-style suffixes are dropped. None for a name with no letters."""
    if "," in name:  # "Surname, First"
        last, _, first = name.partition(",")
        name = f"{first} {last}"
    plain = "".join(c for c in unicodedata.normalize("NFKD", name)
                    if not unicodedata.combining(c)).casefold()
    words = [w.strip("-") for w in _NOT_NAME.sub(" ", plain).split()]
    words = [w for w in words if w]
    while len(words) > 1 and words[-1] in _SUFFIXES:
        words.pop()
    if not words:
        return None
    return words[-1], words[0][0]


def attribute(results: Sequence[Any], specs: Sequence[SourceSpec]) -> dict[str, list[Any]]:
    """Each spec's share of one batched author query's results, newest first, at most its
    `max_items`. A result goes to every spec whose author is among the result's authors (a
    paper by two followed people goes to both). arXiv's `au:` search is fuzzy (it matches
    words of a name anywhere, e.g. another "Johnson"), so a result matching nobody is dropped."""
    out: dict[str, list[Any]] = {s.name: [] for s in specs}
    keys = {s.name: name_key(author_name(s) or "") for s in specs}
    newest = sorted(results, key=lambda r: r.published, reverse=True)
    for r in newest:
        theirs = {name_key(a.name) for a in r.authors}
        for s in specs:
            got = out[s.name]
            if keys[s.name] is not None and keys[s.name] in theirs and len(got) < s.max_items:
                got.append(r)
    return out


def batch_max_results(specs: Sequence[SourceSpec]) -> int:
    """How many results one batched query asks for: the specs' max_items together, capped."""
    return max(1, min(BATCH_MAX_RESULTS, MAX_PAGE, sum(s.max_items for s in specs)))


async def fetch_author_batch(gate: ArxivGate, specs: Sequence[SourceSpec]
                             ) -> dict[str, list[Item]]:
    """One request for every spec's author; each spec's items, tagged with its name and person.

    Raises `ArxivFetchError` (naming the batch) when the request fails; the caller gives that
    error to every spec in the batch."""
    names = [author_name(s) or "" for s in specs]
    try:
        results = await gated_search(gate, author_query(names), batch_max_results(specs))
    except ArxivFetchError as e:
        raise ArxivFetchError(f"{e} (one request for {len(specs)} people's author queries)") \
            from e
    shares = attribute(results, specs)
    return {s.name: [result_to_item(r, s.name, s.person) for r in shares[s.name]]
            for s in specs}


class ArxivFetchError(SourceError):
    pass
