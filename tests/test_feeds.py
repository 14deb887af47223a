"""Feed parsing: the project's own fixtures (expectations beside them) and every real-world
feed in ../shared/corpus, through the pure parser."""

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedbot.collectors.feeds import FeedError, parse_feed

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
