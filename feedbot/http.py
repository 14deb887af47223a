"""One polite HTTP client for every collector: timeouts, size limit, redirects, User-Agent,
conditional GET. Returns bytes and validators; never parses anything.
"""

from __future__ import annotations

import asyncio
import email.utils
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx

from . import __version__
from .collectors import SourceError, first_leaf

USER_AGENT = f"feedbot/{__version__} (research feed reader; +https://github.com/feedbot/feedbot)"
MAX_BYTES = 10 * 1024 * 1024
TIMEOUT = httpx.Timeout(20.0, connect=10.0)
DEADLINE = 60.0  # whole request, however slowly a server drips bytes
MAX_RETRY_AFTER = timedelta(days=7)  # a server's Retry-After is honoured up to this long


class FetchError(SourceError):
    """A fetch that did not give us a usable response. `retry_after` when the server said."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: datetime | None = None) -> None:
        super().__init__(message, retry_after)
        self.status = status


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int  # 200 or 304
    url: str  # final URL after redirects
    content: bytes = b""
    etag: str = ""
    last_modified: str = ""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def make_client(transport: httpx.AsyncBaseTransport | None = None,
                timeout: httpx.Timeout = TIMEOUT) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True, max_redirects=5, timeout=timeout, transport=transport,
        headers={"User-Agent": USER_AGENT, "Accept": "application/atom+xml, application/rss+xml,"
                 " application/feed+json, application/json;q=0.9, application/xml;q=0.9, "
                 "text/xml;q=0.8, */*;q=0.5"},
    )


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """`Retry-After` as seconds or an HTTP date → an absolute UTC time, at most
    MAX_RETRY_AFTER after `now`. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return now + min(timedelta(seconds=min(int(value), 10**9)), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return min(when, now + MAX_RETRY_AFTER)


async def fetch(client: httpx.AsyncClient, url: str, *, etag: str = "", last_modified: str = "",
                max_bytes: int = MAX_BYTES, deadline: float = DEADLINE) -> Fetched:
    """GET `url` conditionally. Raises FetchError for anything but a 2xx body or a 304."""
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError for a malformed host or port
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise FetchError(f"bad URL: {e}") from None
    try:
        return await asyncio.wait_for(
            _fetch(client, url, etag, last_modified, max_bytes), timeout=deadline)
    except Exception as e:
        err = _fetch_error(e, url, deadline)
        if err is None:
            raise
        raise err from None


def _fetch_error(e: BaseException, url: str, deadline: float) -> FetchError | None:
    """The FetchError that tells the user what went wrong, or None for a surprise (a bug).

    Exception groups (anyio's happy-eyeballs connect raises them) are unwrapped first."""
    e = first_leaf(e)
    if isinstance(e, FetchError):
        return e
    if isinstance(e, TimeoutError):
        return FetchError(f"timed out after {deadline:g}s")
    if isinstance(e, OverflowError):  # the socket layer, for a port over 65535 (a redirect)
        return FetchError("bad URL: port out of range")
    if isinstance(e, httpx.TooManyRedirects):
        return FetchError("too many redirects")
    if isinstance(e, httpx.TimeoutException):
        return FetchError("timed out")
    if isinstance(e, httpx.InvalidURL):
        return FetchError(f"invalid URL: {e}")
    if isinstance(e, httpx.ConnectError):
        host = urlsplit(url).hostname or url
        text = str(e)
        if "Name or service not known" in text or "nodename nor servname" in text \
                or "No address associated" in text or "Temporary failure in name" in text:
            return FetchError(f"cannot resolve host {host}")
        if "refused" in text.lower() or "All connection attempts failed" in text:
            return FetchError(f"cannot connect to {host} (connection refused)")
        if not text:  # e.g. the server hung up during the TLS handshake (EndOfStream)
            text = _chain_reason(e)
            if url.lower().startswith("https://"):
                text = f"TLS handshake failed ({text})"
        return FetchError(f"cannot connect to {host}: {text}")
    if isinstance(e, httpx.HTTPError):
        return FetchError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    return None


def _chain_reason(e: BaseException) -> str:
    """The first message down an exception's chain of causes, else the innermost type's name."""
    for _ in range(10):  # a chain can loop back on itself
        if str(e):
            return str(e)
        cause = e.__cause__ or e.__context__
        if cause is None:
            break
        e = cause
    return type(e).__name__


async def _fetch(client: httpx.AsyncClient, url: str, etag: str, last_modified: str,
                 max_bytes: int) -> Fetched:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    async with client.stream("GET", url, headers=headers) as r:
        final = str(r.url)
        if r.status_code == 304:
            return Fetched(304, final, etag=r.headers.get("etag", etag),
                           last_modified=r.headers.get("last-modified", last_modified))
        if r.status_code >= 400 or r.status_code < 200 or r.status_code >= 300:
            retry = parse_retry_after(r.headers.get("retry-after"), datetime.now(UTC))
            reason = r.reason_phrase or ""
            raise FetchError(f"HTTP {r.status_code} {reason}".strip(), r.status_code, retry)
        declared = r.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"response too large ({int(declared)} bytes > {max_bytes})")
        chunks, size = [], 0
        async for chunk in r.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"response too large (over {max_bytes} bytes)")
            chunks.append(chunk)
        return Fetched(
            r.status_code, final, b"".join(chunks), etag=r.headers.get("etag", ""),
            last_modified=r.headers.get("last-modified", ""),
            content_type=r.headers.get("content-type", ""), headers=dict(r.headers),
        )
