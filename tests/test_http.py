"""The shared HTTP client against hostile or odd servers: redirects into the local network by
name (DNS rebinding), carrier-grade NAT, validators that are not ASCII, connections reset.

Public hosts are served by an httpx mock transport; everything a name resolves to is served
for real on 127.0.0.1, the resolver patched at `socket.getaddrinfo` for the test's names."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from feedbot.http import FetchError, fetch, is_private_host, make_client

from .support import LocalServer, Request, Route, one_connection

PUBLIC_IP = "93.184.216.34"  # what a public name resolves to (never connected to here)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class Resolver:
    """`socket.getaddrinfo` for made-up names: each maps to the addresses it answers with, one
    list per lookup (the last one repeats); every lookup is recorded with its thread."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[tuple[str, str]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = socket.getaddrinfo

        def getaddrinfo(host: object, port: object, *args: object, **kw: object) -> object:
            name = host.decode() if isinstance(host, bytes) else str(host)
            if name not in self.answers:
                return real(host, port, *args, **kw)  # type: ignore[arg-type]
            self.lookups.append((name, threading.current_thread().name))
            seen = sum(1 for n, _ in self.lookups if n == name)
            ips = self.answers[name][min(seen, len(self.answers[name])) - 1]
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6,
                     "", (ip, int(port or 0))) for ip in ips]  # type: ignore[call-overload]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class PublicAndLocal(httpx.AsyncBaseTransport):
    """*.example.org answered by `handler` (public web servers); anything else for real."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.mock = httpx.MockTransport(handler)
        self.real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.endswith(".example.org"):
            return await self.mock.handle_async_request(request)
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


def evil(request: httpx.Request) -> httpx.Response:
    """https://evil.example.org/feed?to=URL redirects to URL."""
    return httpx.Response(302, headers={"Location": str(request.url).partition("?to=")[2]})


async def fetch_via(url: str, handler: Callable[[httpx.Request], httpx.Response] = evil,
                    **kw):  # type: ignore[no-untyped-def]
    async with make_client(transport=PublicAndLocal(handler)) as client:
        return await fetch(client, url, **kw)


@pytest.fixture
def admin(server: LocalServer) -> Iterator[int]:
    """The local server's port, with a page a redirect must never reach."""
    server.add("/admin", body=b"<rss/>")
    yield int(server.base.rsplit(":", 1)[1])


def test_a_redirect_to_a_name_for_a_local_address_is_refused_before_connecting(
        server: LocalServer, admin: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only literal addresses were refused: a name that resolves to 127.0.0.1 or 169.254.x
    (localtest.me, a DNS record an attacker controls) led feedbot into the user's network.
    A name with any such address is refused, looked up off the event loop."""
    resolver = Resolver({"sneaky.test": [["127.0.0.1"]],
                         "meta.test": [[PUBLIC_IP, "169.254.169.254"]],
                         "nas.test": [["127.0.0.1"]], "wiki.test": [["127.0.0.1"]]})
    resolver.install(monkeypatch)
    for name, ip in [("sneaky.test", "127.0.0.1"), ("meta.test", "169.254.169.254")]:
        with pytest.raises(FetchError) as e:
            run(fetch_via(f"https://evil.example.org/feed?to=http://{name}:{admin}/admin"))
        assert str(e.value) == (f"redirected from evil.example.org to {name} ({ip}), a local or "
                                "private address: refused (use that URL as the feed if you "
                                "trust it)")
    assert server.hits("/admin") == []
    # looked up in the event loop's executor, never on the loop's own thread
    assert resolver.lookups and all(t != threading.main_thread().name
                                    for _, t in resolver.lookups)
    # A feed the user configured on their own network, by name, still works, and may redirect
    # to another local name: what counts is the address it was answered from.
    server.add("/feed", status=301, headers={"Location": f"http://wiki.test:{admin}/rss"})
    server.add("/rss", body=b"<rss/>")
    got = run(fetch_via(f"http://nas.test:{admin}/feed"))
    assert (got.url, got.content) == (f"http://wiki.test:{admin}/rss", b"<rss/>")


def test_a_name_that_resolves_differently_when_connecting_is_refused(
        server: LocalServer, admin: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: public when checked, 127.0.0.1 when connecting. The address actually
    connected to is checked before any request goes out over the connection."""
    Resolver({"rebind.test": [[PUBLIC_IP], ["127.0.0.1"]]}).install(monkeypatch)
    with pytest.raises(FetchError, match=r"^redirected from evil\.example\.org to rebind\.test "
                                         r"\(127\.0\.0\.1\), a local or private address: "
                                         r"refused"):
        run(fetch_via(f"https://evil.example.org/feed?to=http://rebind.test:{admin}/admin"))
    assert server.hits("/admin") == []


def test_carrier_grade_nat_counts_as_private() -> None:
    """100.64.0.0/10 (carrier-grade NAT, every Tailscale address) is neither public nor
    `is_private` to Python: a public feed could redirect into the user's tailnet."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.host == "100.100.1.1":  # a feed on the user's own tailnet
            return httpx.Response(302, headers={"Location": "http://100.64.0.7/rss"})
        if request.url.host == "evil.example.org":
            return evil(request)
        return httpx.Response(200, content=b"<rss/>")

    async def go(url: str) -> str:
        async with make_client(transport=httpx.MockTransport(handler)) as client:
            return (await fetch(client, url)).url

    assert is_private_host("100.64.0.1") and is_private_host("100.127.255.254")
    assert not is_private_host("100.128.0.1") and not is_private_host("8.8.8.8")
    with pytest.raises(FetchError, match=r"^redirected from evil\.example\.org to 100\.64\.0\.7, "
                                         r"a local or private address: refused"):
        run(go("https://evil.example.org/feed?to=http://100.64.0.7/rss"))
    assert asked == ["https://evil.example.org/feed?to=http://100.64.0.7/rss"]
    assert run(go("http://100.100.1.1/feed")) == "http://100.64.0.7/rss"


def test_a_validator_that_is_not_ascii_goes_back_as_it_came(server: LocalServer) -> None:
    """`ETag: W/"été"` (Latin-1 bytes) was stored, then sending it back raised
    UnicodeEncodeError in httpx: the source failed on every later run."""
    etag = 'W/"\xe9t\xe9"'
    modified = "Mi, 18 Nov 2026 10:00:00 GMT \xe9"

    def handler(req: Request) -> tuple[int, dict[str, str], bytes]:
        if req.headers.get("if-none-match") == etag:
            return 304, {"ETag": etag}, b""
        return 200, {"ETag": etag, "Last-Modified": modified}, b"<rss/>"

    url = server.add("/f", Route(handler=handler))
    first = run(fetch_via(url))
    assert (first.etag, first.last_modified) == (etag, modified)
    second = run(fetch_via(url, etag=first.etag, last_modified=first.last_modified))
    assert second.not_modified and second.etag == etag
    assert server.hits("/f")[1].headers["if-modified-since"] == modified


def test_a_304_to_a_request_that_was_not_conditional_is_an_error(server: LocalServer) -> None:
    """Taken for "not modified", it left a new feed empty on every run, with no word why."""
    url = server.add("/f", status=304)
    with pytest.raises(FetchError, match=r"^HTTP 304 Not Modified, to a request that was not "
                                         r"conditional \(nothing cached to compare with\)"):
        run(fetch_via(url))


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, br"])
def test_a_body_compressed_in_a_coding_not_asked_for_says_so(server: LocalServer,
                                                             coding: str) -> None:
    """Brotli or zstd bytes (feedbot asks for gzip or deflate only) went to the parser as they
    were: "not a feed: not well-formed (invalid token)", as if the feed were broken."""
    url = server.add("/f", body=b"\x1b\x8c\x00\xf8\xa5 compressed bytes",
                     headers={"Content-Encoding": coding})
    with pytest.raises(FetchError, match=r"^the server compressed the response with (gzip, )?"
                                         r"(br|zstd), which feedbot cannot decode"):
        run(fetch_via(url))


def test_a_connection_reset_says_so() -> None:
    """It said only "ReadError"."""
    def reset(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    with one_connection(reset) as port, pytest.raises(FetchError) as e:
        run(fetch_via(f"http://127.0.0.1:{port}/feed"))
    assert str(e.value).startswith("the connection to 127.0.0.1 broke off (")
    assert "reset" in str(e.value).lower()


def test_the_local_test_server_takes_a_client_hanging_up_quietly(
        server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    """The stock server printed a `ConnectionResetError` traceback when httpx dropped an idle
    keep-alive connection, into whatever stderr a later test was capturing (a CI failure of a
    test that asserts its stderr is empty). Other errors are still printed."""
    for error in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError()):
        try:
            raise error
        except OSError:
            server.httpd.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a bug in a handler")
    except ValueError:
        server.httpd.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a bug in a handler" in capsys.readouterr().err


def test_a_redirect_to_a_host_name_idna_cannot_encode_is_a_clean_error() -> None:
    """`xn--zz-9999.com` is no valid A-label: the IDNA codec's UnicodeError came out as
    "unexpected IDNAError" with a traceback in the log."""
    with pytest.raises(FetchError) as e:
        run(fetch_via("https://evil.example.org/feed?to=http://xn--zz-9999.com/rss"))
    assert str(e.value).startswith("invalid URL: the host name cannot be encoded")
