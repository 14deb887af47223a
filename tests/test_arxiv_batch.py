"""The people's arXiv author queries go out as one request per batch: the query, attributing
results to people by name, per-person caps and errors, against real HTTP on 127.0.0.1."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest

from feedbot.collect import author_batches, collect
from feedbot.collectors.arxiv_api import (
    ArxivGate,
    attribute,
    author_name,
    author_query,
    batch_max_results,
    name_key,
)
from feedbot.config import Config, SourceSpec, load_config
from feedbot.store import Store

from .support import FIXTURES, LocalServer, atom_feed

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
BATCH_XML = FIXTURES / "arxiv_author_batch.xml"
PEOPLE = {"Ada Example": "Ada Example", "Lin Sample": "Lin Sample",
          "José Núñez-García": "Jose Nunez-Garcia", "Yann LeCun": "Yann LeCun"}


def people_config(blog_url: str = "", max_items: int = 2, arxiv_query: str = "") -> Config:
    lines = ["learner:", "  stage: cnn", "defaults:", f"  max_items: {max_items}"]
    if blog_url:
        lines += ["blogs:", "  - name: Example Blog", f"    url: {blog_url}"]
    if arxiv_query:
        lines += ["arxiv:", "  - name: testing", f"    query: '{arxiv_query}'",
                  "    max_results: 10"]
    lines.append("people:")
    for person, arxiv_name in PEOPLE.items():
        lines += [f'  - name: "{person}"', f'    arxiv: "{arxiv_name}"']
    return load_config("sources.yaml", text="\n".join(lines) + "\n")


def serve_batch(server: LocalServer, status: int = 200, body: bytes | None = None) -> ArxivGate:
    server.add("/api/query", body=BATCH_XML.read_bytes() if body is None else body,
               status=status, content_type="application/atom+xml")
    return ArxivGate(api_url=server.url("/api/query?{}"), delay=0.0, retries=0)


def by_source(store: Store) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in store.items_since(None):
        for name in s.sources:
            out.setdefault(name, []).append(s.item)
    return out


def spec(person: str, arxiv_name: str, max_items: int = 50) -> SourceSpec:
    return SourceSpec(f"{person}/arxiv", "arxiv", f'au:"{arxiv_name}"', f"{person} on arXiv",
                      person=person, max_items=max_items)


def result(arxiv_id: str, day: int, *authors: str) -> SimpleNamespace:
    return SimpleNamespace(entry_id=f"http://arxiv.org/abs/{arxiv_id}v1",
                           published=datetime(2026, 11, day, tzinfo=UTC),
                           authors=[SimpleNamespace(name=a) for a in authors])


# --- pure: names, the query, attribution ---------------------------------------------------------

def same_author(a: str, b: str) -> bool:
    """Two names `attribute` takes for one person: equal (surname, first initial) keys."""
    ka = name_key(a)
    return ka is not None and ka == name_key(b)


def test_name_matching_ignores_accents_case_and_punctuation_and_uses_initials() -> None:
    assert name_key("Yann LeCun") == ("lecun", "y")
    assert same_author("Yann LeCun", "Y. LeCun")
    assert same_author("Yann LeCun", "Yann Lecun")
    assert same_author("Yann LeCun", "LeCun, Yann")
    assert same_author("José Núñez-García", "Jose Nunez-Garcia")
    assert same_author("Jose Nunez-Garcia", "J. NÚÑEZ-GARCÍA")
    assert same_author("Andrew Y. Ng", "Andrew Ng")
    assert same_author("Jean-Baptiste Alayrac", "J.-B. Alayrac")
    assert same_author("Martin Luther King Jr.", "M. L. King")


def test_letters_nfkd_cannot_strip_are_folded() -> None:
    assert same_author("Łukasz Kaiser", "Lukasz Kaiser")
    assert same_author("Søren Hauberg", "Soren Hauberg")
    assert same_author("Ivan Đukić", "Ivan Dukic")
    assert same_author("Bernhard Schölkopf", "B. Scholkopf")
    assert same_author("Markus Weißenbach", "M. Weissenbach")
    assert same_author("Ægir Ærøskøbing", "Aegir Aeroskobing")
    assert same_author("Œdipe Lœwe", "OEdipe Loewe")
    assert same_author("Þóra Þórsdóttir", "Thora Thorsdottir")
    assert same_author("Aslı Çelikyılmaz", "Asli Celikyilmaz")


def test_a_surname_alone_matches_any_given_name() -> None:
    surname = spec("Yann", "LeCun")
    assert name_key("LeCun") == ("lecun", "")
    got = attribute([result("2611.00001", 1, "Yann LeCun"), result("2611.00002", 2, "X. LeCun"),
                     result("2611.00003", 3, "Yann Lecunn")], [surname])
    assert [r.entry_id for r in got["Yann/arxiv"]] == ["http://arxiv.org/abs/2611.00002v1",
                                                      "http://arxiv.org/abs/2611.00001v1"]
    full = spec("Yann", "Yann LeCun")  # with a given name, a one-word author is not a match
    assert attribute([result("2611.00004", 4, "LeCun")], [full]) == {"Yann/arxiv": []}


def test_a_folded_name_is_attributed_in_a_batch() -> None:
    kaiser, lin = spec("Łukasz", "Łukasz Kaiser"), spec("Lin", "Lin Sample")
    got = attribute([result("2611.00001", 1, "Lukasz Kaiser", "Lin Sample")], [kaiser, lin])
    assert {n: len(rs) for n, rs in got.items()} == {"Łukasz/arxiv": 1, "Lin/arxiv": 1}


def test_a_different_first_initial_or_surname_does_not_match() -> None:
    assert not same_author("Yann LeCun", "Xavier LeCun")
    assert not same_author("Jose Nunez-Garcia", "Jose Garcia")
    assert not same_author("Justin Johnson", "Justin Johnston")
    assert not same_author("", "")
    assert name_key("42 !") is None


def test_author_query_joins_names_with_or() -> None:
    assert author_query(["Ada Example", "Yann LeCun"]) == 'au:"Ada Example" OR au:"Yann LeCun"'
    assert author_name(spec("Ada", "Ada Example")) == "Ada Example"
    assert author_name(SourceSpec("cs.LG", "arxiv", "cat:cs.LG", "arXiv cs.LG")) is None


def test_attribute_gives_each_person_their_papers_newest_first_capped() -> None:
    ada, lin, yann = spec("Ada", "Ada Example", 2), spec("Lin", "Lin Sample"), spec("Yann",
                                                                                      "Yann LeCun")
    results = [result("2611.00003", 3, "Ada Example"),
               result("2611.00009", 9, "Ada Example", "L. Sample"),  # out of order on purpose
               result("2611.00005", 5, "Ada Example"),
               result("2611.00004", 4, "Xavier LeCun"),  # au: matched fuzzily: nobody's
               result("2611.00002", 2, "Y. LeCun")]
    got = attribute(results, [ada, lin, yann])
    ids = {name: [r.entry_id.rsplit("/", 1)[1] for r in rs] for name, rs in got.items()}
    assert ids == {"Ada/arxiv": ["2611.00009v1", "2611.00005v1"],  # capped at 2, newest first
                   "Lin/arxiv": ["2611.00009v1"],
                   "Yann/arxiv": ["2611.00002v1"]}


def test_batches_hold_only_due_author_queries_and_at_most_size() -> None:
    specs = [spec(f"P{i}", f"Name{i} Person") for i in range(5)]
    specs.insert(2, SourceSpec("cs.LG", "arxiv", "cat:cs.LG", "arXiv cs.LG"))
    batches = author_batches(specs, lambda s: s.name != "P1/arxiv", size=3)
    assert [[s.name for s in b] for b in batches] == [["P0/arxiv", "P2/arxiv", "P3/arxiv"],
                                                      ["P4/arxiv"]]
    assert author_batches(specs, lambda s: s.name == "P0/arxiv") == []  # one due: no batch
    assert batch_max_results([spec("a", "A B", 50)] * 3) == 150
    assert batch_max_results([spec("a", "A B", 500)] * 20) == 1000


# --- one request for everyone, over HTTP ------------------------------------------------------

def test_due_author_queries_are_one_request_attributed_per_person(server: LocalServer,
                                                                  tmp_path: Path) -> None:
    gate = serve_batch(server)
    store = Store(tmp_path / "db.sqlite")
    reports = {r.name: r for r in collect(people_config(), store, now=NOW, arxiv=gate)}
    assert {n: r.status for n, r in reports.items()} == dict.fromkeys(
        [f"{p}/arxiv" for p in PEOPLE], "ok")
    [req] = server.hits("/api/query")
    args = parse_qs(req.query)
    assert args["search_query"] == [" OR ".join(f'au:"{n}"' for n in PEOPLE.values())]
    assert args["max_results"] == ["8"]  # 4 people × max_items 2, one page
    assert args["sortBy"] == ["submittedDate"] and args["sortOrder"] == ["descending"]

    got = by_source(store)
    ids = {name: sorted(i.arxiv_id for i in items) for name, items in got.items()}
    assert ids == {
        "Ada Example/arxiv": ["2611.05001", "2611.05005"],  # 2611.05006 is over her cap of 2
        "Lin Sample/arxiv": ["2611.05001", "2611.05007"],  # 05001 is by Ada and Lin: both
        "José Núñez-García/arxiv": ["2611.05003"],
        "Yann LeCun/arxiv": ["2611.05002"],  # "Y. LeCun"; Xavier LeCun's 05004 is nobody's
    }
    assert "2611.05004" not in {s.item.arxiv_id for s in store.items_since(None)}
    for name, items in got.items():  # the store keeps the shared 05001 once, as Ada's
        assert all(i.person == name.split("/")[0] for i in items if i.arxiv_id != "2611.05001")
        assert all(i.kind == "paper" and i.source == name for i in items
                   if i.arxiv_id != "2611.05001")
    assert reports["Ada Example/arxiv"].seen == 2 and reports["Ada Example/arxiv"].new == 2
    assert all(store.source_state(n).last_success == NOW for n in reports)


def test_only_due_people_are_batched(server: LocalServer, tmp_path: Path) -> None:
    gate = serve_batch(server)
    store = Store(tmp_path / "db.sqlite")
    cfg = people_config()
    collect(cfg, store, now=NOW, arxiv=gate, only="Yann LeCun")  # fresh: not due in 1 h
    reports = {r.name: r for r in collect(cfg, store, now=NOW + timedelta(hours=1),
                                          arxiv=gate, due_only=True)}
    assert reports["Yann LeCun/arxiv"].status == "skipped"
    first, second = server.hits("/api/query")
    assert parse_qs(first.query)["search_query"] == ['au:"Yann LeCun"']  # alone: its own query
    assert parse_qs(second.query)["search_query"] == [
        'au:"Ada Example" OR au:"Lin Sample" OR au:"Jose Nunez-Garcia"']
    assert reports["Ada Example/arxiv"].status == "ok" and reports["Ada Example/arxiv"].seen == 2


@pytest.mark.parametrize("status", [503, 500])
def test_a_failing_batch_is_an_error_for_each_person_and_feeds_go_on(
        server: LocalServer, tmp_path: Path, status: int) -> None:
    gate = serve_batch(server, status=status, body=b"<busy/>")
    blog = server.add("/feed.xml", body=atom_feed([{"title": "t", "link": "https://e.org/1"}]))
    store = Store(tmp_path / "db.sqlite")
    reports = {r.name: r for r in collect(people_config(blog), store, now=NOW, arxiv=gate)}
    assert reports["Example Blog"].status == "ok" and reports["Example Blog"].new == 1
    people = [f"{p}/arxiv" for p in PEOPLE]
    errors = {reports[n].error for n in people}
    assert [reports[n].status for n in people] == ["error"] * 4
    assert errors == {f"arXiv API answered HTTP {status} "
                      "(one request for 4 people's author queries)"}
    assert len(server.hits("/api/query")) == 1
    for n in people:
        state = store.source_state(n)
        assert state.failures == 1 and state.last_error == reports[n].error


def test_the_arxiv_error_feed_fails_the_batch(server: LocalServer, tmp_path: Path,
                                              corpus: Path) -> None:
    body = (corpus / "arxiv-api/arxiv-docs/error_response_malformed_id_1234.12345.xml")
    gate = serve_batch(server, status=400, body=body.read_bytes())
    gate.client.num_retries = 1
    store = Store(tmp_path / "db.sqlite")
    reports = collect(people_config(), store, now=NOW, arxiv=gate)
    assert {r.status for r in reports} == {"error"}
    assert {r.error for r in reports} == {  # arXiv's own words, from its error feed
        "arXiv API answered HTTP 400: incorrect id format for 1234.12345 "
        "(one request for 4 people's author queries)"}
    assert store.item_count() == 0
    assert len(server.hits("/api/query")) == 1  # a 400 is not asked again


def test_unreachable_api_fails_the_batch_cleanly(tmp_path: Path) -> None:
    gate = ArxivGate(api_url="http://127.0.0.1:9/api/query?{}", delay=0.0, retries=0)
    store = Store(tmp_path / "db.sqlite")
    reports = collect(people_config(), store, now=NOW, arxiv=gate)
    assert {r.error for r in reports} == {
        "cannot reach the arXiv API (one request for 4 people's author queries)"}
    assert all(store.source_state(r.name).failures == 1 for r in reports)


def test_batch_and_query_are_still_spaced(server: LocalServer, tmp_path: Path) -> None:
    server.add("/api/query", body=BATCH_XML.read_bytes(), content_type="application/atom+xml")
    gate = ArxivGate(api_url=server.url("/api/query?{}"), delay=0.4)
    reports = collect(people_config(arxiv_query="all:testing"), Store(tmp_path / "db.sqlite"),
                      now=NOW, arxiv=gate)
    assert [r.status for r in reports] == ["ok"] * 5
    hits = server.hits("/api/query")
    assert len(hits) == 2  # the query, and one for all four people
    assert hits[1].at - hits[0].at >= 0.35


@pytest.mark.parametrize("bad", ["garbage", "0001-01-01T00:00:00+05:30"])
def test_an_entry_with_an_unreadable_date_costs_only_itself(
        bad: str, server: LocalServer, tmp_path: Path) -> None:
    """The arxiv client raised on a date it could not read: one such entry lost the batch's
    whole answer, for every person in it. Now that entry alone is skipped."""
    body = BATCH_XML.read_bytes().replace(b"<published>", b"<published>" + bad.encode()
                                          + b"</published><x>", 1)
    gate = serve_batch(server, body=body)
    store = Store(tmp_path / "db.sqlite")
    reports = {r.name: r for r in collect(people_config(), store, now=NOW, arxiv=gate)}
    assert [r.status for r in reports.values()] == ["ok"] * len(PEOPLE)
    kept = sorted(s.item.arxiv_id for s in store.items_since(None))
    assert "2611.05001" not in kept  # the first entry, the one with the bad date
    assert kept == ["2611.05002", "2611.05003", "2611.05005", "2611.05006", "2611.05007"]
