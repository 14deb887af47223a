from datetime import UTC, datetime, timedelta, timezone

import pytest

from feedbot.items import (
    Item,
    arxiv_id_from_url,
    canonical_url,
    clamp_future,
    embed_text,
    item_id,
    paper_id_from_link,
    split_arxiv_id,
    utc,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://blog.example.org/post/?utm_source=x&utm_medium=rss",
         "https://blog.example.org/post"),
        ("http://www.Example.org:80/a/b/#comments", "https://example.org/a/b"),
        ("https://example.org/p?b=2&a=1&fbclid=zzz", "https://example.org/p?a=1&b=2"),
        ("https://example.org/p?ref_src=twsrc&id=7", "https://example.org/p?id=7"),
    ],
)
def test_canonical_url_drops_tracking_and_noise(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)


def test_canonical_url_keeps_meaningful_differences() -> None:
    assert canonical_url("https://example.org/p?id=1") != canonical_url("https://example.org/p?id=2")
    assert canonical_url("https://example.org/a") != canonical_url("https://example.org/b")
    assert canonical_url("https://example.org:8443/a") != canonical_url("https://example.org/a")


@pytest.mark.parametrize("url", ["https://example.org:99999/paper", "http://a.example:abc/",
                                 "https://example.org:-1/x"])
def test_canonical_url_keeps_a_link_with_a_bad_port_as_it_is(url: str) -> None:
    """Such a link in a post (`extract_links` keeps it) raised ValueError out of linking
    shares, which failed the whole collection."""
    assert canonical_url(f"  {url} ") == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://arxiv.org/abs/2309.03965", "2309.03965"),
        ("https://arxiv.org/abs/2309.03965v2", "2309.03965"),
        ("http://export.arxiv.org/abs/2309.03965v1", "2309.03965"),
        ("https://arxiv.org/pdf/2309.03965v3.pdf", "2309.03965"),
        ("https://arxiv.org/pdf/2309.03965", "2309.03965"),
        ("https://www.arxiv.org/abs/hep-th/9901001v2", "hep-th/9901001"),
        ("https://arxiv.org/abs/math.PR/0601001", "math.PR/0601001"),
        ("https://arxiv.org/list/cs.LG/recent", ""),
        ("https://example.org/abs/2309.03965", ""),
    ],
)
def test_arxiv_id_from_url(url: str, expected: str) -> None:
    assert arxiv_id_from_url(url) == expected
    assert paper_id_from_link(url) == expected  # every arXiv page is a paper's link too


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://huggingface.co/papers/2504.13099", "2504.13099"),
        ("https://hf.co/papers/2504.13099?utm_source=x", "2504.13099"),
        ("https://www.alphaxiv.org/abs/2504.13099v2", "2504.13099"),
        ("https://alphaxiv.org/overview/2504.13099", "2504.13099"),
        ("https://doi.org/10.48550/arXiv.2504.13099", "2504.13099"),
        ("https://doi.org/10.48550/ARXIV.2504.13099", "2504.13099"),
        ("https://huggingface.co/papers", ""),  # the daily list
        ("https://huggingface.co/papers/2504.13099/community", ""),
        ("https://huggingface.co/models/2504.13099", ""),
        ("https://doi.org/10.1145/2504.13099", ""),  # another publisher's DOI
        ("https://example.org/papers/2504.13099", ""),
    ],
)
def test_a_page_that_stands_for_a_paper_is_a_link_to_it(url: str, expected: str) -> None:
    """Posts link papers by their Hugging Face page or DOI at least as often as by arXiv: such
    a post was not folded into the paper's entry (two entries, the sharer not named)."""
    assert paper_id_from_link(url) == expected
    assert arxiv_id_from_url(url) == ""  # an item's own URL keeps its own identity


def test_split_arxiv_id_reads_versions() -> None:
    assert split_arxiv_id("2309.03965v2") == ("2309.03965", 2)
    assert split_arxiv_id("arxiv:2309.03965") == ("2309.03965", 0)
    assert split_arxiv_id("http://arxiv.org/abs/2104.12255v1") == ("2104.12255", 1)
    assert split_arxiv_id("not an id") == ("", 0)


@pytest.mark.parametrize("digits", [20, 5000])
def test_an_arxiv_version_no_paper_has_is_unknown(digits: int) -> None:
    """A 20-digit version overflowed SQLite's integer and failed the whole collection; one of
    5,000 digits made int() raise."""
    version = "9" * digits
    assert split_arxiv_id(f"2309.03965v{version}") == ("2309.03965", 0)
    assert split_arxiv_id(f"https://arxiv.org/abs/2309.03965v{version}") == ("2309.03965", 0)
    assert split_arxiv_id("2309.03965v123456") == ("2309.03965", 123456)


def test_item_identity_is_stable_across_sources_and_versions() -> None:
    when = datetime(2026, 11, 20, tzinfo=UTC)
    paper = Item("A", "https://arxiv.org/abs/2309.03965v1", "arXiv cs.CV", "paper",
                 published=when, arxiv_id="2309.03965", arxiv_version=1)
    post = Item("B", "https://arxiv.org/abs/2309.03965v2?utm_source=x", "someone/blog")
    assert paper.key == post.key == "arxiv:2309.03965"
    assert paper.id == post.id == "arxiv:2309.03965"
    blog = Item("C", "https://example.org/post/", "b1")
    again = Item("C", "http://example.org/post?utm_campaign=z", "b2")
    assert blog.id == again.id
    assert len(blog.id) == 12
    assert item_id("url:https://example.org/x") != blog.id


def test_items_without_url_fall_back_to_guid() -> None:
    a = Item("t", "", "src", guid="tag:1")
    b = Item("t", "", "src", guid="tag:2")
    assert a.key == "guid:src:tag:1"
    assert a.id != b.id


def test_item_rejects_naive_datetimes_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Item("t", "https://e.org", "s", published=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="kind"):
        Item("t", "https://e.org", "s", kind="tweet")


def test_utc_normalises() -> None:
    naive = datetime(2026, 1, 1, 12)
    assert utc(naive).tzinfo is UTC
    plus2 = datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert utc(plus2) == datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_embed_text_joins_title_and_trimmed_summary() -> None:
    assert embed_text("Title", "  lots   of\nspace ") == "Title. lots of space"
    assert embed_text("Same", "same") == "Same"
    assert len(embed_text("T", "x" * 5000)) == len("T. ") + 1200


def test_item_text_loses_terminal_control_characters() -> None:
    item = Item("\x01ctrl\x1b[31m red\r\n", "https://e.org/1", "blog\x9b", authors=("A\x07nn",),
                summary="line one\nline\ttwo\x00\x7f\x85", person="P\x1b[2J")
    assert item.title == "ctrl[31m red \n"
    assert item.source == "blog"
    assert item.authors == ("Ann",)
    assert item.summary == "line one\nline\ttwo"
    assert item.person == "P[2J"
    assert Item("Ünïcode — ok", "https://e.org/2", "s").title == "Ünïcode — ok"


def test_far_future_dates_are_clamped_to_the_fetch_time() -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    far = Item("t", "https://e.org/1", "s", published=datetime(3000, 1, 1, tzinfo=UTC))
    assert clamp_future(far, now).published == now
    soon = Item("t", "https://e.org/2", "s", published=now + timedelta(hours=20))
    assert clamp_future(soon, now) is soon  # a time zone's worth of skew is believed
    undated = Item("t", "https://e.org/3", "s")
    assert clamp_future(undated, now) is undated


def test_a_guid_with_a_fragment_keeps_the_entries_of_one_page_apart() -> None:
    """Scripting News gives each post an anchor on the day's page, link and guid alike: the
    fragment is what tells them apart, and dropping it merged a day's posts into one."""
    page = "http://scripting.com/2017/06/26.html"
    a = Item("a", f"{page}#a080605", "s", guid=f"{page}#a080605")
    b = Item("b", f"{page}#a030658", "s", guid=f"{page}#a030658")
    assert a.key != b.key
    assert a.key == "url:https://scripting.com/2017/06/26.html#a080605"
    # A fragment the guid does not carry is still noise: the same page, however linked.
    c = Item("c", f"{page}#comments", "s", guid="post-1")
    assert c.key == Item("d", page, "t").key == "url:https://scripting.com/2017/06/26.html"
