"""Collection against real HTTP on 127.0.0.1: conditional GET, limits, failures per source,
arXiv through the real `arxiv` client, and every real-world feed through the collector."""

import asyncio
import email.utils
import gzip
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import feedbot.collectors.feeds as feeds_mod
from feedbot.collect import (
    collect,
    collect_async,
    collect_one,
    is_due,
    next_due,
    select_sources,
)
from feedbot.collectors import Collected, Context
from feedbot.collectors.arxiv_api import ArxivGate
from feedbot.config import SourceSpec, load_config
from feedbot.http import MAX_RETRY_AFTER, FetchError, fetch, make_client, parse_retry_after
from feedbot.items import Item
from feedbot.scheduler import next_collect_time
from feedbot.store import SourceState, Store

from .support import (
    FIXTURES,
    LocalServer,
    Overlap,
    QuietServer,
    Route,
    atom_feed,
    one_connection,
)

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
    # a feed dead for a year at a 6 h interval, or for days at 5 minutes: 2 ** 1,024 overflowed
    # a float, and the OverflowError dropped its job and stopped `feedbot run` from starting
    for failures in (1_025, 10**6):
        dead = SourceState("s", last_attempt=NOW, failures=failures)
        assert next_due(dead, hour) == NOW + timedelta(hours=1)
        assert next_collect_time(dead, hour, NOW) >= NOW + timedelta(hours=1)
    told = SourceState("s", last_attempt=NOW, failures=1, retry_after=NOW + timedelta(hours=5))
    assert not is_due(told, hour, NOW + timedelta(hours=4))
    assert is_due(told, hour, NOW + timedelta(hours=5))


def test_an_attempt_recorded_by_a_clock_set_ahead_does_not_hold_the_source_back() -> None:
    """One collection with the clock a month ahead (set right since): every source waited
    its interval after that date, a month, and `sources` said "ok, last ok just now"."""
    hour = 3600.0
    ahead = SourceState("s", last_attempt=NOW + timedelta(days=30),
                        last_success=NOW + timedelta(days=30))
    assert is_due(ahead, hour, NOW)
    assert next_collect_time(ahead, hour, NOW) <= NOW + timedelta(minutes=3)
    # a few minutes apart (another process's clock) is no clock change
    close = SourceState("s", last_attempt=NOW + timedelta(minutes=2))
    assert not is_due(close, hour, NOW)
    from feedbot.pipeline import _ago

    assert _ago(NOW + timedelta(days=30), NOW) == "later than now (the clock was ahead)"
    assert _ago(NOW + timedelta(seconds=30), NOW) == "just now"


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



def test_a_feed_whose_parse_never_ends_fails_alone_within_the_deadline(
        server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetch had a deadline and the parse none: a feed whose markup took minutes to parse
    held up the whole collection (`feedbot digest` waits for it). Its parse now has one."""
    import threading

    good = server.add("/good.xml", body=(FIXTURES / "feeds" / "rss2.xml").read_bytes())
    stuck = server.add("/stuck.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    cfg = load_config(write_sources(tmp_path, {"Good": good, "Stuck": stuck}))
    release = threading.Event()
    real_parse = feeds_mod.parse_feed

    def parse(content: bytes, source: str, **kw: Any) -> Any:
        if source == "Stuck":
            release.wait(30)  # a parse that does not end by itself
        return real_parse(content, source, **kw)

    monkeypatch.setattr(feeds_mod, "parse_feed", parse)
    monkeypatch.setattr(feeds_mod, "PARSE_TIMEOUT", 0.5)
    store = Store(tmp_path / "db.sqlite")
    try:
        reports = {r.name: r for r in collect(cfg, store, now=NOW)}
    finally:
        release.set()
    assert reports["Good"].status == "ok" and reports["Good"].new == 2
    assert reports["Stuck"].status == "error"
    assert "parsing its" in reports["Stuck"].error and "took more than 0.5 s" in \
        reports["Stuck"].error
    assert store.source_state("Stuck").failures == 1 and store.item_count() == 2



def _posts(n: int) -> bytes:
    items = "".join(f"<item><title>Post {i}</title><link>https://e.org/{i}</link>"
                    f"<description>{'words ' * 100}</description></item>" for i in range(n))
    return (f"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title>{items}"
            "</channel></rss>").encode()


@pytest.mark.parametrize("gzipped", [True, False])
def test_a_feed_cut_short_keeps_no_validators_and_comes_whole_later(
        server: LocalServer, tmp_path: Path, gzipped: bool) -> None:
    """A body that ends early (gzip data without its end, or XML cut off on a connection that
    closed) was read as the whole feed and its ETag kept: the next fetch was answered "not
    modified", and the rest of the feed never came."""
    whole = _posts(50)
    packed = gzip.compress(whole)
    cut = packed[:len(packed) // 2] if gzipped else whole[:len(whole) // 3]
    url = server.add("/feed.xml", body=cut, etag='"v1"',
                     headers={"Content-Encoding": "gzip"} if gzipped else {})
    cfg = load_config(write_sources(tmp_path, {"Cut": url}))
    store = Store(tmp_path / "db.sqlite")
    (first,) = collect(cfg, store, now=NOW)
    assert first.status == "ok" and 0 < first.new < 50
    assert ("the response was cut short (its gzip data ends early)" in first.line()) == gzipped
    assert "malformed feed, read anyway" in first.line()
    assert store.source_state("Cut").etag == ""
    server.add("/feed.xml", body=whole, etag='"v1"')  # the server sends it whole again
    (second,) = collect(cfg, store, now=NOW + timedelta(hours=7))
    assert "if-none-match" not in server.hits("/feed.xml")[-1].headers
    assert second.new == 50 - first.new and second.seen == 50  # (the entry cut off: updated)
    assert store.item_count() == 50 and store.source_state("Cut").etag == '"v1"'


def test_entries_sharing_one_guid_are_kept_apart(server: LocalServer, tmp_path: Path) -> None:
    """A CMS that writes the same guid for every entry: each entry overwrote the one stored
    before it (the store finds an item by its source's guid), so one post of five was kept."""
    items = "".join(f"<item><title>Post {i}</title><link>https://e.org/post-{i}</link>"
                    "<guid isPermaLink='false'>https://e.org/</guid></item>" for i in range(5))
    url = server.add("/feed.xml", body=(f"<rss version='2.0'><channel><title>t</title>{items}"
                                        "</channel></rss>").encode())
    cfg = load_config(write_sources(tmp_path, {"Same guid": url}))
    store = Store(tmp_path / "db.sqlite")
    (first,) = collect(cfg, store, now=NOW)
    assert first.line() == "Same guid: 5 new (5 in feed)" and store.item_count() == 5
    (again,) = collect(cfg, store, now=NOW + timedelta(hours=7))
    assert again.new == 0 and store.item_count() == 5


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


def test_a_source_named_by_its_own_name_is_that_source_alone(tmp_path: Path) -> None:
    """The blog "arXiv cs.CV" (arXiv's RSS listing) beside the query "cs.CV", whose label is
    "arXiv cs.CV": `--source "arXiv cs.CV"` collected both, and so did every scheduled run of
    the blog in `feedbot run` (which collects each source by its name), asking arXiv again
    each time. A person's name still takes all of their places."""
    cfg = load_config(write_sources(
        tmp_path, {"arXiv cs.CV": "https://export.arxiv.org/rss/cs.CV"}, {"cs.CV": "cat:cs.CV"},
        extra="people:\n  - name: Ada Lovelace\n    x: ada\n    blog: https://ada.org/feed\n"))
    assert [s.name for s in select_sources(cfg, "arxiv CS.CV")] == ["arXiv cs.CV"]
    assert [s.name for s in select_sources(cfg, "cs.cv")] == ["cs.CV"]
    assert [s.name for s in select_sources(cfg, " ada lovelace ")] == [
        "Ada Lovelace/x", "Ada Lovelace/blog"]
    assert [s.name for s in select_sources(cfg, "Ada Lovelace on X")] == ["Ada Lovelace/x"]
    with pytest.raises(KeyError, match="no source named 'Ada'; sources: Ada Lovelace, arXiv"):
        select_sources(cfg, "Ada")


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
    assert reports["Hop"].line() == ("Hop: error: redirected to a malformed URL, "
                                     "'http://127.0.0.1:99999/feed' (Port out of range 0-65535)")
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
    # past the year 9999 once in UTC: the OverflowError was reported as "bad URL: port out of
    # range", and the server's wait was lost
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 -2359", NOW) == NOW + MAX_RETRY_AFTER
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
    farther = server.add("/farther", status=429, body=b"x",
                         headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 -2359"})
    reports, store = collect_feeds(tmp_path, {"Huge": huge, "Far": far, "Farther": farther})
    for name in ("Huge", "Far", "Farther"):  # from the collection's clock
        retry = store.source_state(name).retry_after
        assert retry == NOW + MAX_RETRY_AFTER
        assert reports[name].line() == (f"{name}: error: HTTP 429 Too Many Requests (the server "
                                        f"asks to wait until {retry:%Y-%m-%d %H:%M} UTC)")


def test_a_retry_after_date_is_shown_and_honoured(server: LocalServer, tmp_path: Path) -> None:
    """Told only "HTTP 503", the user could not know why the source then sat out every run.
    (On the collection's clock: a date from the real clock passed the 7-day cap on 2026-11-27,
    a week after `NOW`, and the test failed.)"""
    until = NOW + timedelta(hours=2)
    busy = server.add("/busy", status=503, body=b"",
                      headers={"Retry-After": email.utils.format_datetime(until, usegmt=True)})
    past = server.add("/past", status=503, body=b"",
                      headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    reports, store = collect_feeds(tmp_path, {"Busy": busy, "Past": past})
    assert reports["Busy"].line() == ("Busy: error: HTTP 503 Service Unavailable (the server asks "
                                      f"to wait until {until:%Y-%m-%d %H:%M} UTC)")
    assert reports["Past"].line() == "Past: error: HTTP 503 Service Unavailable"
    assert store.source_state("Busy").retry_after == until
    (again,) = collect(feeds_config({"Busy": busy}), store,  # type: ignore[arg-type]
                       now=NOW + timedelta(hours=1), due_only=True)
    assert again.status == "skipped" and len(server.hits("/busy")) == 1


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
    with one_connection(lambda conn: conn.close()) as port, pytest.raises(FetchError) as e:
        run(get(f"https://127.0.0.1:{port}/feed"))
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


# --- hostile servers: bombs, redirects out of the web, gone feeds, web pages -------------------

def gzip_bomb(size: int, layers: int) -> bytes:
    """`size` zero bytes gzipped `layers` times, built a megabyte at a time."""
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    body = b"".join(z.compress(block) for _ in range(size >> 20)) + z.flush()
    for _ in range(layers - 1):
        body = gzip.compress(body, 9)
    return body


@pytest.mark.parametrize("layers", [1, 2])
def test_a_gzip_bomb_is_refused_without_inflating_it(layers: int, server: LocalServer) -> None:
    """The size limit held for the decoded body, but httpx inflated each network chunk whole
    before it was counted: 64 KiB of gzip became 64 MiB at once, and gzip inside gzip
    ("Content-Encoding: gzip, gzip") a few hundred bytes as many megabytes as they hold."""
    encoding = ", ".join(["gzip"] * layers)
    bomb = server.add("/bomb", body=gzip_bomb(256 << 20, layers),
                      headers={"Content-Encoding": encoding})
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match="too large"):
            run(get(bomb, max_bytes=1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB held for a 1 MiB limit"
    # Honest compressed feeds read as before, whichever way they are compressed.
    feed = (FIXTURES / "feeds" / "rss2.xml").read_bytes()
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw, as some servers send
    for body, how in [(gzip.compress(feed), "gzip"), (zlib.compress(feed), "deflate"),
                      (deflate.compress(feed) + deflate.flush(), "deflate"),
                      (gzip.compress(gzip.compress(feed)), "gzip, x-gzip")]:
        url = server.add("/honest", body=body, headers={"Content-Encoding": how})
        assert run(get(url)).content == feed, how
    bad = server.add("/bad", body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match=r"^cannot decode the gzip response \(Error -3"):
        run(get(bad))


@pytest.mark.parametrize(("location", "message"), [
    ("ftp://ftp.example.org/feed.xml",
     "redirected to 'ftp://ftp.example.org/feed.xml', which is not an http(s) URL"),
    ("file:///etc/passwd", "redirected to 'file:///etc/passwd', which is not an http(s) URL"),
    ("javascript:alert(1)", "redirected to a malformed URL (For absolute URLs, path must be "
                            "empty or begin with '/')"),
])
def test_a_redirect_out_of_the_web_is_named(location: str, message: str, server: LocalServer,
                                            tmp_path: Path) -> None:
    hop = server.add("/hop", status=302, headers={"Location": location})
    good = server.add("/good.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    reports, _ = collect_feeds(tmp_path, {"Hop": hop, "Good": good})
    assert reports["Hop"].line() == f"Hop: error: {message}"
    assert reports["Good"].status == "ok"


def test_a_public_feed_cannot_redirect_into_the_local_network() -> None:
    """A feed's server must not make feedbot reach the user's own machine or network (a cloud
    metadata service, a router's admin page). A feed the user configured at such an address is
    fetched as usual, and may redirect within it; only a redirect from a public host to a
    local or private address is refused."""
    hops = {"https://blog.example.org/feed.xml": "https://feeds.example.net/blog",
            "http://127.0.0.1/feed": "http://192.168.1.5/rss"}
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        asked.append(url)
        if url in hops:
            return httpx.Response(301, headers={"Location": hops[url]})
        if url.startswith("https://evil.example.org/"):
            return httpx.Response(302, headers={"Location": url.partition("?to=")[2]})
        return httpx.Response(200, content=b"<rss/>")

    async def go(url: str) -> str:
        async with make_client(transport=httpx.MockTransport(handler)) as client:
            return (await fetch(client, url)).url

    for target in ["http://127.0.0.1:8080/admin", "http://localhost/",
                   "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/feed",
                   "http://[::1]/feed", "http://[::ffff:127.0.0.1]/", "http://2130706433/",
                   "http://127.1/", "http://0.0.0.0/"]:
        asked.clear()
        with pytest.raises(FetchError, match=r"^redirected from evil\.example\.org to .+, a "
                                             r"local or private address: refused"):
            run(go(f"https://evil.example.org/feed?to={target}"))
        assert asked == [f"https://evil.example.org/feed?to={target}"], target
    assert run(go("https://blog.example.org/feed.xml")) == "https://feeds.example.net/blog"
    assert run(go("http://127.0.0.1/feed")) == "http://192.168.1.5/rss"


def test_a_gone_feed_or_a_web_page_says_what_to_do(server: LocalServer, tmp_path: Path) -> None:
    gone = server.add("/gone.xml", status=410, body=b"gone")
    page = server.add("/", body=(FIXTURES / "feeds" / "blog-home.html").read_bytes(),
                      content_type="text/html; charset=utf-8")
    good = server.add("/good.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    reports, store = collect_feeds(tmp_path, {"Old blog": gone, "Home": page, "Good": good})
    assert reports["Old blog"].line() == ("Old blog: error: HTTP 410 Gone: the feed was removed "
                                          "for good; stop fetching it with `feedbot unfollow "
                                          "'Old blog'`")
    assert reports["Home"].line() == (f"Home: error: not a feed: a web page; its feed is "
                                      f"{server.url('/feed.xml')} (use that URL)")
    assert reports["Good"].line() == "Good: 1 new (1 in feed)"
    assert store.source_state("Old blog").failures == 1


def test_a_day_of_anchored_posts_and_a_podcast_are_stored_whole(server: LocalServer,
                                                                tmp_path: Path,
                                                                corpus: Path) -> None:
    feeds = corpus / "feeds"
    scripting = server.add("/scripting.rss",
                           body=(feeds / "netnewswire/scriptingNews.rss").read_bytes())
    podcast = server.add("/cast.rss",
                         body=(feeds / "rss-parser/input/itunes-missing-image.rss").read_bytes())
    reports, store = collect_feeds(tmp_path, {"Scripting": scripting, "Cast": podcast})
    assert reports["Scripting"].new == 48  # of 50 entries; two repeat another's guid
    assert reports["Cast"].new == 130  # of 131; two episodes share a guid


def test_a_feed_that_moved_for_good_says_where(server: LocalServer, tmp_path: Path) -> None:
    """A 301 was followed silently on every fetch: the user never learnt the new address, and
    the old one, once its domain lapses, may serve anything."""
    new = server.add("/new.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]),
                     etag='"v1"')
    server.add("/old.xml", status=301, headers={"Location": "/mid.xml"})
    server.add("/mid.xml", status=308, headers={"Location": new})
    server.add("/tmp.xml", status=302, headers={"Location": "/other.xml"})
    server.add("/other.xml", body=atom_feed([{"title": "u", "link": "https://e.org/2"}]),
               etag='"v1"')
    feeds = {"Moved": server.url("/old.xml"), "Visiting": server.url("/tmp.xml")}
    reports, store = collect_feeds(tmp_path, feeds)
    notice = f"moved permanently to {new}: update its URL in sources.yaml"
    assert reports["Moved"].line() == f"Moved: 1 new (1 in feed); {notice}"
    assert reports["Visiting"].line() == "Visiting: 1 new (1 in feed)"  # a 302 is temporary
    again = {r.name: r for r in collect(feeds_config(feeds), store,  # type: ignore[arg-type]
                                        now=NOW + timedelta(hours=7))}
    assert again["Moved"].line() == f"Moved: not modified; {notice}"
    assert again["Visiting"].line() == "Visiting: not modified"


def test_an_https_feed_moved_to_plain_http_is_not_told_to_move_there() -> None:
    """A 301 from an https feed to its http address said "update its URL in sources.yaml":
    it had the user give up encryption on the word of an answer anyone on the path could
    forge (`feedbot follow` keeps the https address since). A move within https, or from
    http, still says to update."""
    body = atom_feed([{"title": "t", "link": "https://e.org/1"}])
    moves = {"https://down.example.org/feed": "http://down.example.org/feed",
             "https://up.example.org/feed": "https://www.example.org/feed",
             "http://plain.example.org/feed": "https://plain.example.org/feed"}

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url in moves:
            return httpx.Response(301, headers={"Location": moves[url]})
        return httpx.Response(200, content=body,
                              headers={"Content-Type": "application/atom+xml"})

    async def go(url: str) -> Collected:
        async with make_client(transport=httpx.MockTransport(handler)) as client:
            return await feeds_mod.collect_feed(Context(now=NOW, http=client),
                                                SourceSpec("A", "feed", url, "A"),
                                                SourceState("A"))

    down = run(go("https://down.example.org/feed"))
    assert len(down.items) == 1  # still read, where it moved
    assert down.warning == ("moved permanently to http://down.example.org/feed, plain http: "
                            "its posts come unencrypted; keep the https address, or give the "
                            "http one in sources.yaml if you trust it")
    for old, new in list(moves.items())[1:]:
        assert run(go(old)).warning == f"moved permanently to {new}: update its URL in " \
                                       "sources.yaml"


def test_a_large_feed_is_parsed_without_stalling_the_rest(server: LocalServer,
                                                         tmp_path: Path) -> None:
    """feedparser takes seconds over a feed of a few megabytes: parsed on the event loop, it
    stood every other fetch (their deadlines running on) and the Telegram bot still."""
    text = "word <b>bold</b> <a href='https://e.org/x'>link</a> " * 60_000
    big = server.add("/big.xml", body=(
        "<rss version='2.0' xmlns:content='http://purl.org/rss/1.0/modules/content/'><channel>"
        "<item><title>Big</title><link>https://e.org/big</link><content:encoded><![CDATA["
        f"<p>{text}</p>]]></content:encoded></item></channel></rss>").encode())
    stalls: list[float] = []

    async def go():  # type: ignore[no-untyped-def]
        done = asyncio.Event()

        async def tick() -> None:
            while not done.is_set():
                before = time.monotonic()
                await asyncio.sleep(0.01)
                stalls.append(time.monotonic() - before)

        ticker = asyncio.create_task(tick())
        try:
            return await collect_async(feeds_config({"Big": big}),  # type: ignore[arg-type]
                                       Store(tmp_path / "db.sqlite"), now=NOW)
        finally:
            done.set()
            await ticker

    (report,) = run(go())
    assert report.line() == "Big: 1 new (1 in feed)"
    assert max(stalls) < 1.0, f"the event loop stood still for {max(stalls):.1f} s"


# --- the collection's clock, credentials in a feed's URL ---------------------------------------

def test_a_retry_after_in_seconds_counts_from_the_collections_clock(server: LocalServer,
                                                                    tmp_path: Path) -> None:
    """It counted from the wall clock: with the scheduler's or a test's clock elsewhere, the
    source was held back for years, or not at all."""
    later = datetime(2031, 3, 1, 12, tzinfo=UTC)
    busy = server.add("/busy", status=503, body=b"", headers={"Retry-After": "120"})
    store = Store(tmp_path / "db.sqlite")
    cfg = feeds_config({"Busy": busy})
    (r,) = collect(cfg, store, now=later)  # type: ignore[arg-type]
    assert store.source_state("Busy").retry_after == later + timedelta(seconds=120)
    assert r.line() == ("Busy: error: HTTP 503 Service Unavailable (the server asks to wait "
                        "until 2031-03-01 12:02 UTC)")
    (again,) = collect(cfg, store, now=later + timedelta(seconds=60),  # type: ignore[arg-type]
                       due_only=True)
    assert again.status == "skipped"
    (third,) = collect(cfg, store, now=later + timedelta(seconds=121),  # type: ignore[arg-type]
                       due_only=True)
    assert third.status == "error" and len(server.hits("/busy")) == 2


def test_a_password_in_a_feed_url_is_sent_but_never_shown(server: LocalServer, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    """httpx logged every request's URL with its `user:password@`, and the password reached
    the "moved permanently to …" notice and every item whose link was relative to the feed."""
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    port = server.base.rsplit(":", 1)[1]
    server.add("/feed.xml", body=b"<rss version='2.0'><channel><title>Private</title><item>"
                                 b"<title>One</title><link>/p/1</link><description>see "
                                 b"&lt;a href='/p/2'&gt;two&lt;/a&gt;</description></item>"
                                 b"</channel></rss>")
    server.add("/old.xml", status=301, headers={"Location": "/feed.xml"})
    server.add("/away.xml", status=302, headers={"Location": f"http://localhost:{port}/feed.xml"})
    server.add("/missing.xml", status=404, body=b"no")
    secret = f"http://ada:s3cret@127.0.0.1:{port}"
    feeds = {"Moved": f"{secret}/old.xml", "Away": f"{secret}/away.xml",
             "Missing": f"{secret}/missing.xml"}
    reports, store = collect_feeds(tmp_path, feeds)
    assert reports["Moved"].line() == (f"Moved: 1 new (1 in feed); moved permanently to "
                                       f"http://ada:***@127.0.0.1:{port}/feed.xml: update its "
                                       "URL in sources.yaml")
    assert reports["Away"].status == "ok"
    assert reports["Missing"].line() == "Missing: error: HTTP 404 Not Found"
    basic = "Basic " + base64.b64encode(b"ada:s3cret").decode()
    sent = {(r.path, r.headers.get("host", "").split(":")[0]): r.headers.get("authorization")
            for r in server.requests}
    assert sent == {("/old.xml", "127.0.0.1"): basic, ("/feed.xml", "127.0.0.1"): basic,
                    ("/away.xml", "127.0.0.1"): basic, ("/missing.xml", "127.0.0.1"): basic,
                    ("/feed.xml", "localhost"): None}  # not to another origin
    urls = {s.item.url for s in store.items_since(None)}
    assert urls == {f"http://127.0.0.1:{port}/p/1", f"http://localhost:{port}/p/1"}
    shown = caplog.text + "\n".join(r.line() for r in reports.values()) + repr(
        [s.item for s in store.items_since(None)])
    assert "s3cret" not in shown and basic.split()[1] not in shown


def test_feeds_on_subdomains_of_one_service_share_its_limit(server: LocalServer, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Each newsletter on its own subdomain (alice.substack.com) counted as a host of its own:
    fifty of them were fetched 32 at a time from one service, which answers that with 429."""
    import feedbot.collect as collect_mod

    real = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kw: object) -> object:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.endswith(".substack.test"):
            host = "127.0.0.1"
        return real(host, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    slow = Overlap(atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    server.add("/feed", Route(handler=slow))
    port = server.httpd.server_address[1]
    feeds = {f"Letter {n}": f"http://writer{n}.substack.test:{port}/feed" for n in range(12)}
    reports, _ = collect_feeds(tmp_path, feeds)
    assert all(r.status == "ok" for r in reports.values()), reports
    assert len(server.hits("/feed")) == 12
    assert slow.most <= collect_mod.PER_HOST, f"{slow.most} at once against one service"
    assert collect_mod.feed_host("https://news.bbc.co.uk/rss") == "bbc.co.uk"
    assert collect_mod.feed_host("http://[::1]:8080/feed") == "::1"


def test_a_last_modified_in_the_future_is_not_sent_back(tmp_path: Path) -> None:
    """A file dated in 2030 (a server's clock ahead at deploy) was served with that
    Last-Modified; sent back as If-Modified-Since, the server (Python's own, as most static
    servers) answered 304 to every later version of the file until 2030."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    site = tmp_path / "site"
    site.mkdir()
    feed = site / "feed.xml"
    feed.write_bytes(atom_feed([{"title": "first", "link": "https://e.org/1"}]))
    os.utime(feed, (datetime(2030, 1, 1, tzinfo=UTC).timestamp(),) * 2)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = QuietServer(("127.0.0.1", 0),
                        functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/feed.xml"
        reports, store = collect_feeds(tmp_path, {"Ahead": url})
        assert reports["Ahead"].new == 1
        assert store.source_state("Ahead").last_modified == "Tue, 01 Jan 2030 00:00:00 GMT"
        feed.write_bytes(atom_feed([{"title": "first", "link": "https://e.org/1"},
                                    {"title": "second", "link": "https://e.org/2"}]))
        os.utime(feed, (NOW.timestamp() + 3600,) * 2)
        (r,) = collect(feeds_config({"Ahead": url}), store,  # type: ignore[arg-type]
                       now=NOW + timedelta(hours=2))
        assert r.line() == "Ahead: 1 new (2 in feed)"
        # a Last-Modified in the past goes back as usual, and is answered with 304
        (r,) = collect(feeds_config({"Ahead": url}), store,  # type: ignore[arg-type]
                       now=NOW + timedelta(hours=3))
        assert r.line() == "Ahead: not modified"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- a database error while recording one source is that source's result ----------------------

def _refuse(db: Path, sql: str) -> None:
    """A trigger that makes SQLite refuse a write, as a damaged row or a constraint would."""
    import sqlite3

    con = sqlite3.connect(db)
    con.execute(sql)
    con.commit()
    con.close()


@pytest.mark.parametrize("where", ["inline", "thread"])
def test_a_source_that_cannot_be_recorded_stops_nothing(server: LocalServer, tmp_path: Path,
                                                        where: str) -> None:
    """A database error while recording one source (here SQLite's own IntegrityError from a
    refused write) ended the whole collection: the sources not yet recorded were never
    recorded nor reported. `feedbot collect` records inline; `feedbot run` on a thread."""
    from concurrent.futures import ThreadPoolExecutor

    feeds = {name: server.add(f"/{name}.xml", etag=f'"{name}1"', body=atom_feed(
        [{"title": f"{name} post", "link": f"https://e.org/{name}"}])) for name in "ABD"}
    feeds["C"] = server.add("/C.xml", status=500, body=b"down")
    path = tmp_path / "db.sqlite"
    store = Store(path)
    _refuse(path, "CREATE TRIGGER refuse_b BEFORE INSERT ON item_sources WHEN NEW.source = 'B' "
                  "BEGIN SELECT RAISE(ABORT, 'damaged row'); END")
    _refuse(path, "CREATE TRIGGER refuse_c BEFORE UPDATE ON source_state WHEN NEW.name = 'C' "
                  "BEGIN SELECT RAISE(ABORT, 'damaged row'); END")
    pool = ThreadPoolExecutor(1)
    on_thread: list[Store] = []

    async def in_thread(fn, *args):  # type: ignore[no-untyped-def]
        def with_store():  # type: ignore[no-untyped-def]
            if not on_thread:
                on_thread.append(Store(path))
            return fn(on_thread[0], *args)
        return await asyncio.get_running_loop().run_in_executor(pool, with_store)

    kw = {"db": in_thread} if where == "thread" else {}
    try:
        reports = {r.name: r for r in run(collect_async(
            feeds_config(feeds), None if kw else store, now=NOW, **kw))}  # type: ignore[arg-type]
    finally:
        pool.submit(lambda: [s.close() for s in on_thread]).result()
        pool.shutdown()
    assert reports["A"].line() == "A: 1 new (1 in feed)"
    assert reports["D"].line() == "D: 1 new (1 in feed)"
    assert reports["B"].line() == ("B: error: could not be recorded (IntegrityError: damaged "
                                   "row); nothing of it was kept, and the next run fetches it "
                                   "again")
    assert reports["C"].line().startswith("C: error: HTTP 500")
    assert reports["C"].line().endswith("; could not be recorded (IntegrityError: damaged row); "
                                        "nothing of it was kept, and the next run fetches it "
                                        "again")
    assert [n for n, r in reports.items() if r.store_error is not None] == ["B", "C"]
    assert store.item_count() == 2 and store.item_count("B") == 0
    assert store.source_state("B").etag == ""  # no validators without their items
    # Once the row takes writes again, B's items come: no 304 hides them.
    _refuse(path, "DROP TRIGGER refuse_b")
    (again,) = collect(feeds_config({"B": feeds["B"]}), store,  # type: ignore[arg-type]
                       now=NOW + timedelta(hours=7))
    assert again.line() == "B: 1 new (1 in feed)"
    assert "if-none-match" not in server.hits("/B.xml")[-1].headers
    store.close()


# --- two processes collecting at once (the daemon and `feedbot digest` beside it) ---------------

def _entries(prefix: str, n: int = 3) -> list[dict[str, str]]:
    return [{"title": f"{prefix} {i}", "link": f"https://e.org/{prefix}/{i}"} for i in range(n)]


def _collect_apart(cfg: object, db: Path, out: dict[str, dict], key: str) -> threading.Thread:
    """A collection with its own database connection and event loop, as another process has
    (flock locks held through two open files conflict within one process too)."""
    def work() -> None:
        store = Store(db)
        try:
            out[key] = {r.name: r for r in collect(cfg, store, now=NOW)}  # type: ignore[arg-type]
        finally:
            store.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def _wait_for(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.02)


def test_two_collections_at_once_fetch_a_source_once(server: LocalServer, tmp_path: Path) -> None:
    slow = server.add("/slow", body=atom_feed(_entries("slow")), delay=0.8,
                      content_type="application/atom+xml")
    quick = server.add("/quick", body=atom_feed(_entries("quick")),
                       content_type="application/atom+xml")
    cfg, db, out = feeds_config({"slow": slow, "quick": quick}), tmp_path / "db.sqlite", {}
    first = _collect_apart(cfg, db, out, "first")
    _wait_for(lambda: len(server.hits("/slow")) == 1)  # the first is fetching it now
    with Store(db) as look:  # and has recorded "quick" before the second begins
        _wait_for(lambda: look.source_state("quick").last_success is not None)
    second = _collect_apart(cfg, db, out, "second")
    first.join(30)
    second.join(30)
    assert len(server.hits("/slow")) == 1
    assert (out["first"]["slow"].status, out["first"]["slow"].new) == ("ok", 3)
    assert out["second"]["slow"].line() == \
        "slow: skipped: collected meanwhile by another feedbot process"
    # recorded before the second began, and not held: `feedbot collect` fetches it again
    assert len(server.hits("/quick")) == 2
    with Store(db) as store:
        assert store.item_count("slow") == 3 and store.item_count("quick") == 3


def test_a_source_whose_holder_recorded_nothing_is_fetched_after_it(
        server: LocalServer, tmp_path: Path) -> None:
    """A process killed mid-fetch lets go of its lock (the kernel drops it) without recording
    an outcome: the waiting collection then fetches the source itself."""
    from feedbot import locks
    from feedbot.collect import source_lock

    url = server.add("/f", body=atom_feed(_entries("f")), content_type="application/atom+xml")
    db = tmp_path / "db.sqlite"
    Store(db).close()
    lock = source_lock(str(db), "f")
    assert lock is not None
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.exclusive(lock):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    store = Store(db)
    (report,) = collect(feeds_config({"f": url}), store, now=NOW)  # type: ignore[arg-type]
    thread.join(10)
    assert (report.status, report.new) == ("ok", 3)
    assert len(server.hits("/f")) == 1
    assert not lock.exists()  # no lock file is left beside the database


def test_a_source_held_past_patience_is_skipped_and_said(
        server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from feedbot import collect as collect_mod
    from feedbot import locks
    from feedbot.collect import source_lock

    monkeypatch.setattr(collect_mod, "LOCK_PATIENCE", 0.03)  # × the 60 s deadline: 1.8 s
    held_url = server.add("/held", body=atom_feed(_entries("held")),
                          content_type="application/atom+xml")
    free_url = server.add("/free", body=atom_feed(_entries("free")),
                          content_type="application/atom+xml")
    db = tmp_path / "db.sqlite"
    store = Store(db)
    lock = source_lock(str(db), "held")
    assert lock is not None
    with locks.exclusive(lock):
        reports = {r.name: r for r in collect(  # type: ignore[arg-type]
            feeds_config({"held": held_url, "free": free_url}), store, now=NOW)}
    assert reports["held"].line() == \
        "held: skipped: another feedbot process has been collecting it for over 1.8 s"
    assert server.hits("/held") == []
    assert (reports["free"].status, reports["free"].new) == ("ok", 3)  # the rest go on
    assert store.source_state("held").last_attempt is None  # nothing recorded: due next time


def test_items_the_database_cannot_hold_fail_that_source_only(
        server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value SQLite cannot bind (an arXiv version of 20 digits overflowed its integer) raised
    out of the whole collection: no source was recorded. Now that source fails, the others are
    stored, and the next run tries it again."""
    feeds = {n: server.add(f"/{n}", body=atom_feed(_entries(n)),
                           content_type="application/atom+xml") for n in ("bad", "good")}
    store = Store(tmp_path / "db.sqlite")
    real = Store.upsert_items

    def upsert(self: Store, items: list[Item], now: datetime) -> Any:
        if items and items[0].source == "bad":
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(self, items, now)

    monkeypatch.setattr(Store, "upsert_items", upsert)
    reports = {r.name: r for r in collect(feeds_config(feeds), store,  # type: ignore[arg-type]
                                          now=NOW)}
    assert reports["bad"].line() == ("bad: error: unexpected OverflowError while storing its "
                                     "items: Python int too large to convert to SQLite INTEGER")
    assert (reports["good"].status, reports["good"].new) == ("ok", 3)
    assert store.item_count("bad") == 0 and store.source_state("bad").failures == 1
    store.close()


def test_a_date_clamped_by_a_clock_that_was_behind_is_mended_when_the_feed_is_read_again(
        server: LocalServer, tmp_path: Path) -> None:
    """A Raspberry Pi without a clock battery boots ten days behind: last week's post looks as
    if from the future and was dated the (wrong) fetch time for good. Once the clock is right,
    the next read dates it as the feed does; a date still in the future keeps its first date."""
    feed = server.add("/f", body=atom_feed([
        {"title": "last week", "link": "https://e.org/lw", "updated": "2026-11-15T00:00:00Z"},
        {"title": "from 3000", "link": "https://e.org/3000", "updated": "3000-01-01T00:00:00Z"},
        {"title": "older", "link": "https://e.org/old", "updated": "2026-11-01T00:00:00Z"}]))
    behind = NOW - timedelta(days=10)
    store = Store(tmp_path / "db.sqlite")

    def dates() -> dict[str, datetime | None]:
        return {s.item.title: s.item.published for s in store.items_since(None)}

    collect(feeds_config({"Pi": feed}), store, now=behind)  # type: ignore[arg-type]
    assert dates() == {"last week": behind, "from 3000": behind,
                       "older": datetime(2026, 11, 1, tzinfo=UTC)}
    collect(feeds_config({"Pi": feed}), store, now=NOW)  # type: ignore[arg-type]
    assert dates() == {"last week": datetime(2026, 11, 15, tzinfo=UTC), "from 3000": behind,
                       "older": datetime(2026, 11, 1, tzinfo=UTC)}
    collect(feeds_config({"Pi": feed}), store,  # type: ignore[arg-type]
            now=NOW + timedelta(days=1))
    assert dates()["from 3000"] == behind
