"""arXiv through the `arxiv` package: search and category queries, newest first.

All arXiv sources share one `arxiv.Client` behind one lock, so however many queries there are,
the API sees one request at a time with its 3-second spacing, whatever became of the request
before (an error, a page that is not a feed, a timeout). Each HTTP request has an overall
deadline, enforced in the worker thread itself, and that thread is a daemon: a server that
drips bytes can neither hold the gate nor keep the process alive past it. The people's author
queries that are due together go out as one request (`au:"A" OR au:"B" OR ...`) and each
result is handed to the people among its authors; a lone author query is filtered the same
way. `result_to_item`, `is_withdrawn`, `author_query`, `name_key`, `attribute` and
`error_explanation` are pure. A withdrawn paper's item says so (`Item.withdrawn`): the store
does not take it in, and removes a copy stored before.

A query's newest papers can be more than one page: a busy category (cs.LG lists several hundred
papers a day) collected every 6 hours. A page that is full and still newer than the newest
paper the source took in last time (its cursor) is followed by the next one, PAGE_BACK_SIZE
papers at a time, up to PAGE_BACK papers in all; where that bound stops the reading short,
the source says papers may have been missed (`Collected.warning`, kept as its notice). A first
collection reads one page: it has nothing to reach back to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # no flock (Windows): the spacing holds within each process only
    fcntl = None  # type: ignore[assignment]

import arxiv
import requests
import urllib3
from lxml import etree
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..config import SourceSpec, feedbot_home
from ..http import DEADLINE, parse_retry_after
from ..items import Item, split_arxiv_id, utc
from ..store import SourceState
from ..text import html_to_text, shorten
from . import Collected, Context, SourceError, in_daemon_thread

log = logging.getLogger(__name__)


def _skip_entries_with_unreadable_dates() -> None:
    """The arxiv client (4.0.2, pinned) reads each entry's dates with `_feed._parse_datetime`,
    which raises on a date it cannot read (`garbage`, or Go's zero time with an offset, which
    leaves datetime's range in UTC): one such entry lost the whole answer, and for a batch of
    author queries every person in it. Made to answer None there, the client skips that entry
    with a warning, as it already does for an entry without a date."""
    try:
        from arxiv import _feed
    except ImportError:  # another layout: nothing to mend
        return
    parse = getattr(_feed, "_parse_datetime", None)
    if parse is None or getattr(parse, "feedbot_tolerant", False):
        return

    def tolerant(s: str | None) -> datetime | None:
        try:
            return parse(s)  # type: ignore[no-any-return]
        except (ValueError, OverflowError):
            return None

    tolerant.feedbot_tolerant = True  # type: ignore[attr-defined]
    _feed._parse_datetime = tolerant


_skip_entries_with_unreadable_dates()

API_URL = "https://export.arxiv.org/api/query?{}"
DELAY = 3.0  # arXiv's terms of use: no more than one request every three seconds
ARXIV_TURN = ".arxiv-turn"  # in $FEEDBOT_HOME: when this machine's last arXiv request ended
MAX_PAGE = 2000  # the most results arXiv's API returns for one request
AUTHOR_BATCH = 20  # names per batched author query: one request, a URL well under 2 KB
BATCH_MAX_RESULTS = 1000  # results asked for in one batched author query (20 people × 50)
CHUNK = 65536  # bytes read at a time, the deadline checked between reads
ATOM_FEED = "{http://www.w3.org/2005/Atom}feed"
ATOM = "{http://www.w3.org/2005/Atom}"
_FEED_END = re.compile(rb"</(?:[\w.-]+:)?feed>\s*$")  # how a whole Atom answer ends
RATE_LIMITED_PAUSE = timedelta(minutes=5)  # no query after a 429 that gave no Retry-After
# Reading back past the first page (see the module's docstring). arXiv's API manual asks for 3 s
# between requests, recommends refining a query that returns more than 1,000 results "or at
# least request smaller slices", and sends bulk harvesting to OAI-PMH: a collection reads at
# most 1,000 papers, in slices of 250 after its first page (with 50 there, five requests, about
# 15 s of the shared gate), which covers a busy category's day between two collections.
PAGE_BACK = 1000  # papers one collection of a query reads, at most, its first page included
PAGE_BACK_SIZE = 250  # papers per later page


class ArxivNotAFeed(requests.RequestException):
    """arXiv answered 200 with something that is not an Atom feed (a maintenance page, nothing)."""


class ArxivCutShort(requests.ConnectionError):
    """The answer ended before its feed did: the connection dropped mid-answer, or the body
    stopped short of `</feed>` (the package's parser recovers, and read such an answer as a
    whole feed: the last paper was stored with part of its authors, for good). A
    ConnectionError, which the package retries."""


class ArxivTimeout(requests.Timeout):
    """One request ran past its overall deadline (a server that drips its answer)."""

    def __init__(self, deadline: float) -> None:
        super().__init__(f"no complete answer within {deadline:g}s")
        self.deadline = deadline


class ArxivHTTPStatus(requests.HTTPError):
    """An answer not worth repeating at once: a 4xx, or any error that says when to come back
    (`Retry-After`). The arxiv package retries its own `HTTPError`; it does not retry this."""

    def __init__(self, status: int, retry_after: str | None, explanation: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        self.explanation = explanation


# --- one request's deadline, enforced in the thread that makes it -------------------------------

_CURRENT = threading.local()  # `.deadline`: the _Deadline of the request this thread is making


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the plain socket's, also for TLS: it wakes a read
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # blocked in another thread


class _Deadline:
    """An overall time limit for one request. When it passes, a watchdog timer shuts down the
    socket the request is reading from, which wakes a read that a dripping server would
    otherwise keep going for ever (requests' timeout only bounds the gap between bytes)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.expired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut(self._sock)

    def __enter__(self) -> _Deadline:
        _CURRENT.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _CURRENT.deadline = None


def _watch_socket(conn: Any) -> None:
    deadline = getattr(_CURRENT, "deadline", None)
    if deadline is not None and conn.sock is not None:
        deadline.watch(conn.sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _watch_socket(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _watch_socket(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _TimeoutSession(requests.Session):
    """What the arxiv package's `session.get` gets instead of a plain session.

    - Deadlines: the package passes no timeout; `timeout` bounds connecting and each gap between
      bytes, and `deadline` the whole request, however slowly the server drips (ArxivTimeout).
    - Not a feed: the package reads any 200 as a feed, so a maintenance page or an empty body
      would pass for "no results": such an answer raises ArxivNotAFeed here.
    - Errors: a 4xx, or an error with Retry-After, raises ArxivHTTPStatus (with arXiv's own
      explanation), which the package does not retry; other errors go back to the package,
      which retries them.
    - Spacing: every request (the package's retries too) starts `delay` seconds after the
      previous one ended, however it ended, counted in monotonic time. The package counts by the
      wall clock (`datetime.now()`, naive local time): set back an hour (daylight saving time
      ending, an NTP correction), it slept that hour before the next request.
    - Between processes: with `turn` (a file in $FEEDBOT_HOME), the spacing and "one request
      at a time" hold for every feedbot process of the machine (the daemon, and `feedbot
      digest` beside it), not only within this one (`_turn`)."""

    def __init__(self, timeout: float, deadline: float = DEADLINE, delay: float = 0.0,
                 turn: Path | None = None) -> None:
        super().__init__()
        self._timeout = timeout
        self._deadline = deadline
        self._delay = delay
        self._turn_file = turn
        self._turn_stuck = False  # another process held the turn past all patience (`_turn`)
        self._last_done: float | None = None  # time.monotonic() when the last request ended
        for adapter in self.adapters.values():
            manager = getattr(adapter, "poolmanager", None)
            if manager is not None:
                manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool,
                                                  "https": _WatchedHTTPSPool}

    def _wait_for_spacing(self) -> None:
        if self._last_done is not None:
            wait = self._last_done + self._delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This machine's turn to ask arXiv: an flock on the turn file, which holds when the
        last request of any process ended (`time.monotonic()`, one clock for every process of
        a boot; a time from an earlier boot makes no one wait longer than `delay`). Without
        the file (none given, no fcntl, a read-only home), only this process's spacing holds.

        A holder keeps the turn for at most two spacings and one request's deadline. One that
        keeps it far longer is stopped (Ctrl-Z) or stuck: it is waited for a bounded time (this
        thread must bound its time, see `in_daemon_thread`), then the request goes ahead
        without the turn, still spaced after the time in the file, and later ones do not wait
        for that holder again (only until the turn is had once more)."""
        fd = None
        if self._turn_file is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                self._turn_file.parent.mkdir(parents=True, exist_ok=True)  # as Store does
                fd = os.open(self._turn_file, os.O_RDWR | os.O_CREAT, 0o600)
        if fd is None:
            yield
            return
        try:
            patience = 0.0 if self._turn_stuck else 2 * (self._deadline + 2 * self._delay)
            give_up = time.monotonic() + patience
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by closing
                    self._turn_stuck = False
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up:
                        if not self._turn_stuck:
                            log.warning(
                                "arXiv: another feedbot process has held the turn for requests "
                                "(%s) for over %g s, stopped or stuck; asking without it, "
                                "spaced after the last request it recorded",
                                self._turn_file, patience)
                        self._turn_stuck = True
                        break
                    time.sleep(0.005)  # short: a holder asking again at once may not win
                except OSError:  # no locks on this file system: as without the file
                    break
            with contextlib.suppress(OSError, ValueError):
                last = float(os.pread(fd, 32, 0).decode("ascii").strip() or "nan")
                wait = min(last + self._delay - time.monotonic(), self._delay)
                if wait > 0:
                    time.sleep(wait)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.pwrite(fd, f"{time.monotonic():.6f}".encode().ljust(32), 0)
        finally:
            os.close(fd)

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        limit = min(self._timeout, self._deadline)
        kwargs.setdefault("timeout", (limit, limit))
        kwargs["stream"] = True
        with self._turn():
            self._wait_for_spacing()
            try:
                with _Deadline(self._deadline) as deadline:
                    response = self._request_within(deadline, args, kwargs)
            finally:
                self._last_done = time.monotonic()
        if response.status_code == 200:
            problem = not_a_feed(response.content)
            if problem:
                raise ArxivNotAFeed(problem, response=response)
            if not _FEED_END.search(response.content[-4096:]):
                raise ArxivCutShort(f"the answer was cut short ({len(response.content):,} "
                                    "bytes, no closing </feed>)", response=response)
        elif 400 <= response.status_code < 500 or response.headers.get("Retry-After"):
            raise ArxivHTTPStatus(response.status_code, response.headers.get("Retry-After"),
                                  error_explanation(response.content))
        return response

    def _request_within(self, deadline: _Deadline, args: Any, kwargs: Any) -> requests.Response:
        response: requests.Response | None = None
        try:
            response = super().request(*args, **kwargs)
            chunks = []
            for chunk in response.iter_content(CHUNK):
                chunks.append(chunk)
                if deadline.passed():
                    raise ArxivTimeout(deadline.seconds)
            if deadline.passed():  # the watchdog may have cut the answer short
                raise ArxivTimeout(deadline.seconds)
            response._content = b"".join(chunks)
            response._content_consumed = True
            response.close()  # gives the connection back to the pool
            return response
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            if response is not None and not response._content_consumed:
                response.close()
            if deadline.passed() and not isinstance(e, ArxivTimeout):
                raise ArxivTimeout(deadline.seconds) from None
            if isinstance(e, requests.exceptions.ChunkedEncodingError):
                raise ArxivCutShort("the connection dropped in the middle of the answer") from e
            raise


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


def error_explanation(content: bytes) -> str:
    """arXiv's own words for an error, from the summary of its error feed's entry; '' when the
    answer is not such a feed. Pure."""
    try:
        root = etree.fromstring(content, etree.XMLParser(resolve_entities=False,
                                                         no_network=True))
    except (etree.LxmlError, ValueError):
        return ""
    if root.tag != ATOM_FEED:
        return ""
    for entry in root.iter(f"{ATOM}entry"):
        if "/api/errors" not in (entry.findtext(f"{ATOM}id") or ""):
            continue
        text = " ".join((entry.findtext(f"{ATOM}summary") or "").split())
        return shorten("".join(c for c in text if c.isprintable()), 200)
    return ""


class _Client(arxiv.Client):
    """The package's client without its wall-clock spacing: it never remembers when it last
    asked (so never sleeps for it); `_TimeoutSession` keeps the spacing instead."""

    @property  # type: ignore[override]
    def _last_request_dt(self) -> datetime | None:
        return None

    @_last_request_dt.setter
    def _last_request_dt(self, value: datetime | None) -> None:
        pass


class Page(list):  # type: ignore[type-arg]
    """One page of a search's results, and how many the query has in all (arXiv's
    totalResults; 0 when the answer did not say)."""

    total: int = 0


class ArxivGate:
    """One arXiv client and one lock for the whole process."""

    def __init__(self, api_url: str | None = None, delay: float = DELAY, timeout: float = 30.0,
                 retries: int = 1, deadline: float = DEADLINE) -> None:
        self.client = _Client(page_size=100, delay_seconds=delay, num_retries=retries)
        self.client.query_url_format = api_url or os.environ.get("FEEDBOT_ARXIV_API_URL") \
            or API_URL
        if "{}" not in self.client.query_url_format:
            self.client.query_url_format = self.client.query_url_format.rstrip("?") + "?{}"
        turn = feedbot_home() / ARXIV_TURN if delay > 0 else None
        self.client._session = _TimeoutSession(timeout, deadline, delay, turn)
        self.lock = asyncio.Lock()
        self.down_until = 0.0  # time.monotonic() before which arXiv is known unreachable
        self.down_reason = ""
        self.down_at = datetime.now(UTC)  # when (the last time) arXiv could not be reached
        self.wait_until: datetime | None = None  # arXiv's Retry-After: no query before it
        self.wait_reason = ""
        # Held by the worker thread for its whole search: should a caller stop waiting (a
        # cancelled collection), the next search still waits for that request to end.
        self._busy = threading.Lock()

    def search(self, query: str, max_results: int, start: int = 0) -> list[arxiv.Result]:
        """Newest first; one page as big as `max_results` (up to arXiv's 2000) from the
        `start`-th result: one request (and the package's retries of it), never a second page
        (`collect_arxiv` asks for one when it needs it).

        arXiv at times answers with fewer entries than asked for while its totalResults says
        there are more; the package's `results` then asked for the next page, and when that came
        back empty (as it does) raised `UnexpectedEmptyPageError`, dropping the first page's
        papers. A short first page is all there is for this run. No result (an empty feed) is
        an empty list.

        Runs in a worker thread with `lock` held. arXiv answers a bad query with its error feed
        and HTTP 400, raised as `ArxivHTTPStatus`; other errors after the package's retries as
        `arxiv.HTTPError`."""
        search = arxiv.Search(query=query, max_results=max_results,
                              sort_by=arxiv.SortCriterion.SubmittedDate,
                              sort_order=arxiv.SortOrder.Descending)
        page_size = max(1, min(MAX_PAGE, max_results))
        with self._busy:
            self.client.page_size = page_size
            url = self.client._format_url(search, max(0, start), page_size)
            feed = self.client._parse_feed(url, first_page=True)
        page = Page(feed.results[:page_size])
        page.total = feed.header.total_results or 0
        return page


def result_to_item(r: arxiv.Result, source: str, person: str = "") -> Item:
    """An API result as an Item of kind 'paper'. The abstract is plain text (LaTeX at most),
    never HTML: read as HTML, "$a<b$ and $c>d$" or "a <thought> token" lost the words between
    the brackets."""
    arxiv_id, version = split_arxiv_id(r.entry_id)
    abs_url = f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else r.entry_id
    return Item(
        title=" ".join(r.title.split()), url=abs_url, source=source, kind="paper",
        authors=tuple(a.name for a in r.authors), published=utc(r.published),
        summary=" ".join(r.summary.split()), guid=r.entry_id, arxiv_id=arxiv_id,
        arxiv_version=version, categories=tuple(r.categories), pdf_url=r.pdf_url or "",
        person=person, withdrawn=is_withdrawn(r.summary, r.comment or ""),
    )


# How arXiv and authors say a version withdraws its paper: in the comment ("This paper has been
# withdrawn by the author. It has been superseded by ...", arXiv:2401.00917v3; "Withdrawn due to
# an error in Lemma 2"), or, in older withdrawals, as the whole abstract ("This paper has been
# withdrawn by the author(s)"). Only at the start of the abstract: one may discuss withdrawals.
# Not "withdrawn from ICLR 2024" (a venue, the paper stands), nor "an earlier version of this
# paper was withdrawn" (this version corrects it): "this ..." only where a sentence starts.
_NOT_A_VENUE = r"(?!\s+from\s+(?!arxiv\b))"
_THIS_WITHDRAWN = (r"this\s+(?:paper|article|manuscript|submission|preprint|work|version|report)"
                   rf"\s+(?:has\s+been|was|is)\s+withdrawn\b{_NOT_A_VENUE}")
_WITHDRAWN_COMMENT = re.compile(
    rf"^\W*(?:paper\s+)?withdrawn\b{_NOT_A_VENUE}"
    rf"|(?:^|[.;:!]\s*|\barxiv\s+admin\s+note:\s*)\W*{_THIS_WITHDRAWN}", re.I)
_WITHDRAWN_SUMMARY = re.compile(
    rf"^\W*(?:(?:paper\s+)?withdrawn\b{_NOT_A_VENUE}|{_THIS_WITHDRAWN})", re.I)


def is_withdrawn(summary: str, comment: str) -> bool:
    """Whether a version's abstract and comment say it withdraws the paper. Pure."""
    return bool(_WITHDRAWN_COMMENT.search(comment) or _WITHDRAWN_SUMMARY.search(summary))


def describe_error(e: Exception) -> str:
    if isinstance(e, ArxivNotAFeed):
        return f"arXiv answered with something that is not a feed: {e}"
    if isinstance(e, ArxivCutShort):
        return f"arXiv's answer was incomplete: {e}; nothing of it was stored"
    if isinstance(e, ArxivHTTPStatus):
        return f"arXiv API answered HTTP {e.status}" + (f": {e.explanation}" if e.explanation
                                                         else "")
    if isinstance(e, arxiv.HTTPError):
        return f"arXiv API answered HTTP {e.status}"
    if isinstance(e, arxiv.UnexpectedEmptyPageError):
        return "arXiv API returned an unexpected empty page"
    if isinstance(e, ArxivTimeout):
        return f"arXiv API timed out after {e.deadline:g}s"
    if isinstance(e, requests.Timeout):
        return "arXiv API timed out"
    if isinstance(e, requests.ConnectionError):
        return "cannot reach the arXiv API"
    return f"{type(e).__name__}: {e}"


def retry_after_of(e: Exception, now: datetime) -> datetime | None:
    """When arXiv said to come back (its Retry-After, capped like the feeds'), else None."""
    if isinstance(e, ArxivHTTPStatus):
        return parse_retry_after(e.retry_after, now)
    return None


UNREACHABLE_PAUSE = 60.0  # seconds in which arXiv is not asked again after it could not be reached


async def gated_search(gate: ArxivGate, query: str, max_results: int, start: int = 0
                       ) -> list[arxiv.Result]:
    """One search through the shared lock (so one request at a time, spaced by the client).

    When arXiv cannot be reached at all (no network, no DNS, refused), the searches of the
    next UNREACHABLE_PAUSE seconds fail at once instead of each waiting out the spacing and
    the retries: offline, eight arXiv sources took 45 s to fail one by one. When arXiv answers
    with a Retry-After (a 503), no search is sent before that time: each fails at once with
    the same Retry-After, as arXiv asked, instead of each query asking again."""
    async with gate.lock:
        if gate.wait_until is not None and datetime.now(UTC) < gate.wait_until:
            raise ArxivFetchError(f"{gate.wait_reason} (not tried: arXiv asked not to be asked "
                                  f"again before {gate.wait_until:%Y-%m-%d %H:%M:%S} UTC)",
                                  retry_after=gate.wait_until)
        if time.monotonic() < gate.down_until:
            raise ArxivFetchError(f"{gate.down_reason} (not tried: another query could not "
                                  f"reach arXiv at {gate.down_at:%Y-%m-%d %H:%M:%S} UTC, and "
                                  f"arXiv is not asked again for {UNREACHABLE_PAUSE:g} s after "
                                  "that)")
        try:
            return await in_daemon_thread(gate.search, query, max_results, start,
                                          name="arxiv-request")
        except (arxiv.ArxivError, requests.RequestException) as e:
            reason = describe_error(e)
            if isinstance(e, requests.ConnectionError) and not isinstance(e, ArxivCutShort):
                gate.down_until = time.monotonic() + UNREACHABLE_PAUSE
                gate.down_at = datetime.now(UTC)
                gate.down_reason = reason
            retry_after = retry_after_of(e, datetime.now(UTC))
            if retry_after is None and isinstance(e, ArxivHTTPStatus) and e.status == 429:
                # too many requests, and no word on when to come back: the run's other
                # queries asked again, each, 3 s apart
                retry_after = datetime.now(UTC) + RATE_LIMITED_PAUSE
            if retry_after is not None:
                gate.wait_until, gate.wait_reason = retry_after, reason
            raise ArxivFetchError(reason, retry_after=retry_after) from e


async def collect_arxiv(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
    """A query's results, newest first, read back to the newest paper it took in last time
    (`read_back`; that paper's date is its cursor); for a person's author query, one page, and
    only the papers with that person among their authors, as in a batch (arXiv's `au:` search
    also matches other people)."""
    author = author_name(spec) is not None
    if author:
        results, missed = await gated_search(ctx.arxiv, spec.target, spec.max_items), ""
    else:
        results, missed, whole = await read_back(ctx.arxiv, spec.target, spec.max_items,
                                                 reached_back_to(state))
    # arXiv lists every paper it ever had of a real category or author: nothing at all is a
    # misspelt one (`cs.CVV`), which otherwise read "ok, 0 items" for ever
    nothing = "" if results else (f"arXiv has no paper for {spec.target}: check its spelling "
                                  "(a category as arXiv writes it, such as cs.CV)")
    # read short of the cursor (arXiv answered a page short): the old cursor stays, so that the
    # next collection reads back over the papers this one could not
    cursor = None if author or not whole else newest_cursor(results, state.cursor, ctx.now)
    if author:
        results = attribute(results, [spec])[spec.name]
    items = [result_to_item(r, spec.name, spec.person) for r in results]
    return Collected(items, cursor=cursor, warning=nothing or missed)


def reached_back_to(state: SourceState) -> datetime | None:
    """How far back a query's collection reads: to the newest paper it took in last time (its
    cursor), else, collected before this was kept, to its last success (papers submitted since
    were not listed then); None for a first collection, which reads one page. Pure."""
    with contextlib.suppress(ValueError):
        if state.cursor:
            return utc(datetime.fromisoformat(state.cursor))
    return state.last_success


def newest_cursor(results: Sequence[arxiv.Result], cursor: str, now: datetime) -> str | None:
    """The cursor to keep: the newest submission date among `results` and the old `cursor`,
    in ISO form, at most `now` (one entry dated in the future must not stop every later
    collection's reading back); None (keep the old one) when `results` hold nothing newer.
    Pure."""
    if not results:
        return None
    newest = min(max(utc(r.published) for r in results), now)
    old = None
    with contextlib.suppress(ValueError):
        old = utc(datetime.fromisoformat(cursor)) if cursor else None
    return None if old is not None and old >= newest else newest.isoformat()


async def read_back(gate: ArxivGate, query: str, first: int, since: datetime | None
                    ) -> tuple[list[arxiv.Result], str, bool]:
    """A query's newest papers: the first page (`first` of them), then, while a page is full
    and its oldest paper is still newer than `since`, the next one (PAGE_BACK_SIZE), up to
    PAGE_BACK papers in all. With `since` None (a first collection) one page.
    Also a warning, '' unless the bound stopped the reading short of `since`: the papers
    between may have been missed. Each page is one `gated_search` (one request, spaced like
    any other); a page that fails fails the whole collection, so that the next one reads back
    from the same cursor. arXiv at times answers a page short, even empty, while its
    totalResults says there are more: the next page then starts after the papers it did give,
    and an empty one ends the reading with a warning and False (whether it reached back to
    `since`, or stopped at the bound): the cursor is not moved past what was not read."""
    page = await gated_search(gate, query, first)
    results, start, asked = list(page), len(page), first
    while since is not None and page and _oldest(page) > since:
        total = getattr(page, "total", 0)
        if (start >= total) if total else len(page) < asked:
            break  # the query's last paper
        left = PAGE_BACK - start
        if left <= 0:
            return _once(results), missed_warning(query, start, since, _oldest(page)), True
        oldest = _oldest(page)
        asked = min(PAGE_BACK_SIZE, left)
        page = await gated_search(gate, query, asked, start)
        if not page:
            return _once(results), (
                f"arXiv answered an empty page at paper {start + 1:,} of {total:,} for "
                f"{query} (it does at times): papers submitted between {since:%Y-%m-%d %H:%M} and "
                f"{oldest:%Y-%m-%d %H:%M} UTC are read next time"), False
        results += page
        start += len(page)
    return _once(results), "", True


def missed_warning(query: str, read: int, since: datetime, oldest: datetime) -> str:
    """What a collection stopped by PAGE_BACK says (kept as the source's notice). Pure."""
    return (f"arXiv lists more new papers for {query} than one collection reads ({read:,}): "
            f"those submitted between {since:%Y-%m-%d %H:%M} and {oldest:%Y-%m-%d %H:%M} UTC "
            "may have been missed; collect it more often (a shorter interval) or narrow the "
            "query")


def _oldest(results: Sequence[arxiv.Result]) -> datetime:
    return min(utc(r.published) for r in results)


def _once(results: Sequence[arxiv.Result]) -> list[arxiv.Result]:
    """Each paper once: a paper announced between two pages' requests moves the others one
    place down, and the next page lists again the last one of the page before."""
    seen: set[str] = set()
    out = []
    for r in results:
        key = split_arxiv_id(r.entry_id)[0] or r.entry_id
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


# --- the people's author queries, batched -------------------------------------------------------

_AUTHOR_TARGET = re.compile(r'au:"([^"]+)"')
_NOT_NAME = re.compile(r"[^\w\s-]|[\d_]")
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})
# Letters that NFKD leaves whole (no accent to strip), spelled as arXiv's ASCII names spell them.
_FOLD = str.maketrans({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "Ð": "D",
                       "ð": "d", "ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe",
                       "Þ": "Th", "þ": "th", "ı": "i", "Ħ": "H", "ħ": "h"})


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
    """(surname, first initial) of a name, normalised: letters NFKD cannot take apart folded
    (Ł → l, ß → ss, Æ → ae, ...), NFKD, accents stripped, casefolded, only letters, spaces
    and hyphens kept. "Yann LeCun", "Y. LeCun" and "LeCun, Yann" all give ("lecun", "y");
    "Jr."-style suffixes are dropped. A surname alone ("LeCun") gives ("lecun", ""), an empty
    initial. None for a name with no letters."""
    if "," in name:  # "Surname, First"
        last, _, first = name.partition(",")
        name = f"{first} {last}"
    plain = "".join(c for c in unicodedata.normalize("NFKD", name.translate(_FOLD))
                    if not unicodedata.combining(c)).casefold()
    words = [w.strip("-") for w in _NOT_NAME.sub(" ", plain).split()]
    words = [w for w in words if w]
    while len(words) > 1 and words[-1] in _SUFFIXES:
        words.pop()
    if not words:
        return None
    return words[-1], words[0][0] if len(words) > 1 else ""


def is_author(key: tuple[str, str] | None, theirs: set[tuple[str, str] | None]) -> bool:
    """Whether a followed name's `key` is among a paper's author keys: the same surname and
    initial, or the same surname alone when the followed name is a surname alone. Pure."""
    if key is None:
        return False
    if key[1]:
        return key in theirs
    return any(k is not None and k[0] == key[0] for k in theirs)


def attribute(results: Sequence[Any], specs: Sequence[SourceSpec]) -> dict[str, list[Any]]:
    """Each spec's share of one author query's results, newest first, at most its `max_items`.
    A result goes to every spec whose author is among the result's authors (a paper by two
    followed people goes to both). arXiv's `au:` search is fuzzy (it matches words of a name
    anywhere, e.g. another "Johnson"), so a result matching nobody is dropped."""
    out: dict[str, list[Any]] = {s.name: [] for s in specs}
    keys = {s.name: name_key(author_name(s) or "") for s in specs}
    newest = sorted(results, key=lambda r: r.published, reverse=True)
    for r in newest:
        theirs = {name_key(a.name) for a in r.authors}
        for s in specs:
            got = out[s.name]
            if len(got) < s.max_items and is_author(keys[s.name], theirs):
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
        raise ArxivFetchError(f"{e} (one request for {len(specs)} people's author queries)",
                              retry_after=e.retry_after) from e
    shares = attribute(results, specs)
    return {s.name: [result_to_item(r, s.name, s.person) for r in shares[s.name]]
            for s in specs}


class ArxivFetchError(SourceError):
    pass
