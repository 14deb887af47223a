"""People end to end: sources.yaml people → X, Bluesky, Mastodon, arXiv-author and blog sources,
collected from local servers (tweepy's too, through FEEDBOT_X_API_URL), and a post that links
to a collected paper or blog post merged into that item's digest entry."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from feedbot import collect as collect_mod
from feedbot.collect import collect_async
from feedbot.collectors.arxiv_api import ArxivGate
from feedbot.config import Config, load_config
from feedbot.digest import build_digest
from feedbot.http import make_client
from feedbot.render import render_markdown
from feedbot.roadmap import load_roadmap
from feedbot.store import Store

from .support import FIXTURES, X_API, LocalServer, Route, atom_feed, x_api

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

SOURCES = """\
learner:
  stage: deep-learning
blogs:
  - name: Example Blog
    url: https://blog.example.org/feed.xml
people:
  - name: Ada Example
    arxiv: Ada Example
    bluesky: ada.bsky.social
    mastodon: "@ada@sigmoid.social"
    blog: https://ada.example.net/atom.xml
    weight: 2
  - name: Grace Tester
    x: feedbot_test
"""


class ToLocal(httpx.AsyncBaseTransport):
    """Send every request to the local server, whatever host it names (path kept)."""

    def __init__(self, server: LocalServer) -> None:
        self.port = int(server.base.rsplit(":", 1)[1])
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def config() -> Config:
    return load_config("sources.yaml", text=SOURCES)


def serve_people(server: LocalServer) -> None:
    """Bluesky, Mastodon, the blogs and the arXiv API, each at the path its real URL has."""
    server.add("/profile/ada.bsky.social/rss", body=(FIXTURES / "social_bluesky.rss").read_bytes(),
               content_type="application/rss+xml")
    server.add("/@ada.rss", body=(FIXTURES / "social_mastodon.rss").read_bytes(),
               content_type="application/rss+xml")
    server.add("/feed.xml", body=atom_feed([
        {"title": "Why attention needs the softmax temperature",
         "link": "https://blog.example.org/posts/attention-temperature",
         "updated": "2026-11-19T08:00:00Z", "summary": "Softmax temperature and attention."},
        {"title": "Convolutions, visually", "link": "https://blog.example.org/posts/conv",
         "updated": "2026-11-18T08:00:00Z", "summary": "Kernels, strides and padding."},
    ], title="Example Blog"), content_type="application/atom+xml")
    server.add("/atom.xml", body=atom_feed([
        {"title": "Notes from NeurIPS", "link": "https://ada.example.net/neurips",
         "updated": "2026-11-19T07:00:00Z", "summary": "Talks I liked."},
    ], title="Ada's notes"), content_type="application/atom+xml")
    server.add("/api/query", body=(FIXTURES / "social_arxiv_author.xml").read_bytes(),
               content_type="application/atom+xml")


@pytest.fixture
async def http(server: LocalServer) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(transport=ToLocal(server)) as client:
        yield client


@pytest.fixture
def x_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BEARER_TOKEN", "test-token")


async def collect_all(server: LocalServer, http: httpx.AsyncClient, store: Store,
                      cfg: Config) -> dict[str, object]:
    serve_people(server)
    x_page = json.loads((FIXTURES / "x_timeline_shares_arxiv.json").read_text())
    with x_api() as rsps:
        rsps.get(f"{X_API}/users/by/username/feedbot_test",
                 json={"data": {"id": "4242", "name": "Grace", "username": "feedbot_test"}})
        rsps.get(f"{X_API}/users/4242/tweets", json=x_page)
        gate = ArxivGate(api_url=server.url("/api/query?{}"), delay=0.0)
        reports = await collect_async(cfg, store, now=NOW, http=http, arxiv=gate)
    return {r.name: r for r in reports}


def test_people_become_labelled_weighted_sources() -> None:
    specs = {s.name: s for s in config().sources()}
    assert {n: s.label for n, s in specs.items() if s.person} == {
        "Ada Example/bluesky": "Ada Example on Bluesky",
        "Ada Example/mastodon": "Ada Example on Mastodon",
        "Ada Example/arxiv": "Ada Example on arXiv",
        "Ada Example/blog": "Ada Example on their blog",
        "Grace Tester/x": "Grace Tester on X",
    }
    ada = [s for s in specs.values() if s.person == "Ada Example"]
    assert {s.weight for s in ada} == {2.0} and specs["Grace Tester/x"].weight == 1.0
    assert specs["Ada Example/bluesky"].target == "https://bsky.app/profile/ada.bsky.social/rss"
    assert specs["Ada Example/mastodon"].target == "https://sigmoid.social/@ada.rss"
    assert specs["Ada Example/arxiv"].target == 'au:"Ada Example"'


async def test_bluesky_mastodon_and_arxiv_author_from_local_servers(
        server: LocalServer, http: httpx.AsyncClient, x_token: None) -> None:
    store = Store(":memory:")
    reports = await collect_all(server, http, store, config())
    assert {n: r.status for n, r in reports.items()} == dict.fromkeys(reports, "ok")
    [api_call] = server.hits("/api/query")
    assert parse_qs(api_call.query)["search_query"] == ['au:"Ada Example"']
    by_source: dict[str, list] = {}
    for s in store.items_since(None):
        for name in s.sources:
            by_source.setdefault(name, []).append(s.item)
    bsky = by_source["Ada Example/bluesky"]
    assert len(bsky) == 2 and all(i.kind == "social" and i.person == "Ada Example" for i in bsky)
    assert any("blog.example.org/posts/attention-temperature" in u for i in bsky
               for u in i.links)
    [toot] = by_source["Ada Example/mastodon"]
    assert toot.kind == "social" and "https://arxiv.org/abs/2611.01234" in toot.links
    papers = by_source["Ada Example/arxiv"]
    assert {p.arxiv_id for p in papers} == {"2611.01234", "2611.00777"}
    assert all(p.person == "Ada Example" and p.kind == "paper" for p in papers)
    [blog_post] = by_source["Ada Example/blog"]
    assert blog_post.kind == "post" and blog_post.person == "Ada Example"


async def test_bluesky_and_mastodon_hosts_point_at_a_local_server_by_environment(
        server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """FEEDBOT_BLUESKY_URL replaces https://bsky.app; FEEDBOT_MASTODON_URL replaces
    https://INSTANCE, `{instance}` in it standing for the instance. Plain HTTP client, no
    transport tricks: the requests go where the environment says."""
    monkeypatch.setenv("FEEDBOT_BLUESKY_URL", server.base + "/")
    monkeypatch.setenv("FEEDBOT_MASTODON_URL", server.base + "/{instance}")
    feeds = FIXTURES / "feeds"
    server.add("/profile/lin.bsky.social/rss", body=(feeds / "bluesky_profile.xml").read_bytes(),
               content_type="application/rss+xml; charset=utf-8")
    server.add("/mastodon.social/@lin.rss", body=(feeds / "mastodon_profile.xml").read_bytes(),
               content_type="application/rss+xml; charset=utf-8")
    server.add("/sigmoid.social/@ada.rss", body=(FIXTURES / "social_mastodon.rss").read_bytes(),
               content_type="application/rss+xml; charset=utf-8")
    cfg = load_config("sources.yaml", text="""\
people:
  - name: Lin Researcher
    bluesky: lin.bsky.social
    mastodon: "@lin@mastodon.social"
  - name: Ada Example
    mastodon: "@ada@sigmoid.social"
""")
    store = Store(":memory:")
    reports = await collect_async(cfg, store, now=NOW)
    assert {r.name: (r.status, r.new) for r in reports} == {
        "Lin Researcher/bluesky": ("ok", 3), "Lin Researcher/mastodon": ("ok", 2),
        "Ada Example/mastodon": ("ok", 1)}
    by_source: dict[str, list] = {}
    for s in store.items_since(None):
        for name in s.sources:
            by_source.setdefault(name, []).append(s.item)
    everything = [i for items in by_source.values() for i in items]
    assert all(i.kind == "social" for i in everything)
    assert not any(server.base in i.url for i in everything)  # the posts' own URLs

    bsky = {i.url: i for i in by_source["Lin Researcher/bluesky"]}
    assert set(bsky) == {f"https://bsky.app/profile/did:plc:feedbottestlin/post/3lcfeedbot10{n}"
                         for n in range(3)}
    assert all(i.person == "Lin Researcher" for i in bsky.values())
    links = {u for i in bsky.values() for u in i.links}
    assert {"https://blog.example.org/posts/warmup", "https://arxiv.org/abs/2611.04321"} <= links
    assert bsky["https://bsky.app/profile/did:plc:feedbottestlin/post/3lcfeedbot102"
                ].published == datetime(2026, 11, 19, 14, 10, tzinfo=UTC)  # "19 Nov 2026 14:10"

    toots = {i.url: i for i in by_source["Lin Researcher/mastodon"]}
    assert set(toots) == {"https://mastodon.social/@lin/113520000000000002",
                          "https://mastodon.social/@lin/113510000000000001"}
    assert all(i.person == "Lin Researcher" for i in toots.values())
    seminar = toots["https://mastodon.social/@lin/113510000000000001"]
    assert "reading list for the optimisation seminar" in seminar.title
    assert seminar.published == datetime(2026, 11, 17, 10, 15, tzinfo=UTC)
    [ada] = by_source["Ada Example/mastodon"]
    assert ada.person == "Ada Example" and "https://arxiv.org/abs/2611.01234" in ada.links
    assert len(server.hits("/sigmoid.social/@ada.rss")) == 1  # each instance at its own path


def test_a_mastodon_post_with_an_image_keeps_its_text_and_links() -> None:
    """feedparser files <media:description> (an image's alt text) under `content`: taken
    first, it replaced the post's own text and links."""
    from feedbot.collectors.feeds import parse_feed

    body = (FIXTURES / "feeds" / "mastodon_profile.xml").read_bytes()
    parsed = parse_feed(body, "Lin Researcher/mastodon",
                        base_url="https://mastodon.social/@lin.rss", kind="social",
                        person="Lin Researcher")
    talk = next(i for i in parsed.items if i.url.endswith("/113520000000000002"))
    assert "curvature-aware optimizers" in talk.title
    assert "https://lin.example.net/talks/curvature" in talk.links


async def test_a_shared_paper_or_post_is_one_digest_entry_with_every_source(
        server: LocalServer, http: httpx.AsyncClient, x_token: None, fake_emb: object) -> None:
    store = Store(":memory:")
    cfg = config()
    await collect_all(server, http, store, cfg)
    digest = build_digest(cfg, store, fake_emb, load_roadmap(), now=NOW, limit=20,  # type: ignore
                          allow_demo=False)
    entries = {e.url: e for e in digest.items}
    assert len(entries) == len(digest.items)  # no story twice

    paper = entries["https://arxiv.org/abs/2611.01234"]
    assert paper.source == "Ada Example on arXiv"
    assert set(paper.shared_by) == {"Grace Tester", "Ada Example"}  # X post and Mastodon toot
    blog = entries["https://blog.example.org/posts/attention-temperature"]
    assert blog.source == "Example Blog" and blog.shared_by == ["Ada Example"]  # via Bluesky

    sharing_posts = {"https://x.com/feedbot_test/status/1861234567890123456",
                     "https://sigmoid.social/@ada/113512345678901234",
                     "https://bsky.app/profile/did:plc:feedbottestada/post/3lbfeedbot001"}
    assert not sharing_posts & set(entries)  # the posts gave way to what they shared
    assert "https://bsky.app/profile/did:plc:feedbottestada/post/3lbfeedbot000" in entries

    text = render_markdown(digest)
    assert text.count("Training Small Transformers on a Single GPU") == 1
    assert "Ada Example on arXiv — shared by" in text and "Grace Tester" in text


async def test_share_collected_before_the_paper_still_merges(
        server: LocalServer, http: httpx.AsyncClient, x_token: None, fake_emb: object) -> None:
    """The post arrives in one run and the paper in a later one: still one entry."""
    store = Store(":memory:")
    serve_people(server)
    only_x = load_config("s.yaml", text="people:\n  - name: Grace Tester\n    x: feedbot_test\n")
    x_page = json.loads((FIXTURES / "x_timeline_shares_arxiv.json").read_text())
    with x_api() as rsps:
        rsps.get(f"{X_API}/users/by/username/feedbot_test",
                 json={"data": {"id": "4242", "name": "Grace", "username": "feedbot_test"}})
        rsps.get(f"{X_API}/users/4242/tweets", json=x_page)
        await collect_async(only_x, store, now=NOW, http=http)
    cfg = config()
    gate = ArxivGate(api_url=server.url("/api/query?{}"), delay=0.0)
    await collect_async(cfg, store, now=NOW, http=http, arxiv=gate, only="Ada Example/arxiv")
    digest = build_digest(cfg, store, fake_emb, load_roadmap(), now=NOW, limit=20,  # type: ignore
                          allow_demo=False)
    [paper] = [e for e in digest.items if "2611.01234" in e.url]
    assert paper.shared_by == ["Grace Tester"]
    assert not [e for e in digest.items if urlsplit(e.url).hostname == "x.com"]


@pytest.mark.parametrize("trouble", [sqlite3.OperationalError("database is locked"),
                                     ValueError("Port out of range 0-65535")])
async def test_shares_a_stopped_collection_did_not_link_are_linked_by_the_next_one(
        trouble: Exception, server: LocalServer, http: httpx.AsyncClient, x_token: None,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A collection stopped between recording its items and linking the shares (Ctrl-C, a
    crash, a database that refused the links, a bug in linking) left the posts unlinked until
    a later run brought something new. The next run links them, new items or not; the run
    that could not link still reports its sources."""
    store = Store(":memory:")
    cfg = config()

    def shared_by() -> set[str]:
        return set(store.sharers().get("arxiv:2611.01234", ()))

    def refused(*args: object) -> int:
        raise trouble

    monkeypatch.setattr(collect_mod, "link_shares", refused)
    first = await collect_all(server, http, store, cfg)
    assert any(r.new for r in first.values())  # type: ignore[attr-defined]
    assert [r.getMessage() for r in caplog.records if "linking posts" in r.getMessage()] == [
        f"linking posts to the items they share was put off: {trouble}"
        if isinstance(trouble, sqlite3.Error) else
        f"linking posts to the items they share failed: ValueError: {trouble}"]
    assert shared_by() == set()
    monkeypatch.undo()
    [again] = await collect_async(cfg, store, now=NOW, http=http, only="Example Blog")
    assert (again.status, again.new, again.updated) == ("ok", 0, 0)
    assert shared_by() == {"Grace Tester", "Ada Example"}
    calls: list[object] = []  # linked: the run after does not link again
    monkeypatch.setattr(collect_mod, "link_shares", lambda *a: calls.append(a) or 0)
    await collect_async(cfg, store, now=NOW, http=http, only="Example Blog")
    assert calls == []


def test_local_routes_cover_every_feed_source(server: LocalServer) -> None:
    """Guard for the tests above: each feed source's path is one the server answers."""
    serve_people(server)
    for spec in config().sources():
        if spec.kind == "feed":
            assert urlsplit(spec.target).path in server.routes, spec.target
    assert isinstance(server.routes["/feed.xml"], Route)


@pytest.mark.parametrize(("target", "kind"), [
    ("https://sigmoid.social/@ada.rss", "social"),
    ("https://bsky.app/profile/ada.bsky.social/rss", "social"),
    ("https://bsky.app/profile/did:plc:abcdefghijklmnopqrstuvwx/rss", "social"),
    ("https://example.org/feed.xml", "post"),
    ("https://example.org/@ada/feed.xml", "post"),
])
def test_an_accounts_feed_followed_as_a_blog_is_still_posts_that_share(target: str,
                                                                         kind: str) -> None:
    """Taken in from an OPML file that `export-opml` wrote, or pasted as a blog, a Bluesky or
    Mastodon account's feed was a blog: its posts never folded into what they linked to."""
    from feedbot.collectors.feeds import feed_kind
    from feedbot.config import SourceSpec

    assert feed_kind(SourceSpec("Ada's posts", "feed", target, "Ada's posts")) == kind


def test_a_bluesky_account_may_be_given_by_its_did() -> None:
    cfg = load_config("sources.yaml", text="people:\n  - name: Ada\n"
                                           "    bluesky: did:plc:abcdefghijklmnopqrstuvwx\n")
    [spec] = cfg.sources()
    assert spec.target == "https://bsky.app/profile/did:plc:abcdefghijklmnopqrstuvwx/rss"
