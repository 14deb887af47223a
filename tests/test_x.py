"""The X collector: real tweepy against recorded X API v2 responses (served over real HTTP on
127.0.0.1, where FEEDBOT_X_API_URL points tweepy's session), and the pure parsing on its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from feedbot.collect import collect_async, inline, is_due, report_lines
from feedbot.collectors import Context, SourceDisabled
from feedbot.collectors.x import (
    TWITTER_EPOCH_MS,
    XAuthError,
    XError,
    collect_x,
    newest_id,
    page_sizes,
    parse_timeline,
    read_timeline,
    timeline_error,
    tweet_time,
)
from feedbot.config import MIN_INTERVAL, Config, SourceSpec, load_config
from feedbot.store import SourceState, Store

from .support import FIXTURES, X_API, LocalServer, RecordedApi, Request, x_api

API = X_API
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TOKEN = "AAAA-test-bearer-token-do-not-show"


# --- recorded data ----------------------------------------------------------------------------

def recorded(corpus: Path, name: str) -> dict[str, Any]:
    """A tweepy cassette's response body (real X API v2, default fields)."""
    doc = json.loads((corpus / "x-api-v2/tweepy/decoded/v2_get" / name).read_text())
    return doc["body"]


def twarc_timeline(corpus: Path) -> dict[str, Any]:
    """A real full-field user-timeline page (retweets, replies, t.co links, media)."""
    for line in (corpus / "x-api-v2/twarc-csv/withheld.jsonl").read_text().splitlines():
        page = json.loads(line)
        if "/users/2351222345/tweets" in page["__twarc"]["url"]:
            return page
    raise AssertionError("user-timeline page not found in withheld.jsonl")


def twarc_user(page: dict[str, Any]) -> dict[str, Any]:
    """The timeline owner's user object, as the user lookup endpoint returns it."""
    user = next(u for u in page["includes"]["users"] if u["id"] == "2351222345")
    return {"data": user}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def config(people: str, max_items: int = 50) -> Config:
    text = f"defaults:\n  max_items: {max_items}\npeople:\n{people}"
    return load_config("sources.yaml", text=text)


def query(call: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.query).items()}


def timeline_calls(api: RecordedApi) -> list[Request]:
    return [c for c in api.calls if c.path.endswith("/tweets")]


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
def store() -> Store:
    return Store(":memory:")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def run(cfg: Config, store: Store, http: httpx.AsyncClient, now: datetime = NOW) -> list:
    return await collect_async(cfg, store, now=now, http=http)


# --- parsing (pure) ---------------------------------------------------------------------------

def test_real_timeline_page_drops_retweets_and_replies(corpus: Path) -> None:
    page = twarc_timeline(corpus)
    items = parse_timeline([page], "PhillyNEFL", "Philly/x", "Philly")
    originals = [t for t in page["data"] if not t.get("referenced_tweets")
                 and not t.get("in_reply_to_user_id")]
    assert len(page["data"]) == 100 and 0 < len(items) == len(originals) < 100
    assert not any(i.summary.startswith("RT @") for i in items)
    assert all(i.kind == "social" and i.person == "Philly" and i.source == "Philly/x"
               for i in items)


def test_replies_and_retweets_come_back_when_asked(corpus: Path) -> None:
    page = twarc_timeline(corpus)
    default = parse_timeline([page], "PhillyNEFL", "p/x")
    with_replies = parse_timeline([page], "PhillyNEFL", "p/x", replies=True)
    everything = parse_timeline([page], "PhillyNEFL", "p/x", replies=True, retweets=True)
    assert len(default) < len(with_replies) < len(everything) == len(page["data"])
    assert any(i.summary.startswith("RT @") for i in everything)


def test_a_thread_is_one_item_with_every_posts_links() -> None:
    """X leaves an account's replies to itself out with its replies: "1/ new paper 🧵" came,
    "2/ paper: arxiv.org/abs/…" did not, and the paper showed nobody sharing it."""
    me, other = "42", "7"

    def post(pid: int, text: str, *, head: int | None = None, to: str = "",
             link: str = "") -> dict[str, Any]:
        t: dict[str, Any] = {"id": str(pid), "text": text, "conversation_id": str(head or pid),
                             "created_at": "2026-11-20T10:00:00.000Z"}
        if to:
            t["in_reply_to_user_id"] = to
            t["referenced_tweets"] = [{"type": "replied_to", "id": str(pid - 1)}]
        if link:
            t["text"] += " https://t.co/x"
            t["entities"] = {"urls": [{"url": "https://t.co/x", "expanded_url": link}]}
        return t

    page = {"data": [  # newest first, as X sends them
        post(105, "3/ code too", head=100, to=me, link="https://example.org/code"),
        post(104, "@friend thanks!", head=90, to=other),
        post(103, "2/ the paper:", head=100, to=me, link="https://example.org/paper"),
        post(101, "more on the earlier thread", head=80, to=me),
        post(100, "1/ new paper on scaling 🧵"),
    ]}
    items = parse_timeline([page], "me", "Me/x", "Me", own_id=me)
    assert [i.guid for i in items] == ["101", "100"]  # a reply to someone else is left out
    thread = items[1]
    assert thread.summary == ("1/ new paper on scaling 🧵 2/ the paper: "
                              "https://example.org/paper 3/ code too "
                              "https://example.org/code")
    assert thread.links == ("https://example.org/paper", "https://example.org/code")
    # a thread whose first post came in an earlier run: the later post on its own
    assert items[0].summary == "more on the earlier thread"
    # asked for replies: the reply to someone else too
    assert [i.guid for i in parse_timeline([page], "me", "Me/x", own_id=me, replies=True)] == [
        "104", "101", "100"]


def test_a_thread_opened_by_a_photo_alone_is_titled_by_its_first_words() -> None:
    """A thread whose first post is a photo alone ("1/" is the picture, "2/ the paper: …" the
    words) was titled by the first post's address, and its summary began with a space."""
    photo = {"url": "https://t.co/m", "expanded_url": "https://x.com/me/status/100/photo/1",
             "media_key": "3_1"}
    page = {"data": [
        {"id": "103", "text": "2/ the paper", "conversation_id": "100",
         "in_reply_to_user_id": "42", "created_at": "2026-11-20T10:01:00.000Z"},
        {"id": "100", "text": "https://t.co/m", "conversation_id": "100",
         "created_at": "2026-11-20T10:00:00.000Z", "entities": {"urls": [photo]}}]}
    [thread] = parse_timeline([page], "me", "Me/x", own_id="42")
    assert (thread.title, thread.summary) == ("2/ the paper", "2/ the paper")
    assert thread.url == "https://x.com/me/status/100"
    # a photo with no words anywhere is still titled by its address
    [alone] = parse_timeline([{"data": page["data"][1:]}], "me", "Me/x", own_id="42")
    assert (alone.title, alone.summary) == ("https://x.com/me/status/100", "")


def test_real_post_links_are_expanded_and_media_dropped(corpus: Path) -> None:
    items = {i.guid: i for i in parse_timeline([twarc_timeline(corpus)], "PhillyNEFL", "p/x")}
    star_wars = items["1257469520882647040"]
    assert star_wars.links == ("http://epicstream.com/news/NicoParungo/Star-Wars-Releases-May-"
                               "the-4th-Video-to-Inspire-Fans-in-These-Dark-Times",)
    assert "t.co/" not in star_wars.summary and star_wars.links[0] in star_wars.summary
    assert star_wars.url == "https://x.com/PhillyNEFL/status/1257469520882647040"
    assert star_wars.published == datetime(2020, 5, 5, 0, 37, 51, tzinfo=UTC)
    photo = items["1256945149231484928"]  # "Good morning #twitter <photo>"
    assert photo.links == () and photo.summary == "Good morning #twitter"


def test_a_retweet_carries_the_whole_retweeted_post_when_it_was_included(corpus: Path) -> None:
    """Real: a retweet's own text is cut ("RT @a: ...two nights…"); the post it repeats came
    whole in includes.tweets."""
    page = twarc_timeline(corpus)
    items = {i.guid: i for i in parse_timeline([page], "PhillyNEFL", "p/x", retweets=True)}
    bird = items["1257712877559037961"]
    assert bird.summary.startswith("RT @BleacherReport: In 1986, Larry Bird decided")
    assert "two nights later" in bird.summary and "That was a bad man." in bird.summary
    assert "…" not in bird.summary
    without = parse_timeline([{**page, "includes": {}}], "PhillyNEFL", "p/x", retweets=True)
    assert any(i.summary.endswith("two nights…") for i in without)  # its own text, as before


def test_a_long_posts_whole_text_and_links_come_from_note_tweet() -> None:
    page = fixture("x_timeline_note_tweet_derived.json")
    [post] = parse_timeline([page], "PhillyNEFL", "p/x")
    assert post.guid == "1257469520882647040"
    assert "the one shot nobody could fix" in post.summary  # past the 270-character cut
    assert post.links == ("http://epicstream.com/news/NicoParungo/Star-Wars-Releases-May-the-4th-"
                          "Video-to-Inspire-Fans-in-These-Dark-Times",
                          "https://arxiv.org/abs/2611.04321")
    assert "t.co/" not in post.summary and "& what went wrong" in post.summary
    assert post.summary.endswith("with the numbers: https://arxiv.org/abs/2611.04321")


def test_entities_are_unescaped_and_titles_shortened() -> None:
    page = fixture("x_timeline_shares_arxiv.json")
    [post] = parse_timeline([page], "feedbot_test", "Test Person/x", "Test Person")
    assert "&amp;" not in post.summary and "single GPU & what" in post.summary
    assert post.links == ("https://arxiv.org/abs/2611.01234v2",)
    assert len(post.title) <= 90 and post.title.endswith("…")
    assert post.published == datetime(2026, 11, 19, 18, 30, tzinfo=UTC)
    assert post.authors == ("Test Person",)


def test_time_comes_from_the_id_when_created_at_was_not_asked_for(corpus: Path) -> None:
    page = recorded(corpus, "test_client_get_users_tweets__0__GET.json")
    first = page["data"][0]
    assert "created_at" not in first
    assert tweet_time(first) == datetime(2022, 10, 5, 18, 40, 30, 908000, tzinfo=UTC)


def test_newest_id_and_page_sizes() -> None:
    page = fixture("x_timeline_shares_arxiv.json")
    assert newest_id([page]) == "1861234567890123456"
    assert newest_id([{"meta": {"result_count": 0}}], since_id="17") == "17"
    assert newest_id([{"meta": {"result_count": 0}}]) is None
    assert page_sizes(50) == [50] and page_sizes(3) == [5] and page_sizes(230) == [100, 100, 30]
    # the last page was rounded up to X's smallest (5): 101 read 105 posts, 202 read 205
    assert page_sizes(101) == [96, 5] and page_sizes(202) == [100, 97, 5]
    assert all(sum(page_sizes(n)) == max(n, 5) and min(page_sizes(n)) >= 5
               and max(page_sizes(n)) <= 100 for n in range(1, 501))


# --- the collector against recorded responses ---------------------------------------------------

async def test_first_run_resolves_handle_once_and_second_run_reads_only_new(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: Twitter\n    x: Twitter\n", max_items=20)
    user = recorded(corpus, "test_client_get_user__0__GET.json")
    page = recorded(corpus, "test_client_get_users_tweets__0__GET.json")
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/Twitter", json=user)
        rsps.get(f"{API}/users/783214/tweets", json=page)
        [report] = await run(cfg, store, http)
        calls = timeline_calls(rsps)
    assert report.status == "ok" and report.new == 2
    q = query(calls[0])
    # replies come, for the threads (see parse_timeline)
    assert q["max_results"] == "20" and q["exclude"] == "retweets"
    assert set(q["tweet.fields"].split(",")) == {"created_at", "entities", "referenced_tweets",
                                                 "in_reply_to_user_id", "note_tweet",
                                                 "conversation_id"}
    assert "expansions" not in q  # retweets are off: no included posts to pay for
    assert "since_id" not in q and "pagination_token" not in q  # never pages back
    assert len(calls) == 1 and calls[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert store.source_state("Twitter/x").cursor == page["meta"]["newest_id"]
    assert store.get_meta("x:user:twitter") == "783214"

    empty = {"meta": {"result_count": 0}}  # as X answers when nothing is new
    with x_api() as rsps:
        rsps.get(f"{API}/users/783214/tweets", json=empty)
        [again] = await run(cfg, store, http, NOW + timedelta(hours=7))
        assert [c.path for c in rsps.calls] == ["/2/users/783214/tweets"]
        assert query(rsps.calls[0])["since_id"] == page["meta"]["newest_id"]
    assert again.status == "ok" and again.new == 0
    assert store.source_state("Twitter/x").cursor == page["meta"]["newest_id"]


async def test_a_long_post_reaches_the_store_whole_with_the_link_past_the_cut(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    page = fixture("x_timeline_note_tweet_derived.json")
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n")
    store.set_meta("x:user:phillynefl", "2351222345")
    with x_api() as rsps:
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        [report] = await run(cfg, store, http)
        assert "note_tweet" in query(timeline_calls(rsps)[0])["tweet.fields"].split(",")
    assert report.status == "ok" and report.new == 1  # the retweet is left out
    [stored] = store.items_since(None)
    assert "the one shot nobody could fix" in stored.item.summary
    assert "https://arxiv.org/abs/2611.04321" in stored.item.links


async def test_a_retweet_of_a_long_post_is_stored_whole_when_retweets_are_on(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    page = fixture("x_timeline_note_tweet_derived.json")
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n    retweets: true\n")
    store.set_meta("x:user:phillynefl", "2351222345")
    with x_api() as rsps:
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        [report] = await run(cfg, store, http)
        assert query(timeline_calls(rsps)[0])["expansions"] == "referenced_tweets.id"
    assert report.status == "ok" and report.new == 2
    [rt] = [s.item for s in store.items_since(None) if s.item.summary.startswith("RT @")]
    assert rt.summary.startswith("RT @FantasyandSciFi: Star Wars Releases")
    assert "the one shot nobody could fix" in rt.summary
    assert "https://arxiv.org/abs/2611.04321" in rt.links
    assert rt.url == "https://x.com/PhillyNEFL/status/1257475000000000000"


def recorded_post(corpus: Path, name: str) -> dict[str, Any]:
    """The one post of a recorded twarc-csv lookup (full fields)."""
    [line] = (corpus / "x-api-v2/twarc-csv" / name).read_text().splitlines()
    [post] = json.loads(line)["data"]
    return post


def as_timeline(post: dict[str, Any]) -> dict[str, Any]:
    return {"data": [post], "meta": {"result_count": 1, "newest_id": post["id"],
                                     "oldest_id": post["id"]}}


async def test_an_edited_post_updates_its_item_instead_of_adding_another(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    """Real: a post and its edit (a new id, the same edit_history_tweet_ids), each ending in
    X's link to the post itself (twitter.com/i/web/status/<its id>)."""
    before = recorded_post(corpus, "edited_before.jsonl")
    after = recorded_post(corpus, "edited_after.jsonl")
    assert before["id"] != after["id"] and after["id"] in before["edit_history_tweet_ids"]
    cfg = config("  - name: Editor\n    x: editor\n")
    store.set_meta("x:user:editor", after["author_id"])
    for page, now in ((as_timeline(before), NOW), (as_timeline(after), NOW + timedelta(hours=1))):
        with x_api() as rsps:
            rsps.get(f"{API}/users/{after['author_id']}/tweets", json=page)
            [report] = await run(cfg, store, http, now)
        assert report.status == "ok", report.error
    [stored] = store.items_since(None)
    assert stored.item.url == f"https://x.com/editor/status/{before['id']}"
    assert stored.item.summary == "hey :)" and stored.item.links == ()  # the edit, no self-link
    assert store.source_state("Editor/x").cursor == after["id"]


async def test_person_options_bring_back_replies_and_retweets(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    page = twarc_timeline(corpus)
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n    replies: true\n    retweets: true\n")
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/PhillyNEFL", json=twarc_user(page))
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        [report] = await run(cfg, store, http)
        q = query(timeline_calls(rsps)[0])
        assert "exclude" not in q and q["expansions"] == "referenced_tweets.id"
    assert report.status == "ok" and report.seen == 50  # the page has 100: max_items is 50


async def test_no_more_than_max_items_are_stored_under_xs_smallest_page(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    """`max_items: 3` asked for X's smallest page, 5 posts, and stored all 5."""
    page = twarc_timeline(corpus)
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n    replies: true\n"
                 "    retweets: true\n", max_items=3)
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/PhillyNEFL", json=twarc_user(page))
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        [report] = await run(cfg, store, http)
        assert query(timeline_calls(rsps)[0])["max_results"] == "5"
    assert report.status == "ok" and report.seen == 3 and store.item_count() == 3
    newest = max(int(t["id"]) for t in page["data"])
    assert store.source_state("Philly/x").cursor == str(newest)


async def test_replies_option_alone_still_excludes_retweets(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    page = twarc_timeline(corpus)
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n    replies: true\n")
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/PhillyNEFL", json=twarc_user(page))
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        [report] = await run(cfg, store, http)
        assert query(timeline_calls(rsps)[0])["exclude"] == "retweets"
    stored = store.items_since(None)
    assert stored and not any(s.item.summary.startswith("RT @") for s in stored)
    assert any(s.item.summary.startswith("@") for s in stored)  # a reply came through


async def test_reads_no_more_than_max_items_across_pages(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    page = twarc_timeline(corpus)  # carries a next_token
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n", max_items=150)
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/PhillyNEFL", json=twarc_user(page))
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        await run(cfg, store, http)
        calls = timeline_calls(rsps)
    assert [query(c)["max_results"] for c in calls] == ["100", "50"]
    assert query(calls[1])["pagination_token"] == page["meta"]["next_token"]


async def test_a_429_on_a_later_page_keeps_the_posts_read_and_the_cursor(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    """With `max_items` over 100, a 429 on the second page lost the first page's posts, read
    and paid for, until a run got through. They are kept; the cursor stays where it was, so
    that the next run still reaches the second page's posts (moved to the first page's newest
    post, it would skip them for good); the run's other X sources still wait."""
    page = twarc_timeline(corpus)  # carries a next_token
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n  - name: B\n    x: other_one\n",
                 max_items=150)
    store.set_meta("x:user:phillynefl", "2351222345")
    store.set_meta("x:user:other_one", "99")
    store.record_success("Philly/x", NOW - timedelta(days=1), cursor="1000")
    reset = int((NOW + timedelta(minutes=12)).timestamp())
    limited = {"json": fixture("x_error_429.json"), "status": 429,
               "headers": {"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"}}
    with x_api(all_used=False) as rsps:
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        rsps.get(f"{API}/users/2351222345/tweets", **limited)
        rsps.get(f"{API}/users/99/tweets", **limited)
        philly, other = await run(cfg, store, http)
        assert len(rsps.calls) == 2  # the other X source does not ask X again
    originals = parse_timeline([page], "PhillyNEFL", "Philly/x")
    assert (philly.status, philly.new) == ("ok", len(originals)) and philly.new > 0
    assert philly.warning.startswith("stopped after 100 posts (X rate limit reached; next try ")
    assert philly.warning.endswith("); the older ones are read next time")
    assert store.source_state("Philly/x").cursor == "1000"
    assert other.status == "error" and "rate limit" in other.error
    assert store.source_state("B/x").retry_after == datetime.fromtimestamp(reset, UTC)

    with x_api() as rsps:  # the next run reads from the same cursor, the first page again
        rsps.get(f"{API}/users/2351222345/tweets", json={**page, "meta": {}})
        [again] = await collect_async(cfg, store, now=NOW + timedelta(hours=1), http=http,
                                      only="Philly/x")
        assert query(timeline_calls(rsps)[0])["since_id"] == "1000"
    assert again.status == "ok" and again.new == 0


async def test_a_later_page_that_cannot_be_read_keeps_the_posts_read_and_the_cursor(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    """A second page X sent in a shape feedbot cannot read (`data` an object) made the whole
    answer the source's error: the first page's posts, read and paid for, were lost. They are
    kept, as after a 429 there; the cursor stays, so that the next run reads the second page's
    posts again; the run's other X sources are not held back (X answered)."""
    page = twarc_timeline(corpus)  # carries a next_token
    cfg = config("  - name: Philly\n    x: PhillyNEFL\n  - name: B\n    x: other_one\n",
                 max_items=150)
    store.set_meta("x:user:phillynefl", "2351222345")
    store.set_meta("x:user:other_one", "99")
    store.record_success("Philly/x", NOW - timedelta(days=1), cursor="1000")
    odd = {"data": {"id": "1000", "text": "x"}, "meta": {"newest_id": "1000"}}
    with x_api() as rsps:
        rsps.get(f"{API}/users/2351222345/tweets", json=page)
        rsps.get(f"{API}/users/2351222345/tweets", json=odd)
        rsps.get(f"{API}/users/99/tweets", json={"data": [_GOOD_POST]})
        philly, other = await run(cfg, store, http)
    originals = parse_timeline([page], "PhillyNEFL", "Philly/x")
    assert (philly.status, philly.new) == ("ok", len(originals)) and philly.new > 0
    assert philly.warning == ("stopped after 100 posts (X sent an answer feedbot cannot read "
                              "(data is an object, not a list)); the older ones are read next "
                              "time")
    assert store.source_state("Philly/x").cursor == "1000"
    assert (other.status, other.new) == ("ok", 1)


async def test_429_defers_the_source_until_the_reset_time(
        corpus: Path, token: str, store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: A\n    x: Twitter\n  - name: B\n    x: other_one\n")
    store.set_meta("x:user:twitter", "783214")
    store.set_meta("x:user:other_one", "99")
    reset = int((NOW + timedelta(minutes=12)).timestamp())
    with x_api(all_used=False) as rsps:
        rsps.get(f"{API}/users/783214/tweets", json=fixture("x_error_429.json"), status=429,
                 headers={"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"})
        rsps.get(f"{API}/users/99/tweets", json=fixture("x_error_429.json"), status=429,
                 headers={"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"})
        reports = await run(cfg, store, http)
        assert len(rsps.calls) == 1  # the second X source does not hammer the API
    assert [r.status for r in reports] == ["error", "error"]
    assert "rate limit" in reports[0].error
    for name in ("A/x", "B/x"):
        state = store.source_state(name)
        assert state.retry_after == datetime.fromtimestamp(reset, UTC)
        assert not is_due(state, 60.0, NOW + timedelta(minutes=11))
        assert is_due(state, 60.0, NOW + timedelta(minutes=12))


@pytest.mark.parametrize("reset", ["ms", "huge"])
async def test_an_absurd_reset_time_defers_the_source_by_the_rate_limit_window(
        reset: str, token: str, store: Store, http: httpx.AsyncClient) -> None:
    """A reset time in milliseconds (or past any date) crashed the error's description ("year
    57878 is out of range"): the source was reported as an unexpected error with no retry
    time, and the run's other X sources were not held back."""
    cfg = config("  - name: A\n    x: Twitter\n  - name: B\n    x: other_one\n")
    store.set_meta("x:user:twitter", "783214")
    store.set_meta("x:user:other_one", "99")
    value = str(int(NOW.timestamp() * 1000)) if reset == "ms" else "9" * 30
    with x_api(all_used=False) as rsps:
        for user in ("783214", "99"):
            rsps.get(f"{API}/users/{user}/tweets", json=fixture("x_error_429.json"),
                     status=429, headers={"x-rate-limit-reset": value,
                                          "x-rate-limit-remaining": "0"})
        reports = await run(cfg, store, http)
        assert len(rsps.calls) == 1
    assert [r.status for r in reports] == ["error", "error"]
    assert "rate limit" in reports[0].error
    for name in ("A/x", "B/x"):
        assert store.source_state(name).retry_after == NOW + timedelta(minutes=15)


def snowflake(at: datetime) -> str:
    """The id X gives a post published at `at`."""
    return str((int(at.timestamp() * 1000) - TWITTER_EPOCH_MS) << 22)


def thread_post(at: datetime, text: str, head: str = "", link: str = "",
                edits: tuple[str, ...] = ()) -> dict[str, Any]:
    """A post of account 42's thread: its first post, or (`head`) a reply to itself. `edits`:
    the ids of its earlier versions, when it is an edit (X gives an edit its own id, and its own
    `conversation_id`, as the recorded edit in x-api-v2/twarc-csv shows)."""
    pid = snowflake(at)
    post: dict[str, Any] = {"id": pid, "text": text, "conversation_id": head or pid,
                            "created_at": at.isoformat().replace("+00:00", "Z"),
                            "edit_history_tweet_ids": [*edits, pid]}
    if head:
        post.update(in_reply_to_user_id="42",
                    referenced_tweets=[{"type": "replied_to", "id": head}])
    if link:
        post["text"] += " https://t.co/x"
        post["entities"] = {"urls": [{"url": "https://t.co/x", "expanded_url": link}]}
    return post


THREAD_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
FIRST = thread_post(THREAD_AT, "1/ new paper on scaling 🧵")
LATER = [thread_post(THREAD_AT + timedelta(minutes=2), "3/ code too", FIRST["id"],
                     "https://example.org/code"),
         thread_post(THREAD_AT + timedelta(minutes=1), "2/ the paper:", FIRST["id"],
                     "https://example.org/paper")]
EDITED = thread_post(THREAD_AT + timedelta(minutes=5), "1/ new paper on scaling laws 🧵",
                     edits=(FIRST["id"],))
THREAD_TAIL = "2/ the paper: https://example.org/paper 3/ code too https://example.org/code"


@pytest.mark.parametrize("way", ["cli", "daemon"])
async def test_editing_a_threads_first_post_keeps_the_rest_of_the_thread(
        way: str, token: str, store: Store, http: httpx.AsyncClient) -> None:
    """The thread was one item; the edit of its first post (a new post, alone in the next
    answer) replaced it with that post alone: the paper's link and the rest were gone.
    `daemon`: the store is reached through calls, as `feedbot run` does (`DeferredMeta`)."""
    cfg = config("  - name: Me\n    x: me_here\n")
    store.set_meta("x:user:me_here", "42")

    async def collect(now: datetime) -> list:
        if way == "cli":
            return await collect_async(cfg, store, now=now, http=http)
        return await collect_async(cfg, None, now=now, http=http, db=inline(store))

    for n, answer in enumerate([[*LATER, FIRST], [EDITED]]):
        with x_api() as rsps:
            rsps.get(f"{API}/users/42/tweets", json={"data": answer})
            [report] = await collect(NOW + timedelta(hours=n))
        assert report.status == "ok", report.error
    [stored] = store.items_since(None)
    assert stored.item.url == f"https://x.com/me_here/status/{FIRST['id']}"
    assert stored.item.summary == f"1/ new paper on scaling laws 🧵 {THREAD_TAIL}"
    assert stored.item.links == ("https://example.org/paper", "https://example.org/code")

    # once X's newest post is past the time the thread's last post could be edited, it is no
    # longer kept
    later = thread_post(THREAD_AT + timedelta(hours=1, minutes=3), "another day")
    assert store.get_meta("x:threads:me_here") not in (None, "", "{}")
    with x_api() as rsps:
        rsps.get(f"{API}/users/42/tweets", json={"data": [later]})
        [report] = await collect(NOW + timedelta(hours=2))
    assert report.status == "ok" and report.new == 1
    assert store.get_meta("x:threads:me_here") == "{}"


def test_an_edit_of_a_threads_later_post_is_read_into_the_threads_item() -> None:
    """X sends the edit of "2/" alone, under a new id: it was an item of its own (guid 103),
    beside the thread's item that still held "2/ paper"."""
    first = read_timeline([{"data": [
        {"id": "103", "text": "2/ paper", "conversation_id": "100", "in_reply_to_user_id": "42"},
        {"id": "100", "text": "1/ head", "conversation_id": "100"}]}], "me", "Me/x", own_id="42")
    edit = {"id": "112", "text": "2/ paper (fixed link)", "conversation_id": "100",
            "in_reply_to_user_id": "42", "edit_history_tweet_ids": ["103", "112"]}
    [item] = read_timeline([{"data": [edit]}], "me", "Me/x", own_id="42",
                           threads=first.threads).items
    assert (item.guid, item.summary) == ("100", "1/ head 2/ paper (fixed link)")
    assert (item.title, item.published) == ("1/ head", first.items[0].published)


async def test_editing_a_threads_later_post_updates_its_entry_and_keeps_its_votes(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    """"3/", posted 40 minutes after "1/", is edited 28 minutes later to fix its link: the
    edit was an entry of its own, and the thread's entry kept the broken link. Between the
    two, a post more than an hour after "1/" came: the thread was no longer kept then, though
    "3/" could still be edited."""
    cfg = config("  - name: Me\n    x: me_here\n")
    store.set_meta("x:user:me_here", "42")
    third = thread_post(THREAD_AT + timedelta(minutes=40), "3/ code:", FIRST["id"],
                        "https://example.org/code-typo")
    fixed = thread_post(THREAD_AT + timedelta(minutes=68), "3/ code:", FIRST["id"],
                        "https://example.org/code", edits=(third["id"],))
    other = thread_post(THREAD_AT + timedelta(minutes=65), "unrelated")
    answers = [[third, LATER[1], FIRST], [other], [fixed]]
    for n, answer in enumerate(answers):
        with x_api() as rsps:
            rsps.get(f"{API}/users/42/tweets", json={"data": answer})
            [report] = await run(cfg, store, http, NOW + timedelta(hours=n))
        assert report.status == "ok", report.error
        if n == 0:
            [thread] = store.items_since(None)
            store.set_feedback("cli", thread.id, "up", NOW)
    assert (report.new, store.item_count()) == (0, 2)
    [stored] = [s for s in store.items_since(None) if s.id == thread.id]
    assert stored.item.summary == ("1/ new paper on scaling 🧵 2/ the paper: "
                                   "https://example.org/paper 3/ code: https://example.org/code")
    assert stored.item.links == ("https://example.org/paper", "https://example.org/code")
    assert stored.item.published == thread.item.published
    assert [(v.item_id, v.value) for v in store.feedback()] == [(thread.id, "up")]


def test_a_post_and_its_edit_in_one_answer_are_one_item_with_the_edit() -> None:
    """They were two items under one guid, and the store kept the one it met last: the first
    version, older, as X sends posts newest first."""
    [item] = parse_timeline([{"data": [EDITED, *LATER, FIRST]}], "me", "Me/x", own_id="42")
    assert item.summary == f"1/ new paper on scaling laws 🧵 {THREAD_TAIL}"
    assert item.published == tweet_time(EDITED)


def test_a_thread_whose_first_post_came_edited_is_one_item() -> None:
    """The thread's later posts name its first post's first id, not the edit's: each was an
    item of its own beside the edited first post."""
    [item] = parse_timeline([{"data": [EDITED, *LATER]}], "me", "Me/x", own_id="42")
    assert item.guid == FIRST["id"]
    assert item.summary == f"1/ new paper on scaling laws 🧵 {THREAD_TAIL}"


async def test_a_collected_thread_keeps_the_link_of_its_second_post(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: Me\n    x: me_here\n")
    store.set_meta("x:user:me_here", "42")
    page = {"data": [
        {"id": "103", "conversation_id": "100", "in_reply_to_user_id": "42",
         "text": "2/ paper: https://t.co/p", "created_at": "2026-11-20T10:00:00.000Z",
         "entities": {"urls": [{"url": "https://t.co/p",
                                "expanded_url": "https://arxiv.org/abs/2611.00777"}]},
         "referenced_tweets": [{"type": "replied_to", "id": "100"}]},
        {"id": "100", "conversation_id": "100", "text": "1/ new paper 🧵",
         "created_at": "2026-11-20T09:59:00.000Z"}]}
    with x_api() as rsps:
        rsps.get(f"{API}/users/42/tweets", json=page)
        [report] = await run(cfg, store, http)
    assert report.status == "ok" and report.new == 1
    [stored] = store.items_since(None)
    assert stored.item.links == ("https://arxiv.org/abs/2611.00777",)


async def test_the_monthly_usage_cap_is_not_called_a_rate_limit(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    """A 429 that says the app's monthly cap is spent read "rate limit reached; next try
    after <15 minutes>": the source asked every 15 minutes for the rest of the month, and
    the user waited for a reset that was not coming."""
    cfg = config("  - name: A\n    x: Twitter\n  - name: B\n    x: other_one\n")
    store.set_meta("x:user:twitter", "783214")
    capped = {"title": "UsageCapExceeded", "detail": "Usage cap exceeded: Monthly product cap",
              "type": "https://api.twitter.com/2/problems/usage-capped", "period": "Monthly",
              "scope": "Product"}
    with x_api() as rsps:
        rsps.get(f"{API}/users/783214/tweets", json=capped, status=429)
        reports = await run(cfg, store, http)
        assert len(rsps.calls) == 1  # nor is it asked again for the other X source
    by_name = {r.name: r for r in reports}
    assert "usage cap" in by_name["A/x"].error and "Monthly product cap" in by_name["A/x"].error
    assert by_name["B/x"].error == "X's usage cap is reached (see A/x)"
    for name in by_name:
        assert store.source_state(name).retry_after == NOW + timedelta(days=1)


async def test_x_not_answering_is_waited_for_once_per_run(
        token: str, store: Store, http: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeout waits 30 s: each X source waited it in turn (twenty people, ten minutes of a
    collection, or of a digest's). After the first, the others say so at once."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as s:
        closed = s.getsockname()[1]  # nobody listens there once the block ends
    monkeypatch.setenv("FEEDBOT_X_API_URL", f"http://127.0.0.1:{closed}")
    cfg = config("  - name: A\n    x: Twitter\n  - name: B\n    x: other_one\n"
                 "  - name: C\n    x: third_one\n")
    reports = await run(cfg, store, http)
    assert [r.error for r in reports] == ["cannot reach the X API",
                                          "cannot reach the X API (see A/x)",
                                          "cannot reach the X API (see A/x)"]


async def test_401_says_what_to_check_without_the_token(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: A\n    x: Twitter\n")
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/Twitter", json=fixture("x_error_401.json"),
                 status=401)
        [report] = await run(cfg, store, http)
    assert report.status == "error"
    assert "401" in report.error and "X_BEARER_TOKEN" in report.error
    assert TOKEN not in report.error and TOKEN not in store.source_state("A/x").last_error


async def test_403_names_the_access_tier(token: str, store: Store,
                                         http: httpx.AsyncClient) -> None:
    cfg = config("  - name: A\n    x: Twitter\n")
    store.set_meta("x:user:twitter", "783214")
    with x_api() as rsps:
        rsps.get(f"{API}/users/783214/tweets", json=fixture("x_error_403.json"), status=403)
        [report] = await run(cfg, store, http)
    assert "403" in report.error and "access tier" in report.error
    assert "attached to a Project" in report.error  # X's own reason is passed on


async def test_unknown_handle_is_that_sources_error(token: str, store: Store,
                                                    http: httpx.AsyncClient) -> None:
    cfg = config("  - name: Nobody\n    x: nosuchfeedbot\n")
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/nosuchfeedbot",
                 json=fixture("x_user_not_found.json"))
        [report] = await run(cfg, store, http)
    assert report.status == "error" and "no user @nosuchfeedbot" in report.error
    assert store.get_meta("x:user:nosuchfeedbot") is None


@pytest.mark.parametrize(("answer", "why"), [
    ({"data": [{"id": "783214"}]}, "data is a list, not an object"),
    ({"data": {"id": "Twitter"}}, "data.id is 'Twitter', not an id of X's"),
    ({"errors": "no such user"}, "errors is a string, not a list"),
    ("783214", "it is a string, not an object"),
], ids=["data-a-list", "id-not-a-number", "errors-a-string", "answer-a-string"])
async def test_a_user_lookup_that_cannot_be_read_is_the_sources_clear_error(
        answer: Any, why: str, token: str, store: Store, http: httpx.AsyncClient) -> None:
    """They failed as "unexpected AttributeError"; an id that is no number was kept, and
    every later run asked X for the posts of user "Twitter", and failed."""
    cfg = config("  - name: A\n    x: Twitter\n")
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/Twitter", json=answer)
        [report] = await run(cfg, store, http)
    assert report.status == "error"
    assert report.error == (f"X sent an answer feedbot cannot read ({why}); @Twitter is looked "
                            "up again next time")
    assert store.get_meta("x:user:twitter") is None


async def test_missing_token_switches_x_off_with_one_notice(
        store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: A\n    x: Twitter\n  - name: B\n    x: other_one\n")
    with x_api() as rsps:
        reports = await run(cfg, store, http)
        assert len(rsps.calls) == 0
    assert [r.status for r in reports] == ["disabled", "disabled"]
    [line] = report_lines(reports)
    assert line.startswith("off (2 sources: A/x, B/x)") and "X_BEARER_TOKEN is not set" in line
    assert store.source_state("A/x").failures == 0  # not a failure, not retried with backoff


async def test_collect_x_raises_source_disabled_directly(http: httpx.AsyncClient) -> None:
    spec = SourceSpec("A/x", "x", "Twitter", "A on X", person="A")
    with pytest.raises(SourceDisabled):
        await collect_x(Context(now=NOW, http=http), spec, SourceState("A/x"))


def test_the_local_x_api_fails_a_test_that_calls_off_script() -> None:
    """Guard for the tests above: `x_api` catches a path it has no answer for and an answer
    never asked for, serves several answers for one path in order, and puts back the URL."""
    import requests

    assert "FEEDBOT_X_API_URL" not in os.environ
    off_script = pytest.raises(AssertionError, match="no recorded answer.*/2/users/1/tweets")
    with off_script, x_api(all_used=False):
        assert requests.get(os.environ["FEEDBOT_X_API_URL"] + "/2/users/1/tweets",
                            timeout=5).status_code == 404
    with pytest.raises(AssertionError, match="never asked for.*/2/users/2/tweets"), \
            x_api() as api:
        api.get(f"{API}/users/2/tweets", json={})
    with x_api() as api:
        api.get(f"{API}/users/3/tweets", json={"n": 1})
        api.get(f"{API}/users/3/tweets", json={"n": 2}, status=429)
        got = [requests.get(os.environ["FEEDBOT_X_API_URL"] + "/2/users/3/tweets?a=b",
                            timeout=5) for _ in range(3)]
    assert [(r.status_code, r.json()["n"]) for r in got] == [(200, 1), (429, 2), (429, 2)]
    assert [c.query for c in api.calls] == ["a=b"] * 3
    assert "FEEDBOT_X_API_URL" not in os.environ


def test_error_classes_are_source_errors() -> None:
    from feedbot.collectors import SourceError

    assert issubclass(XAuthError, XError) and issubclass(XError, SourceError)


# --- errors inside a 200 answer ----------------------------------------------------------------
# X answers 200 with only `errors` when it will not show a timeline. Shaped like the recorded
# errors in x-api-v2/twarc-csv (users.jsonl, entities_test.jsonl), for the timeline's user.

def refused(user_id: str, kind: str, title: str, detail: str) -> dict[str, Any]:
    return {"errors": [{"value": user_id, "detail": detail, "title": title,
                        "resource_type": "user", "parameter": "id", "resource_id": user_id,
                        "type": f"https://api.twitter.com/2/problems/{kind}"}]}


PROTECTED = refused("111", "not-authorized-for-resource", "Authorization Error",
                    "Sorry, you are not authorized to see the user with id: [111].")
DELETED = refused("111", "resource-not-found", "Not Found Error",
                  "Could not find user with id: [111].")
SUSPENDED = refused("111", "resource-not-found", "Forbidden", "User has been suspended: [111].")


def test_errors_beside_posts_are_not_the_timelines(corpus: Path) -> None:
    page = twarc_timeline(corpus)  # real: 100 posts and a not-found referenced post
    assert page["errors"] and timeline_error([page], "PhillyNEFL") is None
    assert timeline_error([{"meta": {"result_count": 0}}], "a") is None  # nothing new


async def test_a_protected_account_is_that_sources_error_not_an_empty_success(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: Private\n    x: private_one\n")
    store.set_meta("x:user:private_one", "111")
    with x_api() as rsps:
        rsps.get(f"{API}/users/111/tweets", json=PROTECTED)
        [report] = await run(cfg, store, http)
    assert report.status == "error"
    assert report.error == ("X: @private_one is protected or not visible: Sorry, you are not "
                            "authorized to see the user with id: [111].")
    state = store.source_state("Private/x")
    assert state.failures == 1 and state.cursor in (None, "")
    assert store.get_meta("x:user:private_one") == "111"  # the id is right; keep it


@pytest.mark.parametrize("answer", [DELETED, SUSPENDED], ids=["deleted", "suspended"])
async def test_a_cached_id_of_a_gone_account_fails_and_is_looked_up_again(
        answer: dict[str, Any], token: str, store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: Gone\n    x: gone_one\n")
    store.set_meta("x:user:gone_one", "111")
    with x_api() as rsps:
        rsps.get(f"{API}/users/111/tweets", json=answer)
        [report] = await run(cfg, store, http)
    assert report.status == "error" and "@gone_one no longer exists or is suspended" in report.error
    assert answer["errors"][0]["detail"] in report.error
    assert not store.get_meta("x:user:gone_one")  # dropped

    with x_api() as rsps:  # the next run asks for the handle again
        rsps.get(f"{API}/users/by/username/gone_one", json=fixture("x_user_not_found.json"))
        [again] = await run(cfg, store, http, NOW + timedelta(hours=7))
        assert [c.path for c in rsps.calls] == [
            "/2/users/by/username/gone_one"]
    assert again.status == "error" and "no user @gone_one" in again.error


async def test_a_rejected_token_is_explained_once_per_run(
        token: str, store: Store, http: httpx.AsyncClient) -> None:
    cfg = config("  - name: A\n    x: Twitter\n  - name: B\n    x: other_one\n"
                 "  - name: C\n    x: third_one\n")
    with x_api() as rsps:
        rsps.get(f"{API}/users/by/username/Twitter", json=fixture("x_error_401.json"),
                 status=401)
        reports = await run(cfg, store, http)
        assert len(rsps.calls) == 1
    by_name = {r.name: r for r in reports}
    assert [r.status for r in reports] == ["error"] * 3
    assert by_name["A/x"].error.endswith("(401 Unauthorized): check X_BEARER_TOKEN")
    assert by_name["B/x"].error == by_name["C/x"].error == "X rejected the bearer token (see A/x)"
    lines = [r.line() for r in reports]
    assert sum("check X_BEARER_TOKEN" in line for line in lines) == 1
    assert all(store.source_state(n).failures == 1 for n in by_name)  # each source's status


# --- stopping while X does not answer ----------------------------------------------------------

def _wait_for_request(server: LocalServer, path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60  # imports and start-up included
    while not server.hits(path):
        assert proc.poll() is None, "the process ended before asking X"
        assert time.monotonic() < deadline, f"no request for {path}"
        time.sleep(0.05)


@pytest.mark.parametrize(("command", "sig"), [("collect", signal.SIGINT), ("run", signal.SIGTERM),
                                              ("run", signal.SIGINT)])
def test_stopping_does_not_wait_for_a_hung_x_request(
        server: LocalServer, command: str, sig: signal.Signals) -> None:
    """Ctrl-C or SIGTERM while X holds a request: the process exits at once, not after the
    request's 30 s timeout (asyncio.run joins `asyncio.to_thread`'s threads at exit)."""
    release = threading.Event()

    def hang(req: Request) -> tuple[int, dict[str, str], bytes]:
        release.wait(60)
        return 200, {"Content-Type": "application/json"}, b'{"data": {"id": "1"}}'

    path = "/2/users/by/username/hung_one"
    server.add(path, handler=hang)
    sources = Path(os.environ["FEEDBOT_SOURCES"])
    # The shortest interval: `feedbot run` spreads the first collections over 5 % of it.
    sources.write_text(f"defaults: {{interval: {MIN_INTERVAL}}}\n"
                       "people:\n  - name: Hung\n    x: hung_one\n", encoding="utf-8")
    env = {**os.environ, "X_BEARER_TOKEN": TOKEN, "FEEDBOT_X_API_URL": server.base}
    if command == "collect":  # an unknown backend fails fast, after collecting: not the point
        env["FEEDBOT_EMBED_BACKEND"] = "none-such"
    proc = subprocess.Popen([sys.executable, "-m", "feedbot", command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_request(server, path, proc)
        stopped = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=40)
        took = time.monotonic() - stopped
    except BaseException:
        proc.kill()
        print(proc.communicate()[1].decode(errors="replace"))
        raise
    finally:
        release.set()
        proc.kill()
    err = proc.communicate()[1]
    assert took < 15, f"waited {took:.0f}s for the hung X request"
    assert code in (0, 130), err.decode(errors="replace")
    assert TOKEN.encode() not in err


_GOOD_POST = {"id": "1860000000000000001", "text": "fine post",
              "created_at": "2026-11-19T10:00:00.000Z"}
_ODD_ID = "1860000000000000002"


def _odd(**fields: Any) -> dict[str, Any]:
    return {"id": _ODD_ID, "text": "x", "created_at": "2026-11-19T10:00:00.000Z", **fields}


def _collect_one_answer(answer: Any, store: Store, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The report of source G/x's collection, with `answer` as its timeline."""
    monkeypatch.setenv("X_BEARER_TOKEN", "t")
    cfg = load_config("sources.yaml",
                      text="learner:\n  stage: cnn\npeople:\n  - name: G\n    x: gx\n")
    with x_api() as rsps:
        rsps.get(f"{X_API}/users/by/username/gx",
                 json={"data": {"id": "4242", "name": "G", "username": "gx"}})
        rsps.get(f"{X_API}/users/4242/tweets", json=answer)
        [report] = asyncio.run(collect_async(cfg, store, now=NOW))
    return report


@pytest.mark.parametrize(("odd", "kept", "why"), [
    (_odd(created_at="yesterday"), 2, ""),
    (_odd(created_at="0001-01-01T00:00:00+01:00"), 2, ""),
    ({"text": "no id"}, 1, "one without an id: no id of X's"),
    (_odd(id="abc"), 1, "one without an id: no id of X's"),
    # a number past X's 64-bit ids read as the post's time: "timestamp out of range"
    ({"id": "9" * 30, "text": "x"}, 1, "one without an id: no id of X's"),
    (_odd(referenced_tweets="abc"), 1, f"{_ODD_ID}: referenced_tweets is a string, not a list"),
    (_odd(entities=[]), 1, f"{_ODD_ID}: entities is a list, not an object"),
    (_odd(entities={"urls": ["https://t.co/x"]}), 1,
     f"{_ODD_ID}: entities.urls[] is a string, not an object"),
    (_odd(note_tweet={"text": "x", "entities": {"urls": [None]}}), 1,
     f"{_ODD_ID}: note_tweet.entities.urls[] is null, not an object"),
    (_odd(edit_history_tweet_ids=7), 1,
     f"{_ODD_ID}: edit_history_tweet_ids is a number, not a list"),
    (_odd(text=None), 1, f"{_ODD_ID}: text is null, not a string"),  # it was stored as "None"
    ("a post", 1, "one without an id: no id of X's"),
], ids=["unreadable-date", "date-out-of-range", "no-id", "id-not-a-number", "id-past-64-bits",
        "references-a-string", "entities-a-list", "url-a-string", "note-url-null",
        "edit-history-a-number", "text-null", "not-an-object"])
def test_one_malformed_post_costs_only_itself(odd: Any, kept: int, why: str, store: Store,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One post X sent malformed lost the whole timeline's fetch ("unexpected ValueError",
    "'str' object has no attribute 'get'"), run after run, every good post with it. A post
    with an unreadable date takes its id's time; one that cannot be read is left out, and the
    source's report names it."""
    report = _collect_one_answer({"data": [_GOOD_POST, odd], "meta": {"result_count": 2}},
                                 store, monkeypatch)
    assert (report.status, report.new) == ("ok", kept), report.error
    stored = {s.item.url.rsplit("/", 1)[1]: s.item for s in store.items_since(None)}
    assert _GOOD_POST["id"] in stored
    if kept == 2:  # its time from the snowflake id, not a fetch-time guess
        assert stored[odd["id"]].published == tweet_time({"id": odd["id"]})
        assert report.warning == ""
    else:
        assert report.warning == f"left out 1 malformed post X sent ({why})"
        assert store.source_state("G/x").notice == report.warning


def test_many_malformed_posts_are_told_in_one_line(store: Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    odd = [_odd(id=str(int(_ODD_ID) + n), entities=[]) for n in range(5)]
    report = _collect_one_answer({"data": [_GOOD_POST, *odd]}, store, monkeypatch)
    assert (report.status, report.new) == ("ok", 1)
    line = report.line()
    assert "\n" not in line and "left out 5 malformed posts X sent (" in line
    assert line.endswith("1860000000000000004: entities is a list, not an object; and 2 more)")


@pytest.mark.parametrize(("answer", "why"), [
    ({"data": {"id": "1860000000000000001", "text": "x"}, "meta": {"newest_id": "18600"}},
     "data is an object, not a list"),
    ({"data": [_GOOD_POST], "meta": ["1860000000000000001"]}, "meta is a list, not an object"),
    ({"errors": ["not authorized"]}, "errors[] is a string, not an object"),
    (["not", "a", "page"], "it is a list, not an object"),
], ids=["data-an-object", "meta-a-list", "error-a-string", "answer-a-list"])
def test_an_answer_that_cannot_be_read_is_the_sources_clear_error(
        answer: Any, why: str, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """`data` sent as an object read as "nothing new", and the cursor moved past posts never
    read; the others failed as "unexpected AttributeError". Now the source fails saying what
    is wrong, keeps its cursor, and asks for the same posts next time."""
    report = _collect_one_answer(answer, store, monkeypatch)
    assert report.status == "error"
    assert report.error == (f"X sent an answer feedbot cannot read ({why}); its posts are "
                            "asked for again next time")
    assert store.source_state("G/x").cursor in (None, "")


def test_a_retweet_or_a_quote_of_a_stored_post_is_a_share_of_it(tmp_path: Path) -> None:
    """Ada's retweet and Bob's quote of Grace's post were two more entries beside it: the
    retweet links only the original's links, and the quote's link
    (`twitter.com/Grace_T/status/…`, as X sends it) matched no stored `x.com/grace_t/…`."""
    from feedbot.collect import link_shares

    gid = "1860000000000000001"
    grace = {"id": gid, "text": "Backpropagation through time, explained",
             "created_at": "2026-11-26T10:00:00.000Z"}
    retweet = {"id": "1860000000000000002", "text": "RT @grace_t: Backpropagation through…",
               "created_at": "2026-11-26T11:00:00.000Z",
               "referenced_tweets": [{"type": "retweeted", "id": gid}]}
    quote = {"id": "1860000000000000003", "text": "Great thread https://t.co/abc",
             "created_at": "2026-11-26T12:00:00.000Z",
             "referenced_tweets": [{"type": "quoted", "id": gid}],
             "entities": {"urls": [{"url": "https://t.co/abc", "expanded_url":
                                    f"https://twitter.com/Grace_T/status/{gid}"}]}}
    store = Store(tmp_path / "db.sqlite")
    now = datetime(2026, 11, 27, tzinfo=UTC)
    store.remember_sources([("Grace/x", "x", "grace_t"), ("Ada/x", "x", "ada_x"),
                            ("Bob/x", "x", "bob")])
    store.upsert_items(parse_timeline([{"data": [grace]}], "grace_t", "Grace/x", "Grace"), now)
    store.upsert_items(parse_timeline([{"data": [retweet]}], "ada_x", "Ada/x", "Ada",
                                      retweets=True), now)
    store.upsert_items(parse_timeline([{"data": [quote]}], "bob", "Bob/x", "Bob"), now)
    assert link_shares(store, now) == 2
    [original] = [s for s in store.items_since(None) if s.item.url.endswith(gid)]
    assert set(store.shares([s.id for s in store.items_since(None)]).values()) == {original.id}
    assert len(store.shares([s.id for s in store.items_since(None)])) == 2
