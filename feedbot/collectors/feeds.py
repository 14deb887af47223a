"""RSS 2.0 / RSS 1.0 / Atom (feedparser) and JSON Feed: bytes in, Items out.

`parse_feed` is a pure function of the bytes; `collect_feed` does the one conditional GET
through the shared client and hands the body to it. A 304 costs no parsing.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser

from ..config import SourceSpec
from ..http import Fetched, fetch
from ..items import Item, split_arxiv_id
from ..store import SourceState
from ..text import extract_links, html_to_text, shorten
from . import Collected, Context, SourceError

MAX_SUMMARY = 2000
MAX_ITEMS = 500  # items kept from one feed per fetch: the newest by date (feed order if undated)


class FeedError(SourceError):
    """The body is not a feed we can read."""


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    items: list[Item]
    warning: str = ""  # feed was malformed but usable


def parse_feed(content: bytes, source: str, *, base_url: str = "", kind: str = "post",
               person: str = "", content_type: str = "") -> ParsedFeed:
    """Parse any feed format from bytes. Raises FeedError when nothing usable is there.

    The body decides the format, whatever the content type says: `<` is XML, `{` is JSON Feed.
    At most MAX_ITEMS items are kept (the warning says when some were dropped)."""
    head = content[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise FeedError("not a feed: empty response")
    if head.startswith(b"{") or ("json" in content_type.lower() and not head.startswith(b"<")):
        parsed = _parse_json_feed(content, source, base_url, kind, person)
    else:
        parsed = _parse_xml_feed(content, source, base_url, kind, person, content_type)
    return _capped(parsed)


def _capped(parsed: ParsedFeed, limit: int = MAX_ITEMS) -> ParsedFeed:
    """At most `limit` items: the newest by date, undated ones after them in feed order; the
    kept items stay in feed order."""
    if len(parsed.items) <= limit:
        return parsed
    oldest = datetime.min.replace(tzinfo=UTC)
    newest = sorted(range(len(parsed.items)), reverse=True,
                    key=lambda i: parsed.items[i].published or oldest)
    keep = set(newest[:limit])
    items = [it for i, it in enumerate(parsed.items) if i in keep]
    cut = f"kept the {limit} newest of {len(parsed.items)} items"
    return ParsedFeed(parsed.title, items, "; ".join(w for w in (parsed.warning, cut) if w))


def _parse_xml_feed(content: bytes, source: str, base_url: str, kind: str, person: str,
                    content_type: str) -> ParsedFeed:
    if "json" in content_type.lower():  # the body is XML (see parse_feed): say so to feedparser
        content_type = "application/xml"
    d = feedparser.parse(content, response_headers={"content-location": base_url,
                                                    "content-type": content_type or "text/xml"})
    if not d.entries:
        if d.bozo:
            raise FeedError(f"not a feed: {_bozo_reason(d.bozo_exception)}")
        if not d.get("version"):
            raise FeedError("not a feed: no RSS, Atom or JSON Feed content found")
    link = d.feed.get("link") or base_url
    items = [it for e in d.entries if (it := _entry_item(e, source, link, kind, person))]
    if d.entries and not items:
        raise FeedError("feed has entries but none with a link")
    warning = f"malformed feed, read anyway: {_bozo_reason(d.bozo_exception)}" if d.bozo else ""
    return ParsedFeed(html_to_text(d.feed.get("title", "")), items, warning)


def _plain(detail: Any, value: str) -> str:
    """Text of a feed field: HTML is reduced to text, plain text is kept as written."""
    if detail and detail.get("type") == "text/plain":
        return " ".join(str(value).split())
    return html_to_text(value)


def _bozo_reason(exc: Any) -> str:
    text = str(getattr(exc, "getMessage", lambda: exc)()) if exc else "unknown problem"
    return shorten(text, 160)


def _struct_to_dt(st: Any) -> datetime | None:
    if not st:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(st), UTC)
    except (OverflowError, ValueError, TypeError):
        return None


def _body(e: Any) -> str:
    """The entry's text: its HTML content (Atom `content`, RSS `content:encoded`), else the
    longest of its plain contents and its summary. feedparser also files an image's alt text
    (`media:description`, as Mastodon writes it) under `content`, as plain text: taken first,
    it replaced a post's own text and links."""
    contents = [c for c in e.get("content") or [] if c.get("value")]
    for c in contents:
        if "html" in (c.get("type") or ""):
            return str(c["value"])
    options = [str(c["value"]) for c in contents] + [str(e.get("summary") or "")]
    return max(options, key=len)


def _entry_item(e: Any, source: str, base: str, kind: str, person: str) -> Item | None:
    link = e.get("link") or ""
    if not link:
        for candidate in e.get("links", []):
            if candidate.get("rel", "alternate") == "alternate" and candidate.get("href"):
                link = candidate["href"]
                break
    guid = str(e.get("id") or "")
    if not link and guid.startswith(("http://", "https://")):
        link = guid
    link = _web_link(link, base)
    html_body = _body(e)
    summary = shorten(html_to_text(html_body), MAX_SUMMARY)
    title = _plain(e.get("title_detail"), e.get("title", ""))
    if not title:
        title = shorten(summary, 90) if summary else ""
    if not link:  # a digest entry must lead somewhere
        return None
    authors = tuple(dict.fromkeys(
        a for a in (html_to_text(x.get("name", "")) for x in e.get("authors", [])) if a
    )) or ((html_to_text(e["author"]),) if e.get("author") else ())
    published = _struct_to_dt(e.get("published_parsed") or e.get("updated_parsed")
                              or e.get("created_parsed"))
    arxiv_id, version = split_arxiv_id(link) if link else ("", 0)
    links = tuple(extract_links(html_body)) if kind == "social" else ()
    return Item(
        title=title or link, url=link, source=source, kind=kind, authors=authors,
        published=published, summary=summary, guid=guid, arxiv_id=arxiv_id,
        arxiv_version=version, links=links, person=person,
    )


def _parse_json_feed(content: bytes, source: str, base: str, kind: str,
                     person: str) -> ParsedFeed:
    try:
        doc = json.loads(content.decode("utf-8-sig"), strict=False)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FeedError(f"not a feed: invalid JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise FeedError("not a feed: JSON without an 'items' list")
    if "jsonfeed.org" not in str(doc.get("version", "")):
        raise FeedError("not a feed: JSON that is not a JSON Feed (no jsonfeed.org version)")
    base = _str(doc, "home_page_url") or base
    feed_authors = _json_authors(doc)
    items = []
    for e in doc["items"]:
        if not isinstance(e, dict):
            continue
        link = _web_link(_str(e, "url") or _str(e, "external_url"), base)
        body = _str(e, "content_html") or _str(e, "summary") or _str(e, "content_text")
        summary = shorten(html_to_text(body), MAX_SUMMARY)
        title = html_to_text(_str(e, "title")) or shorten(summary, 90)
        if not link:
            continue
        guid = _str(e, "id") or (str(e["id"]) if type(e.get("id")) is int else "")
        published = _iso(e.get("date_published")) or _iso(e.get("date_modified"))
        arxiv_id, version = split_arxiv_id(link) if link else ("", 0)
        items.append(Item(
            title=title or link, url=link, source=source, kind=kind,
            authors=_json_authors(e) or feed_authors, published=published, summary=summary,
            guid=guid, arxiv_id=arxiv_id, arxiv_version=version,
            links=tuple(extract_links(body)) if kind == "social" else (), person=person,
        ))
    if doc["items"] and not items:
        raise FeedError("feed has entries but none with a link")
    return ParsedFeed(html_to_text(_str(doc, "title")), items)


def _str(obj: dict[str, Any], key: str) -> str:
    """A JSON Feed string field; '' when missing or of another type (a number, a list)."""
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _web_link(link: str, base: str) -> str:
    """An absolute http(s) URL, or '' (a `tag:` id is not somewhere a reader can go)."""
    link = link.strip()
    if link and base and not link.startswith(("http://", "https://")):
        if ":" in link.split("/", 1)[0]:  # another scheme (tag:, urn:, mailto:)
            return ""
        link = urljoin(base, link)
    return link if link.startswith(("http://", "https://")) else ""


def _json_authors(obj: dict[str, Any]) -> tuple[str, ...]:
    raw = obj.get("authors") or ([obj["author"]] if isinstance(obj.get("author"), dict) else [])
    if not isinstance(raw, list):
        return ()
    names = (html_to_text(_str(a, "name")) for a in raw if isinstance(a, dict))
    return tuple(dict.fromkeys(n for n in names if n))


_TZ_FIX = re.compile(r"Z$")


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(_TZ_FIX.sub("+00:00", value.strip()))
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def feed_kind(spec: SourceSpec) -> str:
    return "social" if spec.name.endswith(("/bluesky", "/mastodon")) else "post"


async def collect_feed(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
    """Conditional GET, then parse. Raises FetchError / FeedError for the caller to record."""
    got: Fetched = await fetch(ctx.http, spec.target, etag=state.etag,
                               last_modified=state.last_modified, deadline=ctx.deadline)
    if got.not_modified:
        return Collected([], not_modified=True, etag=got.etag, last_modified=got.last_modified)
    parsed = parse_feed(got.content, spec.name, base_url=got.url, kind=feed_kind(spec),
                        person=spec.person, content_type=got.content_type)
    return Collected(parsed.items, etag=got.etag, last_modified=got.last_modified,
                     warning=parsed.warning)
