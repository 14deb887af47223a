"""Test helpers: a real HTTP server on 127.0.0.1 serving recorded responses, and a tiny
deterministic embedder for tests that are about plumbing rather than the model."""

from __future__ import annotations

import hashlib
import json as jsonlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus"
FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/xml"
    etag: str = ""
    last_modified: str = ""
    delay: float = 0.0  # seconds before answering
    drip: float = 0.0  # seconds between body chunks (a slow, hostile server)
    headers: dict[str, str] = field(default_factory=dict)
    handler: Callable[[Request], tuple[int, dict[str, str], bytes]] | None = None


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    at: float = field(default_factory=time.monotonic)


class Overlap:
    """A route handler that answers `body` after `seconds`, and counts the most requests it
    was answering at once (`most`): what a per-site limit keeps down."""

    def __init__(self, body: bytes, seconds: float = 0.2) -> None:
        self.body, self.seconds, self.most, self._now = body, seconds, 0, 0
        self._lock = threading.Lock()

    def __call__(self, _req: Request) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        time.sleep(self.seconds)
        with self._lock:
            self._now -= 1
        return 200, {"Content-Type": "application/atom+xml"}, self.body


class LocalServer:
    """A threaded HTTP server on 127.0.0.1. Routes by path; records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.fallback: Callable[[Request], tuple[int, dict[str, str], bytes]] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two sends: with Nagle's algorithm on, every answer
            # waited ~40 ms for the client's delayed ACK
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(self.command, path, query, {k.lower(): v for k, v in
                                                          self.headers.items()}, body)
                server.requests.append(req)
                route = server.routes.get(path)
                if route is None:
                    if server.fallback is not None:
                        return self._send(*server.fallback(req))
                    return self._send(404, {"Content-Type": "text/plain"}, b"not found")
                if route.delay:
                    time.sleep(route.delay)
                if route.handler is not None:
                    return self._send(*route.handler(req))
                if (route.etag and req.headers.get("if-none-match") == route.etag) or (
                        route.last_modified
                        and req.headers.get("if-modified-since") == route.last_modified):
                    hdrs = {"ETag": route.etag} if route.etag else {}
                    return self._send(304, hdrs, b"")
                hdrs = {"Content-Type": route.content_type, **route.headers}
                if route.etag:
                    hdrs["ETag"] = route.etag
                if route.last_modified:
                    hdrs["Last-Modified"] = route.last_modified
                self._send(route.status, hdrs, route.body, route.drip)

            def _send(self, status: int, headers: dict[str, str], body: bytes,
                      drip: float = 0.0) -> None:
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    if status != 304:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if drip and body:
                        for i in range(0, len(body), 16):
                            self.wfile.write(body[i:i + 16])
                            self.wfile.flush()
                            time.sleep(drip)
                    elif body and status != 304:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _handle

        class Server(QuietServer):
            request_queue_size = 256  # listen() backlog: the default 5 drops bursts of connects

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, route: Route | None = None, **kw: Any) -> str:
        self.routes[path] = route or Route(**kw)
        return self.url(path)

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RecordedApi:
    """Recorded answers of an HTTPS API (X's), served over real HTTP on 127.0.0.1.

    The code under test is pointed at the server by an environment variable (`env`, e.g.
    FEEDBOT_X_API_URL), set while the `with` block runs. `get(url, json=...)` registers an
    answer for the URL's path (the query is not matched); several answers for one path are
    served in order, the last one again and again. `calls` lists every request, in order.

    Leaving the block fails the test if a path was asked for that has no answer, or (with
    `all_used`, the default) if a registered answer was never asked for: a client that stops
    calling the API, or calls it where it should not, is caught either way.
    """

    def __init__(self, env: str, *, all_used: bool = True) -> None:
        self.env = env
        self.all_used = all_used
        self.server = LocalServer()
        self.answers: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.served: dict[str, int] = {}
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        self._saved: str | None = None
        self.server.fallback = self._answer

    def get(self, url: str, *, json: Any = None, status: int = 200,
            headers: dict[str, str] | None = None) -> None:
        body = b"" if json is None else jsonlib.dumps(json).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        self.answers.setdefault(urlsplit(url).path, []).append((status, hdrs, body))

    @property
    def calls(self) -> list[Request]:
        return list(self.server.requests)

    def _answer(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            queue = self.answers.get(req.path)
            if not queue:
                self.unexpected.append(req.path)
                return 404, {"Content-Type": "text/plain"}, b"no recorded answer"
            n = self.served.get(req.path, 0)
            self.served[req.path] = n + 1
            return queue[min(n, len(queue) - 1)]

    def __enter__(self) -> RecordedApi:
        self.server.__enter__()
        self._saved = os.environ.get(self.env)
        os.environ[self.env] = self.server.base
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._saved is None:
            os.environ.pop(self.env, None)
        else:
            os.environ[self.env] = self._saved
        self.server.__exit__()
        if exc_type is not None:
            return
        assert not self.unexpected, f"asked for paths with no recorded answer: {self.unexpected}"
        if self.all_used:
            unused = [(p, len(q) - self.served.get(p, 0)) for p, q in self.answers.items()
                      if self.served.get(p, 0) < len(q)]
            assert not unused, f"recorded answers never asked for (path, how many): {unused}"


X_API = "https://api.twitter.com/2"  # where tweepy sends its calls; `x_api` answers them locally


def x_api(*, all_used: bool = True) -> RecordedApi:
    """X's API v2 (tweepy's host), served locally: see `RecordedApi`."""
    return RecordedApi("FEEDBOT_X_API_URL", all_used=all_used)


@contextmanager
def one_connection(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A bare TCP listener on 127.0.0.1 that hands its first connection to `handle` on a
    thread, for servers that misbehave below HTTP (reset, hang up); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed before anyone connected
            return
        handle(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


class QuietServer(ThreadingHTTPServer):
    """A local test server that takes a client hanging up as normal.

    httpx closes idle keep-alive connections whenever it likes; the stock server printed a
    `ConnectionResetError` traceback to whatever `sys.stderr` was at that moment, which could
    be a later test's captured stderr (seen in CI: a test that asserts its stderr is empty)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


_WORD = re.compile(r"[a-z0-9]+")


class FakeEncoder:
    """Hashed bag of words → unit vector. Deterministic, instant, good enough for plumbing."""

    backend = "fake"
    device = "cpu"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls: list[int] = []

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in _WORD.findall(t.lower()):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little")
                out[i, h % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            out[i] = out[i] / n if n else out[i]
            if not n:
                out[i, 0] = 1.0
        return out


def fake_embedder(dim: int = 64) -> Any:
    """An `Embedder` whose encoder is a FakeEncoder (no torch)."""
    from feedbot.embed import Embedder

    emb = Embedder(model="fake-model", backend="fake")
    emb.model_name = "fake-model"
    emb._encoder = FakeEncoder(dim)
    return emb


def atom_feed(entries: list[dict[str, str]], title: str = "Test feed") -> bytes:
    """A small Atom document written for these tests."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>',
             '<feed xmlns="http://www.w3.org/2005/Atom">', f"<title>{title}</title>",
             "<id>urn:feedbot:test</id>", "<updated>2026-11-20T10:00:00Z</updated>"]
    for e in entries:
        parts.append("<entry>")
        parts.append(f"<title>{e['title']}</title>")
        parts.append(f'<link href="{e["link"]}"/>')
        parts.append(f"<id>{e.get('id', e['link'])}</id>")
        parts.append(f"<updated>{e.get('updated', '2026-11-20T09:00:00Z')}</updated>")
        if e.get("author"):
            parts.append(f"<author><name>{e['author']}</name></author>")
        parts.append(f"<summary>{e.get('summary', '')}</summary>")
        parts.append("</entry>")
    parts.append("</feed>")
    return "\n".join(parts).encode()
