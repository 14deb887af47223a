"""Collection against real HTTP on 127.0.0.1: conditional GET, limits, failures per source,
arXiv through the real `arxiv` client, and every real-world feed through the collector."""

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

import feedbot.collectors.feeds as feeds_mod
from feedbot.collect import collect, collect_one, is_due, next_due, select_sources
from feedbot.collectors import Collected, Context
from feedbot.collectors.arxiv_api import ArxivGate
from feedbot.config import SourceSpec, load_config
from feedbot.http import MAX_RETRY_AFTER, FetchError, fetch, make_client, parse_retry_after
from feedbot.store import SourceState, Store

from .support import FIXTURES, LocalServer, Route, atom_feed

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
ARXIV_XML = "arxiv-api/arxiv.py/atom_xml"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def get(url: str, **kw):  # type: ignore[no-untyped-def]
    async with make_client() as client:
        return await fetch(client, url, **kw)


# --- fetch ------------------------------------------------------------------------------------

def test_conditional_get_and_user_agent(server: LocalServer) -> None:
    url = server.add("/f", body=b"<rss/>", etag='"abc"', last_modified="Wed, 18 Nov 2026 GMT")
    first = run(get(url))
    assert (first.status, first.etag, first.content) == (200, '"abc"', b"<rss/>")
    second = run(get(url, etag=first.etag, last_modified=first.last_modified))
    assert second.not_modified and second.content == b""
    sent = server.hits("/f")
    assert sent[0].headers["user-agent"].startswith("feedbot/")
    assert sent[1].headers["if-none-match"] == '"abc"'
    assert sent[1].headers["if-modified-since"] == "Wed, 18 Nov 2026 GMT"


def test_size_limit(server: LocalServer) -> None:
    url = server.add("/big", body=b"x" * 5000)
    with pytest.raises(FetchError, match="too large"):
        run(get(url, max_bytes=1000))


def test_slow_drip_hits_the_deadline(server: LocalServer) -> None:
    url = server.add("/slow", body=b"y" * 400, drip=0.5)  # 25 chunks: 12.5 s in all
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        run(get(url, deadline=0.3))
    assert time.monotonic() - started < 6


def test_redirects_followed_and_loops_refused(server: LocalServer) -> None:
    server.add("/new", body=b"<rss/>")
    server.add("/old", status=301, headers={"Location": server.url("/new")})
    got = run(get(server.url("/old")))
    assert got.url.endswith("/new") and got.content == b"<rss/>"
    server.add("/loop", status=302, headers={"Location": server.url("/loop")})
    with pytest.raises(FetchError, match="too many redirects"):
        run(get(server.url("/loop")))


def test_http_errors_carry_retry_after(server: LocalServer) -> None:
    url = server.add("/busy", status=503, body=b"busy", headers={"Retry-After": "120"})
    with pytest.raises(FetchError) as e:
        run(get(url))
    assert e.value.status == 503
    assert e.value.retry_after is not None
    assert 100 < (e.value.retry_after - datetime.now(UTC)).total_seconds() <= 120


def test_connection_refused_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match=r"cannot connect to 127.0.0.1 \(connection refused\)"):
        run(get("http://127.0.0.1:9/feed"))


def test_parse_retry_after() -> None:
    assert parse_retry_after("30", NOW) == NOW + timedelta(seconds=30)
    assert parse_retry_after("Fri, 20 Nov 2026 13:00:00 GMT", NOW) == NOW + timedelta(hours=1)
    assert parse_retry_after("soon", NOW) is None


# --- scheduling decisions (pure) ----------------------------------------------------------------

def test_next_due_backs_off_after_failures_and_honours_retry_after() -> None:
    hour = 3600.0
    assert next_due(SourceState("s"), hour) is None
    ok = SourceState("s", last_attempt=NOW, last_success=NOW)
    assert next_due(ok, hour) == NOW + timedelta(hours=1)
    one = SourceState("s", last_attempt=NOW, failures=1)
    three = SourceState("s", last_attempt=NOW, failures=3)
    assert next_due(one, hour) == NOW + timedelta(minutes=5)
    assert next_due(three, hour) == NOW + timedelta(minutes=20)
    many = SourceState("s", last_attempt=NOW, failures=12)
    assert next_due(many, hour) == NOW + timedelta(hours=1)  # never longer than the interval
    told = SourceState("s", last_attempt=NOW, failures=1, retry_after=NOW + timedelta(hours=5))
    assert not is_due(told, hour, NOW + timedelta(hours=4))
    assert is_due(told, hour, NOW + timedelta(hours=5))


# --- collecting a sources.yaml ----------------------------------------------------------------

def write_sources(tmp_path: Path, blogs: dict[str, str], arxiv: dict[str, str] | None = None,
                  extra: str = "") -> Path:
    lines = ["learner:", "  stage: cnn", "blogs:"] if blogs else ["learner:", "  stage: cnn"]
    for name, url in blogs.items():
        lines += [f"  - name: {name}", f"    url: {url}"]
    if arxiv:
        lines.append("arxiv:")
        for name, q in arxiv.items():
            lines += [f"  - name: {name}", f"    query: '{q}'", "    max_results: 10"]
    p = tmp_path / "sources.yaml"
    p.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return p


def serve_arxiv(server: LocalServer, corpus: Path, name: str = "q_testing_s0_m10_bc5a6c384fe9",
                status: int = 200) -> str:
    body = (corpus / ARXIV_XML / f"{name}.xml").read_bytes()
    server.add("/api/query", body=body, status=status, content_type="application/atom+xml")
    return server.url("/api/query?{}")


def test_good_bad_and_slow_sources_in_one_run(server: LocalServer, tmp_path: Path,
                                              corpus: Path) -> None:
    good = server.add("/good.xml", body=(FIXTURES / "feeds" / "rss2.xml").read_bytes(),
                      etag='"v1"')
    atom = server.add("/atom.xml", body=(FIXTURES / "feeds" / "atom.xml").read_bytes(),
                      last_modified="Wed, 18 Nov 2026 10:00:00 GMT")
    broken = server.add("/500.xml", status=500, body=b"oops")
    garbage = server.add("/garbage", body=(FIXTURES / "feeds" / "garbage.bin").read_bytes())
    slow = server.add("/slow.xml", Route(body=atom_feed([]), delay=3))
    cfg = load_config(write_sources(
        tmp_path, {"Good": good, "Atom": atom, "Broken": broken, "Garbage": garbage,
                   "Slow": slow}, {"cs.CV": "cat:cs.CV"}))
    store = Store(tmp_path / "db.sqlite")
    gate = ArxivGate(api_url=serve_arxiv(server, corpus), delay=0.0)
    reports = {r.name: r for r in collect(cfg, store, now=NOW, arxiv=gate, deadline=1.0)}
    assert reports["Good"].status == "ok" and reports["Good"].new == 2
    assert reports["Atom"].status == "ok" and reports["Atom"].new == 2
    assert reports["cs.CV"].status == "ok" and reports["cs.CV"].new == 10
    assert reports["Broken"].status == "error" and "HTTP 500" in reports["Broken"].error
    assert reports["Garbage"].status == "error" and "not a feed" in reports["Garbage"].error
    assert reports["Slow"].status == "error" and "timed out" in reports["Slow"].error
    assert store.item_count() == 14
    assert store.source_state("Broken").failures == 1
    assert "HTTP 500" in store.source_state("Broken").last_error
    assert store.source_state("Good").etag == '"v1"'


def test_second_run_gets_304_and_parses_nothing(server: LocalServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    good = server.add("/good.xml", body=(FIXTURES / "feeds" / "rss2.xml").read_bytes(),
                      etag='"v1"')
    lm = server.add("/lm.xml", body=(FIXTURES / "feeds" / "atom.xml").read_bytes(),
                    last_modified="Wed, 18 Nov 2026 10:00:00 GMT")
    cfg = load_config(write_sources(tmp_path, {"Good": good, "LM": lm}))
    store = Store(tmp_path / "db.sqlite")
    collect(cfg, store, now=NOW)
    parsed: list[str] = []
    real_parse = feeds_mod.parse_feed
    monkeypatch.setattr(feeds_mod, "parse_feed",
                        lambda *a, **k: parsed.append(a[1]) or real_parse(*a, **k))
    again = collect(cfg, store, now=NOW + timedelta(hours=7))
    assert [r.status for r in again] == ["not-modified", "not-modified"]
    assert sum(r.new for r in again) == 0
    assert parsed == []
    assert store.item_count() == 4
    assert server.hits("/good.xml")[-1].headers["if-none-match"] == '"v1"'
    assert server.hits("/lm.xml")[-1].headers["if-modified-since"] == \
        "Wed, 18 Nov 2026 10:00:00 GMT"


def test_due_only_skips_fresh_sources(server: LocalServer, tmp_path: Path) -> None:
    good = server.add("/good.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    cfg = load_config(write_sources(tmp_path, {"Good": good}))
    store = Store(tmp_path / "db.sqlite")
    collect(cfg, store, now=NOW)
    (r,) = collect(cfg, store, now=NOW + timedelta(hours=1), due_only=True)
    assert r.status == "skipped"
    (r,) = collect(cfg, store, now=NOW + timedelta(hours=7), due_only=True)
    assert r.status == "ok"
    assert len(server.hits("/good.xml")) == 2


def test_select_one_source_by_name(tmp_path: Path) -> None:
    cfg = load_config(write_sources(tmp_path, {"A": "https://a.org/f", "B": "https://b.org/f"}))
    assert [s.name for s in select_sources(cfg, "b")] == ["B"]
    with pytest.raises(KeyError, match="no source named"):
        select_sources(cfg, "C")


# --- arXiv --------------------------------------------------------------------------------------

def test_arxiv_items_from_the_real_client(server: LocalServer, tmp_path: Path,
                                          corpus: Path) -> None:
    cfg = load_config(write_sources(tmp_path, {}, {"testing": "all:testing"}))
    store = Store(tmp_path / "db.sqlite")
    gate = ArxivGate(api_url=serve_arxiv(server, corpus), delay=0.0)
    (r,) = collect(cfg, store, now=NOW, arxiv=gate)
    assert r.status == "ok" and r.new == 10
    (req,) = server.hits("/api/query")
    assert "search_query=all%3Atesting" in req.query
    assert "sortBy=submittedDate" in req.query and "sortOrder=descending" in req.query
    papers = store.items_since(None)
    assert all(p.id.startswith("arxiv:") and p.item.kind == "paper" for p in papers)
    p = papers[0].item
    assert p.url == f"https://arxiv.org/abs/{p.arxiv_id}"
    assert p.pdf_url.startswith("http") and p.categories and p.authors and p.summary
    assert p.arxiv_version >= 1


def test_arxiv_error_response_is_reported(server: LocalServer, tmp_path: Path,
                                          corpus: Path) -> None:
    body = (corpus / "arxiv-api/arxiv-docs/error_response_malformed_id_1234.12345.xml")
    server.add("/api/query", body=body.read_bytes(), status=400)
    cfg = load_config(write_sources(tmp_path, {}, {"bad": "all:x"}))
    gate = ArxivGate(api_url=server.url("/api/query?{}"), delay=0.0, retries=0)
    (r,) = collect(cfg, Store(tmp_path / "db.sqlite"), now=NOW, arxiv=gate)
    assert r.status == "error" and "HTTP 400" in r.error


def test_arxiv_requests_are_spaced_however_many_queries(server: LocalServer, tmp_path: Path,
                                                        corpus: Path) -> None:
    cfg = load_config(write_sources(tmp_path, {}, {"a": "all:a", "b": "all:b", "c": "all:c"}))
    gate = ArxivGate(api_url=serve_arxiv(server, corpus), delay=0.4)
    reports = collect(cfg, Store(tmp_path / "db.sqlite"), now=NOW, arxiv=gate)
    assert [r.status for r in reports] == ["ok"] * 3
    hits = server.hits("/api/query")
    assert len(hits) == 3
    stamps = [h.at for h in hits]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(g >= 0.35 for g in gaps), gaps


# --- the real world, over HTTP ----------------------------------------------------------------

def test_every_real_feed_through_the_collector(server: LocalServer, tmp_path: Path,
                                               corpus: Path) -> None:
    from .test_feeds import real_feeds

    blogs = {}
    for i, p in enumerate(real_feeds(corpus)):
        ctype = "application/feed+json" if p.suffix == ".json" else "application/xml"
        blogs[f"feed{i:03d}"] = server.add(f"/f/{i}", body=p.read_bytes(), content_type=ctype)
    for name in ("q_testing_s0_m100_cfe7536492ca", "id_0000.0000_s0_m100_8b51d9633a68"):
        server.add(f"/arxiv/{name}", body=(corpus / ARXIV_XML / f"{name}.xml").read_bytes())
    cfg = load_config(write_sources(tmp_path, blogs))
    store = Store(tmp_path / "db.sqlite")
    reports = collect(cfg, store, now=NOW)
    assert len(reports) == len(blogs)
    errors = [r for r in reports if r.status == "error"]
    assert len(errors) <= 0.15 * len(reports), [r.line() for r in errors]
    assert all(r.error and "unexpected" not in r.error for r in errors)
    for s in store.items_since(None):
        assert s.item.title and s.item.url.startswith("http")


def test_a_busy_host_does_not_starve_the_others(server: LocalServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import feedbot.collect as collect_mod

    monkeypatch.setattr(collect_mod, "MAX_CONCURRENT", 4)
    monkeypatch.setattr(collect_mod, "PER_HOST", 2)
    body = atom_feed([{"title": "t", "link": "https://e.org/1"}])
    busy = {f"Busy {n}": server.add(f"/busy{n}.xml", Route(body=body, delay=0.3))
            for n in range(8)}
    port = server.httpd.server_address[1]
    other = {"Other": f"http://localhost:{port}/other.xml"}  # another host name, same server
    server.add("/other.xml", body=body)
    cfg = load_config(write_sources(tmp_path, busy | other))
    reports = collect(cfg, Store(tmp_path / "db.sqlite"), now=NOW)
    assert all(r.status == "ok" for r in reports)
    order = [r.path for r in server.requests]
    # Only 2 busy feeds run at once; the other host is served alongside them, not after all 8.
    assert order.index("/other.xml") < 4, order


# --- hostile URLs, bodies and headers: each one source's error, never the run's ---------------

def feeds_config(feeds: dict[str, str]) -> SimpleNamespace:
    """A config of blogs as they reach collection, bypassing validation (a bad URL in the store
    or a config validated by an older version must not stop a run either)."""
    specs = [SourceSpec(name, "feed", url, name) for name, url in feeds.items()]
    return SimpleNamespace(sources=lambda: specs)


def collect_feeds(tmp_path: Path, feeds: dict[str, str], **kw):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "db.sqlite")
    reports = collect(feeds_config(feeds), store, now=NOW, **kw)  # type: ignore[arg-type]
    return {r.name: r for r in reports}, store


def test_malformed_urls_are_per_source_errors(server: LocalServer, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    good = server.add("/good.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    server.add("/hop", status=302, headers={"Location": "http://127.0.0.1:99999/feed"})
    reports, store = collect_feeds(tmp_path, {
        "Good": good, "IPv6": "http://[::1/feed", "Port": "http://127.0.0.1:99999/feed",
        "Hop": server.url("/hop")})
    assert reports["Good"].status == "ok" and reports["Good"].new == 1
    assert reports["IPv6"].line() == "IPv6: error: bad URL: Invalid IPv6 URL"
    assert reports["Port"].line() == "Port: error: bad URL: Port out of range 0-65535"
    assert reports["Hop"].line() == "Hop: error: bad URL: port out of range"
    assert store.source_state("Port").failures == 1
    assert "Traceback" not in caplog.text and "unexpected" not in caplog.text


def test_an_exception_group_is_unwrapped_into_the_sources_error(tmp_path: Path) -> None:
    async def grouped(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
        raise ExceptionGroup("task group", [FetchError("cannot connect to e.org: boom")])

    async def surprise(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
        raise ExceptionGroup("task group", [OSError("weird")])

    store = Store(tmp_path / "db.sqlite")
    ctx = Context(now=NOW, http=None)  # type: ignore[arg-type]
    spec = SourceSpec("A", "feed", "https://e.org/feed", "A")
    r = run(collect_one(ctx, store, spec, {"feed": grouped}))
    assert r.line() == "A: error: cannot connect to e.org: boom"
    r = run(collect_one(ctx, store, spec, {"feed": surprise}))
    assert r.line() == "A: error: unexpected OSError: weird"


def test_an_empty_answer_is_not_a_feed(server: LocalServer, tmp_path: Path) -> None:
    empty = server.add("/empty", body=b"", content_type="application/rss+xml")
    nothing = server.add("/204", status=204, body=b"")
    reports, _ = collect_feeds(tmp_path, {"Empty": empty, "Nothing": nothing})
    assert reports["Empty"].line() == "Empty: error: not a feed: empty response"
    assert reports["Nothing"].line() == "Nothing: error: not a feed: empty response"


def test_rss_served_as_json_is_read_as_rss(server: LocalServer, tmp_path: Path) -> None:
    url = server.add("/rss", body=(FIXTURES / "feeds" / "rss2.xml").read_bytes(),
                     content_type="application/json")
    reports, _ = collect_feeds(tmp_path, {"Mislabelled": url})
    assert reports["Mislabelled"].line() == "Mislabelled: 2 new (2 in feed)"


def test_retry_after_is_capped_and_nonsense_ignored() -> None:
    assert parse_retry_after("99999999999999", NOW) == NOW + MAX_RETRY_AFTER
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW) == NOW + MAX_RETRY_AFTER
    assert timedelta(days=7) == MAX_RETRY_AFTER  # as documented
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("\uff11\uff12", NOW) is None  # full-width digits
    assert parse_retry_after("Fri, 20 Nov 2026 11:00:00 GMT", NOW) == NOW - timedelta(hours=1)


def test_a_huge_retry_after_blocks_a_source_for_a_week_at_most(server: LocalServer,
                                                               tmp_path: Path) -> None:
    huge = server.add("/huge", status=429, body=b"slow down",
                      headers={"Retry-After": "99999999999999"})
    far = server.add("/far", status=429, body=b"x",
                     headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})
    reports, store = collect_feeds(tmp_path, {"Huge": huge, "Far": far})
    latest = datetime.now(UTC) + MAX_RETRY_AFTER
    for name in ("Huge", "Far"):
        assert reports[name].line() == f"{name}: error: HTTP 429 Too Many Requests"
        retry = store.source_state(name).retry_after
        assert retry is not None and latest - timedelta(minutes=1) < retry <= latest


def test_far_future_dates_are_clamped_and_huge_feeds_cut(server: LocalServer,
                                                         tmp_path: Path) -> None:
    from .test_feeds import big_rss

    future = server.add("/future", body=atom_feed([
        {"title": "from 3000", "link": "https://e.org/3000", "updated": "3000-01-01T00:00:00Z"},
        {"title": "tomorrow", "link": "https://e.org/soon", "updated": "2026-11-21T00:00:00Z"}]))
    big = server.add("/big", body=big_rss(feeds_mod.MAX_ITEMS + 1))
    reports, store = collect_feeds(tmp_path, {"Future": future, "Big": big})
    dates = {s.item.title: s.item.published for s in store.items_since(None)
             if s.item.source == "Future"}
    assert dates == {"from 3000": NOW, "tomorrow": datetime(2026, 11, 21, tzinfo=UTC)}
    assert reports["Big"].line() == (f"Big: {feeds_mod.MAX_ITEMS} new ({feeds_mod.MAX_ITEMS} in "
                                     f"feed); kept the {feeds_mod.MAX_ITEMS} newest of "
                                     f"{feeds_mod.MAX_ITEMS + 1} items")


@pytest.mark.parametrize("raw", ["0", "-1", "abc", " "])
def test_a_bad_fetch_concurrency_falls_back_to_the_default(
        raw: str, server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import feedbot.collect as collect_mod

    monkeypatch.setenv("FEEDBOT_FETCH_CONCURRENCY", raw)
    assert collect_mod.fetch_concurrency() == collect_mod.MAX_CONCURRENT
    if raw.strip():
        assert "FEEDBOT_FETCH_CONCURRENCY" in caplog.text
    good = server.add("/good.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    store = Store(tmp_path / "db.sqlite")
    (r,) = run(asyncio.wait_for(
        collect_mod.collect_async(feeds_config({"Good": good}), store, now=NOW),  # type: ignore[arg-type]
        timeout=20))
    assert r.status == "ok"
    monkeypatch.setenv("FEEDBOT_FETCH_CONCURRENCY", "3")
    assert collect_mod.fetch_concurrency() == 3
    done = subprocess.run([sys.executable, "-c", "import feedbot.collect"], capture_output=True,
                          text=True, env={**os.environ, "FEEDBOT_FETCH_CONCURRENCY": raw})
    assert done.returncode == 0 and "Traceback" not in done.stderr


def test_a_tls_handshake_failure_says_why() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(FetchError) as e:
            run(get(f"https://127.0.0.1:{port}/feed"))
    finally:
        listener.close()
    assert str(e.value).startswith("cannot connect to 127.0.0.1: TLS handshake failed (")
    assert not str(e.value).endswith("()")


# --- arXiv answering 200 with something else ----------------------------------------------------

@pytest.mark.parametrize(("body", "what"), [
    (b"<html><body><h1>arXiv is down for maintenance</h1></body></html>",
     "a <html> document (arXiv is down for maintenance)"),
    (b"", "an empty response"),
])
def test_arxiv_answering_200_with_no_feed_is_an_error(
        body: bytes, what: str, server: LocalServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    server.add("/api/query", body=body, content_type="text/html")
    cfg = load_config(write_sources(tmp_path, {}, {"cs.LG": "cat:cs.LG"}))
    gate = ArxivGate(api_url=server.url("/api/query?{}"), delay=0.0, retries=0)
    store = Store(tmp_path / "db.sqlite")
    (r,) = collect(cfg, store, now=NOW, arxiv=gate)
    assert r.line() == f"cs.LG: error: arXiv answered with something that is not a feed: {what}"
    assert store.source_state("cs.LG").failures == 1
    assert "Malformed feed" not in caplog.text


def test_a_lone_surrogate_or_a_broken_url_in_a_feed_stops_nothing(server: LocalServer,
                                                                 tmp_path: Path) -> None:
    """A JSON Feed may escape a lone surrogate ("\\ud800") that UTF-8 cannot carry: hashing
    the item crashed the whole collection. URLs with blanks or escape sequences are stored
    percent-encoded, never as they came."""
    feed = ('{"version": "https://jsonfeed.org/version/1.1", "title": "Odd", "items": ['
            '{"id": "1", "url": "https://e.org/a b\\u001b[2J", "title": "broken \\ud800 title",'
            ' "content_text": "x\\udfffy", "authors": [{"name": "A\\ud83d"}]}]}')
    odd = server.add("/odd.json", body=feed.encode(), content_type="application/feed+json")
    good = server.add("/good.xml", body=(FIXTURES / "feeds" / "rss2.xml").read_bytes())
    reports, store = collect_feeds(tmp_path, {"Odd": odd, "Good": good})
    assert reports["Odd"].line() == "Odd: 1 new (1 in feed)"
    assert reports["Good"].line() == "Good: 2 new (2 in feed)"
    [item] = [s.item for s in store.items_since(datetime(2000, 1, 1, tzinfo=UTC))
              if s.item.source == "Odd"]
    assert (item.title, item.summary, item.authors) == ("broken \ufffd title", "x\ufffdy",
                                                        ("A\ufffd",))
    assert item.url == "https://e.org/a%20b%1B[2J"
