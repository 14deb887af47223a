"""Collection against real HTTP on 127.0.0.1: conditional GET, limits, failures per source,
arXiv through the real `arxiv` client, and every real-world feed through the collector."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import feedbot.collectors.feeds as feeds_mod
from feedbot.collect import collect, is_due, next_due, select_sources
from feedbot.collectors.arxiv_api import ArxivGate
from feedbot.config import load_config
from feedbot.http import FetchError, fetch, make_client, parse_retry_after
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
    url = server.add("/slow", body=b"y" * 400, drip=0.05)
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        run(get(url, deadline=0.3))
    assert time.monotonic() - started < 2


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
