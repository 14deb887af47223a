"""One polite HTTP client for every collector: timeouts, size limit, redirects, User-Agent,
conditional GET. Returns bytes and validators; never parses anything.
"""

from __future__ import annotations

import asyncio
import email.utils
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from . import __version__
from .collectors import SourceError

USER_AGENT = f"feedbot/{__version__} (research feed reader; +https://github.com/feedbot/feedbot)"
MAX_BYTES = 10 * 1024 * 1024
TIMEOUT = httpx.Timeout(20.0, connect=10.0)
DEADLINE = 60.0  # whole request, however slowly a server drips bytes


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
    """`Retry-After` as seconds or an HTTP date → an absolute UTC time."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return now + timedelta(seconds=int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


async def fetch(client: httpx.AsyncClient, url: str, *, etag: str = "", last_modified: str = "",
                max_bytes: int = MAX_BYTES, deadline: float = DEADLINE) -> Fetched:
    """GET `url` conditionally. Raises FetchError for anything but a 2xx body or a 304."""
    try:
        return await asyncio.wait_for(
            _fetch(client, url, etag, last_modified, max_bytes), timeout=deadline)
    except TimeoutError:
        raise FetchError(f"timed out after {deadline:g}s") from None
    except httpx.TooManyRedirects:
        raise FetchError("too many redirects") from None
    except httpx.TimeoutException:
        raise FetchError("timed out") from None
    except httpx.InvalidURL as e:
        raise FetchError(f"invalid URL: {e}") from None
    except httpx.ConnectError as e:
        host = httpx.URL(url).host
        text = str(e)
        if "Name or service not known" in text or "nodename nor servname" in text \
                or "No address associated" in text or "Temporary failure in name" in text:
            raise FetchError(f"cannot resolve host {host}") from None
        if "refused" in text.lower() or "All connection attempts failed" in text:
            raise FetchError(f"cannot connect to {host} (connection refused)") from None
        raise FetchError(f"cannot connect to {host}: {text}") from None
    except httpx.HTTPError as e:
        raise FetchError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None


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
