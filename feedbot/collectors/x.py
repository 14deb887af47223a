"""X (Twitter) timelines of followed people, through tweepy's v2 `Client` and an app-only token.

The X API is paid per post read, so this collector reads only what is new: a handle is
resolved to a user id once (cached in the store's meta table under `x:user:<handle>`, dropped
when X says the account behind it is gone), each timeline read passes the newest stored post id
as `since_id`, and no run reads more than the source's `max_items` posts. It never pages back
into history, never waits out a rate limit itself (a 429 becomes the source's `retry_after`) and
never logs or shows the token.

`read_timeline` / `tweet_to_item` are pure: JSON as the API returns it in, `Item`s out;
`timeline_error` turns the errors X puts in a 200 answer without posts into the source's error.
JSON not shaped as X documents it never crashes them: a malformed post is left out and named in
the source's report, an answer that cannot be read at all is the source's error.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import requests
import tweepy

from ..config import X_TOKEN_ENV, SourceSpec, x_token
from ..items import Item
from ..store import SourceState
from ..text import shorten
from . import Collected, Context, SourceDisabled, SourceError, in_daemon_thread

TOKEN_ENV = X_TOKEN_ENV
API_URL_ENV = "FEEDBOT_X_API_URL"  # replaces API_HOST, e.g. a local test server
API_HOST = "https://api.twitter.com"  # what tweepy's Client puts before every route
# `note_tweet`: a post longer than 280 characters comes with its `text` cut short; its whole text
# and that text's entities (the links past the cut) come only in `note_tweet`, only when asked.
# `conversation_id`: the first post of the thread a post continues (see `parse_timeline`).
TWEET_FIELDS = ["created_at", "entities", "referenced_tweets", "in_reply_to_user_id",
                "note_tweet", "conversation_id"]
# With a person's `retweets: true`: a retweet's own text is cut ("RT @a: first 140 characters…",
# its links lost); the retweeted post itself comes in `includes.tweets`, with the fields above.
RETWEET_EXPANSIONS = ["referenced_tweets.id"]
PAGE_MIN, PAGE_MAX = 5, 100  # what the API accepts as max_results
TITLE_WIDTH = 90
TIMEOUT = 30.0
DEFAULT_WAIT = timedelta(minutes=15)  # X's rate-limit window, when no reset time is given
CAPPED_WAIT = timedelta(days=1)  # after X said the app's monthly usage cap is spent
LONGEST_RESET = timedelta(days=32)  # a reset further ahead is no reset: X's cap is monthly
TWITTER_EPOCH_MS = 1288834974657  # snowflake ids carry their creation time since this
# X lets a post be edited for 30 minutes after it was published (docs.x.com, "Edit posts"); an
# edit is a new post, as old as that at most. An hour leaves a margin.
EDIT_WINDOW = timedelta(hours=1)

_RT_PREFIX = re.compile(r"RT @\w+: ")
# A link to a post: x.com/<handle>/status/<id>, X's own i/web/status/<id>, a photo or video of it.
_STATUS_LINK = re.compile(r"^https?://(?:www\.|mobile\.)?(?:twitter|x)\.com/(?:i/web|[^/]+)/"
                          r"status(?:es)?/(\d+)(?:/(?:photo|video)/\d+)?/?(?:[?#].*)?$")


class XError(SourceError):
    """The X API answered with an error worth showing for this source. `short` is how later X
    sources of the same run say it again after it stopped them (see `XGate.blocked`)."""

    def __init__(self, message: str, retry_after: datetime | None = None,
                 short: str = "") -> None:
        super().__init__(message, retry_after)
        self.short = short


class XAuthError(XError):
    """401/403: the token is wrong or the app's access tier cannot read timelines."""


class XRateLimited(XError):
    """429: come back at `retry_after`."""


class XUnreachable(XError):
    """X did not answer (timed out, no connection, a server error): the run's other X sources
    would wait as long for nothing, one after another."""


class XUserGone(XError):
    """The account behind a user id no longer exists, or is suspended."""


class MetaStore(Protocol):
    """The store's small key-value table (feedbot.store.Store satisfies this)."""

    def get_meta(self, key: str, default: str | None = None) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


class _TimeoutSession(requests.Session):
    """tweepy calls `session.request` without a timeout; a hung API would hang the run. With
    `api_url`, requests to X's API host go there instead (tweepy's host is fixed)."""

    def __init__(self, api_url: str = "") -> None:
        super().__init__()
        self.api_url = api_url.rstrip("/")

    def request(self, method: str, url: str | bytes,  # type: ignore[override]
                *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        if self.api_url and isinstance(url, str) and url.startswith(API_HOST + "/"):
            url = self.api_url + url[len(API_HOST):]
        return super().request(method, url, *args, **kwargs)


@dataclass
class XGate:
    """One tweepy client per collection run; X calls go one at a time through `lock`.

    After a 401, 403 or 429, or when X did not answer (a timeout waits 30 s: twenty people
    waited ten minutes, one after another), every later X source in the same run fails with
    the same error without calling the API again (`blocked`, first met by source
    `blocked_by`). The full explanation is that first source's; the others point to it
    (`repeat_block`).
    """

    client: tweepy.Client
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    blocked: XError | None = None
    blocked_by: str = ""

    def block(self, err: XError, source: str) -> None:
        self.blocked, self.blocked_by = err, source

    def repeat_block(self) -> XError:
        """The blocking error again, for a later source: short, naming the first source."""
        b = self.blocked
        assert b is not None
        message = f"{b.short} (see {self.blocked_by})" if b.short and self.blocked_by else str(b)
        return type(b)(message, b.retry_after, b.short)

    @classmethod
    def from_env(cls) -> XGate:
        token = x_token()
        if not token:
            raise SourceDisabled(f"{TOKEN_ENV} is not set: X sources are off (see README)")
        # Plain JSON back (return_type=dict): tweepy's Tweet model rejects posts that lack
        # newer fields, and parse_timeline reads the JSON the API sent.
        client = tweepy.Client(bearer_token=token, wait_on_rate_limit=False, return_type=dict)
        client.session = _TimeoutSession(os.environ.get(API_URL_ENV, "").strip())
        return cls(client)


def gate_for(ctx: Context) -> XGate:
    """The run's XGate, made on first use (raises SourceDisabled when there is no token)."""
    gate = ctx.x or ctx.extra.get("x")
    if gate is None:
        gate = ctx.extra["x"] = XGate.from_env()
    return gate


# --- parsing (pure) ---------------------------------------------------------------------------

_ID = (str, int)
_URLS = {"urls": [{"url": str, "expanded_url": str, "display_url": str, "media_key": str}]}
# What feedbot reads of a post, typed as X's API documents it (absent or null: not sent). A post
# with another type in one of these is malformed: left out, and named in the source's report.
POST_SHAPE: dict[str, Any] = {
    "text": str, "entities": _URLS, "note_tweet": {"text": str, "entities": _URLS},
    "referenced_tweets": [{"type": str, "id": _ID}], "edit_history_tweet_ids": [_ID],
    "conversation_id": _ID, "in_reply_to_user_id": _ID}
# What feedbot reads of a timeline page: an answer with another type in one of these cannot be
# read at all (its posts, where it goes on, what X refused). `includes` only enriches retweets:
# an included post that is malformed is passed over, and the retweet keeps its own text.
PAGE_SHAPE: dict[str, Any] = {"data": list, "meta": {"newest_id": _ID, "next_token": str},
                              "errors": [dict]}
# What feedbot reads of the answer to a user lookup (by handle).
USER_SHAPE: dict[str, Any] = {"data": {"id": _ID}, "errors": [{"detail": str}]}
_KINDS = {str: "a string", _ID: "an id", list: "a list", dict: "an object"}


def shape_problem(value: Any, shape: Any, name: str = "") -> str:
    """Why `value` is not shaped as `shape` says, '' when it is. A shape is a type (or a tuple
    of types), a dict of field → shape (a field absent or null passes) or a one-shape list of
    entries. `name`: what `value` is called in the answer (`entities.urls`)."""
    kind = dict if isinstance(shape, dict) else list if isinstance(shape, list) else shape
    if isinstance(value, bool) or not isinstance(value, kind):
        return f"{name or 'it'} is {_json_kind(value)}, not {_KINDS[kind]}"
    parts: list[tuple[str, Any, Any]] = []
    if isinstance(shape, dict) and isinstance(value, dict):  # a field not sent passes
        parts = [(f"{name}.{k}" if name else k, value[k], sub) for k, sub in shape.items()
                 if value.get(k) is not None]
    elif isinstance(shape, list) and isinstance(value, list):  # a null entry does not
        parts = [(f"{name}[]", v, shape[0]) for v in value]
    return next((why for part, v, sub in parts for why in [shape_problem(v, sub, part)] if why),
                "")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _KINDS.get(type(value), type(value).__name__)


def post_problem(tweet: Any) -> str:
    """Why `tweet` is a post feedbot cannot read ('' when it can): no id of X's to link to, no
    text, or a field of another type than X documents (`POST_SHAPE`)."""
    if not _has_id(tweet):
        return "no id of X's"
    if not isinstance(tweet.get("text"), str):
        return f"text is {_json_kind(tweet.get('text'))}, not a string"
    return shape_problem(tweet, POST_SHAPE)


def usable_pages(pages: Iterable[Any]) -> list[dict[str, Any]]:
    """The timeline pages, when each can be read (`PAGE_SHAPE`); XError naming what is wrong
    when one cannot. Nothing of such an answer is kept, nor its cursor: it is read again."""
    pages = list(pages)
    for page in pages:
        why = shape_problem(page, PAGE_SHAPE)
        if why:
            raise unreadable(why, "its posts are asked for again next time")
    return pages


def unreadable(why: str, then: str = "") -> XError:
    """The source's error for an answer of X's that cannot be read: `why` (`shape_problem`),
    and what happens `then` (when the caller does not say it)."""
    return XError(f"X sent an answer feedbot cannot read ({shorten(why, 120)})"
                  + (f"; {then}" if then else ""))


def tweet_time(tweet: dict[str, Any]) -> datetime:
    """`created_at` when the API sent it, else the time encoded in the snowflake id."""
    raw = tweet.get("created_at")
    if isinstance(raw, str) and raw:
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
        except (ValueError, OverflowError):  # unreadable, or out of range in UTC: the id's time
            pass
    ms = (int(tweet["id"]) >> 22) + TWITTER_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ref_types(tweet: dict[str, Any]) -> set[str]:
    return {str(r.get("type")) for r in tweet.get("referenced_tweets") or []}


def is_retweet(tweet: dict[str, Any]) -> bool:
    return "retweeted" in _ref_types(tweet)


def is_reply(tweet: dict[str, Any]) -> bool:
    return "replied_to" in _ref_types(tweet) or bool(tweet.get("in_reply_to_user_id"))


def continues_own(tweet: dict[str, Any], own_id: str) -> bool:
    """A reply of the account to itself: the next post of its thread ("2/ the paper: …"),
    where researchers often put the link."""
    return bool(own_id) and str(tweet.get("in_reply_to_user_id") or "") == own_id


def post_ids(tweet: dict[str, Any]) -> set[str]:
    """The post's id and the ids of its other versions (an edited post gets a new id)."""
    return {str(tweet.get("id", "")), *map(str, tweet.get("edit_history_tweet_ids") or [])}


def first_id(tweet: dict[str, Any]) -> str:
    """The id the post was first published under: its first version's, when it was edited."""
    ids = [str(i) for i in tweet.get("edit_history_tweet_ids") or [] if str(i).isdigit()]
    return min(ids, key=int) if ids else str(tweet["id"])


def _is_own(url: dict[str, Any], ids: set[str]) -> bool:
    """A link to the post itself: its photos and videos, or X's link to the whole post
    (`twitter.com/i/web/status/<its id>`, as an edited or cut-short post ends)."""
    if url.get("media_key") or str(url.get("display_url", "")).startswith(("pic.twitter.com",
                                                                            "pic.x.com")):
        return True
    m = _STATUS_LINK.match(str(url.get("expanded_url", "")))
    return bool(m and m.group(1) in ids)


def full_text(tweet: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(the post's whole text, its URL entities). A long post's `text` is cut short and its
    entities cover only that part: the whole text and its entities are in `note_tweet`."""
    urls = list((tweet.get("entities") or {}).get("urls") or [])
    note = tweet.get("note_tweet")
    if isinstance(note, dict) and isinstance(note.get("text"), str) and note["text"].strip():
        return note["text"], [*((note.get("entities") or {}).get("urls") or []), *urls]
    return str(tweet.get("text", "")), urls


def expand_links(tweet: dict[str, Any]) -> tuple[str, list[str]]:
    """(text with t.co links replaced by where they point, the expanded URLs in order).

    The whole text of a long post (`note_tweet`). Links to the post itself (its photos and
    videos, X's link to the whole post) are dropped from both: they are not stories.
    """
    raw, urls = full_text(tweet)
    text = html.unescape(raw)
    ids = post_ids(tweet)
    links: list[str] = []
    for u in urls:
        short, full = str(u.get("url", "")), str(u.get("expanded_url") or "")
        if _is_own(u, ids):
            text = text.replace(short, "") if short else text
            continue
        if short and full:
            text = text.replace(short, full)
        if full:
            links.append(full)
    return " ".join(text.split()), list(dict.fromkeys(links))


def retweeted_post(tweet: dict[str, Any], included: dict[str, dict[str, Any]]
                   ) -> dict[str, Any] | None:
    """The post a retweet repeats, when the answer included it (`includes.tweets`)."""
    for ref in tweet.get("referenced_tweets") or []:
        if ref.get("type") == "retweeted":
            return included.get(str(ref.get("id")))
    return None


def post_text(tweet: dict[str, Any], included: dict[str, dict[str, Any]] | None = None
              ) -> tuple[str, list[str]]:
    """`expand_links` of the post; for a retweet whose original was included, "RT @a: " and the
    original's whole text and links instead of the retweet's cut-short copy."""
    original = retweeted_post(tweet, included or {}) if is_retweet(tweet) else None
    text, links = expand_links(tweet)
    if original is not None:
        prefix = _RT_PREFIX.match(html.unescape(str(tweet.get("text", ""))))
        whole, whole_links = expand_links(original)
        if whole or whole_links:
            text, links = (prefix.group(0) if prefix else "RT: ") + whole, whole_links
    # The post a retweet or a quote repeats, by id (X's answer names no handle for it, and a
    # quote's own link to it may read twitter.com/Name): a share of that post when stored.
    repeated = [post_url("i", str(ref.get("id"))) for ref in tweet.get("referenced_tweets") or []
                if ref.get("type") in ("retweeted", "quoted") and _digits(ref.get("id"))]
    return text, list(dict.fromkeys([*links, *repeated]))


def post_url(handle: str, tweet_id: str) -> str:
    return f"https://x.com/{handle}/status/{tweet_id}"


def tweet_to_item(tweet: dict[str, Any], handle: str, source: str, person: str = "",
                  included: dict[str, dict[str, Any]] | None = None) -> Item:
    """One post as an Item of kind 'social' (its links let a shared paper absorb it).
    `included`: the answer's `includes.tweets` by id (a retweet's original). An edited post
    comes back under a new id: the item keeps its first id, so the edit updates the item the
    first version made instead of adding a second one."""
    return post_item(first_id(tweet), post_text(tweet, included), tweet_time(tweet), handle,
                     source, person)


# A post's text and links as its item holds them (`post_text`).
Part = tuple[str, list[str]]
# The posts of a thread as its item holds them: each one's first id → its `Part`.
Parts = dict[str, Part]


def post_item(tid: str, part: Part, at: datetime, handle: str, source: str, person: str = "",
              later: Iterable[Part] = ()) -> Item:
    """The item of post `tid` (its first id), published `at`, with its text and links; and
    after them those of its thread's `later` posts, in order. The title is the post's words,
    or, for a thread opened by a photo alone, its first words ("2/ the paper: …"), and the
    post's address only where no post has any."""
    text, links = part
    later = list(later)
    words = [w for w in [text, *(words for words, _ in later)] if w]
    return Item(
        title=shorten(words[0] if words else "", TITLE_WIDTH) or post_url(handle, tid),
        url=post_url(handle, tid),
        source=source, kind="social", authors=(person or f"@{handle}",), published=at,
        summary=" ".join(words), guid=tid,
        links=tuple(dict.fromkeys([*links, *(u for _, urls in later for u in urls)])),
        person=person,
    )


@dataclass
class Thread:
    """A thread as its item holds it: the time of its first post (the item's date) and the
    text and links of each of its posts, the first included (`parts`). An edit of any of them
    comes alone in a later answer, under a new id: the item is made again from these."""

    at: datetime
    parts: Parts

    def item(self, head: str, handle: str, source: str, person: str = "") -> Item:
        """The thread's item: its first post's (`head`, its first id), with the rest in it."""
        later = [self.parts[k] for k in sorted(self.parts, key=int) if k != head]
        return post_item(head, self.parts[head], self.at, handle, source, person, later)


@dataclass
class Timeline:
    """What `read_timeline` made of an answer: its items, newest first; the posts it left out
    as malformed (id, or '' when it had none, and why); and the threads it read, and those it
    was given (by the first post's first id)."""

    items: list[Item]
    malformed: list[tuple[str, str]] = field(default_factory=list)
    threads: dict[str, Thread] = field(default_factory=dict)

    def warning(self) -> str:
        """The posts left out, in one line for the source's report ('' when none were)."""
        if not self.malformed:
            return ""
        named = [f"{pid or 'one without an id'}: {why}" for pid, why in self.malformed[:3]]
        more = len(self.malformed) - len(named)
        return (f"left out {len(self.malformed)} malformed post"
                f"{'s' if len(self.malformed) != 1 else ''} X sent ({'; '.join(named)}"
                + (f"; and {more} more" if more else "") + ")")


def parse_timeline(pages: Iterable[dict[str, Any]], handle: str, source: str, person: str = "",
                   *, replies: bool = False, retweets: bool = False, own_id: str = ""
                   ) -> list[Item]:
    """`read_timeline`'s items."""
    return read_timeline(pages, handle, source, person, replies=replies, retweets=retweets,
                         own_id=own_id).items


def read_timeline(pages: Iterable[dict[str, Any]], handle: str, source: str, person: str = "",
                  *, replies: bool = False, retweets: bool = False, own_id: str = "",
                  threads: dict[str, Thread] | None = None) -> Timeline:
    """Timeline pages (`{"data": [...], "meta": {...}}`) → Items, newest first.

    Retweets and replies are dropped unless asked for, even if the API sent them; but not the
    account's replies to itself (`own_id`: its user id), the rest of its threads. A thread's
    later posts that came with its first are read into it: its text and links, in order
    (one entry, not "1/", "2/", … each in the digest). One whose first post came in an earlier
    run, or was left out (a reply to someone else), is an item of its own.

    `threads`: the threads read in earlier runs (`Timeline.threads`). An edit of one of their
    posts comes alone, under a new id: the thread's item is made again with it, the rest of
    the thread kept (not the edited first post alone; not an edited "2/" as an item of its
    own beside a thread that still holds its old text).

    A malformed post (`post_problem`) costs only itself: it is left out, and named in
    `Timeline.malformed`. XError when the answer itself cannot be read (`usable_pages`).
    """
    pages = usable_pages(pages)
    included = {str(t["id"]): t for t in _included(pages) if not post_problem(t)}
    kept: list[dict[str, Any]] = []
    malformed: list[tuple[str, str]] = []
    for page in pages:
        for tweet in page.get("data") or []:
            why = post_problem(tweet)
            if why:
                malformed.append((str(tweet["id"]) if _has_id(tweet) else "", why))
                continue
            if (is_retweet(tweet) and not retweets) or (
                    is_reply(tweet) and not replies and not continues_own(tweet, own_id)):
                continue
            kept.append(tweet)
    # by first id: a thread's later posts name the first post's first id (`conversation_id`),
    # also when that post came edited, under a new id. Oldest first: of two versions of a post
    # in one answer, the edit is the one kept.
    oldest_first = sorted(kept, key=lambda t: int(t["id"]))
    posts = {first_id(t): t for t in oldest_first}
    rest = {head: Thread(t.at, dict(t.parts)) for head, t in (threads or {}).items()}
    into: dict[str, str] = {}  # a later post's first id → its thread's
    for tweet in oldest_first:
        head, fid = str(tweet.get("conversation_id") or ""), first_id(tweet)
        if not continues_own(tweet, own_id) or head == fid:
            continue
        if head in posts:
            rest.setdefault(head, Thread(tweet_time(posts[head]), {}))
        elif fid not in (rest[head].parts if head in rest else {}):  # not an edit of a part
            continue
        rest[head].parts[fid] = post_text(tweet, included)
        into[fid] = head
    for fid, tweet in posts.items():  # a thread's first post, as it came (maybe edited)
        if fid in rest:
            rest[fid] = Thread(tweet_time(tweet), {**rest[fid].parts,
                                                   fid: post_text(tweet, included)})
    items: dict[str, Item] = {}
    for tweet in kept:  # newest first, as X sends them
        fid = first_id(tweet)
        key = into.get(fid, fid)  # the item it is in: its thread's
        if key in items or (key != fid and key in posts):  # its first post came: in its place
            continue
        items[key] = rest[key].item(key, handle, source, person) if key in rest \
            else tweet_to_item(posts[fid], handle, source, person, included)
    return Timeline(list(items.values()), malformed, rest)


def recent_threads(threads: dict[str, Thread], newest: str | None) -> dict[str, Thread]:
    """The threads of which a post may still come edited: one published at most
    `EDIT_WINDOW` before the newest post read (`newest`: the source's cursor). An edit of an
    older one would be older than the cursor, and X sends only posts newer than it."""
    if not _digits(newest):
        return threads
    window = int(EDIT_WINDOW.total_seconds() * 1000)
    newest_ms = int(str(newest)) >> 22
    return {head: t for head, t in threads.items()
            if newest_ms - (max(map(int, t.parts)) >> 22) <= window}


def load_threads(raw: str | None) -> dict[str, Thread]:
    """`Timeline.threads` as `dump_threads` wrote it; what is not shaped so is passed over (an
    edit of one of that thread's posts is then an item of its own, or the thread's first post
    alone)."""
    try:
        doc = json.loads(raw or "{}")
    except ValueError:
        return {}
    threads = {}
    for head, entry in (doc.items() if isinstance(doc, dict) else ()):
        at = _stored_time(entry.get("at")) if isinstance(entry, dict) else None
        parts = entry.get("parts") if isinstance(entry, dict) else None
        if not _digits(head) or at is None or not isinstance(parts, dict):
            continue
        parts = {pid: (p[0], p[1]) for pid, p in parts.items()  # [its text, its links]
                 if _digits(pid) and isinstance(p, list) and len(p) == 2
                 and isinstance(p[0], str) and not shape_problem(p[1], [str])}
        if head in parts:  # the item cannot be made again without its first post
            threads[head] = Thread(at, parts)
    return threads


def _stored_time(raw: Any) -> datetime | None:
    """The time `dump_threads` wrote (ISO 8601, with its offset); None when it is not one."""
    try:
        at = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return at if at is not None and at.tzinfo is not None else None


def dump_threads(threads: dict[str, Thread]) -> str:
    return json.dumps({head: {"at": t.at.isoformat(), "parts": {
        pid: [text, links] for pid, (text, links) in t.parts.items()}}
        for head, t in threads.items()},
        ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _included(pages: list[dict[str, Any]]) -> list[Any]:
    """The posts the answer included (`includes.tweets`), where it is shaped to hold them."""
    lists = [(p.get("includes") or {}).get("tweets") if isinstance(p.get("includes"), dict)
             else None for p in pages]
    return [t for posts in lists if isinstance(posts, list) for t in posts]


def _has_id(tweet: Any) -> bool:
    """Whether `tweet` is a post with an id of digits, as X gives every post."""
    return isinstance(tweet, dict) and _digits(tweet.get("id"))


def _digits(value: Any) -> bool:
    """Whether `value` is one of X's ids: a number of at most 64 bits, or its digits (a longer
    one read as a post's time is past any date)."""
    return isinstance(value, str | int) and not isinstance(value, bool) \
        and str(value).isdigit() and len(str(value)) <= 20 and int(value) < 2 ** 64


def newest_id(pages: Iterable[dict[str, Any]], since_id: str = "") -> str | None:
    """The newest post id seen (the next run's since_id); None when nothing came back. Ids
    that are not numbers (a malformed answer) are passed over; XError when the answer cannot be
    read (`usable_pages`)."""
    pages = usable_pages(pages)
    ids = [int(p["meta"]["newest_id"]) for p in pages
           if _digits((p.get("meta") or {}).get("newest_id"))]
    ids += [int(t["id"]) for p in pages for t in p.get("data") or [] if _has_id(t)]
    if _digits(since_id):
        ids.append(int(since_id))
    return str(max(ids)) if ids else None


def timeline_error(pages: Iterable[dict[str, Any]], handle: str) -> XError | None:
    """The error X put in a 200 answer that carries no posts, as this source's error; None when
    the timeline was read (an empty page without errors is just nothing new).

    X answers 200 with only `errors` when it will not show the timeline: a protected account
    (`not-authorized-for-resource`), or an id whose account was deleted or suspended
    (`resource-not-found`). Errors beside data (about included objects) are not the timeline's.
    XError when the answer cannot be read (`usable_pages`).
    """
    for page in usable_pages(pages):
        errors = [e for e in page.get("errors") or [] if e.get("section") != "includes"]
        if page.get("data") or not errors:
            continue
        err = errors[0]
        kind = str(err.get("type", "")).rsplit("/", 1)[-1]
        detail = shorten(str(err.get("detail") or err.get("title") or kind), 200)
        if kind == "not-authorized-for-resource":
            return XError(f"X: @{handle} is protected or not visible: {detail}")
        if kind == "resource-not-found":
            return XUserGone(f"X: @{handle} no longer exists or is suspended: {detail}")
        return XError(f"X: cannot read @{handle}'s posts: {detail}")
    return None


def exclude_for(options: dict[str, Any]) -> list[str]:
    """What to ask the API to leave out, from the person's `retweets` option. Replies are
    never left out there: X would leave out the account's threads with them (a reply to
    itself is a reply); `parse_timeline` drops the replies to others unless `replies: true`."""
    return [] if options.get("retweets") else ["retweets"]


def page_sizes(max_items: int) -> list[int]:
    """max_results for each page so that no run reads more than max_items posts (nor fewer
    than X's smallest page, `PAGE_MIN`): 101 is 96 and 5, not 100 and a page of 5 for one."""
    left, sizes = max(max_items, PAGE_MIN), []
    while left > 0:
        size = min(PAGE_MAX, left)
        if 0 < left - size < PAGE_MIN:  # the last page would be too small: take it from this
            size = left - PAGE_MIN
        sizes.append(size)
        left -= size
    return sizes


# --- I/O --------------------------------------------------------------------------------------

def lookup_user_id(client: tweepy.Client, handle: str) -> str:
    """The user id behind `handle`. XError when X has none, or answered with something that is
    not one (kept, it would be asked for in every run, and each would fail)."""
    resp = client.get_user(username=handle)
    why = shape_problem(resp, USER_SHAPE)
    uid = (resp.get("data") or {}).get("id") if not why else None
    if uid is not None and not _digits(uid):
        why = f"data.id is {str(uid)[:40]!r}, not an id of X's"
    if why:
        raise unreadable(why, f"@{handle} is looked up again next time")
    if not uid:
        detail = (resp.get("errors") or [{}])[0].get("detail", "")
        raise XError(f"X has no user @{handle}" + (f" ({detail})" if detail else ""))
    return str(resp["data"]["id"])


@dataclass
class Fetched:
    """The timeline pages read, newest first, and the error that stopped the reading after the
    first page (`stopped`; None when it went to its end)."""

    pages: list[dict[str, Any]]
    stopped: tweepy.TweepyException | requests.RequestException | XError | None = None


def fetch_timeline(client: tweepy.Client, user_id: str, *, since_id: str, max_items: int,
                   exclude: list[str], expansions: list[str] | None = None) -> Fetched:
    """Read new posts, newest first, one page after another until max_items. Blocking. An
    error on the first page is raised; on a later one, it ends the reading (`Fetched`), as does
    a later page that cannot be read (`usable_pages`): the pages before it are kept. A first
    page that cannot be read is returned, for `usable_pages` to say why."""
    pages: list[dict[str, Any]] = []
    token = None
    for size in page_sizes(max_items):
        try:
            resp = client.get_users_tweets(
                user_id, max_results=size, since_id=since_id or None, exclude=exclude or None,
                tweet_fields=TWEET_FIELDS, expansions=expansions or None,
                pagination_token=token)
        except (tweepy.TweepyException, requests.RequestException) as e:
            if not pages:
                raise
            return Fetched(pages, e)
        why = shape_problem(resp, PAGE_SHAPE)
        if why and pages:
            return Fetched(pages, unreadable(why))
        pages.append(resp)
        token = None if why else (resp.get("meta") or {}).get("next_token")
        if not token:
            break
    return Fetched(pages)


def describe_error(e: Exception, now: datetime) -> XError:
    """A tweepy or requests exception → one clear XError (never with the token in it); an
    XError is already one."""
    if isinstance(e, XError):
        return e
    if isinstance(e, tweepy.TooManyRequests):
        capped = _usage_capped(e)
        if capped is not None:
            # not the 15-minute window: the app's posts for the month are spent. Asked every
            # 15 minutes it answers the same until the billing month ends.
            until = max(_reset(e, now), now + CAPPED_WAIT)
            return XRateLimited(f"X's usage cap for this app is reached ({capped}); X sources "
                                f"wait until {_hhmm(until)}: see the app's usage in the X "
                                "developer portal", retry_after=until,
                                short="X's usage cap is reached")
        reset = _reset(e, now)
        return XRateLimited(f"X rate limit reached; next try after {_hhmm(reset)}",
                            retry_after=reset)
    if isinstance(e, tweepy.Unauthorized):
        return XAuthError(f"X rejected the bearer token (401 Unauthorized): check {TOKEN_ENV}",
                          short="X rejected the bearer token")
    if isinstance(e, tweepy.Forbidden):
        why = shorten((e.api_messages or [""])[0], 160)
        return XAuthError("X refused access (403 Forbidden): reading timelines needs an X API "
                          "access tier that includes it (Basic or higher) for the app that owns "
                          f"{TOKEN_ENV}" + (f"; X says: {why}" if why else ""),
                          short="X refused access (403 Forbidden)")
    if isinstance(e, tweepy.TwitterServerError):
        why = f"X API server error ({e.response.status_code})"
        return XUnreachable(why, short=why)
    if isinstance(e, tweepy.HTTPException):
        return XError(f"X API error: {shorten(str(e), 200)}")
    if isinstance(e, requests.Timeout):
        return XUnreachable("X API timed out", short="X API timed out")
    if isinstance(e, requests.RequestException):
        return XUnreachable("cannot reach the X API", short="cannot reach the X API")
    return XError(f"{type(e).__name__}: {e}")


def _usage_capped(e: tweepy.TooManyRequests) -> str | None:
    """X's words when a 429 says the app's monthly usage cap is spent (a problem of type
    `…/usage-capped`, title `UsageCapExceeded`), else None: a plain rate limit."""
    try:
        body = e.response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    kind, title = str(body.get("type", "")), str(body.get("title", ""))
    if not (kind.endswith("/usage-capped") or title == "UsageCapExceeded"):
        return None
    return shorten(str(body.get("detail") or title or "usage capped"), 120)


def _reset(e: tweepy.TooManyRequests, now: datetime) -> datetime:
    reset = getattr(e, "reset_time", None)
    if reset is None:
        raw = e.response.headers.get("x-rate-limit-reset", "")
        reset = int(raw) if str(raw).isdigit() else None
    try:
        at = datetime.fromtimestamp(int(reset), UTC) if reset is not None else None
    except (OverflowError, OSError, ValueError):  # far past any date: not X's seconds
        at = None
    if at is None or at > now + LONGEST_RESET:  # none, or absurd (milliseconds, say)
        return now + DEFAULT_WAIT
    return max(at, now)


def _hhmm(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _user_key(handle: str) -> str:
    return f"x:user:{handle.casefold()}"


def _threads_key(handle: str) -> str:
    """Where the later posts of the handle's recent threads are kept (see `read_timeline`)."""
    return f"x:threads:{handle.casefold()}"


def meta_keys(target: str) -> tuple[str, ...]:
    """The store's meta keys the collection of X source `target` reads."""
    handle = target.lstrip("@")
    return _user_key(handle), _threads_key(handle)


async def _user_id(gate: XGate, meta: MetaStore | None, handle: str) -> str:
    key = _user_key(handle)
    cached = meta.get_meta(key) if meta is not None else None
    if cached:
        return cached
    uid = await in_daemon_thread(lookup_user_id, gate.client, handle, name="x-request")
    if meta is not None:
        meta.set_meta(key, uid)
    return uid


async def collect_x(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
    """New posts of one X account since the stored cursor. Raises XError / SourceDisabled."""
    gate = gate_for(ctx)
    handle = spec.target.lstrip("@")
    meta: MetaStore | None = ctx.extra.get("meta")
    async with gate.lock:
        if gate.blocked is not None:
            raise gate.repeat_block()
        try:
            uid = await _user_id(gate, meta, handle)
            # A daemon thread, not asyncio.to_thread: at exit (Ctrl-C, SIGTERM) asyncio.run
            # joins its executor's threads, so a hung request would hold the process for the
            # session's TIMEOUT. The request's own timeout bounds the thread.
            fetched = await in_daemon_thread(functools.partial(
                fetch_timeline, gate.client, uid, since_id=state.cursor,
                max_items=spec.max_items, exclude=exclude_for(spec.options),
                expansions=RETWEET_EXPANSIONS if spec.options.get("retweets") else None),
                name="x-request")
        except (tweepy.TweepyException, requests.RequestException) as e:
            raise _described(gate, e, ctx.now, spec.name) from None
        stopped = _described(gate, fetched.stopped, ctx.now, spec.name) \
            if fetched.stopped is not None else None
    pages = fetched.pages
    refused = timeline_error(pages, handle)
    if refused is not None:
        if isinstance(refused, XUserGone) and meta is not None:
            meta.set_meta(_user_key(handle), "")  # look the handle up again next time
        raise refused
    stored = meta.get_meta(_threads_key(handle)) if meta is not None else None
    timeline = read_timeline(pages, handle, spec.name, spec.person,
                             replies=bool(spec.options.get("replies")),
                             retweets=bool(spec.options.get("retweets")), own_id=uid,
                             threads=load_threads(stored))
    # Stopped after the first page, the cursor stays: moved to the newest post read, the next
    # run would ask only for posts newer than it, and the older ones not read yet (the next
    # pages) would never come. The pages read are read again then, at the same cost as before.
    cursor = newest_id(pages, state.cursor) if stopped is None else state.cursor or None
    threads = dump_threads(recent_threads(timeline.threads, cursor))
    if meta is not None and threads != (stored or "{}"):
        meta.set_meta(_threads_key(handle), threads)
    read = sum(len(page.get("data") or []) for page in pages)
    stop = f"stopped after {read} posts ({stopped}); the older ones are read next time" \
        if stopped is not None else ""
    # newest first: X's smallest page (5) may bring more than a `max_items` under it
    return Collected(timeline.items[:spec.max_items], cursor=cursor,
                     warning="; ".join(w for w in (stop, timeline.warning()) if w))


def _described(gate: XGate, e: Exception, now: datetime, source: str) -> XError:
    """`describe_error`; one that would stop the run's other X sources too blocks the gate."""
    err = describe_error(e, now)
    if isinstance(err, XAuthError | XRateLimited | XUnreachable):
        gate.block(err, source)
    return err
