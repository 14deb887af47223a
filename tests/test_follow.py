"""`follow` / `unfollow`: argument parsing, comment-preserving round trips on sources.yaml, refusals
that leave the file untouched, the atomic write, and the one-time feed check (local server)."""

from __future__ import annotations

import difflib
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner, Result

from feedbot.cli import main
from feedbot.config import ConfigError, load_config
from feedbot.follow import (
    CheckFailed,
    FollowError,
    FollowRequest,
    NothingToChange,
    add_blogs,
    find_feed_links,
    follow,
    looks_like_page,
    parse_follow_args,
    unfollow,
)
from feedbot.http import make_client

from .support import LocalServer, atom_feed

REPO_SOURCES = Path(__file__).resolve().parents[1] / "sources.yaml"

COMMENTED = """\
# My feedbot sources — hand-written, please keep my notes.

learner:
  stage: cnn          # working through CS231n

defaults:
  interval: 6h

# Blogs I read every week
blogs:
  - name: Lil'Log     # Lilian Weng
    url: https://lilianweng.github.io/index.xml
  - name: Jay Alammar
    url: https://jalammar.github.io/feed.xml
    interval: 1d    # posts rarely

# People. Keep the ones I really read near the top.
people:
  - name: Andrej Karpathy   # the reason I started
    x: karpathy
    arxiv: Andrej Karpathy
    weight: 1.5
  - name: Justin Johnson
    arxiv: Justin Johnson

# Chats allowed to talk to the bot
telegram:
  allowed_chats: []   # fill in from /start
"""


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(COMMENTED, encoding="utf-8")
    return p


def changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added) between two versions of a file."""
    diff = list(difflib.ndiff(old.splitlines(), new.splitlines()))
    removed = [d[2:] for d in diff if d.startswith("- ")]
    return removed, [d[2:] for d in diff if d.startswith("+ ")]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "sources.yaml")


# --- parsing words ----------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["Andrej Karpathy", "--x", "karpathy", "--arxiv", "Andrej Karpathy"],
     FollowRequest(name="Andrej Karpathy", x="karpathy", arxiv="Andrej Karpathy")),
    (["Andrej", "Karpathy", "--x=@karpathy"], FollowRequest(name="Andrej Karpathy", x="karpathy")),
    (["@someone@mastodon.social"], FollowRequest(mastodon="@someone@mastodon.social")),
    (["someone@mastodon.social"], FollowRequest(mastodon="@someone@mastodon.social")),
    (["@karpathy.bsky.social"], FollowRequest(bluesky="karpathy.bsky.social")),
    (["Ada", "ada.bsky.social"], FollowRequest(name="Ada", bluesky="ada.bsky.social")),
    (["x:karpathy"], FollowRequest(x="karpathy")),
    (["https://example.org/feed.xml"], FollowRequest(blog="https://example.org/feed.xml")),
    (["Lilian Weng", "https://lilianweng.github.io/index.xml", "--weight", "2"],
     FollowRequest(name="Lilian Weng", blog="https://lilianweng.github.io/index.xml",
                   weight=2.0)),
    (["--no-check", "--blog", "https://e.org/f", "--replies"],
     FollowRequest(blog="https://e.org/f", check=False, replies=True)),
])
def test_parse_follow_args(args: list[str], expected: FollowRequest) -> None:
    assert parse_follow_args(args) == expected


def test_a_bare_url_is_a_blogs_entry_but_with_a_name_a_person() -> None:
    assert parse_follow_args(["https://e.org/feed"]).is_blog_only
    assert not parse_follow_args(["Ada", "https://e.org/feed"]).is_blog_only


@pytest.mark.parametrize(("args", "expected"), [
    (["feed://example.org/rss"], FollowRequest(blog="http://example.org/rss")),
    (["Ada", "--blog", "feed:https://ada.example/atom.xml"],
     FollowRequest(name="Ada", blog="https://ada.example/atom.xml")),
    (["--blog", "HTTPS://ada.example/atom.xml"], FollowRequest(blog="https://ada.example/atom.xml")),
])
def test_feed_scheme_and_capital_scheme_urls(args: list[str], expected: FollowRequest) -> None:
    """`feed://host/rss` was taken for words of a name, `--blog HTTPS://…` refused as not an
    http(s) URL."""
    assert parse_follow_args(args) == expected


@pytest.mark.parametrize(("args", "message"), [
    ([], "nothing to follow"),
    (["Just A Name"], "nothing to follow"),
    (["--x"], "--x needs a value"),
    (["--x", "--arxiv", "A"], "--x needs a value"),
    (["--x", "a", "x:b"], "x given twice"),
    (["--frobnicate", "x:a"], "unknown option --frobnicate"),
    (["@karpathy"], "x:karpathy"),
    (["--weight", "heavy", "x:a"], "must be a number"),
    (["--weight", "-1", "x:a"], "0 or more"),
])
def test_parse_follow_args_refuses_with_a_reason(args: list[str], message: str) -> None:
    with pytest.raises(FollowError, match=message):
        parse_follow_args(args)


# --- round trips on a commented file ----------------------------------------------------------

def test_follow_a_new_person_only_adds_their_lines(sources: Path) -> None:
    msg = follow(sources, parse_follow_args(
        ["Ada Example", "--x", "ada_ex", "--mastodon", "@ada@sigmoid.social", "--weight", "2"]))
    removed, added = changes(COMMENTED, sources.read_text())
    assert removed == []
    assert added == ["  - name: Ada Example", "    x: ada_ex",
                     "    mastodon: '@ada@sigmoid.social'", "    weight: 2.0"]
    text = sources.read_text()
    assert text.index("weight: 2.0") < text.index("# Chats allowed")  # still before telegram
    assert "following Ada Example on X (@ada_ex), Mastodon (@ada@sigmoid.social)" in msg
    person = load_config(sources).people[-1]
    assert (person.name, person.x, person.mastodon, person.weight) == \
        ("Ada Example", "ada_ex", "@ada@sigmoid.social", 2.0)


def test_adding_a_place_to_a_person_puts_it_in_their_entry(sources: Path) -> None:
    msg = follow(sources, parse_follow_args(["andrej karpathy", "--bluesky",
                                             "karpathy.bsky.social"]))
    removed, added = changes(COMMENTED, sources.read_text())
    assert removed == [] and added == ["    bluesky: karpathy.bsky.social"]
    lines = sources.read_text().splitlines()
    assert lines[lines.index("    bluesky: karpathy.bsky.social") - 1] == "    x: karpathy"
    assert msg == "Andrej Karpathy: added Bluesky (karpathy.bsky.social)"


def test_follow_then_unfollow_gives_back_the_same_bytes(sources: Path) -> None:
    follow(sources, parse_follow_args(["Ada Example", "ada.bsky.social"]))
    follow(sources, parse_follow_args(["--no-check", "https://blog.example.org/feed.xml"]))
    assert sources.read_text() != COMMENTED
    assert unfollow(sources, "ada example") == "unfollowed Ada Example (Bluesky)"
    assert unfollow(sources, "blog.example.org") == "unfollowed blog.example.org"
    assert sources.read_text() == COMMENTED


def test_unfollow_keeps_the_comments_around_the_entry(sources: Path) -> None:
    unfollow(sources, "Justin Johnson")  # the last person, just before "# Chats allowed..."
    removed, added = changes(COMMENTED, sources.read_text())
    assert removed == ["  - name: Justin Johnson", "    arxiv: Justin Johnson"] and added == []
    unfollow(sources, "Jay Alammar")  # its "# posts rarely" goes with it; "# People." stays
    text = sources.read_text()
    assert "# People. Keep the ones I really read near the top." in text
    assert "posts rarely" not in text and "# Lilian Weng" in text


def test_unfollowing_everyone_in_a_section_leaves_a_valid_file(sources: Path) -> None:
    unfollow(sources, "Andrej Karpathy")
    unfollow(sources, "Justin Johnson")
    cfg = load_config(sources)
    assert cfg.people == [] and len(cfg.blogs) == 2
    assert "# Chats allowed to talk to the bot" in sources.read_text()
    follow(sources, parse_follow_args(["Ada", "x:ada_ex"]))
    assert [p.name for p in load_config(sources).people] == ["Ada"]


def test_round_trip_on_the_repository_sources_file(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    shutil.copy(REPO_SOURCES, p)
    original = p.read_bytes()
    follow(p, parse_follow_args(["Someone New", "--bluesky", "someone.bsky.social",
                                 "--arxiv", "Someone New"]))
    follow(p, parse_follow_args(["--no-check", "--blog", "https://distill.pub/rss.xml"]))
    removed, added = changes(original.decode(), p.read_text())
    assert removed == [] and len(added) == 5
    unfollow(p, "Someone New")
    unfollow(p, "distill.pub")
    assert p.read_bytes() == original


def test_four_space_indentation_is_kept(tmp_path: Path) -> None:
    text = ("learner:\n    stage: cnn   # note\nblogs:\n    -   name: A\n"
            "        url: https://a.example/feed\n")
    p = tmp_path / "sources.yaml"
    p.write_text(text)
    follow(p, parse_follow_args(["--no-check", "https://b.example/feed"]))
    assert p.read_text() == text + "    -   name: b.example\n        url: https://b.example/feed\n"


# --- refusals leave the file untouched --------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["ANDREJ KARPATHY", "--x", "someone_else"], "already has x: karpathy"),
    (["Andrej Karpathy", "--x", "karpathy"], "already following Andrej Karpathy"),
    (["Someone", "x:KARPATHY"], "already following X @karpathy"),
    (["Jay Alammar", "x:jay"], "already used in blogs"),
    (["Jay", "--no-check", "--blog", "http://jalammar.github.io/feed.xml/"],
     "already following http://jalammar.github.io/feed.xml/"),
    (["--no-check", "https://www.lilianweng.github.io/index.xml"], "already following"),
    (["Someone", "--arxiv", "justin johnson"], "already following arXiv"),
])
def test_duplicates_are_refused(sources: Path, args: list[str], message: str) -> None:
    before = sources.read_bytes()
    with pytest.raises(FollowError, match=message):
        follow(sources, parse_follow_args(args))
    assert sources.read_bytes() == before


def test_an_invalid_result_is_refused_with_the_reason(sources: Path) -> None:
    before = sources.read_bytes()
    with pytest.raises(ConfigError, match="edit refused.*X handle is 1-15 letters"):
        follow(sources, parse_follow_args(["Someone", "--x", "not a handle!"]))
    assert sources.read_bytes() == before


def test_unfollow_unknown_suggests_a_close_name(sources: Path) -> None:
    before = sources.read_bytes()
    with pytest.raises(FollowError, match="did you mean 'Andrej Karpathy'"):
        unfollow(sources, "Andrej Karpathi")
    assert sources.read_bytes() == before


def test_a_name_typed_short_is_suggested_whole(sources: Path) -> None:
    """The README's `follow "Lil'Log" --weight 2` on the shipped file (where the blog is
    "Lil'Log (Lilian Weng)") was told to "give a place to follow them on", which invites a new
    person, and `unfollow "Lil'Log"` got no suggestion (difflib scores the pair 0.5)."""
    sources.write_text(COMMENTED.replace("name: Lil'Log ", "name: Lil'Log (Lilian Weng) "))
    before = sources.read_bytes()
    with pytest.raises(FollowError, match="did you mean \"Lil'Log \\(Lilian Weng\\)\"\\?"):
        unfollow(sources, "lil'log")
    with pytest.raises(FollowError, match="did you mean \"Lil'Log \\(Lilian Weng\\)\"\\?"):
        follow(sources, parse_follow_args(["Lil'Log", "--weight", "2"]))
    with pytest.raises(FollowError, match="give a place to follow them on"):  # nothing close
        follow(sources, parse_follow_args(["Nobody Here", "--weight", "2"]))
    assert sources.read_bytes() == before


def test_a_broken_file_is_not_edited(sources: Path) -> None:
    sources.write_text(COMMENTED.replace("interval: 6h", "intervall: 6h"))
    before = sources.read_bytes()
    with pytest.raises(ConfigError, match="intervall"):
        follow(sources, parse_follow_args(["x:someone"]))
    assert sources.read_bytes() == before


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_killed_between_write_and_rename_leaves_the_original(
        sources: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    before = sources.read_bytes()

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # what a kill between the steps looks like to us

    monkeypatch.setattr(os, where, killed)
    with pytest.raises(KeyboardInterrupt):
        follow(sources, parse_follow_args(["Ada", "x:ada_ex"]))
    monkeypatch.undo()
    assert sources.read_bytes() == before
    assert leftovers(sources.parent) == []


# --- the one-time feed check ------------------------------------------------------------------

FEED = atom_feed([{"title": "A post", "link": "https://example.org/a"}], title="Ada's Notes")


def page(links: str) -> bytes:
    return (f"<!doctype html><html><head><title>Ada — home</title>{links}</head>"
            "<body><p>hello</p></body></html>").encode()


def test_find_feed_links_resolves_and_filters() -> None:
    html = page('<link rel="stylesheet" href="/s.css">'
                '<link rel="alternate" type="application/atom+xml" href="/feed.atom">'
                '<link rel="Alternate" type="application/rss+xml; charset=utf-8" '
                'href="https://cdn.example.org/rss.xml">'
                '<link rel="alternate" type="text/html" hreflang="de" href="/de/">')
    links, title = find_feed_links(html.decode(), "https://example.org/blog/")
    assert links == ["https://example.org/feed.atom", "https://cdn.example.org/rss.xml"]
    assert title == "Ada — home"


def test_a_feed_url_is_followed_under_its_title(sources: Path, server: LocalServer) -> None:
    url = server.add("/feed.xml", body=FEED, content_type="application/atom+xml")
    msg = follow(sources, parse_follow_args([url]))
    assert msg == f"following blog \"Ada's Notes\": {url}"
    assert load_config(sources).blogs[-1].url == url
    assert len(server.hits("/feed.xml")) == 1


def test_a_feed_titled_like_a_persons_source_gets_another_name(sources: Path,
                                                               server: LocalServer) -> None:
    """The title `Andrej Karpathy/X` is the name of his X source: the follow was refused as
    invalid (a duplicate name) instead of naming the blog apart, as any other taken title."""
    feed = atom_feed([{"title": "Post", "link": "https://k.example/post"}],
                     title="Andrej Karpathy/X")
    url = server.add("/feed.xml", body=feed, content_type="application/atom+xml")
    assert follow(sources, parse_follow_args([url])) == \
        f"following blog 'Andrej Karpathy/X (127.0.0.1)': {url}"



def test_a_feed_titled_with_control_characters_is_followed_under_a_clean_name(
        sources: Path, server: LocalServer) -> None:
    """A feed's title with a bell or an escape sequence was refused as the name of the blog
    ("edit refused … a name cannot contain … control characters"), a name the user never
    gave; a title of a megabyte became the name whole."""
    import json

    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "Ada\as \x1b[1mblog",
           "items": [{"id": "1", "url": "https://ada.example/1", "title": "Post"}]}
    url = server.add("/feed.json", body=json.dumps(doc).encode(),
                     content_type="application/feed+json")
    assert follow(sources, parse_follow_args([url])) == f"following blog 'Ada s [1mblog': {url}"
    doc["title"] = "Long " * 300_000
    server.add("/long.json", body=json.dumps(doc).encode(), content_type="application/feed+json")
    follow(sources, parse_follow_args([server.url("/long.json")]))
    name = load_config(sources).blogs[-1].name
    assert name.startswith("Long Long") and name.endswith("…") and len(name) <= 100


def test_an_edit_that_would_make_the_file_too_large_to_read_is_refused(
        sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command refuses a sources.yaml over its limit: an edit past it left a file no
    command would read (an OPML import of eleven 1 MB titles wrote 11 MB)."""
    import feedbot.sources_edit as sources_edit

    before = sources.read_bytes()
    monkeypatch.setattr(sources_edit, "MAX_SOURCES_BYTES", len(before) + 20)
    with pytest.raises(ConfigError, match=r"edit refused: the file would be 0 MB; a sources "
                                          r"file is at most 0 MB"):
        follow(sources, parse_follow_args(["https://blog.example.org/feed.xml", "--no-check"]))
    assert sources.read_bytes() == before


def test_a_page_advertising_a_feed_is_followed_by_its_feed(sources: Path,
                                                           server: LocalServer) -> None:
    feed = server.add("/blog/feed.atom", body=FEED, content_type="application/atom+xml")
    home = server.add("/blog/", body=page('<link rel="alternate" type="application/atom+xml" '
                                          'href="feed.atom">'), content_type="text/html")
    msg = follow(sources, parse_follow_args(["Ada Example", "--blog", home]))
    assert load_config(sources).people[-1].blog == feed
    assert f"(feed found on {home})" in msg
    assert len(server.hits("/blog/")) == 1 and len(server.hits("/blog/feed.atom")) == 1


@pytest.mark.parametrize(("route", "message"), [
    ({"body": page(""), "content_type": "text/html"}, "advertises no feed"),
    ({"body": b"just some text", "content_type": "text/plain"}, "is not a feed"),
    ({"body": page('<link rel="alternate" type="application/rss+xml" href="/x">'),
      "content_type": "text/html"}, "advertises .*/x, but"),
])
def test_not_a_feed_is_refused(sources: Path, server: LocalServer, route: dict,
                               message: str) -> None:
    url = server.add("/page", **route)
    server.add("/x", body=b"<html><body>no feed here</body></html>", content_type="text/html")
    before = sources.read_bytes()
    with pytest.raises(FollowError, match=message):
        follow(sources, parse_follow_args([url]))
    assert sources.read_bytes() == before


def test_a_followed_feed_is_refused_before_any_fetch(sources: Path, server: LocalServer) -> None:
    url = server.add("/feed.xml", body=FEED, content_type="application/atom+xml")
    follow(sources, parse_follow_args([url]))
    with pytest.raises(FollowError, match="already following"):
        follow(sources, parse_follow_args(["Ada", "--blog", url]))
    assert len(server.hits("/feed.xml")) == 1


def test_a_missing_sources_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="feedbot init"):
        follow(tmp_path / "nope.yaml", parse_follow_args(["x:someone"]))


def test_an_unreachable_blog_is_a_check_failure(sources: Path, server: LocalServer) -> None:
    with pytest.raises(CheckFailed, match="HTTP 404.*--no-check"):
        follow(sources, parse_follow_args([server.url("/gone.xml")]))


def test_no_check_does_not_fetch(sources: Path, server: LocalServer) -> None:
    url = server.url("/feed.xml")
    follow(sources, parse_follow_args(["--no-check", url]))
    assert server.requests == []
    assert load_config(sources).blogs[-1].name == "127.0.0.1"


@pytest.mark.parametrize(("url", "page"), [
    ("https://someone.github.io/", True), ("https://e.org/blog", True),
    ("https://e.org/feed/atom.html", True), ("https://e.org/feed/", False),
    ("https://e.org/index.xml", False), ("https://e.org/?format=rss", False),
    ("https://e.org/feeds/posts/default", False), ("https://e.org/feed.json", False),
])
def test_looks_like_page(url: str, page: bool) -> None:
    assert looks_like_page(url) is page


@pytest.mark.parametrize("status", [301, 308])
def test_a_feed_moved_permanently_is_followed_where_it_moved(sources: Path, server: LocalServer,
                                                             status: int) -> None:
    """The old URL was written, and every collect then said "moved permanently to …: update
    its URL in sources.yaml"; following the old URL after the new one followed the same feed
    twice, under two names."""
    feed = server.add("/feed", body=FEED, content_type="application/atom+xml")
    old = server.add("/moved", status=status, headers={"Location": "/feed"})
    r = invoke(sources, "follow", old)
    assert r.exit_code == 0 and r.output.strip() == \
        f"{old} moved permanently to {feed}; following blog \"Ada's Notes\": {feed}", r.output
    assert load_config(sources).blogs[-1].url == feed
    before = sources.read_bytes()
    r = invoke(sources, "follow", old)
    assert r.exit_code == 0 and f"already following {feed}" in r.output, r.output
    r = invoke(sources, "follow", "Ada", "--blog", old)
    assert r.exit_code == 2 and r.output.strip() == f"feedbot: {old} moved permanently to " \
        f"{feed}; already following {feed} (as \"Ada's Notes\")", r.output
    assert sources.read_bytes() == before


@pytest.mark.parametrize("status", [302, 307])
def test_a_feed_redirected_for_now_is_followed_at_the_url_given(
        sources: Path, server: LocalServer, status: int) -> None:
    server.add("/feed", body=FEED, content_type="application/atom+xml")
    old = server.add("/for-now", status=status, headers={"Location": "/feed"})
    assert follow(sources, parse_follow_args([old])) == f"following blog \"Ada's Notes\": {old}"
    assert load_config(sources).blogs[-1].url == old


def test_a_feed_advertised_by_a_page_is_followed_where_it_moved(sources: Path,
                                                                server: LocalServer) -> None:
    feed = server.add("/new.atom", body=FEED, content_type="application/atom+xml")
    old = server.add("/old.atom", status=301, headers={"Location": "/new.atom"})
    home = server.add("/", body=page('<link rel="alternate" type="application/atom+xml" '
                                     'href="/old.atom">'), content_type="text/html")
    msg = follow(sources, parse_follow_args(["Ada Example", "--blog", home]))
    assert msg == (f"{old} moved permanently to {feed}; following Ada Example on their blog "
                   f"({feed}) (feed found on {home})")
    assert load_config(sources).people[-1].blog == feed


def test_a_moved_feed_keeps_the_password_of_the_url_given(sources: Path,
                                                          server: LocalServer) -> None:
    """The move is shown with the password as ***: the file gets the password itself."""
    server.add("/feed", body=FEED, content_type="application/atom+xml")
    old = server.url("/moved").replace("http://", "http://bob:hunter2@")
    server.add("/moved", status=301, headers={"Location": "/feed"})
    r = invoke(sources, "follow", old)
    assert r.exit_code == 0 and "hunter2" not in r.output, r.output
    assert "bob:***@" in r.output
    assert load_config(sources).blogs[-1].url == \
        server.url("/feed").replace("http://", "http://bob:hunter2@")
    assert server.hits("/feed")[0].headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize("moved", ["bob:other@localhost", "bob@localhost", "bob@127.0.0.1"])
def test_a_move_naming_its_own_user_keeps_the_url_given(sources: Path, server: LocalServer,
                                                        moved: str) -> None:
    """A redirect that names its own user (and password, shown as ***) for the new URL: the
    user's password was written into it, sent to another host (localhost, not 127.0.0.1),
    or where the redirect asked for none. The file keeps the URL given, which still leads
    to the feed."""
    server.add("/feed", body=FEED, content_type="application/atom+xml")
    port = urlsplit(server.url("/")).port
    old = server.url("/moved").replace("http://", "http://bob:hunter2@")
    server.add("/moved", status=301, headers={"Location": f"http://{moved}:{port}/feed"})
    r = invoke(sources, "follow", old)
    assert r.exit_code == 0 and "hunter2" not in r.output, r.output
    assert load_config(sources).blogs[-1].url == old
    assert server.hits("/feed")  # the redirect was followed, and the feed checked


def follow_over(site: httpx.MockTransport, sources: Path, *args: str) -> str:
    """`follow` with the check's requests answered by `site` (a web server elsewhere)."""
    import asyncio

    client = make_client(transport=site)
    try:
        return follow(sources, parse_follow_args(list(args)), http=client)
    finally:
        asyncio.run(client.aclose())


def downgrading(status: int, **pages: bytes) -> httpx.MockTransport:
    """https://example.org/PATH answers `status` to http://example.org/PATH, which serves
    pages[PATH] (a feed, or a web page)."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            return httpx.Response(status, headers={
                "Location": str(request.url.copy_with(scheme="http"))})
        body = pages.get(request.url.path.strip("/"))
        if body is None:
            return httpx.Response(404)
        kind = "text/html" if body.startswith(b"<!doctype") else "application/atom+xml"
        return httpx.Response(200, content=body, headers={"Content-Type": kind})
    return httpx.MockTransport(handle)


@pytest.mark.parametrize("status", [301, 308, 302])
def test_an_https_feed_that_redirects_to_plain_http_stays_https(sources: Path,
                                                                status: int) -> None:
    """`follow https://…` whose server answered 301 with `http://…` wrote the plain-http URL
    into sources.yaml: a downgrade the user never asked for, which anyone on the network path
    can cause. The https URL is kept, and the answer says where the server pointed."""
    url = "https://example.org/feed.xml"
    msg = follow_over(downgrading(status, **{"feed.xml": FEED}), sources, url)
    assert msg == (f"{url} redirects to plain http (http://example.org/feed.xml), so its posts "
                   "come unencrypted; sources.yaml keeps the https address given (give the "
                   "http one yourself to follow that instead); following blog \"Ada's Notes\": "
                   f"{url}")
    assert load_config(sources).blogs[-1].url == url


def test_an_https_page_that_redirects_to_plain_http_is_said(sources: Path) -> None:
    """The page given redirects to plain http, and its feed is found there: the answer says
    so, the feed's own URL being whatever the page advertises."""
    home = page('<link rel="alternate" type="application/atom+xml" href="/feed.xml">')
    msg = follow_over(downgrading(301, **{"": home, "feed.xml": FEED}), sources, "Ada",
                      "--blog", "https://example.org/")
    assert msg.startswith("https://example.org/ redirects to plain http "
                          "(http://example.org/), so the feed it advertises was found over "
                          "plain http; following Ada on their blog "
                          "(http://example.org/feed.xml)"), msg


# --- the commands -----------------------------------------------------------------------------

def invoke(sources: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--sources", str(sources), *args])


def test_following_what_is_followed_already_changes_nothing_and_is_no_error(
        sources: Path) -> None:
    """A script that follows the same blog or person again is not told it failed (exit 2 is a
    refusal); the same place under another name, or with a new weight, is still refused."""
    url = "https://lilianweng.github.io/index.xml"  # among the file's blogs
    r = invoke(sources, "follow", "--no-check", url)
    assert r.exit_code == 0 and r.output.strip().endswith("nothing to change"), r.output
    r = invoke(sources, "follow", "Andrej Karpathy", "--x", "karpathy")
    assert r.exit_code == 0 and "nothing to change" in r.output
    assert sources.read_text() == COMMENTED
    r = invoke(sources, "follow", "--no-check", url, "--weight", "1")  # the weight it has
    assert r.exit_code == 0 and "nothing to change" in r.output
    r = invoke(sources, "follow", "--x", "KARPATHY")  # no name: the person followed there
    assert r.exit_code == 0 and "already following Andrej Karpathy" in r.output
    r = invoke(sources, "follow", "Someone", "--x", "karpathy")
    assert r.exit_code == 2 and "(as 'Andrej Karpathy')" in r.output
    assert sources.read_text() == COMMENTED
    # a new weight for a blog: a change, as for a person (was "change it in sources.yaml")
    r = invoke(sources, "follow", "--no-check", url, "--weight", "2")
    assert r.exit_code == 0 and r.output.strip() == "Lil'Log: weight 2 (was 1)", r.output
    assert {b.name: b.weight for b in load_config(sources).blogs}["Lil'Log"] == 2.0
    r = invoke(sources, "follow", "Lil'Log", "--weight", "0.5")  # by its name
    assert r.exit_code == 0 and r.output.strip() == "Lil'Log: weight 0.5 (was 2)", r.output
    r = invoke(sources, "follow", "lil'log", "--weight", "0.5")
    assert r.exit_code == 0 and "nothing to change" in r.output
    assert invoke(sources, "follow", "Lil'Log", "--x", "lil").exit_code == 2  # no person
    assert changes(COMMENTED, sources.read_text())[1] == ["    weight: 0.5"]
    r = invoke(sources, "follow", "x:karpathy", "--weight", "2")  # a change for that person
    assert r.exit_code == 0 and "Andrej Karpathy: weight 2" in r.output, r.output
    assert load_config(sources).people[0].weight == 2.0
    # by name, with no place: was "nothing to follow: give at least one place"
    r = invoke(sources, "follow", "Andrej Karpathy", "--weight", "1.5")
    assert r.exit_code == 0 and "Andrej Karpathy: weight 1.5 (was 2)" in r.output, r.output
    assert load_config(sources).people[0].weight == 1.5
    r = invoke(sources, "follow", "Nobody Here", "--weight", "2")
    assert r.exit_code == 2 and "not following anyone named 'Nobody Here'" in r.output


def test_cli_follow_and_unfollow(sources: Path) -> None:
    r = invoke(sources, "follow", "Ada Example", "--x", "ada_ex", "--arxiv", "Ada Example")
    assert r.exit_code == 0, r.output
    assert "following Ada Example on X (@ada_ex), arXiv (Ada Example)" in r.output
    assert "X_BEARER_TOKEN is not set" in r.output
    r = invoke(sources, "follow", "x:ada_ex")  # no name: about the person followed there
    assert r.exit_code == 0
    assert "already following Ada Example on X (@ada_ex); nothing to change" in r.output
    r = invoke(sources, "unfollow", "Ada", "Example")
    assert r.exit_code == 0 and "unfollowed Ada Example (X, arXiv)" in r.output
    assert sources.read_text() == COMMENTED



def test_unfollow_takes_what_follow_takes(sources: Path) -> None:
    """`follow x:karpathy`, a feed's URL or an arXiv listing worked, and `unfollow` of the
    same was "not following anyone or anything named 'x:karpathy'"."""
    assert invoke(sources, "follow", "--category", "cs.LG").exit_code == 0
    r = invoke(sources, "unfollow", "x:KARPATHY")
    assert r.exit_code == 0 and r.output.strip() == "unfollowed Andrej Karpathy on X", r.output
    assert load_config(sources).people[0].x is None
    assert load_config(sources).people[0].arxiv == "Andrej Karpathy"  # their other place
    r = invoke(sources, "unfollow", "http://JALAMMAR.github.io/feed.xml")  # the same feed
    assert r.exit_code == 0 and r.output.strip() == "unfollowed Jay Alammar", r.output
    r = invoke(sources, "unfollow", "https://arxiv.org/list/cs.lg/recent")
    assert r.exit_code == 0 and r.output.strip().startswith("unfollowed cs.LG"), r.output
    assert [b.name for b in load_config(sources).blogs] == ["Lil'Log"]
    assert load_config(sources).arxiv == []
    r = invoke(sources, "unfollow", "https://blog.example.org/feed.xml")
    assert r.exit_code == 2 and "not following anyone or anything named" in r.output
    assert "# Blogs I read every week" in sources.read_text()  # comments kept



def test_arxiv_categories_are_checked_and_written_as_arxiv_writes_them(sources: Path) -> None:
    """`--category nonsense` was followed (arXiv answers such a query with nothing, every
    time), and `--category cs.lg` beside a followed cs.LG was offered as a second source."""
    r = invoke(sources, "follow", "--category", "nonsense")
    assert r.exit_code == 2 and "'nonsense' is not an arXiv category such as cs.LG" in r.output
    r = invoke(sources, "follow", "--category", "css.LG")
    assert r.exit_code == 2 and "(did you mean cs.LG?)" in r.output
    assert sources.read_text() == COMMENTED
    r = invoke(sources, "follow", "--category", "cs.lg")
    assert r.exit_code == 0 and "following arXiv cs.LG" in r.output, r.output
    r = invoke(sources, "follow", "--category", "CS.LG")
    assert r.exit_code == 0 and "already following arXiv cs.LG" in r.output, r.output
    r = invoke(sources, "follow", "https://arxiv.org/list/cond-mat.Mes-Hall/new")
    assert r.exit_code == 0 and "following arXiv cond-mat.mes-hall" in r.output, r.output
    assert [a.category for a in load_config(sources).arxiv] == ["cs.LG", "cond-mat.mes-hall"]



@pytest.mark.parametrize(("typed", "close"), [
    (["--category", "cs.CVV"], "cs.CV"), (["--category", "stat.MLL"], "stat.ML"),
    (["--category", "cs.ML"], "stat.ML"), (["https://arxiv.org/list/cs.CVV/new"], "cs.CV")])
def test_a_category_arxiv_does_not_have_is_refused(sources: Path, typed: list[str],
                                                   close: str) -> None:
    """Only the archive before the dot was checked: `--category cs.CVV` was followed, as
    cs.cvv, and arXiv answers it with nothing, every time."""
    r = invoke(sources, "follow", *typed)
    assert r.exit_code == 2 and "is not an arXiv category" in r.output, r.output
    assert f"(did you mean {close}?)" in r.output, r.output
    assert sources.read_text() == COMMENTED


NAMES = [("math.co", "math.CO"), ("MATH.CO", "math.CO"), ("physics.Atom-Ph", "physics.atom-ph"),
         ("cond-mat", "cond-mat"), ("hep-th", "hep-th"), ("q-bio.nc", "q-bio.NC"),
         ("cmp-lg", "closed long ago, merged into cs.CL: no new paper is listed under it; "
                    "follow cs.CL instead"),
         ("Q-ALG", "closed long ago, merged into math.QA"), ("solv-int", "merged into nlin.SI"),
         ("cs.CVV", "is not an arXiv category such as cs.LG or stat.ML (did you mean cs.CV?); "
                    "one newer than feedbot's list goes in a query: 'cat:cs.CVV'"),
         ("q-bio.XX", "is not an arXiv category"), ("nonsense", "is not an arXiv category"),
         ("cs.LG cs.CV", "is not one arXiv category such as cs.LG; for several, follow each, "
                         "or give sources.yaml a query: 'cat:cs.LG OR cat:cs.CV'")]


@pytest.mark.parametrize(("name", "outcome"), NAMES)
def test_follow_and_sources_yaml_take_the_same_arxiv_categories(name: str,
                                                                outcome: str) -> None:
    """`category: cmp-lg` (an archive arXiv closed in the 1990s), `category: cs.CVV` or
    `category: nonsense` in sources.yaml were taken, and arXiv answered them with no new paper
    for ever, while `follow --category` refused them: one rule now, with the same words."""
    try:
        followed = parse_follow_args(["--category", name]).category
    except FollowError as e:
        followed = f"refused: {e}"
    try:
        arxiv = load_config("sources.yaml", text=f"arxiv:\n  - {{name: a, category: {name}}}\n")
        written = str(arxiv.arxiv[0].category)
    except ConfigError as e:
        assert e.key == "arxiv[0].category"
        written = f"refused: {e.message}"
    assert followed == written
    if written.startswith("refused: "):
        assert written.startswith(f"refused: {name!r} ") and outcome in written, written
    else:
        assert written == outcome


def test_every_arxiv_category_is_written_in_its_own_case() -> None:
    """arXiv's categories are case-sensitive (cs.CV, math.ST, q-bio.NC, physics.optics)."""
    from feedbot.config import ARXIV_CATEGORIES
    from feedbot.follow import arxiv_category

    assert len(ARXIV_CATEGORIES) == 155 and {"cs.CV", "math.ST", "stat.ML", "q-bio.NC",
                                              "cond-mat.mes-hall", "hep-th"} <= ARXIV_CATEGORIES
    for cat in ARXIV_CATEGORIES:
        assert arxiv_category(cat.upper()) == arxiv_category(f" {cat.lower()} ") == cat

def test_cli_follow_mastodon_shorthand_and_weight(sources: Path) -> None:
    r = invoke(sources, "follow", "@someone@mastodon.social", "--weight", "0.5")
    assert r.exit_code == 0, r.output
    person = load_config(sources).people[-1]
    assert (person.name, person.mastodon, person.weight) == \
        ("@someone@mastodon.social", "@someone@mastodon.social", 0.5)


def test_a_blogs_password_is_never_shown_by_follow_unfollow_or_sources(sources: Path) -> None:
    """`feedbot sources` showed a person's blog as `https://bob:hunter2@…`, and the follow
    answers echoed it, though a feed URL's password is never to be shown."""
    url = "https://bob:hunter2@bob.example.org/feed.xml"
    outs = [invoke(sources, "follow", "Bob", "--blog", url, "--no-check"),
            invoke(sources, "follow", "Bob", "--blog", url, "--no-check"),  # already so
            invoke(sources, "sources"),
            invoke(sources, "follow", "Bo", "--blog", url, "--no-check"),  # refused
            invoke(sources, "unfollow", "Bob/blog")]
    assert [r.exit_code for r in outs] == [0, 0, 0, 2, 0], [r.output for r in outs]
    assert all("hunter2" not in r.output for r in outs), [r.output for r in outs]
    assert "bob:***@bob.example.org" in outs[2].output


def test_cli_refusals_exit_2_and_unreachable_exits_1(sources: Path,
                                                     server: LocalServer) -> None:
    assert invoke(sources, "unfollow", "Nobody").exit_code == 2
    assert invoke(sources, "follow", "--x", "a b", "A").exit_code == 2
    assert invoke(sources, "follow", "Just words").exit_code == 2
    r = invoke(sources, "follow", "--blog", server.url("/missing"))
    assert r.exit_code == 1 and "cannot check" in r.output
    assert sources.read_text() == COMMENTED


def test_no_check_on_a_page_url_follows_it_as_given_with_a_warning(sources: Path) -> None:
    """--no-check stored a blog's page without a word, though collecting reads only feeds and
    so failed every time: it is still followed as given (the user may know better), but the
    message says it looks like a page and what to do."""
    r = invoke(sources, "follow", "Someone", "--blog", "https://someone.github.io/", "--no-check")
    assert r.exit_code == 0, r.output
    assert load_config(sources).people[-1].blog == "https://someone.github.io/"
    assert r.output.startswith("following Someone on their blog (https://someone.github.io/) "
                               "(not checked: it looks like a web page, not a feed, ")
    assert "follow the feed's own URL" in r.output and "without --no-check" in r.output
    r = invoke(sources, "follow", "--no-check", "https://b.example/blog/index.xml")
    assert r.exit_code == 0, r.output
    assert r.output.rstrip().endswith("https://b.example/blog/index.xml (not checked)")
    assert "followed exactly as given" in invoke(sources, "follow", "--help").output


@pytest.mark.parametrize("command", ["follow", "unfollow", "import-opml", "export-opml"])
def test_commands_have_help(command: str) -> None:
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and len(r.output.splitlines()) > 3


def test_add_blogs_skips_followed_and_names_clashes(sources: Path) -> None:
    report = add_blogs(sources, [
        ("Jay Alammar", "https://jalammar.github.io/feed.xml", ""),  # already followed
        ("Jay Alammar", "https://other.example/jay.xml", ""),  # name taken: host added
        ("", "https://untitled.example/rss", ""),
        ("Bad", "ftp://nope.example/feed", ""),
    ])
    assert report.added == ["Jay Alammar (other.example)", "untitled.example"]
    assert report.skipped == [("Jay Alammar", "already followed"),
                              ("Bad", "not an http(s) URL")]
    names = [b.name for b in load_config(sources).blogs]
    assert names[-2:] == report.added


def test_add_blogs_with_nothing_new_does_not_rewrite(sources: Path) -> None:
    before = sources.stat().st_mtime_ns
    report = add_blogs(sources, [("x", "https://jalammar.github.io/feed.xml", "")])
    assert report.added == [] and sources.stat().st_mtime_ns == before


# --- bad input gets a clear refusal, never a traceback ----------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["Evil", "--blog", "http://[::1/feed", "--no-check"],
     "'http://[::1/feed' is not a valid URL (Invalid IPv6 URL)"),
    (["Evil", "--blog", "http://127.0.0.1:99999/feed"],
     "'http://127.0.0.1:99999/feed' is not a valid URL (Port out of range 0-65535)"),
    (["--no-check", "http://[fe80::1/feed"], "is not a valid URL (Invalid IPv6 URL)"),
    # pasted as a profile (a Mastodon account's URL): the port was read outside any check
    (["https://mastodon.social:99999/@ada"],
     "'https://mastodon.social:99999/@ada' is not a valid URL (Port out of range 0-65535)"),
    (["--no-check", "https://mastodon.social:abc/@ada"], "is not a valid URL (Port could not"),
])
def test_cli_refuses_a_malformed_blog_url(sources: Path, args: list[str], message: str) -> None:
    r = invoke(sources, "follow", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert sources.read_text() == COMMENTED


def test_a_page_advertising_a_malformed_feed_url_is_refused(sources: Path,
                                                            server: LocalServer) -> None:
    bad = '<link rel="alternate" type="application/rss+xml" href="http://[::1/x">'
    url = server.add("/page.html", body=page(bad), content_type="text/html")
    r = invoke(sources, "follow", url)
    assert r.exit_code == 2, r.output
    assert f"{url} advertises 'http://[::1/x', which is not a valid URL (Invalid IPv6 URL)" \
        in r.output
    assert sources.read_text() == COMMENTED
    # a malformed link is passed over when the page also advertises a good one
    feed = server.add("/feed.atom", body=FEED, content_type="application/atom+xml")
    both = server.add("/both.html", body=page(bad + '<link rel="alternate" '
                                              'type="application/atom+xml" href="/feed.atom">'),
                      content_type="text/html")
    r = invoke(sources, "follow", both)
    assert r.exit_code == 0, r.output
    assert load_config(sources).blogs[-1].url == feed


@pytest.mark.parametrize("args", [
    ["Bad\nName", "--arxiv", "Bad Name"],
    ["Tab\tName", "x:someone"],
    ["Someone", "--arxiv", "Some\tOne"],
    ["Esc\x1b[31mName", "x:someone"],
])
def test_names_with_control_characters_are_refused(sources: Path, args: list[str]) -> None:
    r = invoke(sources, "follow", *args)
    assert r.exit_code == 2, r.output
    assert "contains a newline, tab or other control character" in r.output
    assert sources.read_text() == COMMENTED


# --- where and how the file is written --------------------------------------------------------

def test_edits_write_through_a_symlink_and_keep_it(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text(COMMENTED, encoding="utf-8")
    link = tmp_path / "link.yaml"
    link.symlink_to("real.yaml")
    assert invoke(link, "stage", "set", "nlp").exit_code == 0
    assert invoke(link, "follow", "Ada", "x:ada_ex").exit_code == 0
    assert link.is_symlink() and link.resolve() == real
    text = real.read_text()
    assert "stage: nlp          # working through CS231n" in text and "x: ada_ex" in text
    assert invoke(link, "unfollow", "Ada").exit_code == 0
    assert link.is_symlink() and "ada_ex" not in real.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.yaml", "real.yaml"]


def test_concurrent_edits_all_land(sources: Path) -> None:
    n = 6
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            start.wait()
            follow(sources, parse_follow_args([f"Person {i}", "--arxiv", f"Person Number{i}"]))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = {p.name for p in load_config(sources).people}
    assert {f"Person {i}" for i in range(n)} <= names
    assert leftovers(sources.parent) == []  # neither temp files nor the lock file stay


# --- profile and listing URLs as people paste them --------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["https://x.com/karpathy"], FollowRequest(x="karpathy")),
    (["https://twitter.com/karpathy/status/1234567890?s=20"], FollowRequest(x="karpathy")),
    (["Andrej Karpathy", "https://www.x.com/karpathy/"],
     FollowRequest(name="Andrej Karpathy", x="karpathy")),
    (["https://bsky.app/profile/karpathy.bsky.social"],
     FollowRequest(bluesky="karpathy.bsky.social")),
    (["https://mastodon.social/@Gargron"], FollowRequest(mastodon="@Gargron@mastodon.social")),
    (["https://hachyderm.io/@ada@sigmoid.social"], FollowRequest(mastodon="@ada@sigmoid.social")),
    (["Ada", "--mastodon", "https://sigmoid.social/@ada"],
     FollowRequest(name="Ada", mastodon="@ada@sigmoid.social")),
    (["Ada", "--x", "https://x.com/ada_ex"], FollowRequest(name="Ada", x="ada_ex")),
    # the feed Mastodon gives an account, and one of its posts: the account, whose posts
    # fold into what they share (as a blog, none did)
    (["https://sigmoid.social/@ada.rss"], FollowRequest(mastodon="@ada@sigmoid.social")),
    (["https://sigmoid.social/@ada/113512345678901234"],
     FollowRequest(mastodon="@ada@sigmoid.social")),
    (["https://bsky.app/profile/did:plc:abcdefghijklmnopqrstuvwx/post/3kabc"],
     FollowRequest(bluesky="did:plc:abcdefghijklmnopqrstuvwx")),
    (["https://arxiv.org/list/cs.LG/recent"], FollowRequest(category="cs.LG")),
    (["Stats", "https://arxiv.org/list/stat.ML/new"],
     FollowRequest(name="Stats", category="stat.ML")),
    # not profiles: blogs, whose feed is discovered
    (["https://medium.com/@someone"], FollowRequest(blog="https://medium.com/@someone")),
    (["https://someone.substack.com/"], FollowRequest(blog="https://someone.substack.com/")),
    (["https://someone.github.io/"], FollowRequest(blog="https://someone.github.io/")),
])
def test_profile_urls_follow_the_account(args: list[str], expected: FollowRequest) -> None:
    assert parse_follow_args(args) == expected


@pytest.mark.parametrize(("args", "message"), [
    (["https://x.com/home"], "not an X profile"),
    (["Ada", "--x", "https://bsky.app/profile/ada.bsky.social"], "not a profile URL on X"),
    (["Ada", "x:ada", "https://arxiv.org/list/cs.LG/recent"], "followed on its own"),
    (["--category", "not a category"], "not one arXiv category"),
    # a custom feed or list followed its maker's posts instead, silently
    (["https://bsky.app/profile/ada.bsky.social/feed/ml-papers"], "a Bluesky feed, not an "
     "account"),
    (["https://bsky.app/profile/ada.bsky.social/lists/3kxyz"], "a Bluesky list, not an account"),
])
def test_profile_url_refusals(args: list[str], message: str) -> None:
    with pytest.raises(FollowError, match=message):
        parse_follow_args(args)


@pytest.mark.parametrize("typed", [
    "x.com/karpathy", "twitter.com/karpathy/status/1234567890?s=20",
    "bsky.app/profile/karpathy.bsky.social", "mastodon.social/@ada", "sigmoid.social/@ada.rss",
    "arxiv.org/list/cs.LG/recent", "arxiv.org/a/karpathy_a_1", "karpathy.github.io/feed.xml",
    "www.example.org/blog", "www.example.org", "lilianweng.github.io", "example.org:8080/feed",
])
def test_a_url_typed_without_https_is_the_url(typed: str) -> None:
    """`feedbot follow x.com/karpathy` was taken for a name ("nothing to follow"), not as the
    account `https://x.com/karpathy` follows."""
    assert parse_follow_args([typed]) == parse_follow_args([f"https://{typed}"])
    assert parse_follow_args(["Ada", typed]).name == "Ada"



@pytest.mark.parametrize("typed", [
    "192.0.2.5:8080/feed.xml", "localhost:8714/nnw/qemu.atom", "LOCALHOST:8080", "192.0.2.5/rss",
    "[2001:db8::5]:8080/feed.xml",
])
def test_a_local_server_typed_without_http_is_the_url(typed: str) -> None:
    """`follow 192.168.1.5:8080/feed.xml` and `follow localhost:8714/…` were read as a name:
    "nothing to follow: give at least one place"."""
    assert parse_follow_args([typed]) == FollowRequest(blog=f"http://{typed}", typed=typed)
    assert parse_follow_args(["My LAN feed", typed]) == \
        FollowRequest(name="My LAN feed", blog=f"http://{typed}")
    assert parse_follow_args(["Ada", "--blog", typed]).blog == f"http://{typed}"


def test_a_local_server_typed_without_http_is_followed(sources: Path, server: LocalServer) -> None:
    url = server.add("/feed.xml", body=FEED, content_type="application/atom+xml")
    r = invoke(sources, "follow", url.removeprefix("http://"))
    assert r.exit_code == 0 and r.output.strip() == f"following blog \"Ada's Notes\": {url}", \
        r.output
    assert load_config(sources).blogs[-1].url == url


@pytest.mark.parametrize("args", [["nas:8080/feed.xml"], ["My LAN feed", "nas:8080/feed.xml"]])
def test_a_name_with_a_web_address_in_it_says_to_write_the_scheme(args: list[str]) -> None:
    with pytest.raises(FollowError, match=r"nothing to follow: give at least one place \(is "
                                          r"nas:8080/feed.xml a web address\? write it with "
                                          r"http:// or https://\); usage"):
        parse_follow_args(args)

@pytest.mark.parametrize(("args", "name"), [
    (["J.", "Doe"], "J. Doe"), (["J.Doe"], "J.Doe"), (["J.Li"], "J.Li"),
    (["Dr.Who"], "Dr.Who"), (["St.Louis"], "St.Louis"), (["Yann", "LeCun", "Ph.D."],
                                                         "Yann LeCun Ph.D."),
    (["2401.01234"], "2401.01234"), (["math.GT/0309136"], "math.GT/0309136"),
    (["cs.AI"], "cs.AI"), (["stat.ml"], "stat.ml"), (["index.html"], "index.html"),
])
def test_names_and_arxiv_ids_are_not_taken_for_urls(args: list[str], name: str) -> None:
    assert parse_follow_args([*args, "--x", "someone"]) == FollowRequest(name=name, x="someone")


def test_a_blog_option_without_https_is_the_url() -> None:
    """`--blog example.org/feed.xml` was refused as "not an http(s) URL"; so was a host alone
    whose domain is not among the common ones (`--blog inference.vc`), or not in lower case:
    after --blog it cannot be a word of a name."""
    for host in ("inference.vc", "Example.ORG", "blog.example.rs"):
        assert parse_follow_args(["--blog", host]).blog == f"https://{host}"
    assert parse_follow_args(["Ada", "--blog", "example.org/feed.xml"]) == \
        FollowRequest(name="Ada", blog="https://example.org/feed.xml")


def test_cli_follows_and_unfollows_urls_typed_without_https(sources: Path) -> None:
    r = invoke(sources, "follow", "x.com/ada_ex")
    assert r.exit_code == 0 and "following @ada_ex on X (@ada_ex)" in r.output, r.output
    r = invoke(sources, "follow", "--no-check", "www.example.org/feed.xml")
    assert r.exit_code == 0, r.output
    cfg = load_config(sources)
    assert (cfg.people[-1].name, cfg.people[-1].x) == ("@ada_ex", "ada_ex")
    assert cfg.blogs[-1].url == "https://www.example.org/feed.xml"
    assert invoke(sources, "unfollow", "www.example.org/feed.xml").exit_code == 0
    r = invoke(sources, "unfollow", "x.com/ada_ex")
    assert r.exit_code == 0, r.output
    assert sources.read_text() == COMMENTED


def test_a_name_that_is_a_host_still_takes_a_new_weight(sources: Path) -> None:
    """A blog followed with --no-check is named by its host, and someone followed by a Bluesky
    handle on their own domain by that handle: `follow NAME --weight 2` gives that entry the
    weight, as it did before hosts were taken for URLs (it fetched the host's page, or with
    --no-check followed it as a second blog)."""
    assert invoke(sources, "follow", "--no-check", "https://www.example.org/feed.xml"
                  ).exit_code == 0
    assert invoke(sources, "follow", "--bluesky", "ada.example.com").exit_code == 0
    r = invoke(sources, "follow", "example.org", "--weight", "2", "--no-check")
    assert r.exit_code == 0 and "example.org: weight 2 (was 1)" in r.output, r.output
    r = invoke(sources, "follow", "ada.example.com", "--weight", "3")
    assert r.exit_code == 0 and "ada.example.com: weight 3 (was 1)" in r.output, r.output
    cfg = load_config(sources)
    assert [(b.name, b.weight) for b in cfg.blogs if "example" in b.url] == [("example.org", 2)]
    assert [(p.name, p.weight) for p in cfg.people if p.bluesky] == [("ada.example.com", 3)]


def test_an_x_profile_url_is_followed_on_x_without_fetching(sources: Path) -> None:
    """It used to be taken for a blog: fetched (x.com is not a feed), or with --no-check
    written as a blog whose every collection fails."""
    r = invoke(sources, "follow", "--no-check", "https://x.com/ada_ex")
    assert r.exit_code == 0, r.output
    cfg = load_config(sources)
    assert [b.url for b in cfg.blogs] == ["https://lilianweng.github.io/index.xml",
                                          "https://jalammar.github.io/feed.xml"]
    assert (cfg.people[-1].name, cfg.people[-1].x) == ("@ada_ex", "ada_ex")
    before = sources.read_text()
    r = invoke(sources, "follow", "Andrej Karpathy", "https://twitter.com/karpathy")
    assert r.exit_code == 0 and "already following Andrej Karpathy" in r.output  # as asked
    assert "nothing to change" in r.output and sources.read_text() == before


def test_an_arxiv_listing_url_follows_the_category(sources: Path) -> None:
    r = invoke(sources, "follow", "https://arxiv.org/list/cs.LG/recent", "--weight", "0.5")
    assert r.exit_code == 0, r.output
    assert "following arXiv cs.LG" in r.output
    removed, added = changes(COMMENTED, sources.read_text())
    assert removed == []
    assert added == ["arxiv:", "  - name: cs.LG", "    category: cs.LG", "    weight: 0.5"]
    text = sources.read_text()
    assert text.index("arxiv:") < text.index("# People.")  # in the documented order
    q = load_config(sources).arxiv[0]
    assert (q.name, q.search_query, q.weight) == ("cs.LG", "cat:cs.LG", 0.5)
    r = invoke(sources, "follow", "Machine learning", "--category", "cs.LG")
    assert r.exit_code == 2 and "already following arXiv cs.LG (as 'cs.LG')" in r.output
    before = sources.read_text()
    r = invoke(sources, "follow", "https://arxiv.org/list/cs.LG/recent")  # the same again
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "already following arXiv cs.LG (as 'cs.LG'); nothing to change"
    for same in (["CS.LG", "--category", "cs.LG"], ["--category", "cs.LG", "--weight", "0.5"]):
        r = invoke(sources, "follow", *same)  # its name in another case; the weight it has
        assert r.exit_code == 0 and "nothing to change" in r.output, (same, r.output)
    assert sources.read_text() == before
    r = invoke(sources, "follow", "--category", "cs.LG", "--weight", "2")  # a change
    assert r.exit_code == 0 and r.output.strip() == "cs.LG: weight 2 (was 0.5)", r.output
    assert load_config(sources).arxiv[-1].weight == 2.0
    assert invoke(sources, "follow", "Other", "--category", "cs.LG").exit_code == 2
    assert invoke(sources, "follow", "--category", "cs.LG", "--weight", "0.5").exit_code == 0
    assert invoke(sources, "unfollow", "cs.lg").exit_code == 0
    assert sources.read_text().replace("arxiv: []\n", "") == COMMENTED


def test_a_new_category_matches_the_flow_style_of_the_others(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    p.write_text("arxiv:\n  - {name: cs.CV, category: cs.CV}   # vision\n")
    follow(p, parse_follow_args(["--category", "cs.CL"]))
    assert p.read_text() == ("arxiv:\n  - {name: cs.CV, category: cs.CV}   # vision\n"
                             "  - {name: cs.CL, category: cs.CL}\n")


def test_following_a_persons_mastodon_feed_as_a_blog_is_refused(sources: Path) -> None:
    follow(sources, parse_follow_args(["Ada", "@ada@sigmoid.social"]))
    before = sources.read_bytes()
    # the account's feed URL is the account: followed already, nothing to change
    with pytest.raises(FollowError, match=r"already following Ada on Mastodon "
                                          r"\(@ada@sigmoid.social\); nothing to change"):
        follow(sources, parse_follow_args(["--no-check", "https://sigmoid.social/@ada.rss"]))
    assert sources.read_bytes() == before


# --- sources.yaml as a human writes it ------------------------------------------------------

def test_crlf_line_endings_and_a_bom_are_kept(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    original = "\ufeff" + COMMENTED.replace("\n", "\r\n")
    p.write_bytes(original.encode())
    follow(p, parse_follow_args(["Ada", "x:ada_ex"]))
    data = p.read_bytes().decode()
    assert data.startswith("\ufeff# My feedbot sources")
    assert data.count("\r\n") == data.count("\n") and "\r\r" not in data
    assert "  - name: Ada\r\n    x: ada_ex\r\n" in data
    unfollow(p, "Ada")
    assert p.read_bytes().decode() == original


def test_a_file_of_only_comments_keeps_them(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    text = ("# My sources: everything commented out while I think\n"
            "# blogs:\n#   - name: A\n#     url: https://a.example/feed\n")
    p.write_text(text)
    follow(p, parse_follow_args(["Ada", "x:ada_ex"]))
    assert p.read_text() == text + "people:\n  - name: Ada\n    x: ada_ex\n"


def test_unused_anchors_are_kept(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    text = ("defaults: &defaults\n  interval: 6h\nblogs:\n  - &fav\n    name: A\n"
            "    url: https://a.example/feed\n    weight: &w 2.0\n"
            "  - name: B\n    url: https://b.example/feed\n    weight: *w\n")
    p.write_text(text)
    follow(p, parse_follow_args(["--no-check", "https://c.example/feed"]))
    assert p.read_text() == text + "  - name: c.example\n    url: https://c.example/feed\n"


def test_a_save_during_the_edit_is_not_overwritten(sources: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An editor takes no lock: when the human saves between our read and our replace, the
    edit is redone on what they saved rather than writing over it."""
    from feedbot import sources_edit

    real = sources_edit.load_config
    saved: list[bool] = []

    def load_config_then_human_saves(*args: object, **kwargs: object) -> object:
        cfg = real(*args, **kwargs)  # type: ignore[arg-type]
        if not saved:  # the human's save lands while feedbot validates its edit
            saved.append(True)
            sources.write_text(COMMENTED.replace("stage: cnn", "stage: nlp"))
        return cfg

    monkeypatch.setattr(sources_edit, "load_config", load_config_then_human_saves)
    report = add_blogs(sources, [("New", "https://new.example/feed", "")])
    assert report.added == ["New"] and report.skipped == []
    text = sources.read_text()
    assert "stage: nlp" in text and "url: https://new.example/feed" in text


def test_a_new_section_goes_above_the_comment_that_opens_the_next(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    p.write_text("learner:\n  stage: cnn\n\n# People I follow\npeople:\n  - name: P\n    x: pp\n")
    follow(p, parse_follow_args(["--no-check", "https://b.example/feed"]))
    assert p.read_text() == ("learner:\n  stage: cnn\nblogs:\n  - name: b.example\n"
                             "    url: https://b.example/feed\n\n# People I follow\npeople:\n"
                             "  - name: P\n    x: pp\n")


def test_unfollow_one_place_of_a_person(sources: Path) -> None:
    follow(sources, parse_follow_args(["Justin Johnson", "--bluesky", "jj.bsky.social"]))
    r = invoke(sources, "unfollow", "justin johnson/Bluesky ")  # the last key, before a comment
    assert r.exit_code == 0, r.output
    assert "unfollowed Justin Johnson on Bluesky" in r.output
    assert sources.read_text() == COMMENTED
    assert unfollow(sources, "Andrej Karpathy/x") == "unfollowed Andrej Karpathy on X"
    removed, added = changes(COMMENTED, sources.read_text())
    assert removed == ["    x: karpathy"] and added == []
    assert unfollow(sources, "Justin Johnson/arxiv") == \
        "unfollowed Justin Johnson (arXiv, their only place)"
    assert [p.name for p in load_config(sources).people] == ["Andrej Karpathy"]
    with pytest.raises(FollowError, match="not following"):
        unfollow(sources, "Andrej Karpathy/x")


def test_unfollowing_a_persons_x_drops_its_replies_and_retweets(sources: Path) -> None:
    """They stayed behind, to apply unseen to whatever X handle the person got next."""
    assert follow(sources, parse_follow_args(["Andrej Karpathy", "--replies", "--retweets"])) \
        == "Andrej Karpathy: replies on; retweets on"
    assert unfollow(sources, "Andrej Karpathy/x") == "unfollowed Andrej Karpathy on X"
    removed, added = changes(COMMENTED, sources.read_text())
    assert removed == ["    x: karpathy"] and added == []
    follow(sources, parse_follow_args(["Andrej Karpathy", "--x", "karpathy"]))
    assert not load_config(sources).people[0].replies


@pytest.mark.parametrize("args", [
    ["Justin Johnson", "--replies"],  # a person without X
    ["Bob", "--arxiv", "Bob Example", "--retweets"],  # a new person without X
    ["--no-check", "https://b.example/feed", "--replies"],  # a blog
])
def test_replies_and_retweets_without_x_are_refused(sources: Path, args: list[str]) -> None:
    """They were stored (or dropped, for a blog) without a word, and did nothing."""
    with pytest.raises(FollowError, match="--replies and --retweets are for X"):
        follow(sources, parse_follow_args(args))
    assert sources.read_text() == COMMENTED


def test_a_file_with_a_tab_before_a_comment_can_be_edited(tmp_path: Path) -> None:
    """It loads for `digest` and `collect`; `follow` and `stage set` used to call it invalid."""
    p = tmp_path / "sources.yaml"
    p.write_text("learner:\n  stage: cnn\t# where I am\nblogs:\n  - name: A\t\n"
                 "    url: https://a.example/feed\n")
    r = invoke(p, "follow", "Ada", "x:ada_ex")
    assert r.exit_code == 0, r.output
    # the lines the edit did not touch keep their tabs, as the human wrote them
    assert p.read_text() == ("learner:\n  stage: cnn\t# where I am\nblogs:\n  - name: A\t\n"
                             "    url: https://a.example/feed\npeople:\n  - name: Ada\n"
                             "    x: ada_ex\n")
    assert invoke(p, "unfollow", "Ada").exit_code == 0
    assert p.read_text().endswith("feed\n") and load_config(p).learner.stage == "cnn"


def test_edits_from_several_processes_at_once_all_land(sources: Path) -> None:
    """`feedbot follow` in two terminals while the bot's /unfollow and /stage run: each
    process takes the lock file, so none of the edits is lost."""
    import subprocess
    import sys

    commands = [["follow", "--no-check", f"https://blog{n}.example.org/feed.xml"]
                for n in range(2)]
    commands += [["unfollow", "Jay Alammar"], ["stage", "set", "nlp"],
                 ["follow", "Ada Example", "--arxiv", "Ada Example"]]
    procs = [subprocess.Popen([sys.executable, "-m", "feedbot", "--sources", str(sources), *c],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * len(commands), results
    cfg = load_config(sources)
    assert {b.name for b in cfg.blogs} == {"Lil'Log", *(f"blog{n}.example.org" for n in range(2))}
    assert {p.name for p in cfg.people} == {"Andrej Karpathy", "Justin Johnson", "Ada Example"}
    assert cfg.learner.stage == "nlp"
    text = sources.read_text()
    assert "# People. Keep the ones I really read near the top." in text
    assert "stage: nlp          # working through CS231n" in text
    assert leftovers(sources.parent) == []


def test_a_read_only_folder_refuses_the_edit_with_the_reason(
        sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary file beside sources.yaml could not be created (a read-only folder):
    the OSError went up to the bot's "Something went wrong" and the CLI's traceback. Now it
    is a ConfigError, which both show as the reason, and the file is untouched."""
    import errno
    import tempfile

    before = sources.read_bytes()

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ConfigError) as refused:
        follow(sources, parse_follow_args(["x:someone"]))
    assert str(refused.value) == (f"{sources}: cannot write: Read-only file system; nothing "
                                  "was changed")
    assert invoke(sources, "unfollow", "Jay Alammar").output == \
        f"feedbot: {sources}: cannot write: Read-only file system; nothing was changed\n"
    assert sources.read_bytes() == before
    assert leftovers(sources.parent) == []


def test_a_save_while_the_edit_is_written_to_disk_is_not_overwritten(
        sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check for a human's save came before the new text was written and fsynced (the
    slow part, up to seconds on a busy disk): a save landing then was replaced, and lost."""
    real = os.fsync
    saved: list[bool] = []

    def fsync_while_the_human_saves(fd: int) -> None:
        real(fd)
        if not saved:
            saved.append(True)
            sources.write_text(COMMENTED.replace("stage: cnn", "stage: nlp"))

    monkeypatch.setattr(os, "fsync", fsync_while_the_human_saves)
    follow(sources, parse_follow_args(["--no-check", "https://new.example/feed.xml"]))
    monkeypatch.undo()
    text = sources.read_text()
    assert "stage: nlp" in text and "url: https://new.example/feed.xml" in text
    assert leftovers(sources.parent) == []


# --- hand-written layouts, owners and modes ---------------------------------------------------

@pytest.mark.parametrize("text", [
    "learner:\n  stage: cnn\nblogs:\n  - name: A\n    url: https://a.example/feed\n",  # no people
    "people:\n  - {name: P, x: pp}\n",  # no blogs: the new section goes first
    "blogs:   # none yet\n  - name: A\n    url: https://a.example/feed\n# the end\n",
])
def test_a_section_made_by_follow_goes_with_its_last_entry(tmp_path: Path, text: str) -> None:
    """Unfollowing the only entry of a section that `follow` made left `people: []` behind."""
    p = tmp_path / "sources.yaml"
    p.write_text(text)
    follow(p, parse_follow_args(["Ada", "x:ada_ex"]))
    follow(p, parse_follow_args(["--no-check", "https://c.example/feed"]))
    follow(p, parse_follow_args(["--category", "cs.CV"]))
    for name in ("Ada", "c.example", "cs.CV"):
        unfollow(p, name)
    assert p.read_text() == text


def test_a_section_with_its_own_comment_stays_empty(tmp_path: Path) -> None:
    p = tmp_path / "sources.yaml"
    p.write_text("learner:\n  stage: cnn\nblogs:   # none yet\n  - name: A\n"
                 "    url: https://a.example/feed\n# the end\n")
    unfollow(p, "A")
    assert p.read_text() == "learner:\n  stage: cnn\nblogs:   # none yet\n# the end\n"
    assert load_config(p).blogs == []


@pytest.mark.parametrize("text", [
    "---\nlearner:\n  stage: cnn\nblogs:\n  - name: A\n    url: https://a.example/feed\n",
    "# mine\n---\nblogs:\n  - name: A\n    url: https://a.example/feed\n...\n",
    "blogs:  \n  - name: A   \n    url: https://a.example/feed\t\npeople:\n  - name: P\n"
    "    x: pp\n",  # trailing blanks
    "blogs:\n  - name: A\n    url: https://a.example/feed",  # no final newline
    "blogs:\r\n  - name: A\r\n    url: https://a.example/feed",
    "learner: {stage: cnn}\nblogs: [\n  {name: A, url: \"https://a.example/feed\"},\n]\n",
])
def test_lines_the_edit_does_not_touch_stay_as_written(tmp_path: Path, text: str) -> None:
    """ruamel dropped `---` and `...`, trailing blanks and the absent final newline, and
    reflowed a flow list written over several lines, though the edit was elsewhere."""
    p = tmp_path / "sources.yaml"
    p.write_bytes(text.encode())
    follow(p, parse_follow_args(["Ada", "x:ada_ex"]))
    data = p.read_bytes().decode()
    assert data.startswith(text.rstrip("\r\n").rsplit("\n...", 1)[0])
    assert [x.name for x in load_config(p).people][-1] == "Ada"
    unfollow(p, "Ada")
    assert p.read_bytes() == text.encode()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_an_edit_by_root_keeps_the_files_owner(sources: Path) -> None:
    """`sudo feedbot follow` made the user's sources.yaml root's: with mode 0600 the user
    could then not even read it."""
    os.chown(sources, 65534, 65534)
    sources.chmod(0o600)
    follow(sources, parse_follow_args(["x:someone"]))
    st = sources.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)


def test_a_file_no_one_may_write_is_not_replaced_even_by_root(tmp_path: Path) -> None:
    """`chmod a-w sources.yaml` says "do not edit"; root (feedbot in a container) may write
    anything, and `feedbot follow` as root edited the file all the same."""
    p = tmp_path / "sources.yaml"
    p.write_text(COMMENTED)
    p.chmod(0o444)
    with pytest.raises(ConfigError, match="cannot write: the file is read-only; "
                       "nothing was changed"):
        follow(p, parse_follow_args(["x:someone"]))
    assert p.read_text() == COMMENTED
    assert leftovers(tmp_path) == []


def test_a_read_only_file_is_not_replaced(tmp_path: Path) -> None:
    """The rename went through a read-only file (only the folder's permission counts):
    `chmod a-w sources.yaml` did not keep feedbot from editing it."""
    import tempfile

    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    # root may write anything: be someone else while trying, in a folder they can reach
    folder = Path(tempfile.mkdtemp()) if as_root else tmp_path
    try:
        p = folder / "sources.yaml"
        p.write_text(COMMENTED)
        p.chmod(0o444)
        if as_root:
            os.chown(p, 65534, 65534)
            os.chown(folder, 65534, 65534)
            os.seteuid(65534)
        try:
            with pytest.raises(ConfigError, match="cannot write: the file is read-only; "
                               "nothing was changed"):
                follow(p, parse_follow_args(["x:someone"]))
        finally:
            if as_root:
                os.seteuid(0)
        assert p.read_text() == COMMENTED
        assert leftovers(folder) == []
    finally:
        if as_root:
            shutil.rmtree(folder)


# --- a second review of follow/unfollow (hand-written files, weights, names, pages) ---------

def written(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(text, encoding="utf-8")
    return p


PAUSED = "  # - name: Paused blog\n  #   url: https://paused.example/feed\n"


def test_unfollowing_the_last_person_keeps_the_entries_commented_out_above(
        tmp_path: Path) -> None:
    """ruamel keeps the lines under an empty `blogs:` as the next key's: deleting `people:`
    with its last person deleted them too."""
    p = written(tmp_path, f"blogs:\n{PAUSED}people:\n  - name: Ada\n    x: ada\n")
    assert unfollow(p, "Ada") == "unfollowed Ada (X)"
    assert p.read_text() == f"blogs:\n{PAUSED}"


def test_an_empty_section_of_the_file_is_filled_and_emptied_in_place(tmp_path: Path) -> None:
    """`blogs:` with entries commented out under it was taken for a new section: the follow
    moved learner's own comment under it, and the unfollow deleted the `blogs:` line."""
    text = (f"learner:\n  stage: cnn\n  # roadmap: my-roadmap.yaml\nblogs:\n{PAUSED}"
            "people:\n  - name: Ada\n    x: ada\n")
    p = written(tmp_path, text)
    follow(p, parse_follow_args(["--no-check", "https://new.example/feed"]), check=False)
    after = p.read_text()
    assert after.startswith("learner:\n  stage: cnn\n  # roadmap: my-roadmap.yaml\nblogs:\n"
                            "  - name: new.example\n    url: https://new.example/feed\n")
    assert load_config(p).blogs[0].url == "https://new.example/feed"
    unfollow(p, "new.example")
    assert p.read_text() == text


def test_a_new_section_leaves_the_comment_of_the_section_before_it(tmp_path: Path) -> None:
    text = ("learner:\n  stage: cnn\n  # roadmap: my-roadmap.yaml\n\n# People I follow\n"
            "people:\n  - name: Ada\n    x: ada\n")
    p = written(tmp_path, text)
    follow(p, parse_follow_args(["--no-check", "https://new.example/feed"]), check=False)
    assert p.read_text().startswith("learner:\n  stage: cnn\n  # roadmap: my-roadmap.yaml\n"
                                    "blogs:\n  - name: new.example\n")
    assert "url: https://new.example/feed\n\n# People I follow\npeople:" in p.read_text()
    unfollow(p, "new.example")
    assert p.read_text() == text
    at_end = written(tmp_path, "learner:\n  stage: cnn\n  # roadmap: my-roadmap.yaml\n")
    follow(at_end, parse_follow_args(["x:ada"]))
    assert at_end.read_text() == ("learner:\n  stage: cnn\n  # roadmap: my-roadmap.yaml\n"
                                  "people:\n  - name: '@ada'\n    x: ada\n")
    unfollow(at_end, "@ada")
    assert at_end.read_text() == "learner:\n  stage: cnn\n  # roadmap: my-roadmap.yaml\n"


def test_comment_lines_after_a_flow_style_entry_stay_outside_its_braces(tmp_path: Path
                                                                        ) -> None:
    """The lines after a deleted entry went to the last key of the flow-style entry before
    it, which ruamel prints inside the braces: `{name: cs.CV, category: cs.CV` … `}`."""
    text = ("arxiv:\n  - {name: cs.CV, category: cs.CV}\n  - name: Tutorials\n"
            "    query: 'cat:cs.LG AND ti:tutorial'\n\n# People I follow\n"
            "people:\n  - name: Ada\n    x: ada\n")
    p = written(tmp_path, text)
    unfollow(p, "Tutorials")
    assert p.read_text() == ("arxiv:\n  - {name: cs.CV, category: cs.CV}\n\n"
                             "# People I follow\npeople:\n  - name: Ada\n    x: ada\n")
    follow(p, parse_follow_args(["--category", "cs.AI"]))
    assert p.read_text() == ("arxiv:\n  - {name: cs.CV, category: cs.CV}\n"
                             "  - {name: cs.AI, category: cs.AI}\n\n"
                             "# People I follow\npeople:\n  - name: Ada\n    x: ada\n")


@pytest.mark.parametrize("weight", ["weight:", "weight: '1.5'"])
def test_a_weight_written_empty_or_quoted_is_changed_with_its_old_value(
        tmp_path: Path, weight: str) -> None:
    """`f"{person['weight']:g}"` on the raw value: a TypeError or ValueError traceback."""
    p = written(tmp_path, f"people:\n  - name: Ada\n    x: ada\n    {weight}\n")
    was = "1" if weight == "weight:" else "1.5"
    assert follow(p, parse_follow_args(["Ada", "--weight", "2"])) == \
        f"Ada: weight 2 (was {was})"
    assert load_config(p).people[0].weight == 2.0
    r = invoke(p, "follow", "Ada", "--weight", "2")
    assert r.exit_code == 0 and r.output.strip() == "already following Ada; nothing to change"


def test_the_weight_compared_is_the_one_in_effect_with_the_files_defaults(tmp_path: Path
                                                                         ) -> None:
    """`defaults.weight: 2` was ignored: `--weight 1` on a blog weighted 2 said "nothing to
    change", and `--weight 2` was refused as a change."""
    text = ("defaults:\n  weight: 2\nblogs:\n  - name: A\n    url: https://a.example/feed\n"
            "arxiv:\n  - name: cs.LG\n    category: cs.LG\n")
    p = written(tmp_path, text)
    for same in (["--no-check", "https://a.example/feed", "--weight", "2"],
                 ["--category", "cs.LG", "--weight", "2"]):
        r = invoke(p, "follow", *same)
        assert r.exit_code == 0 and "nothing to change" in r.output, r.output
    assert p.read_text() == text
    for other in (["--no-check", "https://a.example/feed", "--weight", "1"],
                  ["--category", "cs.LG", "--weight", "1"]):
        r = invoke(p, "follow", *other)
        assert r.exit_code == 0 and r.output.strip().endswith("weight 1 (was 2)"), r.output
    assert [b.weight for b in load_config(p).blogs] == [1.0]


def test_unfollow_by_a_listing_url_finds_a_query_of_that_category(tmp_path: Path) -> None:
    """`follow URL` knew `query: cat:cs.LG` as cs.LG; `unfollow URL` looked at `category` only."""
    p = written(tmp_path, "arxiv:\n  - name: ML papers\n    query: 'cat:cs.LG'\n"
                          "people:\n  - name: Ada\n    x: ada\n")
    assert unfollow(p, "https://arxiv.org/list/cs.LG/new") == "unfollowed ML papers"
    assert load_config(p).arxiv == []


def test_a_name_in_another_unicode_form_is_the_same_name(tmp_path: Path) -> None:
    """"José" copied with a combining accent (NFD) and "José" typed (NFC) made two people."""
    nfd = "Jose\u0301"
    p = written(tmp_path, f"people:\n  - name: {nfd}\n    x: jose\n")
    assert follow(p, parse_follow_args(["José", "--bluesky", "jose.bsky.social"])) == \
        f"{nfd}: added Bluesky (jose.bsky.social)"
    [person] = load_config(p).people
    assert person.bluesky == "jose.bsky.social"
    with pytest.raises(ConfigError, match="duplicate name"):
        load_config(p, text=f"people:\n  - name: {nfd}\n    x: a\n  - name: José\n    x: b\n")
    from feedbot.collect import select_sources

    assert {s.name for s in select_sources(load_config(p), "José")} == \
        {f"{nfd}/x", f"{nfd}/bluesky"}  # `collect --source`
    assert unfollow(p, "José/bluesky") == f"unfollowed {nfd} on Bluesky"


def test_a_comment_on_the_section_line_does_not_change_the_files_indent(tmp_path: Path
                                                                        ) -> None:
    """`blogs:   # what I read` was not seen as the list's key: the indent fell back to the
    default and every list of the file was rewritten with it."""
    text = "blogs:   # what I read\n- name: A\n  url: https://a.example/feed\n"
    p = written(tmp_path, text)
    follow(p, parse_follow_args(["--no-check", "https://b.example/feed"]), check=False)
    assert p.read_text() == text + "- name: b.example\n  url: https://b.example/feed\n"
    text = "blogs:\n  # what I read\n  - name: A\n    url: https://a.example/feed\n"
    p = written(tmp_path, text)
    follow(p, parse_follow_args(["--no-check", "https://b.example/feed"]), check=False)
    assert p.read_text() == text + "  - name: b.example\n    url: https://b.example/feed\n"


def test_following_a_persons_blog_again_by_its_page_changes_nothing(
        tmp_path: Path, server: LocalServer) -> None:
    """The dry run compared the page's URL with the feed stored: refused, exit 2, and a new
    place given with it (`--x`) was not added."""
    server.add("/blog/feed.atom", body=FEED, content_type="application/atom+xml")
    home = server.add("/blog/", body=page('<link rel="alternate" type="application/atom+xml" '
                                          'href="feed.atom">'), content_type="text/html")
    p = written(tmp_path, "people:\n  - name: Ada\n    x: ada\n")
    follow(p, parse_follow_args(["Ada", "--blog", home]))
    with pytest.raises(NothingToChange, match="already following Ada on their blog"):
        follow(p, parse_follow_args(["Ada", "--blog", home]))
    assert follow(p, parse_follow_args(["Ada", "--blog", home, "--bluesky", "ada.bsky.social"])
                  ) == "Ada: added Bluesky (ada.bsky.social) (feed found on " + home + ")"
    other = server.add("/other/feed.atom", body=FEED, content_type="application/atom+xml")
    with pytest.raises(FollowError, match="Ada already has blog"):
        follow(p, parse_follow_args(["Ada", "--blog", other]))


def test_unfollow_by_the_page_a_blog_was_followed_from_names_the_feed(tmp_path: Path) -> None:
    p = written(tmp_path, "blogs:\n  - name: \"Lil'Log\"\n"
                          "    url: https://lilianweng.github.io/index.xml\n"
                          "people:\n  - name: Ada\n    x: ada\n"
                          "    blog: https://ada.example/blog/feed.xml\n")
    with pytest.raises(FollowError, match="from lilianweng.github.io, feedbot follows the feed "
                                          "of \"Lil'Log\": unfollow it by that name"):
        unfollow(p, "https://lilianweng.github.io/")
    with pytest.raises(FollowError, match="the feed of 'Ada/blog'"):
        unfollow(p, "https://www.ada.example/blog/")
    with pytest.raises(FollowError, match="`feedbot sources`"):
        unfollow(p, "https://elsewhere.example/")


def test_a_section_under_its_own_comment_stays_for_the_next_follow(tmp_path: Path) -> None:
    """The starter file's way: `# Blogs: any RSS…` right above `blogs:`. Unfollowing every
    starter blog deleted `blogs:`, and the next follow put `blogs:` and its entry above that
    comment, straight under `defaults:`, with the comment stranded below the list."""
    text = ("defaults:\n  interval: 6h\n\n# Blogs: any RSS or Atom feed\n"
            "#   - name: My favourite blog\nblogs:\n  - name: Only Blog\n"
            "    url: https://only.example/feed\n\n# arXiv: categories\n"
            "arxiv:\n  - name: cs.LG\n    category: cs.LG\n")
    p = written(tmp_path, text)
    unfollow(p, "Only Blog")
    assert p.read_text() == text.replace("  - name: Only Blog\n"
                                         "    url: https://only.example/feed\n", "")
    follow(p, parse_follow_args(["--no-check", "https://mine.example/feed"]), check=False)
    assert p.read_text() == text.replace("Only Blog", "mine.example").replace(
        "https://only.example/feed", "https://mine.example/feed")


@pytest.mark.parametrize(("args", "key", "account"), [
    (["Ada", "--x", "x.com/ada_ex"], "x", "ada_ex"),
    (["Ada", "--mastodon", "mastodon.social/@ada"], "mastodon", "@ada@mastodon.social"),
    (["Ada", "--bluesky", "bsky.app/profile/ada.bsky.social"], "bluesky", "ada.bsky.social"),
])
def test_an_account_option_takes_a_profile_url_typed_without_https(
        args: list[str], key: str, account: str) -> None:
    """`--x x.com/karpathy` was refused as not an X handle, though `--x https://x.com/…` works;
    a handle (`--bluesky ada.bsky.social`) stays a handle."""
    assert getattr(parse_follow_args(args), key) == account
    assert parse_follow_args(["Ada", "--bluesky", "ada.bsky.social"]).bluesky == "ada.bsky.social"
