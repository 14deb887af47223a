"""Follow and unfollow people and blogs by editing sources.yaml: one code path for the CLI and
the Telegram bot.

`parse_follow_args` turns words (`"Andrej Karpathy" --x karpathy`, `@someone@mastodon.social`,
a feed URL, ...) into a `FollowRequest`; `follow`, `unfollow` and `add_blogs` apply it through
`sources_edit.edit_sources`, so comments, order and formatting survive, the result is validated
before the file is replaced, and the replacement is atomic. A refusal (a duplicate, a URL that is
not a feed, bad arguments) raises `FollowError` with a message meant for the user, and leaves
the file untouched.

This module never collects, and it touches the network only to check a blog URL once
(`discover_feed`). `follow` uses `asyncio.run` for that check: from async code (the bot) call
it in a thread, e.g. `await asyncio.to_thread(follow, path, req)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

from .collectors import SourceError
from .collectors.feeds import FeedError, looks_html, parse_feed
from .config import (
    ARXIV_ARCHIVES,
    BLUESKY_DID,
    bluesky_feed_url,
    control_char,
    load_config,
    mastodon_feed_url,
    name_key,
    parse_yaml,
    url_problem,
    x_token,
)
from .config import arxiv_category as known_arxiv_category
from .http import Fetched, _origin, fetch, make_client, shown_url
from .items import canonical_url
from .opml import feed_url
from .sources_edit import edit_sources
from .text import run_parser, shorten

PLACES = ("x", "bluesky", "mastodon", "arxiv", "blog")
PLACE_NAMES = {"x": "X", "bluesky": "Bluesky", "mastodon": "Mastodon", "arxiv": "arXiv",
               "blog": "their blog"}
PERSON_KEYS = ("name", *PLACES, "weight", "interval", "replies", "retweets")
SECTION_ORDER = ("learner", "defaults", "blogs", "arxiv", "people")
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json",
              "application/json")

USAGE = ('follow NAME [--x HANDLE] [--bluesky HANDLE] [--mastodon @USER@INSTANCE] '
         '[--arxiv "AUTHOR NAME"] [--blog FEED_URL] [--weight W] [--replies] [--retweets] '
         "[--no-check], or follow [NAME] --category CAT (an arXiv category such as cs.LG); "
         "shorthands: @user@instance (Mastodon), someone.bsky.social (Bluesky), x:handle (X), "
         "a profile URL on x.com, bsky.app or a Mastodon server, an arxiv.org/list/CAT URL, "
         "any other URL (blog); https:// may be left out: x.com/karpathy")

_MASTODON = re.compile(r"^@?[A-Za-z0-9_.]+@[A-Za-z0-9.-]+\.[A-Za-z]+$")
_BLUESKY = re.compile(r"^@?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.bsky\.social$", re.IGNORECASE)
_OPTIONS = {"--x": "x", "--bluesky": "bluesky", "--mastodon": "mastodon", "--arxiv": "arxiv",
            "--blog": "blog", "--weight": "weight", "--name": "name", "--category": "category"}
# Profile URLs people paste, followed as the account they show rather than fetched as blogs.
_X_HOSTS = ("x.com", "twitter.com")
_X_NOT_PROFILES = {"home", "explore", "search", "i", "intent", "share", "hashtag", "settings",
                   "messages", "notifications", "login", "logout", "signup", "tos", "privacy",
                   "compose"}
# Sites whose https://host/@name pages are not Mastodon (or other fediverse) accounts.
_NOT_FEDIVERSE = ("medium.com", "youtube.com", "tiktok.com", "threads.net", "threads.com",
                  "substack.com", "hashnode.com", "instagram.com", "x.com", "twitter.com",
                  "bsky.app", "github.com", "linkedin.com", "facebook.com", "reddit.com")
_ARXIV_CATEGORY = re.compile(r"^[a-z][a-z-]*(\.[A-Za-z][A-Za-z-]*)?$")  # the shape of one


def arxiv_category(text: str) -> str:
    """`config.arxiv_category`, refused as a FollowError: `follow --category` takes what
    sources.yaml's `category:` takes, and refuses the rest with the same words."""
    try:
        return known_arxiv_category(text)
    except ValueError as e:
        raise FollowError(str(e)) from None


_FLAGS = {"--replies": "replies", "--retweets": "retweets", "--no-check": "no_check"}


class FollowError(ValueError):
    """A follow or unfollow that was refused; the message is for the user."""


class NothingToChange(FollowError):
    """What was asked for is already in sources.yaml, as asked: nothing was changed, and
    nothing was refused (the command line exits 0, so that scripts may follow again)."""


class CheckFailed(FollowError):
    """A blog URL could not be fetched to check it (network, HTTP error): try again later."""


@dataclass(frozen=True)
class FollowRequest:
    """Who or what to follow, before any checks."""

    name: str = ""
    x: str = ""
    bluesky: str = ""
    mastodon: str = ""
    arxiv: str = ""
    blog: str = ""
    category: str = ""  # an arXiv category (cs.LG): an `arxiv:` query, not a person
    weight: float | None = None
    replies: bool = False
    retweets: bool = False
    check: bool = True
    # a host typed as a word (`karpathy.github.io`), taken for the blog there: also the name
    # of an entry followed already when a blog was named by its host (`follow NAME --weight 2`)
    typed: str = field(default="", compare=False)

    @property
    def places(self) -> dict[str, str]:
        return {p: getattr(self, p) for p in PLACES if getattr(self, p)}

    @property
    def is_query(self) -> bool:
        """An arXiv category: it becomes an `arxiv:` entry."""
        return bool(self.category)

    @property
    def is_blog_only(self) -> bool:
        """A bare feed with no name: it becomes a `blogs:` entry, not a person."""
        return not self.name and list(self.places) == ["blog"]


# --- parsing words --------------------------------------------------------------------------

def parse_follow_args(args: list[str]) -> FollowRequest:
    """Words as typed (CLI argv or a Telegram message split on spaces) → FollowRequest."""
    values: dict[str, Any] = {}
    name_words: list[str] = []
    words = iter(args)
    for word in words:
        opt, eq, inline = word.partition("=")
        if opt in _OPTIONS:
            value = inline if eq else next(words, None)
            if value is None or (not eq and value.startswith("--")):
                raise FollowError(f"{opt} needs a value; usage: {USAGE}")
            _put(values, _OPTIONS[opt], value)
        elif word in _FLAGS:
            values[_FLAGS[word]] = True
        elif word.startswith("--"):
            raise FollowError(f"unknown option {word}; usage: {USAGE}")
        else:
            place, value = classify_word(word)
            if place:
                _put(values, place, value)
                if place == "blog" and value == bare_url(word.strip()):
                    values["typed"] = word.strip()
            else:
                name_words.append(word)
    if name_words:
        _put(values, "name", " ".join(name_words))
    return _request(values)


def classify_word(word: str) -> tuple[str, str]:
    """('mastodon', '@u@i'), ('bluesky', 'h.bsky.social'), ('x', 'h'), ('blog', url) or
    ('', word) for a word of a name."""
    w = feed_url(word.strip())
    if w.lower().startswith(("http://", "https://")):
        return profile_url(w) or ("blog", w)
    if w.lower().startswith("x:") and len(w) > 2:
        return "x", w[2:].lstrip("@")
    if w.lower().startswith("bsky:") and len(w) > 5:
        return "bluesky", w[5:].lstrip("@")
    if _MASTODON.match(w):
        return "mastodon", "@" + w.lstrip("@")
    if _BLUESKY.match(w):
        return "bluesky", w.lstrip("@")
    if w.startswith("@") and len(w) > 1:
        raise FollowError(f"is {w} an X handle? write x:{w[1:]} or --x {w[1:]}; a Mastodon "
                          "account looks like @user@instance, a Bluesky one like "
                          "name.bsky.social")
    url = bare_url(w)
    if url:  # x.com/karpathy: what https://x.com/karpathy follows, not a name
        return profile_url(url) or ("blog", url)
    return "", w


# A web address typed without its scheme: a host name (labels and a top-level domain of
# letters), an optional port, then a path, query or fragment, or nothing.
_BARE_URL = re.compile(r"^(?P<host>(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                       r"(?P<tld>[A-Za-z]{2,24}))(?::\d{1,5})?(?P<rest>[/?#]\S*)?$")
# The top-level domains a host typed with no path is taken as a web address for: a word such
# as "St.Louis" or "Dr.Who" stays a word of a name.
_COMMON_TLDS = frozenset({
    "com", "org", "net", "edu", "gov", "int", "mil", "io", "ai", "dev", "app", "blog", "me", "co",
    "info", "biz", "xyz", "page", "site", "tech", "science", "social", "news", "online", "pub",
    "wiki", "club", "space", "link", "live", "today", "world", "works", "systems", "academy",
    "institute", "ink", "fm", "tv", "cc", "ly", "sh", "so", "gg", "im", "ac", "uk", "de", "fr",
    "nl", "ch", "at", "be", "se", "no", "dk", "fi", "es", "it", "pt", "pl", "cz", "ru", "ua", "jp",
    "cn", "kr", "tw", "hk", "sg", "in", "au", "nz", "ca", "us", "br", "mx", "il", "ie", "eu"})
# A server on this machine or the local network typed without its scheme: localhost or an IP
# address, then a port, a path or both (`localhost:8080/feed.xml`, `192.168.1.5/rss`).
_BARE_LOCAL = re.compile(r"^(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])"
                         r"(?::\d{1,5}(?:[/?#]\S*)?|[/?#]\S*)$", re.IGNORECASE)
# A word of a name that is a web address typed without http:// all the same (`nas:8080/rss`)
_URL_LIKE = re.compile(r"/|:\d")


def bare_url(word: str, any_host: bool = False) -> str:
    """`https://` + `word` when `word` is a web address typed without its scheme
    (`x.com/karpathy`, `karpathy.github.io/feed.xml`, `www.example.org/blog`,
    `lilianweng.github.io`), else "". A host with nothing after it counts only when its
    top-level domain is a common one written in lower case, so that a word of a name
    ("St.Louis", "J.Li") stays one; an arXiv id or category (`2401.01234`,
    `math.GT/0309136`, `cs.AI`) is never a host. `any_host`: a host alone counts whatever its
    domain (`--blog inference.vc` cannot be a name). localhost or an IP address with a port or
    a path (`192.168.1.5:8080/feed.xml`) gets `http://`: a server on the local network
    seldom has a certificate to serve https with."""
    if _BARE_LOCAL.match(word):
        return "http://" + word
    m = _BARE_URL.match(word)
    if m is None:
        return ""
    labels = m["host"].split(".")
    if len(labels) == 2 and labels[0].lower() in ARXIV_ARCHIVES:  # cs.AI, math.GT/0309136
        return ""
    if not m["rest"] and not any_host and labels[0].lower() != "www" and (
            m["tld"] not in _COMMON_TLDS or len(labels[0]) < 2):
        return ""
    return "https://" + word


def profile_url(url: str) -> tuple[str, str] | None:
    """The account or arXiv category a pasted URL shows: ('x', 'karpathy') for
    https://x.com/karpathy, ('bluesky', h) for https://bsky.app/profile/h, ('mastodon',
    '@u@host') for https://host/@u, ('category', 'cs.LG') for https://arxiv.org/list/cs.LG/new;
    None for any other URL (a blog, or its feed)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port  # raises for a port out of range or not a number
    except ValueError:  # not a profile: following it as a blog says what is wrong with it
        return None
    host = host.removeprefix("www.").removeprefix("mobile.")
    segs = [seg for seg in parts.path.split("/") if seg]
    if host in _X_HOSTS:
        handle = segs[0].lstrip("@") if segs else ""
        if not re.fullmatch(r"[A-Za-z0-9_]{1,15}", handle) \
                or handle.lower() in _X_NOT_PROFILES:
            raise FollowError(f"{url} is not an X profile; give the handle, e.g. x:karpathy")
        return "x", handle
    if host == "bsky.app" and len(segs) >= 2 and segs[0] == "profile" and (
            re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]+", segs[1])
            or BLUESKY_DID.fullmatch(segs[1])):
        if len(segs) >= 3 and segs[2] in ("feed", "lists"):
            # a custom feed or list made by the account: following its maker's posts
            # instead, silently, was not what was asked
            raise FollowError(f"{url} is a Bluesky {'list' if segs[2] == 'lists' else 'feed'}, "
                              "not an account; feedbot follows accounts: give "
                              f"https://bsky.app/profile/{segs[1]} to follow its maker")
        return "bluesky", segs[1]
    if host in ("arxiv.org", "export.arxiv.org") and len(segs) >= 2 and segs[0] == "list" \
            and _ARXIV_CATEGORY.match(segs[1]):
        return "category", segs[1]
    if segs and segs[0].lower().endswith(".rss") and len(segs) == 1:
        segs = [segs[0][:-4]]  # https://host/@u.rss: the feed Mastodon gives an account
    elif len(segs) == 2 and segs[1].isdigit():
        segs = segs[:1]  # https://host/@u/113…: one of the account's posts
    if len(segs) == 1 and segs[0].startswith("@") and port is None \
            and not segs[0].lower().endswith((".atom", ".xml", ".json")) \
            and re.fullmatch(r"[a-z0-9.-]+\.[a-z]+", host) \
            and not any(host == h or host.endswith("." + h) for h in _NOT_FEDIVERSE):
        account = segs[0] if segs[0].count("@") == 2 else f"{segs[0]}@{host}"
        if _MASTODON.match(account):
            return "mastodon", account
    return None


def _put(values: dict[str, Any], key: str, value: str) -> None:
    if key in values:
        raise FollowError(f"{key} given twice ({values[key]!r} and {value!r})")
    values[key] = value.strip()


def _request(values: dict[str, Any]) -> FollowRequest:
    weight = values.pop("weight", None)
    if weight is not None:
        try:
            weight = float(weight)
        except ValueError:
            raise FollowError(f"--weight must be a number, not {weight!r}") from None
        if weight < 0:
            raise FollowError("--weight must be 0 or more")
    check = not values.pop("no_check", False)
    for key, value in values.items():
        if isinstance(value, str) and control_char(value) is not None:
            raise FollowError(f"{key} {value!r} contains a newline, tab or other control "
                              "character; write it on one line")
    for key in ("x", "bluesky", "mastodon"):  # --x https://x.com/karpathy and the like
        value = values.get(key, "")
        if "/" in value and not value.lower().startswith(("http://", "https://")):
            value = bare_url(value) or value  # --x x.com/karpathy; a handle has no '/'
        if value.lower().startswith(("http://", "https://")):
            place, account = profile_url(value) or ("", "")
            if place != key:
                raise FollowError(f"{value} is not a profile URL on {PLACE_NAMES[key]}")
            values[key] = account
    if values.get("blog"):  # feed://…, HTTPS://…, karpathy.github.io/feed.xml
        values["blog"] = bare_url(values["blog"], any_host=True) or feed_url(values["blog"])
    if values.get("mastodon"):
        values["mastodon"] = "@" + values["mastodon"].lstrip("@")
    for key in ("x", "bluesky"):
        if values.get(key):
            values[key] = values[key].lstrip("@")
    req = FollowRequest(weight=weight, check=check, **values)
    if req.category:
        if req.places or req.replies or req.retweets:
            raise FollowError(f"an arXiv category ({req.category}) is followed on its own, "
                              "not as a person's place; follow the person separately")
        return replace(req, category=arxiv_category(req.category))
    if not req.places and not (req.name and (req.replies or req.retweets
                                             or req.weight is not None)):
        raise FollowError(f"nothing to follow: give at least one place{_url_hint(req.name)}; "
                          f"usage: {USAGE}")
    return req


def _url_hint(name: str) -> str:
    """For a name with a word that looks like a web address (`nas:8080/feed.xml`, a host
    that `bare_url` does not take without its scheme): to give it with one."""
    word = next((w for w in name.split() if _URL_LIKE.search(w)), "")
    return f" (is {word} a web address? write it with http:// or https://)" if word else ""


# --- checking a blog URL once ---------------------------------------------------------------

@dataclass(frozen=True)
class FeedCheck:
    url: str  # the feed's URL
    title: str  # the feed's title ('' when it has none)
    page: str = ""  # the web page that advertised it, when the URL given was a page
    moved: str = ""  # the URL given (or advertised) that redirected here permanently
    plain: str = ""  # why a plain-http address was not followed, or was read on the way

    def moved_note(self) -> str:
        """"OLD moved permanently to NEW; " before the answer to a follow, else "": the user
        gave one URL, and sources.yaml now says another. Also what `plain` says: the user
        gave https, and the server pointed to plain http."""
        moved = f"{self.moved} moved permanently to {self.url}; " if self.moved else ""
        return moved + (f"{self.plain}; " if self.plain else "")


class _LinkFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.feeds: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "link" and "alternate" in a.get("rel", "").lower().split() \
                and a.get("type", "").lower().split(";")[0].strip() in FEED_TYPES \
                and a.get("href"):
            self.feeds.append(a["href"].strip())
        self._in_title = tag == "title" and not self.title

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def find_feed_links(page: str, base_url: str) -> tuple[list[str], str]:
    """(feed URLs a page advertises with <link rel="alternate">, resolved; the page title).

    An href too malformed to resolve is returned as written: `url_problem` says what is wrong.
    """
    finder = run_parser(_LinkFinder(), page)
    urls = []
    for href in finder.feeds:
        try:
            urls.append(urljoin(base_url, href))
        except ValueError:  # "Invalid IPv6 URL": kept as written, for the caller to refuse
            urls.append(href)
    return list(dict.fromkeys(urls)), " ".join(finder.title.split())


def _looks_html(content: bytes, content_type: str) -> bool:
    return "html" in content_type.lower() or looks_html(content)


async def discover_feed(client: httpx.AsyncClient, url: str) -> FeedCheck:
    """Is `url` a feed, or a page that advertises one? Raises FollowError with the reason."""
    got = await _fetch(client, url)
    try:
        parsed = parse_feed(got.content, "follow-check", base_url=got.url,
                            content_type=got.content_type)
        return _checked(url, got, parsed.title)
    except FeedError as e:
        if not _looks_html(got.content, got.content_type):
            raise FollowError(f"{url} is not a feed ({e})") from None
    links, page_title = find_feed_links(got.content.decode("utf-8", "replace"), got.url)
    if not links:
        raise FollowError(f"{url} is a web page that advertises no feed (no <link rel=\"alternate"
                          "\" type=\"application/rss+xml\"> or Atom/JSON Feed link); give the "
                          "feed's own URL")
    usable = [link for link in links if not url_problem(link)]
    if not usable:
        raise FollowError(f"{url} advertises {links[0]!r}, which is {url_problem(links[0])}; "
                          "give the feed's own URL")
    feed = await _fetch(client, usable[0])
    try:
        parsed = parse_feed(feed.content, "follow-check", base_url=feed.url,
                            content_type=feed.content_type)
    except FeedError as e:
        raise FollowError(f"{url} advertises {usable[0]}, but that is not a feed ({e})") from None
    checked = _checked(usable[0], feed, parsed.title or page_title, page=url)
    if checked.plain or not (page_plain := _plain_http(url, got)):
        return checked
    return replace(checked, plain=f"{page_plain}, so the feed it advertises was found over "
                                  "plain http")


def _checked(url: str, got: Fetched, title: str, page: str = "") -> FeedCheck:
    """The feed fetched from `url`, to be followed where it moved for good (301, 308): kept
    at the old address, every collect asked the user to update it, and `follow OLD` after
    `follow NEW` followed the same feed twice. A temporary redirect (302, 307) keeps `url`.

    An https `url` that redirects to plain http is kept as given, whatever the redirect: on
    the server's word alone (or a network attacker's, who can answer in its place) the file
    would say http, and every later collect would go unencrypted from its first request. The
    answer says so, and how to follow the http address if that is what the user wants."""
    plain = _plain_http(url, got)
    if plain:
        return FeedCheck(url, title, page, plain=f"{plain}, so its posts come unencrypted; "
                                                 "sources.yaml keeps the https address given "
                                                 "(give the http one yourself to follow that "
                                                 "instead)")
    final = _moved_url(url, got)
    return FeedCheck(final, title, page, moved=url if final != url else "")


def _plain_http(url: str, got: Fetched) -> str:
    """"URL redirects to plain http (TARGET)" when the https `url` was answered, through
    redirects, over plain http; else "". Passwords are shown as ***."""
    if urlsplit(url).scheme.lower() != "https" or urlsplit(got.url).scheme.lower() != "http":
        return ""
    return f"{shown_url(url)} redirects to plain http ({shown_url(got.url)})"


def _moved_url(url: str, got: Fetched) -> str:
    """`got.moved_to` (where `url` moved permanently; "" for no such move), with the password
    of `url` in place of the *** it shows; `url` when the move's user:password may not be
    the ones `url` gave: the redirect named its own, not known here (shown as ***, or as a
    user with no password). The password is put back only on the origin `url` gave it for,
    as `fetch` sends it: a move to another host shows a user:password only when a redirect
    named them, and the user's password must not go there."""
    if not got.moved_to:
        return url
    moved = urlsplit(got.moved_to)
    if "@" not in moved.netloc:
        return got.moved_to
    shown, _, hostport = moved.netloc.rpartition("@")
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    if not userinfo or urlsplit(shown_url(url)).netloc.rpartition("@")[0] != shown \
            or _origin(got.moved_to) != _origin(url):
        return url
    return urlunsplit(moved._replace(netloc=f"{userinfo}@{hostport}"))


async def _fetch(client: httpx.AsyncClient, url: str) -> Any:
    try:
        return await fetch(client, url)
    except SourceError as e:
        raise CheckFailed(f"cannot check {url}: {e} (use --no-check to follow it anyway)") \
            from None


def check_feed(url: str, http: httpx.AsyncClient | None = None) -> FeedCheck:
    """Synchronous `discover_feed` with its own event loop (and client, unless given)."""
    async def run() -> FeedCheck:
        if http is not None:
            return await discover_feed(http, url)
        async with make_client() as client:
            return await discover_feed(client, url)

    return asyncio.run(run())


# --- follow ---------------------------------------------------------------------------------

def follow(path: Path, req: FollowRequest, check: bool = True,
           http: httpx.AsyncClient | None = None) -> str:
    """Add a person, places of an existing person, or a blog. Returns the message to show."""
    found: FeedCheck | None = None
    if req.blog:
        _check_url(req.blog)
    doc = _read_doc(Path(path))
    req = _by_name(doc, req)
    # a blog followed already: a new weight, no fetch
    known = req.is_blog_only and _followed_blog(doc, req.blog) is not None
    try:
        _apply(req, None, doc)  # a dry run (on this copy): refuse duplicates before fetching
    except NothingToChange:
        raise
    except FollowError:
        hit = _find(doc, req.name) if req.name else None
        if not (req.blog and check and req.check and hit is not None and hit[0] == "people"
                and hit[2].get("blog")):
            raise
        # Their blog, given by its page: the page's feed may be the one followed already,
        # so the edit decides, with that feed.
    if req.blog and check and req.check and not known:
        found = check_feed(req.blog, http)
        req = replace(req, blog=found.url)
    try:
        _, msg = edit_sources(Path(path), lambda doc: _apply(req, found, doc))
    except FollowError as e:  # `follow OLD` after `follow NEW`: "already following NEW"
        if found is None or not found.moved_note():
            raise
        raise type(e)(found.moved_note() + str(e)) from None
    if found is not None:
        msg = found.moved_note() + msg
    if found is not None and found.page:
        msg += f" (feed found on {found.page})"
    elif req.blog and found is None and not known:
        msg += f" (not checked{NOT_CHECKED_PAGE if looks_like_page(req.blog) else ''})"
    if req.x and not x_token():
        msg += "; note: X_BEARER_TOKEN is not set, so X sources stay off until it is"
    return str(msg)


def _by_name(doc: CommentedMap, req: FollowRequest) -> FollowRequest:
    """`follow karpathy.github.io --weight 2`, where `karpathy.github.io` is the name of an
    entry followed already (a blog named by its host, someone by their Bluesky handle on their
    own domain) and no followed feed's URL: a new weight for that entry, as before a URL could
    be typed without https://, not a second blog at https://karpathy.github.io."""
    if not (req.typed and req.is_blog_only and req.weight is not None) \
            or _followed_blog(doc, req.blog) is not None or _find(doc, req.typed) is None:
        return req
    return replace(req, name=req.typed, blog="", typed="")


# --no-check follows a URL exactly as given (the site may be down, or refuse robots), but
# collecting reads only feeds: a URL that looks like a web page is followed with a warning.
NOT_CHECKED_PAGE = (": it looks like a web page, not a feed, and feedbot collects only feeds; "
                    "if collecting it fails, unfollow it and follow the feed's own URL, or "
                    "follow the page without --no-check so that feedbot finds its feed")
_FEED_WORDS = re.compile(r"feed|rss|atom|xml|json|syndication", re.IGNORECASE)


def looks_like_page(url: str) -> bool:
    """Whether a URL looks like a web page rather than a feed, by its path and query alone
    (no fetch): `https://someone.github.io/`, `/blog`, `/about.html` do; `/feed`, `/index.xml`,
    `/rss/`, `?format=rss` do not."""
    parts = urlsplit(url)
    if parts.path.lower().endswith((".html", ".htm")):
        return True
    return not (_FEED_WORDS.search(parts.path) or _FEED_WORDS.search(parts.query))


def _read_doc(path: Path) -> CommentedMap:
    """The current file, parsed for a dry run (ConfigError, with a hint, when missing/broken)."""
    load_config(path)
    doc = parse_yaml(path.read_text(encoding="utf-8"), path)
    return doc if doc is not None else CommentedMap()


def _apply(req: FollowRequest, found: FeedCheck | None, doc: CommentedMap) -> str:
    if req.is_query:
        return _add_query(doc, req)
    if (req.replies or req.retweets) and not req.x:
        hit = None if req.is_blog_only else _find(doc, req.name or _default_name(req))
        if hit is None or hit[0] != "people" or not hit[2].get("x"):
            raise FollowError("--replies and --retweets are for X: give the X handle too "
                              "(--x HANDLE)")
    return _add_blog(doc, req, found) if req.is_blog_only else _add_person(doc, req)


def _add_query(doc: CommentedMap, req: FollowRequest) -> str:
    """An arXiv category as an `arxiv:` entry, `{name: cs.LG, category: cs.LG}`."""
    cat = req.category
    for section, _, entry in _entries(doc):
        if section == "arxiv" and _same_category(entry, cat):
            if req.name and name_key(req.name) != name_key(str(entry["name"])):
                raise FollowError(f"already following arXiv {cat} (as {entry['name']!r})")
            if req.weight is not None and not _same_weight(doc, entry, req.weight):
                return _reweigh(doc, entry, req.weight)
            raise NothingToChange(f"already following arXiv {cat} (as {entry['name']!r}); "
                                  "nothing to change")
    name = req.name or cat
    existing = _find(doc, name)
    if existing is not None:
        raise FollowError(f"the name {name!r} is already used in {existing[0]}; give another "
                          f"name, e.g. follow \"{cat} papers\" --category {cat}")
    entry = CommentedMap([("name", name), ("category", cat)])
    if req.weight is not None:
        entry["weight"] = req.weight
    seq = doc.get("arxiv")
    if isinstance(seq, CommentedSeq) and len(seq) and seq.fa.flow_style() is False \
            and isinstance(seq[-1], CommentedMap) and seq[-1].fa.flow_style():
        entry.fa.set_flow_style()  # `- {name: cs.CV, category: cs.CV}`, like the others
    _append_item(doc, "arxiv", entry)
    return f"following arXiv {cat} (new papers in that category) as {name!r}"


def _same_category(entry: CommentedMap, cat: str) -> bool:
    """Whether an `arxiv:` entry follows the category `cat`: `category: cs.LG` or the query
    `cat:cs.LG` alone."""
    return str(entry.get("category", "")).casefold() == cat.casefold() \
        or str(entry.get("query", "")).strip().casefold() == f"cat:{cat}".casefold()


def _check_url(url: str) -> None:
    problem = url_problem(url)
    if problem:
        raise FollowError(f"{url!r} is {problem}")


def _add_blog(doc: CommentedMap, req: FollowRequest, found: FeedCheck | None) -> str:
    taken = _taken(doc)
    followed = _followed_blog(doc, req.blog)
    if followed is not None and req.weight is not None \
            and not _same_weight(doc, followed, req.weight):  # `follow URL --weight 2`
        return _reweigh(doc, followed, req.weight)
    _refuse_followed_url(doc, req.blog, again=True, weight=req.weight)
    title = found.title if found is not None else ""
    name = unique_name(title or _host(req.blog), req.blog, taken)
    entry = CommentedMap([("name", name), ("url", req.blog)])
    if req.weight is not None:
        entry["weight"] = req.weight
    _append_item(doc, "blogs", entry)
    return f"following blog {name!r}: {req.blog}"


def _followed_blog(doc: CommentedMap, url: str) -> CommentedMap | None:
    """The `blogs:` entry that follows the feed `url`, if any."""
    return next((entry for section, _, entry in _entries(doc) if section == "blogs"
                 and _same_place("blog", str(entry.get("url", "")), url)), None)


def _weight_of(doc: CommentedMap, entry: CommentedMap) -> float | None:
    """The weight an entry is collected with, as `config.expand_sources` takes it: its own
    (`weight: "1.5"` is a number too; `weight:` with no value is none), else `defaults.weight`,
    else 1. None for a value that is no number (the file's check refuses it first)."""
    defaults = doc.get("defaults")
    for value in (entry.get("weight"),
                  defaults.get("weight") if isinstance(defaults, dict) else None):
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return 1.0


def _set_weight(doc: CommentedMap, entry: CommentedMap, weight: float) -> str:
    """Give an entry followed already another weight; what changed: "2 (was 1.5)"."""
    was = _weight_of(doc, entry)
    if "weight" in entry:
        entry["weight"] = weight
    else:
        _insert_key(entry, len(entry), "weight", weight)
    return f"{weight:g}" + (f" (was {was:g})" if was is not None else "")


def _reweigh(doc: CommentedMap, entry: CommentedMap, weight: float) -> str:
    """Give a blog or an arXiv entry followed already another weight; the message."""
    return f"{entry['name']}: weight {_set_weight(doc, entry, weight)}"


def _same_weight(doc: CommentedMap, entry: CommentedMap, weight: float | None) -> bool:
    """Whether a request's weight (None: not given) leaves the entry's as it is."""
    return weight is None or _weight_of(doc, entry) == weight


def _owner(doc: CommentedMap, place: str, value: str) -> str | None:
    """The name of the person followed on this place, if any."""
    for section, _, entry in _entries(doc):
        if section == "people" and entry.get(place) \
                and _same_place(place, str(entry[place]), value):
            return str(entry["name"])
    return None


def _add_person(doc: CommentedMap, req: FollowRequest) -> str:
    name = req.name
    if not name:  # `follow x:ada`: a request about the person followed there, if there is one
        owners = {_owner(doc, place, value) for place, value in req.places.items()}
        if len(owners) == 1:
            name = owners.pop() or ""
    name = name or _default_name(req)
    existing = _find(doc, name)
    if existing is not None and existing[0] != "people" and not req.places \
            and req.weight is not None and not (req.replies or req.retweets):
        if _same_weight(doc, existing[2], req.weight):  # `follow "Lil'Log" --weight 2`
            raise NothingToChange(f"already following {existing[2]['name']} with weight "
                                  f"{req.weight:g}; nothing to change")
        return _reweigh(doc, existing[2], req.weight)
    if existing is not None and existing[0] != "people":
        raise FollowError(f"the name {name!r} is already used in {existing[0]}; choose another")
    for place, value in req.places.items():
        _refuse_followed_place(doc, place, value, except_name=name)
    if existing is None:
        if not req.places:  # `follow NAME --weight 2`: a change, for someone not followed
            close = _close_name(doc, name)
            if close:
                raise FollowError(f"not following anyone named {name!r}; did you mean "
                                  f"{close!r}?")
            raise FollowError(f"not following anyone named {name!r}; give a place to follow "
                              f"them on; usage: {USAGE}")
        entry = CommentedMap([("name", name)])
        for key in PERSON_KEYS[1:]:
            value = _person_value(req, key)
            if value is not None:
                entry[key] = value
        _append_item(doc, "people", entry)
        return f"following {name} on {_places_text(req.places)}"
    person = existing[2]
    added = _merge_person(doc, person, req)
    if not added:
        on = f" on {_places_text(req.places)}" if req.places else ""
        raise NothingToChange(f"already following {person['name']}{on}; nothing to change")
    return f"{person['name']}: {_changes_text(added)}"


def _changes_text(changes: dict[str, str]) -> str:
    """What `_merge_person` changed: "added X (@ada); replies on; weight 2 (was 1.5)"."""
    places = {k: v for k, v in changes.items() if k in PLACE_NAMES}
    parts = [f"added {_places_text(places)}"] if places else []
    parts += [f"{key} {value}" for key, value in changes.items() if key not in PLACE_NAMES]
    return "; ".join(parts)


def _merge_person(doc: CommentedMap, person: CommentedMap, req: FollowRequest
                  ) -> dict[str, str]:
    """Add the request's new places (and weight) to an existing person; refuse conflicts."""
    added: dict[str, str] = {}
    for place, value in req.places.items():
        have = person.get(place)
        if have is None:
            added[place] = value
        elif _same_place(place, str(have), value):
            continue
        else:
            raise FollowError(f"{person['name']} already has {place}: {have}; unfollow them "
                              "first or edit sources.yaml to change it")
    for place, value in added.items():
        _insert_key(person, _place_position(person, place), place, value)
    for flag in ("replies", "retweets"):
        if getattr(req, flag) and not person.get(flag):
            _insert_key(person, len(person), flag, True)
            added[flag] = "on"
    if req.weight is not None and not _same_weight(doc, person, req.weight):
        added["weight"] = _set_weight(doc, person, req.weight)
    return added


def _place_position(person: CommentedMap, place: str) -> int:
    """Where a new place goes: after `name` and the places listed before it in PLACES."""
    before = {"name", *PLACES[: PLACES.index(place)]}
    keys = list(person)
    return max((keys.index(k) + 1 for k in keys if k in before), default=0)


def _person_value(req: FollowRequest, key: str) -> Any:
    if key in PLACES:
        return getattr(req, key) or None
    if key == "weight":
        return req.weight
    if key in ("replies", "retweets"):
        return True if getattr(req, key) else None
    return None


def _default_name(req: FollowRequest) -> str:
    if req.arxiv:
        return req.arxiv
    if req.mastodon:
        return req.mastodon
    if req.bluesky:
        return req.bluesky
    if req.x:
        return f"@{req.x}"
    return _host(req.blog)


def _places_text(places: dict[str, str]) -> str:
    parts = []
    for place, value in places.items():
        if place in PLACE_NAMES:
            shown = f"@{value}" if place == "x" else value
            parts.append(f"{PLACE_NAMES[place]} ({shown})")
        else:
            parts.append(f"{place} {value}")
    return ", ".join(parts)


# --- unfollow -------------------------------------------------------------------------------

def unfollow(path: Path, name: str) -> str:
    """Remove a person, blog or arXiv query by name (case-insensitive), or one place of a person
    by its source name (`Andrej Karpathy/x`). Returns the message."""
    def mutate(doc: CommentedMap) -> str:
        hit = _find(doc, name)
        if hit is None and (place_hit := _find_place(doc, name)) is not None:
            return _drop_place(doc, *place_hit)
        if hit is None and (done := _unfollow_place(doc, name)) is not None:
            return done
        if hit is None:
            close = _close_name(doc, name)
            hint = _site_hint(doc, name) or (f"; did you mean {close!r}?" if close else
                                             "; `feedbot sources` (/sources in Telegram) "
                                             "lists the names")
            raise FollowError(f"not following anyone or anything named {name!r}{hint}")
        section, index, entry = hit
        what = "" if section != "people" else \
            " (" + ", ".join(PLACE_NAMES[p] for p in PLACES if entry.get(p)) + ")"
        _delete_item(doc, section, index)
        return f"unfollowed {entry['name']}{what}"

    _, msg = edit_sources(Path(path), mutate)
    return str(msg)


def _unfollow_place(doc: CommentedMap, word: str) -> str | None:
    """`unfollow` of what `follow` takes: `x:karpathy`, `@ada@sigmoid.social`, a profile URL,
    a feed's URL, an arXiv listing URL. The blog, category or person's place followed there is
    removed (the message), else None."""
    if len(word.split()) != 1:
        return None
    try:
        place, value = classify_word(word)
    except FollowError:  # "@ada": said when following; here, not a place followed
        return None
    for section, index, entry in _entries(doc):
        if (section == "blogs" and place == "blog"
                and _same_place("blog", str(entry.get("url", "")), value)) \
                or (section == "arxiv" and place == "category"
                    and _same_category(entry, value)):
            _delete_item(doc, section, index)
            return f"unfollowed {entry['name']}"
        if section == "people" and place in PLACES and entry.get(place) \
                and _same_place(place, str(entry[place]), value):
            return _drop_place(doc, index, entry, place)
    return None


def _site_hint(doc: CommentedMap, word: str) -> str:
    """For a URL no feed followed has: what is followed from the same site, by the name that
    unfollows it (a blog followed by its page is stored as the feed found there), else ""."""
    try:
        place, value = classify_word(word) if len(word.split()) == 1 else ("", "")
    except FollowError:
        return ""
    host = (urlsplit(value).hostname or "").removeprefix("www.") if place == "blog" else ""
    if not host:
        return ""
    names = [str(entry["name"]) + ("" if section == "blogs" else f"/{where}")
             for section, _, entry in _entries(doc) for where, feed in _entry_feeds(section, entry)
             if (urlsplit(feed).hostname or "").removeprefix("www.") == host]
    if not names:
        return ""
    listed = ", ".join(repr(n) for n in names[:5])
    return (f"; from {host}, feedbot follows the feed of {listed}: "
            f"unfollow {'it' if len(names) == 1 else 'one'} by that name")


def _find_place(doc: CommentedMap, name: str) -> tuple[int, CommentedMap, str] | None:
    """(index, person, place) for a source name such as `Andrej Karpathy/x`."""
    person_name, slash, place = " ".join(name.split()).rpartition("/")
    place = place.strip().lower()
    if not slash or place not in PLACES:
        return None
    hit = _find(doc, person_name)
    if hit is None or hit[0] != "people" or not hit[2].get(place):
        return None
    return hit[1], hit[2], place


def _drop_place(doc: CommentedMap, index: int, person: CommentedMap, place: str) -> str:
    if not any(person.get(p) for p in PLACES if p != place):  # their only place: all of them
        _delete_item(doc, "people", index)
        return f"unfollowed {person['name']} ({PLACE_NAMES[place]}, their only place)"
    _drop_key(person, place)
    if place == "x":  # X's own options would otherwise wait for the next X handle
        for flag in ("replies", "retweets"):
            if flag in person:
                _drop_key(person, flag)
    return f"unfollowed {person['name']} on {PLACE_NAMES[place]}"


def _drop_key(person: CommentedMap, key: str) -> None:
    """Delete a key of a person; the comment lines after it stay, after the key before it."""
    keys = list(person)
    pos = keys.index(key)
    tail = _take_tail(person, key)
    del person[key]
    _give_tail(person, keys[pos - 1] if pos else list(person)[0], tail)


# --- many blogs at once (OPML import) -------------------------------------------------------

@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)  # names of new blogs entries
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (title or URL, reason)


def add_blogs(path: Path, feeds: Iterable[tuple[str, str, str]]) -> ImportReport:
    """Add (title, feed URL, page URL) entries not already followed, in one atomic edit. A
    title with control characters (a terminal escape, a mis-decoded `\x92` apostrophe) names
    the feed with them made spaces (`unique_name`), as `follow` names a feed by its title: the
    feed was skipped, lost to a character of a name the user never typed.

    The file is not rewritten when nothing is new.
    """
    feeds = list(feeds)
    report = ImportReport()

    def mutate(doc: CommentedMap) -> None:
        report.added.clear()  # an edit may be redone on a file saved meanwhile
        report.skipped.clear()
        followed = {canonical_url(u) for u in _followed_urls(doc)}
        added: dict[str, str] = {}  # canonical URL -> name, of the feeds added by this import
        taken = _taken(doc)
        for title, url, _page in feeds:
            label = title or url
            if control_char(label) is not None:
                label = repr(label)
            problem = url_problem(url)
            if problem:
                report.skipped.append((label, problem))
                continue
            key = canonical_url(url)
            if key in added:  # the same feed twice in the list (http, https)
                report.skipped.append((label, f"the same feed as {added[key]!r} just added"))
                continue
            if key in followed:
                report.skipped.append((label, "already followed"))
                continue
            name = unique_name(title or _host(url), url, taken)
            _append_item(doc, "blogs", CommentedMap([("name", name), ("url", url)]))
            added[key] = name
            report.added.append(name)
        if not report.added:
            raise _NothingToDo

    with contextlib.suppress(_NothingToDo):
        edit_sources(Path(path), mutate)
    return report


class _NothingToDo(Exception):
    pass


MAX_TAKEN_NAME = 100  # characters of a feed's or an OPML outline's title made a source's name


def unique_name(name: str, url: str, taken: set[str]) -> str:
    """`name`, or `name (host)`, or `name (host) 2`... whichever is not taken yet; records it.
    `name` comes from a feed or an OPML file: its control characters become spaces (a name
    cannot hold them, and the user never typed it) and it is cut to `MAX_TAKEN_NAME` (eleven
    1 MB titles made an OPML import write an 11 MB sources.yaml that no command would read)."""
    name = "".join(" " if control_char(c) else c for c in name)
    name = shorten(name, MAX_TAKEN_NAME) or _host(url)
    candidates = [name, f"{name} ({_host(url)})"]
    candidates += [f"{name} ({_host(url)}) {n}" for n in range(2, 100)]
    for candidate in candidates:
        if name_key(candidate) not in taken:
            taken.add(name_key(candidate))
            return candidate
    raise FollowError(f"no free name for {url}")


# --- reading the document -------------------------------------------------------------------

def _entries(doc: CommentedMap) -> Iterator[tuple[str, int, CommentedMap]]:
    for section in ("blogs", "arxiv", "people"):
        seq = doc.get(section)
        if isinstance(seq, list):
            for i, entry in enumerate(seq):
                if isinstance(entry, CommentedMap):
                    yield section, i, entry


def _close_name(doc: CommentedMap, name: str) -> str | None:
    """A followed name the user probably meant: one that starts with `name` in any case
    ("Lil'Log" for "Lil'Log (Lilian Weng)"), else a close spelling."""
    names = list(_names(doc))
    key = name_key(name)
    starts = [n for n in names if name_key(n).startswith(key)]
    if len(starts) == 1:
        return starts[0]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return close[0] if close else None


def _names(doc: CommentedMap) -> Iterator[str]:
    for _, _, entry in _entries(doc):
        yield str(entry.get("name", ""))


def _taken(doc: CommentedMap) -> set[str]:
    """Every name a new entry cannot take (casefolded): the entries' names and the source names
    of people's places (`Ada/x`), which sources.yaml's validation also keeps unique."""
    taken = {name_key(n) for n in _names(doc)}
    for section, _, entry in _entries(doc):
        if section == "people":
            taken |= {name_key(f"{entry.get('name', '')}/{p}") for p in PLACES if entry.get(p)}
    return taken


def _find(doc: CommentedMap, name: str) -> tuple[str, int, CommentedMap] | None:
    want = name_key(name)
    for section, i, entry in _entries(doc):
        if name_key(str(entry.get("name", ""))) == want:
            return section, i, entry
    return None


def _entry_feeds(section: str, entry: CommentedMap) -> Iterator[tuple[str, str]]:
    """(place, feed URL) for every feed an entry is collected from: a blog's url, a person's
    blog and the feeds behind their Bluesky and Mastodon accounts (what `export-opml` lists)."""
    if section == "blogs" and entry.get("url"):
        yield "url", str(entry["url"])
    elif section == "people":
        if entry.get("blog"):
            yield "blog", str(entry["blog"])
        with contextlib.suppress(ValueError):  # not a valid account: no feed to compare
            if entry.get("bluesky"):
                yield "bluesky", bluesky_feed_url(str(entry["bluesky"]))
            if entry.get("mastodon"):
                yield "mastodon", mastodon_feed_url(str(entry["mastodon"]))


def _followed_urls(doc: CommentedMap) -> Iterator[str]:
    for section, _, entry in _entries(doc):
        for _place, url in _entry_feeds(section, entry):
            yield url


def _same_place(place: str, a: str, b: str) -> bool:
    if place == "blog":
        return canonical_url(a) == canonical_url(b)
    return a.lstrip("@").casefold() == b.lstrip("@").casefold()


def _refuse_followed_url(doc: CommentedMap, url: str, except_name: str = "",
                         again: bool = False, weight: float | None = None) -> None:
    """FollowError when `url` is followed already; NothingToChange when it is one of the
    blogs and the request is that blog `again`, with the weight it has (`weight`: None when
    not given)."""
    for section, _, entry in _entries(doc):
        for place, feed in _entry_feeds(section, entry):
            if not _same_place("blog", feed, url):
                continue
            if place == "blog" and name_key(str(entry.get("name", ""))) \
                    == name_key(except_name):
                continue  # the same person's own blog: nothing to change
            on = f" on {PLACE_NAMES[place]}" if place in ("bluesky", "mastodon") else ""
            if again and section == "blogs" and _same_weight(doc, entry, weight):
                raise NothingToChange(f"already following {url} (as {entry['name']!r}); "
                                      "nothing to change")
            raise FollowError(f"already following {url} (as {entry['name']!r}{on})")


def _refuse_followed_place(doc: CommentedMap, place: str, value: str, except_name: str) -> None:
    if place == "blog":
        _refuse_followed_url(doc, value, except_name)
        return
    for section, _, entry in _entries(doc):
        if section == "people" and entry.get(place) \
                and _same_place(place, str(entry[place]), value) \
                and name_key(str(entry.get("name", ""))) != name_key(except_name):
            have = str(entry[place])
            shown = f"@{have}" if place == "x" else have
            raise FollowError(f"already following {PLACE_NAMES[place]} {shown} "
                              f"(as {entry['name']!r})")


def _host(url: str) -> str:
    host = urlsplit(url).hostname or url
    return host.removeprefix("www.")


# --- editing the document with its comments kept --------------------------------------------
# ruamel keeps the comment lines that follow an entry (blank lines, a comment introducing the
# next section) on the last scalar of that entry. Appending or deleting an entry moves those
# lines along, so they stay where they were in the file.

def _section(doc: CommentedMap, name: str) -> CommentedSeq:
    seq = doc.get(name)
    if isinstance(seq, CommentedSeq):
        return seq
    seq = CommentedSeq()
    if name in doc:  # `blogs:` with nothing under it (but perhaps entries commented out)
        doc[name] = seq
        return seq
    present = [k for k in SECTION_ORDER[: SECTION_ORDER.index(name)] if k in doc]
    pos = list(doc).index(present[-1]) + 1 if present else 0
    _insert_key(doc, pos, name, seq)
    return seq


def _slot(container: Any, key: Any) -> tuple[Any, Any]:
    """The (container, key) whose comment holds the lines after container[key]."""
    value = container[key]
    if isinstance(value, (CommentedMap, CommentedSeq)) and value.fa.flow_style():
        return container, key  # `{name: cs.CV, …}`: lines put inside it print before its "}"
    if isinstance(value, CommentedMap) and len(value):
        return _slot(value, list(value)[-1])
    if isinstance(value, CommentedSeq) and len(value):
        return _slot(value, len(value) - 1)
    return container, key


def _token(container: Any, key: Any, create: bool = False) -> CommentToken | None:
    pos = 0 if isinstance(container, CommentedSeq) else 2
    entry = container.ca.items.get(key)
    if entry is None or entry[pos] is None:
        if not create:
            return None
        entry = container.ca.items.setdefault(key, [None, None, None, None])
        entry[pos] = CommentToken("\n", CommentMark(0), None)
    return entry[pos]


def _take_tail(container: Any, key: Any) -> str:
    """Remove and return the full comment lines after container[key] (its own EOL stays)."""
    tok = _token(*_slot(container, key))
    if tok is None or "\n" not in tok.value:
        return ""
    eol, tail = tok.value.split("\n", 1)
    tok.value = eol + "\n"
    return tail


def _give_tail(container: Any, key: Any, tail: str) -> None:
    if tail:
        tok = _token(*_slot(container, key), create=True)
        assert tok is not None
        tok.value = (tok.value if tok.value.endswith("\n") else tok.value + "\n") + tail


def _append_item(doc: CommentedMap, section: str, item: Any) -> None:
    """Append to a top-level list; an empty one hands its trailing lines to the new entry.

    A section that is new and goes between two others takes the lines that ended the one
    before it (a blank line, `# People I follow`): they introduce the next section, so they
    stay just above it."""
    new = section not in doc
    seq = _section(doc, section)
    keys = list(doc)
    pos = keys.index(section)
    if new and 0 < pos < len(keys) - 1:
        tail = _take_following(doc, keys[pos - 1])
    else:
        tail = _take_tail(seq, len(seq) - 1) if len(seq) else _take_key_tail(doc, section)
    seq.append(item)
    _give_tail(seq, len(seq) - 1, tail)


def _take_key_tail(doc: CommentedMap, key: str) -> str:
    tok = _token(doc, key)
    if tok is None or "\n" not in tok.value:
        return ""
    eol, tail = tok.value.split("\n", 1)
    tok.value = eol + "\n"
    return tail


def _indented_head(tail: str) -> tuple[str, str]:
    """`tail` cut after its first lines that are indented comments or entries commented out
    (`  # roadmap: …`, `# - name: …`): those belong to the section above; the rest (a blank
    line, `# People I follow`) introduces what follows."""
    lines = tail.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].lstrip().startswith("#") \
            and (lines[n][:1] in (" ", "\t") or lines[n].lstrip("# ").startswith("- ")):
        n += 1
    return "".join(lines[:n]), "".join(lines[n:])


def _take_following(container: Any, key: Any) -> str:
    """The lines after container[key] that introduce what follows it, removed: its own
    indented comments (`  # roadmap: …`) stay after it (`_indented_head`)."""
    inside, tail = _indented_head(_take_tail(container, key))
    _give_tail(container, key, inside)
    return tail


def _introduced(doc: CommentedMap, keys: list[Any], pos: int) -> bool:
    """Whether a comment line, not indented, stands right above the top-level key at `pos`
    (no blank line between): the file's own words about that section. A section `follow`
    made has none: it takes its place right under the section before."""
    if pos == 0:
        return False
    lines = _lines_above(doc, keys[pos]).splitlines()
    if not lines:  # the lines after the value before, less its own end-of-line comment
        tok = _token(*_slot(doc, keys[pos - 1]))
        lines = (tok.value if tok is not None else "").split("\n")[1:]
        lines = lines[:-1] if lines and not lines[-1] else lines
    return bool(lines) and lines[-1].startswith("#")  # indented: the section before's


def _lines_above(doc: CommentedMap, key: str | None, take: bool = False) -> str:
    """The comment lines ruamel keeps above a top-level key that follows a key with no value
    (`blogs:` and entries commented out under it, then `people:`), as text; `take`: removed."""
    entry = doc.ca.items.get(key) if key is not None else None
    if not entry or not entry[1]:
        return ""
    text = "".join(" " * tok.column + tok.value if tok.value.strip() else tok.value
                   for tok in entry[1])
    if take:
        entry[1] = None
    return text


def _insert_key(m: CommentedMap, pos: int, key: str, value: Any) -> None:
    keys = list(m)
    tail = _take_following(m, keys[pos - 1]) if 0 < pos == len(keys) else ""
    m.insert(pos, key, value)
    _give_tail(m, key, tail)


def _delete_item(doc: CommentedMap, section: str, index: int) -> None:
    seq: CommentedSeq = doc[section]
    tail = _take_tail(seq, index)
    del seq[index]
    if index > 0:
        _give_tail(seq, index - 1, tail)
        return
    if not len(seq):
        _empty_section(doc, section, tail)
        return
    # The first entry went: its trailing lines now open the section.
    tok = _token(doc, section, create=bool(tail))
    if tok is not None:
        tok.value = (tok.value if tok.value.endswith("\n") else tok.value + "\n") + tail


def _empty_section(doc: CommentedMap, section: str, tail: str) -> None:
    """The last entry of a section went. A section with no comment of its own goes too (as a
    `follow` that made it, then `unfollow`, leave the file as it was); one with a comment
    (`blogs:   # none yet`), a comment right above it (`# Blogs: any RSS…`, as the starter
    file has) or indented comment lines under it (entries commented out) stays, empty
    (`blogs:`), so that a follow fills it there, under its comment. The lines that followed
    the entry stay where they were, and so do the lines above a section that goes."""
    keys = list(doc)
    pos = keys.index(section)
    tok = _token(doc, section)
    under = keys[pos + 1] if pos + 1 < len(keys) else None  # its lines are above the next key
    if (tok is None or not tok.value.strip()) and len(keys) > 1 \
            and (pos > 0 or not tail.strip()) and not _lines_above(doc, under) \
            and not _indented_head(tail)[0] and not _introduced(doc, keys, pos):
        above = _lines_above(doc, section, take=True)  # the lines ending the section before
        del doc[section]
        if pos > 0:
            _give_tail(doc, keys[pos - 1], above + tail)
        return
    doc[section] = None
    tok = _token(doc, section, create=True)
    assert tok is not None
    tok.value = (tok.value if tok.value.endswith("\n") else tok.value + "\n") + tail
