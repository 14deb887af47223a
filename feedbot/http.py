"""One polite HTTP client for every collector: timeouts, size limit, redirects, User-Agent,
conditional GET. Returns bytes and validators; never parses anything.

The size limit holds for the decoded body: gzip and deflate are inflated here, a bounded step at
a time, so a small compressed body cannot expand to gigabytes in memory (a "gzip bomb").
Redirects are followed here too, one hop at a time: a redirect to a scheme other than http and
https is refused with its target named, and so is one from a public host to a local or private
address (the feed's server must not make feedbot reach into the user's own network; a URL the
user configured with such an address is fetched as usual, and may redirect within private
addresses). A target given by name is looked up first (in a thread), and refused when any of its
addresses is private; the address then actually connected to is checked again as the connection
opens (httpcore's `trace` extension), so a name that answers differently the second time (DNS
rebinding) is refused all the same, before any request is sent. Through a proxy only the names
are checked: the proxy, not feedbot, connects.

A URL's `user:password@` is never part of a request's URL (httpx logs those at INFO): it is
sent as Basic auth, kept across redirects within the same origin, and `Fetched.url` and
`Fetched.moved_to` never carry the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import socket
import weakref
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

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
    url: str  # final URL after redirects, without any user:password@
    content: bytes = b""
    etag: str = ""
    last_modified: str = ""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    moved_to: str = ""  # `url`, when every redirect to it was permanent (301, 308); a
    # password in it is shown as ***
    cut_short: str = ""  # why the body is known to be incomplete (compressed data ending early)

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
    try:
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except OverflowError:  # "Fri, 31 Dec 9999 23:59:59 -2359": past the year 9999 in UTC
        return now + MAX_RETRY_AFTER
    return min(when, now + MAX_RETRY_AFTER)


async def fetch(client: httpx.AsyncClient, url: str, *, etag: str = "", last_modified: str = "",
                max_bytes: int = MAX_BYTES, deadline: float = DEADLINE,
                now: datetime | None = None) -> Fetched:
    """GET `url` conditionally. Raises FetchError for anything but a 2xx body or a 304.

    `now` is the collection's clock (the wall clock when None): a Retry-After in seconds
    counts from it."""
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError for a malformed host or port
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise FetchError(f"bad URL: {e}") from None
    try:
        return await asyncio.wait_for(
            _fetch(client, url, etag, last_modified, max_bytes, now), timeout=deadline)
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
    if isinstance(e, UnicodeError):  # a host name IDNA cannot encode (`xn--zz-9999.com`)
        return FetchError(f"invalid URL: the host name cannot be encoded ({e})")
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
    if isinstance(e, httpx.NetworkError) and not str(e):  # e.g. "ReadError", and nothing else
        host = urlsplit(url).hostname or url
        return FetchError(f"the connection to {host} broke off ({_chain_reason(e)}); "
                          "the next run tries again")
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


def _validator(value: str) -> bytes:
    """A stored ETag or Last-Modified as the bytes to send back. They are kept as the server's
    bytes read as Latin-1 (see `_raw_header`), so they go back byte for byte; httpx sends str
    headers as ASCII only, and a server's `ETag: W/"été"` failed every later fetch."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # kept by an older version, decoded as UTF-8
        return value.encode("utf-8")


def _in_future(http_date: str, now: datetime) -> bool:
    """Whether a Last-Modified is later than `now`: a server whose clock ran ahead. Sent
    back, a server answers "not modified" to it for as long (a file's time is compared, as
    Python's own http.server and most static servers do): the feed stood still until then."""
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, OverflowError):
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) > now


def _raw_header(r: httpx.Response, name: str, default: str = "") -> str:
    """The first `name` header exactly as its bytes came (read as Latin-1), else `default`."""
    want = name.encode("ascii")
    for key, value in r.headers.raw:
        if key.lower() == want:
            return value.decode("latin-1")
    return default


def _credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """`url` without its `user:password@`, and those as Basic auth (None when there are none)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return (urlunsplit(parts._replace(netloc=hostport)),
            httpx.BasicAuth(unquote(user), unquote(password)))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.hostname or "", parts.port


def shown_url(url: str) -> str:
    """`url` fit to show: a password in it replaced by ***."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=f"{user}{':***' if colon else ''}@{hostport}"))


# Each network stream feedbot's requests opened, and whether it leads to the URL's own host
# (False: to a proxy). A response's stream tells the address actually connected to.
_DIRECT: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _server_ip(stream: Any) -> str:
    try:
        addr = stream.get_extra_info("server_addr")
    except Exception:  # noqa: BLE001 - a transport of another kind: nothing known
        return ""
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""


class _Watch:
    """The `trace` extension for one request: notes the connection it opens and, when the
    request must stay out of private addresses (`guard`), refuses one that reaches such an
    address before anything is sent over it."""

    def __init__(self, url: str, guard: str) -> None:
        self.host = httpx.URL(url).raw_host.decode("ascii")
        self.guard = guard  # the public host that redirected here, or "": no guard
        self.connecting = ""

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            self.connecting = str(info.get("host", ""))
        elif event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            if stream is None:
                return
            direct = self.connecting == self.host
            with contextlib.suppress(TypeError):  # not weakly referable: not remembered
                _DIRECT[stream] = direct
            ip = _server_ip(stream)
            if self.guard and direct and ip and is_private_host(ip):
                await stream.aclose()
                raise _refused(self.guard, self.host, ip)


def _refused(source: str, host: str, ip: str = "") -> FetchError:
    where = f"{host} ({ip})" if ip and ip != host.strip("[]") else host
    return FetchError(f"redirected from {source} to {where}, a local or private address: "
                      "refused (use that URL as the feed if you trust it)")


def _peer_private(r: httpx.Response) -> bool:
    """Whether `r` came over a direct connection to a local or private address."""
    stream = r.extensions.get("network_stream")
    if stream is None or not _DIRECT.get(stream, False):
        return False
    ip = _server_ip(stream)
    return bool(ip) and is_private_host(ip)


async def _resolves_private(url: str) -> str:
    """A local or private address that `url`'s host name resolves to, else "" (also when
    the name does not resolve: connecting then fails, or is checked as it opens). The lookup
    runs in the event loop's executor, never on the loop."""
    u = httpx.URL(url)
    host = u.raw_host.decode("ascii")
    try:
        ipaddress.ip_address(host.split("%")[0])
        return ""  # a literal address: `redirect_target` judged it already
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, u.port or (443 if u.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return ""
    return next((str(a[4][0]) for a in found if is_private_host(str(a[4][0]))), "")


async def _fetch(client: httpx.AsyncClient, url: str, etag: str, last_modified: str,
                 max_bytes: int, now: datetime | None) -> Fetched:
    headers: dict[bytes, bytes] = {}
    if etag:
        headers[b"If-None-Match"] = _validator(etag)
    if last_modified and not _in_future(last_modified, now or datetime.now(UTC)):
        headers[b"If-Modified-Since"] = _validator(last_modified)
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    url, auth = _credentials(url)
    auth_origin = _origin(url)
    permanent = None  # whether every redirect so far was permanent; None: no redirect yet
    guard = ""  # the public host that redirected here: this hop must stay public
    for _ in range(MAX_REDIRECTS + 1):
        httpx.URL(url)  # InvalidURL for a URL httpx cannot send (reported as such)
        if guard and (ip := await _resolves_private(url)):
            raise _refused(guard, urlsplit(url).hostname or url, ip)
        sent_auth = auth if auth is not None and _origin(url) == auth_origin else None
        try:
            async with client.stream(
                    "GET", url, headers=headers, follow_redirects=False,
                    auth=sent_auth or httpx.USE_CLIENT_DEFAULT,
                    extensions={"trace": _Watch(url, guard)}) as r:
                private = _peer_private(r)
                if guard and private:  # over a connection opened before, so not checked then
                    raise _refused(guard, urlsplit(url).hostname or url,
                                   _server_ip(r.extensions.get("network_stream")))
                location = r.headers.get("location", "")
                if r.status_code not in _REDIRECTS or not location:
                    got = await _response(r, url, etag, last_modified, max_bytes, now,
                                          conditional=bool(headers))
                    if not permanent:
                        return got
                    moved = f"{userinfo}@" if sent_auth is not None and userinfo else ""
                    parts = urlsplit(url)
                    return replace(got, moved_to=shown_url(
                        urlunsplit(parts._replace(netloc=moved + parts.netloc))))
        except httpx.InvalidURL as e:  # httpx reads a redirect's Location even when not following
            raise FetchError(f"redirected to a malformed URL ({e})") from None
        source = urlsplit(url).hostname or ""
        target = redirect_target(url, location, from_private=private)
        url, given = _credentials(target)
        if given is not None:  # the redirect names its own credentials
            auth, auth_origin = given, _origin(url)
            userinfo = urlsplit(target).netloc.rpartition("@")[0]
        guard = "" if private or is_private_host(source) else source
        permanent = permanent is not False and r.status_code in (301, 308)
    raise FetchError("too many redirects")


async def _response(r: httpx.Response, url: str, etag: str, last_modified: str,
                    max_bytes: int, now: datetime | None = None, *,
                    conditional: bool = True) -> Fetched:
    if r.status_code == 304:
        if not conditional:  # taken for "nothing new", the feed never showed
            raise FetchError("HTTP 304 Not Modified, to a request that was not conditional "
                             "(nothing cached to compare with): a misconfigured server; the "
                             "next run tries again", 304)
        return Fetched(304, url, etag=_raw_header(r, "etag", etag),
                       last_modified=_raw_header(r, "last-modified", last_modified))
    if r.status_code < 200 or r.status_code >= 300:
        now = now or datetime.now(UTC)
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
    unknown = [e.strip() for e in r.headers.get_list("content-encoding", split_commas=True)
               if e.strip().lower() not in (*_Inflater.WBITS, "identity", "")]
    if unknown and not read:
        raise FetchError(f"the server compressed the response with {', '.join(unknown)}, which "
                         "feedbot cannot decode (it asks for gzip or deflate only)")
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
        r.status_code, url, b"".join(chunks), etag=_raw_header(r, "etag"),
        last_modified=_raw_header(r, "last-modified"),
        content_type=r.headers.get("content-type", ""), headers=dict(r.headers),
        cut_short=next((c for i in inflaters if (c := i.cut_short)), ""),
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

    @property
    def cut_short(self) -> str:
        """Why the data is incomplete (after `flush`), or ''."""
        return "" if self._z.eof else f"its {self.encoding} data ends early"


def redirect_target(url: str, location: str, *, from_private: bool = False) -> str:
    """Where a redirect from `url` to `location` leads. FetchError for a target that is not
    http(s), that cannot be read, or that is a local or private address reached from a
    public one (`from_private`: `url` was answered from a private address, whatever its
    name). Only literal addresses and localhost are judged here; `fetch` looks names up."""
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
    if is_private_host(parts.hostname) and not from_private and not is_private_host(source):
        raise _refused(source, parts.hostname)
    return target


def is_private_host(host: str) -> bool:
    """Whether `host` names this machine or a private network: localhost, or a literal
    address (in any form the resolver accepts: 127.1, 2130706433) that is loopback, private,
    carrier-grade NAT (100.64.0.0/10, Tailscale's addresses), link-local (cloud metadata
    services), unspecified, reserved or otherwise not global. Host names are not looked up."""
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
        or ip.is_reserved or ip.is_multicast or not ip.is_global or ip in _SHARED


_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private"
