"""Feed parsing: the project's own fixtures (expectations beside them) and every real-world
feed in ../shared/corpus, through the pure parser."""

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedbot.collectors.feeds import MAX_ITEMS, FeedError, parse_feed

from .support import FIXTURES

FEEDS = FIXTURES / "feeds"


def parse(name: str, **kw: str):  # type: ignore[no-untyped-def]
    return parse_feed((FEEDS / name).read_bytes(), "src", **kw)


def test_rss2_fields_links_dates_and_html_stripped() -> None:
    feed = parse("rss2.xml", base_url="https://notes.example.org/feed.xml")
    assert feed.title == "Gradient Notes"
    first, second = feed.items
    assert first.title == "Backpropagation, step by step"
    assert first.url == "https://notes.example.org/posts/backprop/?utm_source=rss&utm_medium=feed"
    assert first.guid == "notes-42"
    assert first.authors == ("Grace Example",)
    assert first.published == datetime(2026, 11, 17, 8, 30, tzinfo=UTC)
    assert first.summary == "We derive the chain rule for a two-layer network & code it."
    assert "alert" not in first.summary
    assert second.summary == "Rectifiers avoid saturation."
    assert first.kind == "post"


def test_atom_multiple_authors_html_title_and_arxiv_links() -> None:
    feed = parse("atom.xml")
    a, b = feed.items
    assert a.title == "Self-supervised vision transformers"
    assert a.authors == ("Alan Example", "Bea Example")
    assert a.published == datetime(2026, 11, 18, 9, tzinfo=UTC)
    assert b.arxiv_id == "2411.01234" and b.arxiv_version == 2
    assert b.id == "arxiv:2411.01234"
    assert b.published == datetime(2026, 11, 17, 10, tzinfo=UTC)
    assert b.summary == "Detection at scale."


def test_rss1() -> None:
    (item,) = parse("rss1.rdf").items
    assert item.title == "MCMC without tears"
    assert item.url == "https://stats.example.org/mcmc"
    assert item.authors == ("Carl Example",)
    assert item.published == datetime(2026, 11, 15, 7, tzinfo=UTC)


def test_json_feed() -> None:
    feed = parse("feed.json", content_type="application/feed+json")
    a, b = feed.items
    assert feed.title == "Kernel Club"
    assert a.title == "A CUDA matmul from scratch"
    assert a.summary == "Tiling, shared memory & __syncthreads()."
    assert a.authors == ("Dana Example",)  # inherited from the feed
    assert b.url == "https://kernels.example.org/flash"
    assert b.title.startswith("Fusing attention kernels")  # untitled: from the text
    assert b.authors == ("Eve Example",)
    assert b.published == datetime(2026, 11, 18, 5, tzinfo=UTC)


def test_social_items_keep_their_links() -> None:
    feed = parse("atom.xml", kind="social", person="Alan")
    assert all(i.kind == "social" and i.person == "Alan" for i in feed.items)
    body = (b'{"version": "https://jsonfeed.org/version/1", "items": [{"id": "1", '
            b'"url": "https://m.example/@a/1", "content_html": "<p>read '
            b'<a href=\\"https://arxiv.org/abs/2411.01234\\">this</a></p>"}]}')
    (post,) = parse_feed(body, "a/mastodon", kind="social").items
    assert post.links == ("https://arxiv.org/abs/2411.01234",)


def test_malformed_but_usable_feed_is_read_with_a_warning() -> None:
    feed = parse("malformed.xml")
    assert [i.url for i in feed.items] == ["https://broken.example.org/1"]
    assert feed.warning.startswith("malformed feed, read anyway")


@pytest.mark.parametrize("name", ["not-a-feed.html", "garbage.bin"])
def test_not_a_feed_is_a_clean_error(name: str) -> None:
    with pytest.raises(FeedError, match="not a feed"):
        parse(name)


def test_json_that_is_not_a_feed() -> None:
    with pytest.raises(FeedError, match="not a JSON Feed"):
        parse_feed(b'{"items": []}', "s")
    with pytest.raises(FeedError, match="invalid JSON"):
        parse_feed(b'{"items": [', "s")


def test_empty_feed_is_fine() -> None:
    assert parse("empty.xml").items == []


# --- the real world ---------------------------------------------------------------------------

def real_feeds(corpus: Path) -> list[Path]:
    feeds = corpus / "feeds"
    out = []
    for sub in ("netnewswire", "rss-parser/input", "feed-rs"):
        for p in sorted((feeds / sub).rglob("*")):
            if p.is_file() and p.suffix in (".xml", ".rss", ".atom", ".rdf", ".json") and \
                    not p.name.endswith(".serde.json"):
                out.append(p)
    return out


def test_every_real_feed_parses_or_fails_cleanly(corpus: Path) -> None:
    files = real_feeds(corpus)
    assert len(files) > 100
    ok, refused = 0, []
    for p in files:
        try:
            feed = parse_feed(p.read_bytes(), p.name, base_url="https://feeds.example.org/")
        except FeedError as e:
            refused.append((p.name, str(e)))
            continue
        for it in feed.items:
            assert it.title.strip(), p
            assert it.url.startswith("http"), p
            assert it.published is None or it.published.tzinfo is not None
        ok += bool(feed.items)
    # Nearly all real feeds yield items; the refusals (spec samples whose entries have no
    # link, a truncated file, XML that is not a feed) are each named with a reason.
    assert ok >= 0.85 * len(files), refused
    assert all(reason for _, reason in refused)


def test_feedparser_conformance_cases_never_crash(corpus: Path) -> None:
    cases = sorted((corpus / "feeds" / "feedparser-conformance").rglob("*.xml"))
    assert len(cases) > 1000
    for p in cases:
        with contextlib.suppress(FeedError):
            parse_feed(p.read_bytes(), "conformance")


def test_gb_encoded_and_large_real_feeds(corpus: Path) -> None:
    nnw = corpus / "feeds" / "netnewswire"
    bio = parse_feed((nnw / "bio.rdf").read_bytes(), "bioRxiv")  # RSS 1.0 from bioRxiv
    assert len(bio.items) > 5
    assert all(i.url.startswith("http") for i in bio.items)
    big = max(nnw.glob("*.atom"), key=lambda p: p.stat().st_size)
    assert parse_feed(big.read_bytes(), "big").items


# --- hostile or sloppy bodies ---------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"", b"  \r\n", b"\xef\xbb\xbf"])
def test_an_empty_body_is_not_a_feed(body: bytes) -> None:
    with pytest.raises(FeedError, match="^not a feed: empty response$"):
        parse_feed(body, "s", content_type="application/rss+xml")


def test_the_body_decides_the_format_not_the_content_type() -> None:
    feed = parse("rss2.xml", content_type="application/json; charset=utf-8")
    assert feed == parse("rss2.xml", content_type="application/rss+xml")
    assert feed.title == "Gradient Notes" and len(feed.items) == 2
    assert parse("feed.json", content_type="text/xml").title == "Kernel Club"


def test_json_feed_fields_of_the_wrong_type_are_ignored() -> None:
    body = (b'{"version": "https://jsonfeed.org/version/1.1", "home_page_url": 5, '
            b'"title": ["x"], "items": ['
            b'{"id": "a", "url": 5, "title": "numeric url"},'
            b'{"id": 7, "url": "/rel", "title": ["a"], "summary": "Some text",'
            b' "authors": [{"name": {"x": 1}}, {"name": "Ann"}], "date_published": 12345,'
            b' "date_modified": "2026-11-18T05:00:00Z"},'
            b'{"id": "c", "url": "https://e.org/c", "title": "t", "author": {"name": 3},'
            b' "content_html": {"a": 1}, "authors": "bob"}]}')
    feed = parse_feed(body, "s", base_url="https://feeds.example.org/feed.json")
    assert feed.title == ""
    rel, c = feed.items  # the item whose url is a number has no usable link: skipped
    assert rel.url == "https://feeds.example.org/rel"
    assert rel.title == "Some text"  # the list title is ignored: titled from the text
    assert rel.authors == ("Ann",)
    assert rel.guid == "7"
    assert rel.published == datetime(2026, 11, 18, 5, tzinfo=UTC)
    assert (c.url, c.title, c.authors, c.summary) == ("https://e.org/c", "t", (), "")
    with pytest.raises(FeedError, match="none with a link"):
        parse_feed(b'{"version": "https://jsonfeed.org/version/1", "items": [{"url": 5}]}', "s")


def test_control_characters_never_reach_an_item() -> None:
    body = (b'{"version": "https://jsonfeed.org/version/1", "items": [{"url": "https://e.org/1", '
            b'"title": "\\u0001ctrl\\u001b[31m red", "content_text": "a\\u009bb\\u0007", '
            b'"authors": [{"name": "Eve\\u001b[0m"}]}]}')
    (item,) = parse_feed(body, "s\x1b]0;pwned\x07").items
    assert item.title == "ctrl[31m red"
    assert item.summary == "ab"
    assert item.authors == ("Eve[0m",)
    assert item.source == "s]0;pwned"


def big_rss(n: int, dated: bool = True) -> bytes:
    """An RSS feed of `n` items, oldest first (item i published on day i after 2020-01-01)."""
    items = []
    for i in range(n):
        when = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=i)
        date = f"<pubDate>{when:%a, %d %b %Y %H:%M:%S} +0000</pubDate>" if dated else ""
        items.append(f"<item><title>Post {i}</title><link>https://big.example.org/{i}</link>"
                     f"{date}</item>")
    return ("<rss version='2.0'><channel><title>Big</title><link>https://big.example.org/</link>"
            + "".join(items) + "</channel></rss>").encode()


def test_a_huge_feed_keeps_only_its_newest_items() -> None:
    feed = parse_feed(big_rss(MAX_ITEMS + 100), "big")
    assert len(feed.items) == MAX_ITEMS
    assert [i.title for i in feed.items] == [f"Post {i}" for i in range(100, MAX_ITEMS + 100)]
    assert feed.warning == f"kept the {MAX_ITEMS} newest of {MAX_ITEMS + 100} items"
    undated = parse_feed(big_rss(MAX_ITEMS + 100, dated=False), "big")
    assert [i.title for i in undated.items] == [f"Post {i}" for i in range(MAX_ITEMS)]
    assert parse_feed(big_rss(MAX_ITEMS), "big").warning == ""
