"""The arXiv client against real HTTP on 127.0.0.1: an overall deadline per request, the
spacing kept whatever happened to the request before, which errors are retried, Retry-After,
arXiv's own error explanations, and a person's lone author query filtered like a batch."""

import asyncio
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedbot.collect import collect, summarize
from feedbot.collectors.arxiv_api import ArxivGate, error_explanation, gated_search
from feedbot.config import Config, load_config
from feedbot.http import MAX_RETRY_AFTER
from feedbot.items import Item
from feedbot.store import Store

from .support import FIXTURES, LocalServer, Request, Route, one_connection

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
FEED = (FIXTURES / "arxiv_author_batch.xml").read_bytes()
ERROR_400 = (FIXTURES / "arxiv_error_400.xml").read_bytes()  # recorded: id_list=abc
HTML = b"<html><body><h1>arXiv is down for maintenance</h1></body></html>"


def queries(*names: str) -> Config:
    lines = ["learner:", "  stage: cnn", "arxiv:"]
    for n in names:
        lines += [f"  - name: {n}", f"    query: 'all:{n}'", "    max_results: 10"]
    return load_config("sources.yaml", text="\n".join(lines) + "\n")


def person(arxiv_name: str) -> Config:
    text = f'learner:\n  stage: cnn\npeople:\n  - name: P\n    arxiv: "{arxiv_name}"\n'
    return load_config("sources.yaml", text=text)


def gate_for(server: LocalServer, **kw: float) -> ArxivGate:
    return ArxivGate(api_url=server.url("/api/query?{}"), **{"delay": 0.0, "retries": 0, **kw})


def arxiv_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "arxiv-request" and t.is_alive()]


# --- 1. an overall deadline per request -----------------------------------------------------

@pytest.mark.parametrize("route", [
    Route(body=FEED, content_type="application/atom+xml", drip=0.2),  # drips its body
    Route(body=FEED, content_type="application/atom+xml", delay=30.0),  # no headers for long
], ids=["dripping-body", "late-headers"])
def test_a_slow_arxiv_answer_times_out_and_frees_the_gate(
        route: Route, server: LocalServer, tmp_path: Path) -> None:
    server.add("/api/query", route)
    gate = gate_for(server, deadline=0.5, delay=0.1)
    store = Store(tmp_path / "db.sqlite")
    started = time.monotonic()
    reports = collect(queries("a", "b"), store, now=NOW, arxiv=gate)
    took = time.monotonic() - started
    # both queries tried in turn, each cut off at its deadline: the gate is not held for good
    assert [r.line() for r in reports] == [f"{n}: error: arXiv API timed out after 0.5s"
                                           for n in ("a", "b")]
    assert len(server.hits("/api/query")) == 2
    # cut off: without the deadline the two would take a minute at least (a bound this wide
    # does not time the code, it only tells "cut off" from "waited it out" on a busy machine)
    assert took < 15, took
    assert store.source_state("a").failures == 1
    for _ in range(50):  # the worker thread itself ends, shortly after answering
        if not arxiv_threads():
            break
        time.sleep(0.02)
    assert not arxiv_threads()


def test_a_fast_answer_is_read_whole_within_the_deadline(server: LocalServer,
                                                         tmp_path: Path) -> None:
    server.add("/api/query", body=FEED, content_type="application/atom+xml")
    (r,) = collect(queries("a"), Store(tmp_path / "db.sqlite"), now=NOW,
                   arxiv=gate_for(server, deadline=5.0))
    assert r.status == "ok" and r.seen == 7


def test_a_hung_arxiv_request_does_not_keep_the_process_alive(server: LocalServer) -> None:
    """The caller gives up (Ctrl-C, SIGTERM, a timeout) while a request still drips: the
    process exits at once instead of waiting for the worker thread."""
    server.add("/api/query", body=FEED, content_type="application/atom+xml", drip=0.2)
    script = textwrap.dedent(f"""
        import asyncio
        from feedbot.collectors.arxiv_api import ArxivGate, gated_search
        gate = ArxivGate(api_url={server.url("/api/query?{}")!r}, delay=0.0, retries=0,
                         deadline=60.0)
        try:
            asyncio.run(asyncio.wait_for(gated_search(gate, "all:x", 5), 0.3))
        except TimeoutError:
            print("gave up")
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.stdout.strip() == "gave up", done.stderr
    assert time.monotonic() - started < 10  # imports included; the drip would take minutes


# --- 2. the spacing holds whatever happened to the request before -------------------------------

def first_then_feed(first: tuple[int, dict[str, str], bytes], wait: float = 0.0) -> Route:
    calls: list[Request] = []

    def handler(req: Request) -> tuple[int, dict[str, str], bytes]:
        calls.append(req)
        if len(calls) == 1:
            time.sleep(wait)
            return first
        return 200, {"Content-Type": "application/atom+xml"}, FEED

    return Route(handler=handler)


@pytest.mark.parametrize(("first", "wait", "error"), [
    ((200, {"Content-Type": "text/html"}, HTML), 0.0, "not a feed"),
    ((200, {}, b""), 0.0, "not a feed: an empty response"),
    ((400, {}, ERROR_400), 0.0, "HTTP 400"),
    ((500, {}, b"oops"), 0.0, "HTTP 500"),
    ((200, {}, FEED), 1.5, "timed out after 0.3s"),
], ids=["html", "empty", "400", "500", "timeout"])
def test_the_next_request_waits_the_full_spacing_after_any_failure(
        first: tuple[int, dict[str, str], bytes], wait: float, error: str,
        server: LocalServer, tmp_path: Path) -> None:
    server.add("/api/query", first_then_feed(first, wait))
    gate = gate_for(server, delay=0.5, deadline=0.3)
    reports = collect(queries("a", "b"), Store(tmp_path / "db.sqlite"), now=NOW, arxiv=gate)
    assert sorted(r.status for r in reports) == ["error", "ok"]
    assert error in next(r.error for r in reports if r.status == "error")
    one, two = server.hits("/api/query")
    assert two.at - one.at >= 0.45 + (0.3 if wait else 0.0), two.at - one.at


def test_two_processes_share_one_turn_and_its_spacing(server: LocalServer,
                                                      tmp_path: Path) -> None:
    """The daemon and a `feedbot digest` beside it each have their own gate (here: two gates,
    each collecting in its own thread and event loop). arXiv still gets one request at a time
    from this machine, each `delay` after the last one ended."""
    server.add("/api/query", body=FEED, content_type="application/atom+xml", delay=0.1)

    def process(k: int) -> threading.Thread:
        def work() -> None:
            collect(queries(f"p{k}a", f"p{k}b"), Store(tmp_path / f"db{k}.sqlite"), now=NOW,
                    arxiv=gate_for(server, delay=0.4))
        thread = threading.Thread(target=work)
        thread.start()
        return thread

    for thread in [process(1), process(2)]:
        thread.join(30)
    starts = sorted(hit.at for hit in server.hits("/api/query"))
    assert len(starts) == 4
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.1 + 0.4 - 0.05, gaps  # the answer's 0.1 s, then the spacing


@pytest.mark.parametrize("left", [b"99999999999.000000", b"not a time", b""])
def test_a_turn_file_from_another_boot_or_damaged_costs_at_most_the_spacing(
        left: bytes, server: LocalServer, tmp_path: Path, feedbot_env: Path) -> None:
    """After a reboot the monotonic clock starts again near 0, so the last request's time
    left in the file lies far ahead: no one may wait for it (at most one spacing)."""
    from feedbot.collectors.arxiv_api import ARXIV_TURN

    server.add("/api/query", body=FEED, content_type="application/atom+xml")
    feedbot_env.mkdir(parents=True, exist_ok=True)
    (feedbot_env / ARXIV_TURN).write_bytes(left)
    started = time.monotonic()
    (report,) = collect(queries("a"), Store(tmp_path / "db.sqlite"), now=NOW,
                        arxiv=gate_for(server, delay=0.3))
    assert report.status == "ok"
    assert time.monotonic() - started < 5
    assert float((feedbot_env / ARXIV_TURN).read_text()) <= time.monotonic()  # mended


# --- 5. which errors are retried, Retry-After, arXiv's explanation ------------------------------

def test_a_400_is_not_retried_and_says_what_arxiv_said(server: LocalServer,
                                                       tmp_path: Path) -> None:
    server.add("/api/query", body=ERROR_400, status=400, content_type="application/atom+xml")
    store = Store(tmp_path / "db.sqlite")
    (r,) = collect(queries("a"), store, now=NOW, arxiv=gate_for(server, retries=1))
    assert r.line() == "a: error: arXiv API answered HTTP 400: incorrect id format for abc"
    assert len(server.hits("/api/query")) == 1
    assert store.source_state("a").retry_after is None


def test_a_5xx_is_still_retried_after_the_spacing(server: LocalServer, tmp_path: Path) -> None:
    server.add("/api/query", body=b"<html>oops</html>", status=500, content_type="text/html")
    (r,) = collect(queries("a"), Store(tmp_path / "db.sqlite"), now=NOW,
                   arxiv=gate_for(server, retries=1, delay=0.2))
    assert r.error == "arXiv API answered HTTP 500"  # no error feed: nothing more to say
    one, two = server.hits("/api/query")
    assert two.at - one.at >= 0.15


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured_and_not_retried_at_once(status: int, server: LocalServer,
                                                         tmp_path: Path) -> None:
    server.add("/api/query", body=b"Service unavailable, retry later", status=status,
               content_type="text/plain", headers={"Retry-After": "3600"})
    store = Store(tmp_path / "db.sqlite")
    before = datetime.now(UTC)
    (r,) = collect(queries("a"), store, now=NOW, arxiv=gate_for(server, retries=1))
    assert r.error == f"arXiv API answered HTTP {status}"
    assert len(server.hits("/api/query")) == 1
    when = store.source_state("a").retry_after
    assert when is not None
    assert before + timedelta(seconds=3590) <= when <= datetime.now(UTC) + timedelta(hours=1)


def test_after_a_retry_after_the_other_queries_of_the_run_are_not_sent(
        server: LocalServer, tmp_path: Path) -> None:
    """arXiv answered 503 with Retry-After: 600, and the run asked again with each of its
    other queries, 3 s apart: four requests in 10 s."""
    server.add("/api/query", body=b"busy", status=503, content_type="text/plain",
               headers={"Retry-After": "600"})
    store = Store(tmp_path / "db.sqlite")
    reports = collect(queries("a", "b", "c"), store, now=NOW, arxiv=gate_for(server, retries=1))
    assert len(server.hits("/api/query")) == 1
    first, *rest = sorted(reports, key=lambda r: r.name)
    assert first.error == "arXiv API answered HTTP 503"
    for r in rest:
        assert r.error.startswith("arXiv API answered HTTP 503 (not tried: arXiv asked not to "
                                  "be asked again before "), r.error
    whens = {store.source_state(n).retry_after for n in ("a", "b", "c")}
    assert len(whens) == 1 and None not in whens  # the same time, as arXiv said


def test_retry_after_is_capped_and_reaches_every_person_of_a_batch(
        server: LocalServer, tmp_path: Path) -> None:
    server.add("/api/query", body=b"busy", status=503, content_type="text/plain",
               headers={"Retry-After": str(10**8)})
    text = ("learner:\n  stage: cnn\npeople:\n  - name: A\n    arxiv: Ada Example\n"
            "  - name: B\n    arxiv: Lin Sample\n")
    store = Store(tmp_path / "db.sqlite")
    before = datetime.now(UTC)
    reports = collect(load_config("s.yaml", text=text), store, now=NOW,
                      arxiv=gate_for(server, retries=1))
    assert {r.error for r in reports} == {
        "arXiv API answered HTTP 503 (one request for 2 people's author queries)"}
    for name in ("A/arxiv", "B/arxiv"):
        when = store.source_state(name).retry_after
        assert when is not None
        assert before + MAX_RETRY_AFTER <= when <= datetime.now(UTC) + MAX_RETRY_AFTER


def test_an_answer_cut_short_is_an_error_and_nothing_of_it_is_stored(
        server: LocalServer, tmp_path: Path) -> None:
    """The package's parser recovers: an answer that stopped inside its third paper's author
    list was "3 new", that paper stored with part of its authors, and no later answer of
    the same version mended it."""
    cut = FEED[:FEED.index(b"<entry>", FEED.index(b"<entry>", FEED.index(b"<entry>") + 1) + 1)
               + 400]
    server.add("/api/query", body=cut, content_type="application/atom+xml")
    store = Store(tmp_path / "db.sqlite")
    (r,) = collect(queries("a"), store, now=NOW, arxiv=gate_for(server, retries=1))
    assert r.status == "error" and r.error.startswith(
        "arXiv's answer was incomplete: the answer was cut short ("), r.error
    assert len(server.hits("/api/query")) == 2  # retried, as a dropped connection is
    assert store.item_count() == 0


def test_a_connection_dropped_mid_answer_says_so(tmp_path: Path) -> None:
    def half(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/atom+xml\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(FEED) + FEED[:len(FEED) // 2])
        conn.close()

    with one_connection(half) as port:
        gate = ArxivGate(api_url=f"http://127.0.0.1:{port}/api/query?{{}}", delay=0.0,
                         retries=0)
        (r,) = collect(queries("a"), Store(tmp_path / "db.sqlite"), now=NOW, arxiv=gate)
    assert r.error == ("arXiv's answer was incomplete: the connection dropped in the middle "
                       "of the answer; nothing of it was stored"), r.error


def test_a_429_without_retry_after_holds_the_runs_other_queries(
        server: LocalServer, tmp_path: Path) -> None:
    server.add("/api/query", body=b"Too many requests", status=429, content_type="text/plain")
    store = Store(tmp_path / "db.sqlite")
    before = datetime.now(UTC)
    reports = collect(queries("a", "b", "c"), store, now=NOW, arxiv=gate_for(server, retries=1))
    assert len(server.hits("/api/query")) == 1
    assert sum("not tried" in r.error for r in reports) == 2
    for name in ("a", "b", "c"):
        when = store.source_state(name).retry_after
        assert when is not None and before + timedelta(minutes=4) < when


def test_a_query_arxiv_has_nothing_for_says_check_its_spelling(
        server: LocalServer, tmp_path: Path) -> None:
    """`category: cs.CVV` read "ok, 0 items" for ever: arXiv has every paper of a real
    category, so nothing at all is a misspelling."""
    empty = re.sub(rb"<entry>.*</entry>", b"", FEED, flags=re.S).replace(
        b"<opensearch:totalResults>7<", b"<opensearch:totalResults>0<")
    server.add("/api/query", body=empty, content_type="application/atom+xml")
    (r,) = collect(queries("a"), Store(tmp_path / "db.sqlite"), now=NOW,
                   arxiv=gate_for(server))
    assert r.line() == ("a: 0 new (0 in feed); arXiv has no paper for all:a: check its "
                        "spelling (a category as arXiv writes it, such as cs.CV)")


def test_error_explanation_reads_the_error_feed(corpus: Path) -> None:
    documented = corpus / "arxiv-api/arxiv-docs/error_response_malformed_id_1234.12345.xml"
    assert error_explanation(documented.read_bytes()) == "incorrect id format for 1234.12345"
    assert error_explanation(ERROR_400) == "incorrect id format for abc"
    assert error_explanation(FEED) == ""  # a feed of papers explains nothing
    assert error_explanation(HTML) == ""
    assert error_explanation(b"") == ""


# --- 3. and 4. a person's lone author query, filtered like a batch ------------------------------

@pytest.mark.parametrize(("arxiv_name", "expected"), [
    ("Yann LeCun", ["2611.05002"]),  # "Y. LeCun"; Xavier LeCun's 05004 is someone else's
    ("LeCun", ["2611.05002", "2611.05004"]),  # a surname alone: both LeCuns
    ("José Núñez-García", ["2611.05003"]),
])
def test_a_lone_author_query_keeps_only_that_persons_papers(
        arxiv_name: str, expected: list[str], server: LocalServer, tmp_path: Path) -> None:
    server.add("/api/query", body=FEED, content_type="application/atom+xml")
    store = Store(tmp_path / "db.sqlite")
    (r,) = collect(person(arxiv_name), store, now=NOW, arxiv=gate_for(server), only="P/arxiv")
    assert r.status == "ok" and r.seen == len(expected)
    assert sorted(s.item.arxiv_id for s in store.items_since(None)) == expected
    assert {s.item.person for s in store.items_since(None)} == {"P"}


# --- arXiv out of reach: the other arXiv sources of the moment fail at once -------------------

def test_when_arxiv_cannot_be_reached_the_next_searches_fail_at_once(tmp_path: Path) -> None:
    """Offline, eight arXiv sources took 45 s to fail one by one (spacing and retries each)."""
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gate = ArxivGate(api_url=f"http://127.0.0.1:{port}/api/query?{{}}", delay=2.0, retries=1)
    store = Store(tmp_path / "db.sqlite")
    started = time.monotonic()
    reports = collect(queries("a", "b", "c"), store, now=NOW, arxiv=gate)
    took = time.monotonic() - started
    assert [r.status for r in reports] == ["error"] * 3
    assert reports[0].error == "cannot reach the arXiv API"
    # the reason stays true when `feedbot sources` shows it later: it names the failure's time
    assert all(re.search(r"\(not tried: another query could not reach arXiv at \d{4}-\d\d-"
                         r"\d\d \d\d:\d\d:\d\d UTC, and arXiv is not asked again for 60 s "
                         r"after that\)", r.error) for r in reports[1:]), reports[1].error
    assert took < 6, took  # one search and its retry, 2 s apart; three would take 10 s
    assert all(store.source_state(n).failures == 1 for n in "abc")


# --- one page, and the spacing in monotonic time -----------------------------------------------

def test_a_short_page_is_kept_and_no_second_page_is_asked_for(
        corpus: Path, server: LocalServer, tmp_path: Path) -> None:
    """arXiv answered 10 entries where 15 were asked for (its totalResults: 214881): the
    package asked for the next page, which came back empty, and raised, the 10 papers lost."""
    recorded = corpus / "arxiv-api/arxiv.py/atom_xml"
    page = (recorded / "q_testing_s0_m10_bc5a6c384fe9.xml").read_bytes()
    empty = (recorded / "id_0000.0000_s0_m100_8b51d9633a68.xml").read_bytes()  # 0 results

    def answer(req: Request) -> tuple[int, dict[str, str], bytes]:
        first = "start=0&" in req.query + "&"
        return 200, {"Content-Type": "application/atom+xml"}, page if first else empty

    server.add("/api/query", Route(handler=answer))
    text = "learner:\n  stage: cnn\narxiv:\n  - name: t\n    query: testing\n    max_results: 15\n"
    store = Store(tmp_path / "db.sqlite")
    (r,) = collect(load_config("s.yaml", text=text), store, now=NOW,
                   arxiv=gate_for(server, retries=1))
    assert r.status == "ok" and r.seen == 10, r.line()
    assert len(store.items_since(None)) == 10
    [hit] = server.hits("/api/query")
    assert "start=0&" in hit.query and "max_results=15" in hit.query


class _SetBack(datetime):
    """The wall clock, `back` behind the real one (daylight saving time ending, NTP)."""

    back = timedelta(0)

    @classmethod
    def now(cls, tz: object = None) -> "_SetBack":  # type: ignore[override]
        real = datetime.now(tz)  # type: ignore[arg-type]
        return cls.fromtimestamp((real - cls.back).timestamp(), real.tzinfo)


def test_the_spacing_does_not_wait_out_a_wall_clock_set_back(
        server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The package spaced requests by `datetime.now()`: with the clock set back an hour between
    two searches, the second slept that hour (holding every arXiv source behind it)."""
    import arxiv

    from feedbot.collectors import arxiv_api

    server.add("/api/query", body=FEED, content_type="application/atom+xml")
    monkeypatch.setattr(arxiv, "datetime", _SetBack)
    monkeypatch.setattr(arxiv_api, "datetime", _SetBack)
    monkeypatch.setattr(_SetBack, "back", timedelta(0))
    gate = gate_for(server, delay=0.3)

    async def two_searches() -> float:
        await gated_search(gate, "all:a", 5)
        monkeypatch.setattr(_SetBack, "back", timedelta(hours=1))
        started = time.monotonic()
        await asyncio.wait_for(gated_search(gate, "all:b", 5), 20)
        return time.monotonic() - started

    took = asyncio.run(two_searches())
    one, two = server.hits("/api/query")
    assert two.at - one.at >= 0.25  # still spaced
    assert took < 10, took  # not an hour


# --- abstracts are plain text ----------------------------------------------------------------

def test_an_abstract_with_angle_brackets_keeps_every_word(
        corpus: Path, server: LocalServer, tmp_path: Path) -> None:
    """Real abstracts (papers/arxiv-dev.jsonl) write "<thought>", "<memory>" or "$a<b$ ...
    $c>d$": read as HTML, the words between the brackets were lost."""
    import json
    from html import escape

    lines = (corpus / "papers/arxiv-dev.jsonl").read_text(encoding="utf-8").splitlines()
    paper = next(p for line in lines if (p := json.loads(line))["id"] == "2606.05976")
    page = (corpus / "arxiv-api/arxiv.py/atom_xml/q_testing_s0_m10_bc5a6c384fe9.xml").read_text(
        encoding="utf-8")
    start, end = page.index("<summary>"), page.index("</summary>")  # the first entry's
    page = page[:start] + f"<summary>{escape(paper['abstract'])}" + page[end:]
    server.add("/api/query", body=page.encode(), content_type="application/atom+xml")
    text = "learner:\n  stage: cnn\narxiv:\n  - name: t\n    query: testing\n    max_results: 10\n"
    store = Store(tmp_path / "db.sqlite")
    (r,) = collect(load_config("s.yaml", text=text), store, now=NOW, arxiv=gate_for(server))
    assert r.status == "ok" and r.seen == 10
    [got] = [s.item for s in store.items_since(None) if "<thought>" in s.item.summary]
    assert got.summary == " ".join(paper["abstract"].split())
    assert got.summary.count("<memory>") == 2


# --- a busy category: reading back past the first page -----------------------------------------

class Listing:
    """A query's listing served newest first, `start` and `max_results` as asked: the 100
    entries of a recorded arXiv answer (`q_testing_s0_m100`, sorted by relevance there),
    restamped 10 minutes apart from an hour before NOW, newest first. `show(n)` lists the
    oldest `n` only: the newer ones are announced later."""

    def __init__(self, corpus: Path) -> None:
        from lxml import etree

        recorded = corpus / "arxiv-api/arxiv.py/atom_xml/q_testing_s0_m100_cfe7536492ca.xml"
        self.root = etree.fromstring(recorded.read_bytes())
        atom = "{http://www.w3.org/2005/Atom}"
        self.entries = self.root.findall(f"{atom}entry")
        for e in self.entries:
            self.root.remove(e)
        for k, e in enumerate(self.entries):
            when = (NOW - timedelta(hours=1, minutes=10 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
            e.find(f"{atom}published").text = e.find(f"{atom}updated").text = when
        self.shown = len(self.entries)
        self.short: dict[int, int] = {}  # start → how many entries arXiv gives there

    def show(self, n: int) -> None:
        self.shown = n

    def ids(self, first: int, last: int) -> list[str]:
        """The arXiv ids of the entries `first` to `last` (newest first), without version."""
        from feedbot.items import split_arxiv_id

        atom = "{http://www.w3.org/2005/Atom}"
        return [split_arxiv_id(e.findtext(f"{atom}id"))[0] for e in self.entries[first:last]]

    def answer(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        import copy
        from urllib.parse import parse_qs

        from lxml import etree

        args = parse_qs(req.query)
        start, size = int(args["start"][0]), int(args["max_results"][0])
        listed = self.entries[len(self.entries) - self.shown:]
        root = copy.deepcopy(self.root)
        total = root.find("{http://a9.com/-/spec/opensearch/1.1/}totalResults")
        total.text = str(self.shown)
        size = self.short.get(start, size)
        root.extend(copy.deepcopy(e) for e in listed[start:start + size])
        return 200, {"Content-Type": "application/atom+xml"}, etree.tostring(root)


def category(max_results: int) -> Config:
    return load_config("s.yaml", text="learner:\n  stage: cnn\narxiv:\n  - name: lg\n"
                                      f"    category: cs.LG\n    max_results: {max_results}\n")


def pages(server: LocalServer) -> list[tuple[str, str]]:
    from urllib.parse import parse_qs

    asked = [parse_qs(h.query) for h in server.hits("/api/query")]
    return [(a["start"][0], a["max_results"][0]) for a in asked]


def test_a_busy_category_reads_back_to_the_newest_paper_it_took_in(
        corpus: Path, server: LocalServer, tmp_path: Path) -> None:
    """One page of 10 newest papers, where 70 came out since the last collection: 60 of them
    were never seen. The first collection reads one page (nothing to reach back to); the next
    reads on until a page reaches back to the newest paper taken in before."""
    listing = Listing(corpus)
    server.add("/api/query", Route(handler=listing.answer))
    store = Store(tmp_path / "db.sqlite")
    listing.show(30)  # the 30 oldest: the first collection sees the 10 newest of them
    (r,) = collect(category(10), store, now=NOW, arxiv=gate_for(server))
    assert r.status == "ok" and r.new == 10 and not r.warning, r.line()
    assert pages(server) == [("0", "10")]

    listing.show(100)  # 70 more announced
    (r,) = collect(category(10), store, now=NOW + timedelta(hours=6), arxiv=gate_for(server))
    assert pages(server)[1:] == [("0", "10"), ("10", "250")]  # the second page reaches back
    # the 70 new ones, and the 20 older ones the first collection's page did not hold
    assert r.status == "ok" and r.new == 90 and not r.warning, r.line()
    assert {s.item.arxiv_id for s in store.items_since(None)} == set(listing.ids(0, 100))


def test_reading_back_stops_at_its_bound_and_says_papers_may_have_been_missed(
        corpus: Path, server: LocalServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from feedbot.collectors import arxiv_api

    monkeypatch.setattr(arxiv_api, "PAGE_BACK", 30)
    monkeypatch.setattr(arxiv_api, "PAGE_BACK_SIZE", 10)
    listing = Listing(corpus)
    server.add("/api/query", Route(handler=listing.answer))
    store = Store(tmp_path / "db.sqlite")
    listing.show(10)
    collect(category(10), store, now=NOW, arxiv=gate_for(server))
    listing.show(100)  # 90 new: the first page and two more read 30 of them
    (r,) = collect(category(10), store, now=NOW + timedelta(hours=6), arxiv=gate_for(server))
    assert pages(server)[1:] == [("0", "10"), ("10", "10"), ("20", "10")]
    assert r.status == "ok" and r.new == 30, r.line()
    assert "more new papers for cat:cs.LG than one collection reads (30)" in r.warning
    assert "may have been missed; collect it more often" in r.warning
    assert store.source_state("lg").notice == r.warning  # `feedbot sources` shows it

    # the next collection reaches back to the newest paper of that one, and says no more
    (r,) = collect(category(10), store, now=NOW + timedelta(hours=12), arxiv=gate_for(server))
    assert pages(server)[4:] == [("0", "10")] and r.new == 0 and not r.warning, r.line()
    assert store.source_state("lg").notice == ""


def test_reading_back_goes_as_far_as_the_last_success_when_no_paper_date_was_kept() -> None:
    """A source collected before the newest paper's date was kept (its cursor) reads back to
    its last success; a first collection, to nothing (one page)."""
    from feedbot.collectors.arxiv_api import reached_back_to
    from feedbot.store import SourceState

    then = NOW - timedelta(hours=6)
    assert reached_back_to(SourceState("lg")) is None
    assert reached_back_to(SourceState("lg", last_success=then)) == then
    kept = SourceState("lg", cursor="2026-11-19T08:00:00+00:00", last_success=then)
    assert reached_back_to(kept) == datetime(2026, 11, 19, 8, tzinfo=UTC)


# --- withdrawn papers -------------------------------------------------------------------------

def withdrawal_feed(corpus: Path, *versions: tuple[str, str, str]) -> bytes:
    """The recorded answer for 1707.08567 (one entry), its entry once per (id with version,
    summary, comment) given: a withdrawal is a version whose comment or abstract says so.
    The corpus holds no withdrawn paper; the wording is arXiv's (arXiv:2401.00917v3's
    comment, and the abstract older withdrawals were given)."""
    recorded = corpus / "arxiv-api/arxiv.py/atom_xml/id_1707.08567_s0_m100_6a1afebfc6a3.xml"
    text = recorded.read_bytes().decode()
    head, _, rest = text.partition("  <entry>")
    entry, _, tail = rest.partition("</entry>\n")
    out = []
    for vid, summary, comment in versions:
        e = entry.replace("1707.08567v1", vid)
        e = re.sub(r"<summary>.*?</summary>", f"<summary>{summary}</summary>", e, flags=re.S)
        e = re.sub(r"<arxiv:comment>.*?</arxiv:comment>",
                   f"<arxiv:comment>{comment}</arxiv:comment>", e, flags=re.S)
        out.append(f"  <entry>{e}</entry>\n")
    return (head + "".join(out) + tail).encode()


ABSTRACT = "The 10th Asia-Europe workshop in Concepts in Information Theory and Communications."
COMMENT = "44 pages"
WITHDRAWN = ("This paper has been withdrawn by the author. It has been superseded by a "
             "significantly updated version available at arXiv:2406.00780")


def test_a_withdrawn_paper_is_not_stored(corpus: Path, server: LocalServer,
                                         tmp_path: Path) -> None:
    """Its newest version says it is withdrawn, in the comment (the abstract kept) or as the
    abstract: nothing to recommend. An abstract that only mentions a withdrawal is a paper."""
    server.add("/api/query", content_type="application/atom+xml", body=withdrawal_feed(
        corpus, ("2611.00001v2", ABSTRACT, WITHDRAWN),
        ("2611.00002v2", "This paper has been withdrawn by the author(s).", ""),
        ("2611.00003v1", ABSTRACT, "Withdrawn due to an error in Lemma 2"),
        ("2611.00004v1", "Drug trials withdrawn early bias meta-analyses; we correct it.",
         COMMENT)))
    store = Store(tmp_path / "db.sqlite")
    (r,) = collect(category(10), store, now=NOW, arxiv=gate_for(server))
    assert r.status == "ok" and r.new == 1, r.line()
    assert [s.item.arxiv_id for s in store.items_since(None)] == ["2611.00004"]


@pytest.mark.parametrize("voted", [False, True], ids=["unvoted", "voted"])
def test_a_stored_paper_whose_new_version_withdraws_it_leaves_the_digest(
        voted: bool, corpus: Path, server: LocalServer, tmp_path: Path) -> None:
    """v1 stored; v2 withdraws it. It is removed (and another source linking to it does not
    bring it back), unless a chat voted on it: then it stays as it was (its vote trains on the
    paper's text, not on the withdrawal notice)."""
    store = Store(tmp_path / "db.sqlite")
    server.add("/api/query", content_type="application/atom+xml",
               body=withdrawal_feed(corpus, ("2611.00001v1", ABSTRACT, COMMENT)))
    collect(category(10), store, now=NOW, arxiv=gate_for(server))
    (stored,) = store.items_since(None)
    if voted:
        store.set_feedback("cli", stored.id, "up", NOW)
    notice = "This paper has been withdrawn by the author(s)."
    server.add("/api/query", content_type="application/atom+xml",
               body=withdrawal_feed(corpus, ("2611.00001v2", notice if voted else ABSTRACT,
                                             "" if voted else WITHDRAWN)))
    reports = collect(category(10), store, now=NOW + timedelta(hours=6), arxiv=gate_for(server))
    # removed, or kept and marked: either way `collect` says so
    assert reports[0].withdrawn == 1 and "0 new, 1 withdrawn (1 in feed)" in reports[0].line()
    assert summarize(reports) == "1 source: 1 ok, 0 failed, 0 new items, 1 withdrawn on arXiv"
    (again,) = collect(category(10), store, now=NOW + timedelta(hours=12),
                       arxiv=gate_for(server))
    assert again.status == "ok" and again.withdrawn == 0 and "withdrawn" not in again.line()
    if voted:
        (kept,) = store.items_since(None)
        assert kept.id == stored.id and kept.item.arxiv_version == 1
        assert kept.item.summary == ABSTRACT
        return
    assert store.items_since(None) == [] and store.get_item(stored.id) is None
    assert store.summary_matches("workshop") in ([], None)  # None: no word index here
    post = Item(title="A post on AEW10", url="https://arxiv.org/abs/2611.00001", source="blog",
                published=NOW)
    assert store.upsert_items([post], NOW + timedelta(hours=7)).new == 0
    # v3 corrects it: a paper again, and news again
    server.add("/api/query", content_type="application/atom+xml",
               body=withdrawal_feed(corpus, ("2611.00001v3", ABSTRACT, COMMENT)))
    (r,) = collect(category(10), store, now=NOW + timedelta(hours=18), arxiv=gate_for(server))
    assert r.new == 1, r.line()
    assert [s.item.arxiv_version for s in store.items_since(None)] == [3]


@pytest.mark.parametrize("given", [40, 0], ids=["short", "empty"])
def test_a_page_arxiv_answers_short_loses_no_paper(
        given: int, corpus: Path, server: LocalServer, tmp_path: Path) -> None:
    """arXiv at times answers a page short, even empty, though its totalResults says there is
    more: reading goes on after the papers it gave; after an empty page the cursor stays, and
    the next collection reads back over what this one could not."""
    listing = Listing(corpus)
    server.add("/api/query", Route(handler=listing.answer))
    store = Store(tmp_path / "db.sqlite")
    listing.show(10)
    collect(category(10), store, now=NOW, arxiv=gate_for(server))
    listing.show(100)  # 90 new
    listing.short = {10: given}
    (r,) = collect(category(10), store, now=NOW + timedelta(hours=6), arxiv=gate_for(server))
    if given:
        assert pages(server)[1:] == [("0", "10"), ("10", "250"), ("50", "250")]
        assert r.new == 90 and not r.warning, r.line()
        return
    assert r.new == 10 and "arXiv answered an empty page at paper 11 of 100" in r.warning
    listing.short = {}
    (r,) = collect(category(10), store, now=NOW + timedelta(hours=12), arxiv=gate_for(server))
    assert r.new == 80 and not r.warning, r.line()
    assert {s.item.arxiv_id for s in store.items_since(None)} == set(listing.ids(0, 100))


@pytest.mark.parametrize("comment", [
    "An earlier version of this paper was withdrawn due to an error in Lemma 2; this version "
    "corrects it",
    "Accepted at ICML 2024. A prior version of this manuscript was withdrawn from ICLR 2024",
    "Withdrawn from ICLR 2024; accepted at CVPR 2024",
    "This paper was withdrawn from NeurIPS 2023 and is now accepted at ICLR 2024",
])
def test_a_comment_that_mentions_a_withdrawal_does_not_withdraw_the_paper(comment: str) -> None:
    from feedbot.collectors.arxiv_api import is_withdrawn

    assert not is_withdrawn(ABSTRACT, comment)
    assert is_withdrawn(ABSTRACT, WITHDRAWN)
    assert is_withdrawn(ABSTRACT, "arXiv admin note: This submission has been withdrawn by "
                                  "arXiv administrators due to inappropriate text overlap")
    assert is_withdrawn(ABSTRACT, "This paper has been withdrawn from arXiv: an error in Eq. 3")


def test_one_entry_dated_in_the_future_does_not_stop_reading_back() -> None:
    """The cursor is at most the collection's clock: an entry dated 2099 kept as the cursor
    made every later collection read one page as if nothing were new since."""
    from types import SimpleNamespace

    from feedbot.collectors.arxiv_api import newest_cursor

    papers = [SimpleNamespace(published=datetime(2099, 1, 1, tzinfo=UTC)),
              SimpleNamespace(published=NOW - timedelta(hours=3))]
    assert newest_cursor(papers, "", NOW) == NOW.isoformat()  # type: ignore[arg-type]
    assert newest_cursor(papers[1:], "", NOW) == (NOW - timedelta(hours=3)).isoformat()  # type: ignore[arg-type]
    assert newest_cursor(papers[1:], NOW.isoformat(), NOW) is None  # type: ignore[arg-type]
