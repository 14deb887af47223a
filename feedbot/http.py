"""One polite HTTP client for every collector: timeouts, size limit, redirects, User-Agent,
conditional GET. Returns bytes and validators; never parses anything.

The size limit holds for the decoded body: gzip and deflate are inflated here, a bounded step at
a time, so a small compressed body cannot expand to gigabytes in memory (a "gzip bomb").
Redirects are followed here too, one hop at a time: a redirect to another scheme is refused with
its target named, and so is one from a public host to a local or private address (the feed's
server must not make feedbot reach into the user's own network; a URL the user configured
with such an address is fetched as usual).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import httpx

from . import __version__
from .collectors import SourceError, first_leaf

USER_AGENT = f"feedbot/{__version__} (research feed reader; +https://github.com/feedbot/feedbot)"
MAX_BYTES = 10 * 1024 * 1024
TIMEOUT = httpx.Timeout(20.0, connect=10.0)
DEADLINE = 60.0  # whole request, however slowly a server drips bytes
MAX_RETRY_AFTER = timedelta(days=7)  # a server's Retry-After is honoured up to this long
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


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
    moved_to: str = ""  # `url`, when every redirect to it was permanent (301, 308)

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def make_client(transport: httpx.AsyncBaseTransport | None = None,
                timeout: httpx.Timeout = TIMEOUT) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True, max_redirects=MAX_REDIRECTS, timeout=timeout, transport=transport,
        headers={"User-Agent": USER_AGENT, "Accept": "application/atom+xml, application/rss+xml,"
                 " application/feed+json, application/json;q=0.9, application/xml;q=0.9, "
                 "text/xml;q=0.8, */*;q=0.5",
                 # Only what `_Inflater` decodes (with brotli installed httpx would offer br).
                 "Accept-Encoding": "gzip, deflate"},
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
    permanent = None  # whether every redirect so far was permanent; None: no redirect yet
    for _ in range(MAX_REDIRECTS + 1):
        httpx.URL(url)  # InvalidURL for a URL httpx cannot send (reported as such)
        try:
            async with client.stream("GET", url, headers=headers, follow_redirects=False) as r:
                location = r.headers.get("location", "")
                if r.status_code not in _REDIRECTS or not location:
                    got = await _response(r, url, etag, last_modified, max_bytes)
                    return replace(got, moved_to=url) if permanent else got
        except httpx.InvalidURL as e:  # httpx reads a redirect's Location even when not following
            raise FetchError(f"redirected to a malformed URL ({e})") from None
        url = redirect_target(url, location)
        permanent = permanent is not False and r.status_code in (301, 308)
    raise FetchError("too many redirects")


async def _response(r: httpx.Response, url: str, etag: str, last_modified: str,
                    max_bytes: int) -> Fetched:
    if r.status_code == 304:
        return Fetched(304, url, etag=r.headers.get("etag", etag),
                       last_modified=r.headers.get("last-modified", last_modified))
    if r.status_code < 200 or r.status_code >= 300:
        now = datetime.now(UTC)
        retry = parse_retry_after(r.headers.get("retry-after"), now)
        message = f"HTTP {r.status_code} {r.reason_phrase or ''}".strip()
        if retry is not None and retry > now:  # why the source is skipped until then
            message += f" (the server asks to wait until {retry:%Y-%m-%d %H:%M} UTC)"
        raise FetchError(message, r.status_code, retry)
    declared = r.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"response too large ({int(declared)} bytes > {max_bytes})")
    # A response read already (as a mock transport's is) was decoded by httpx.
    read = r.is_stream_consumed
    inflaters = [] if read else [
        _Inflater(e) for e in reversed(r.headers.get_list("content-encoding", split_commas=True))
        if e.strip().lower() in _Inflater.WBITS]
    chunks: list[bytes] = []
    size = 0

    def take(data: bytes, start: int = 0) -> None:
        """`data` through the layers from `start` on, then onto the body."""
        nonlocal size
        for i in range(start, len(inflaters)):
            # At most a little more than the limit is ever inflated: past it, the body is
            # too large whatever follows. Inner layers (gzip inside gzip) hold compressed data,
            # which may be a little larger than what it decodes to.
            limit = max_bytes if i == len(inflaters) - 1 else 2 * max_bytes + 65536
            data = inflaters[i].inflate(data, limit)
        size += len(data)
        if size > max_bytes:
            raise FetchError(f"response too large (over {max_bytes} bytes)")
        chunks.append(data)

    if read:
        take(r.content)
    else:
        async for raw in r.aiter_raw():
            take(raw)
    for i, inflater in enumerate(inflaters):
        take(inflater.flush(), i + 1)
    return Fetched(
        r.status_code, url, b"".join(chunks), etag=r.headers.get("etag", ""),
        last_modified=r.headers.get("last-modified", ""),
        content_type=r.headers.get("content-type", ""), headers=dict(r.headers),
    )


class _Inflater:
    """One layer of Content-Encoding (gzip or deflate), inflated in bounded steps."""

    WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16,
             "deflate": zlib.MAX_WBITS}

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.strip().lower()
        self._z = zlib.decompressobj(self.WBITS[self.encoding])
        self._first = True
        self._out = 0

    def inflate(self, data: bytes, limit: int) -> bytes:
        """`data` inflated; FetchError once this layer's output passes `limit` bytes in all."""
        first, self._first = self._first, False
        try:
            out = self._z.decompress(data, max(limit - self._out, 0) + 1)
        except zlib.error as e:
            if first and self.encoding == "deflate":  # raw deflate, without the zlib header
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.inflate(data, limit)
            raise FetchError(f"cannot decode the {self.encoding} response ({e})") from None
        self._out += len(out)
        if self._out > limit:
            raise FetchError(f"response too large (over {limit} bytes once decompressed)")
        return out

    def flush(self) -> bytes:
        try:
            return self._z.flush()
        except zlib.error as e:
            raise FetchError(f"cannot decode the {self.encoding} response ({e})") from None


def redirect_target(url: str, location: str) -> str:
    """Where a redirect from `url` to `location` leads. FetchError for a target that is not
    http(s), that cannot be read, or that is a local or private address reached from a
    public one."""
    shown = location if len(location) <= 100 else location[:99] + "…"
    try:
        target = urljoin(url, location.strip())
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:  # "Port out of range 0-65535", "Invalid IPv6 URL"
        raise FetchError(f"redirected to a malformed URL, {shown!r} ({e})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise FetchError(f"redirected to {shown!r}, which is not an http(s) URL")
    source = urlsplit(url).hostname or ""
    if is_private_host(parts.hostname) and not is_private_host(source):
        raise FetchError(f"redirected from {source} to {parts.hostname}, a local or private "
                         "address: refused (use that URL as the feed if you trust it)")
    return target


def is_private_host(host: str) -> bool:
    """Whether `host` names this machine or a private network: localhost, or a literal
    address (in any form the resolver accepts: 127.1, 2130706433) that is loopback, private,
    link-local (cloud metadata services), unspecified or reserved. Host names are not looked
    up."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            host.split("%")[0])
    except ValueError:
        try:  # the shorthand forms inet_aton (and so the resolver) reads as IPv4
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified \
        or ip.is_reserved or ip.is_multicast
