"""RSS 2.0 / RSS 1.0 / Atom (feedparser) and JSON Feed: bytes in, Items out.

`parse_feed` is a pure function of the bytes; `collect_feed` does the one conditional GET
through the shared client and hands the body to it. A 304 costs no parsing.
"""

from __future__ import annotations

import asyncio
import calendar
import codecs
import email.utils
import functools
import html
import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlparse, urlsplit, urlunparse

import feedparser
from feedparser.datetimes import _parse_date as feedparser_date  # what parse() reads dates with
from feedparser.datetimes import rfc822 as feedparser_rfc822

from ..config import SourceSpec
from ..http import Fetched, FetchError, fetch
from ..items import Item, split_arxiv_id
from ..store import SourceState
from ..text import extract_links, html_to_text, shorten
from . import Collected, Context, SourceError, in_daemon_thread

MAX_SUMMARY = 2000
MAX_TITLE = 300  # an item's title, in characters
MAX_NAME = 200  # a feed's title, an author's name
MAX_AUTHORS = 50  # an item's authors
MAX_ITEMS = 500  # items kept from one feed per fetch: the newest by date (feed order if undated)
MAX_HTML_SCAN = 512 * 1024  # how much of a web page is searched for its feed's <link>
PARSE_TIMEOUT = 60.0  # seconds to parse one feed (10 MB of real Atom entries: 3.4 s here)


class FeedError(SourceError):
    """The body is not a feed we can read."""


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    items: list[Item]
    warning: str = ""  # feed was malformed but usable, or items were left out
    malformed: bool = False  # read anyway: perhaps cut short, so its validators are not kept


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
    return _capped(_bounded(parsed))


def _bounded(parsed: ParsedFeed) -> ParsedFeed:
    """Titles and names cut to a size a digest line can show (the summary is cut as it is
    read): a feed that puts a whole post in its title, or a megabyte in an author's name, made
    a digest entry, and a Telegram message, of that size."""
    items = []
    for it in parsed.items:
        authors = tuple(shorten(a, MAX_NAME) for a in it.authors[:MAX_AUTHORS])
        if len(it.title) > MAX_TITLE or authors != it.authors:
            it = replace(it, title=shorten(it.title, MAX_TITLE), authors=authors)
        items.append(it)
    return replace(parsed, title=shorten(parsed.title, MAX_NAME), items=items)


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
    return replace(parsed, items=items, warning="; ".join(w for w in (parsed.warning, cut) if w))


# What feedparser flags about the HTTP headers rather than the document: a feed served as
# text/xml without a charset (RFC 3023 says us-ascii; countless servers do it) or under a
# non-XML type. The document itself was read as it declares; nothing is wrong with it.
_BENIGN_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


def _parse_xml_feed(content: bytes, source: str, base_url: str, kind: str, person: str,
                    content_type: str) -> ParsedFeed:
    if "json" in content_type.lower():  # the body is XML (see parse_feed): say so to feedparser
        content_type = "application/xml"
    # No Content-Type: the document's own encoding declaration decides (application/xml);
    # "text/xml" made feedparser assume us-ascii and call every UTF-8 feed malformed.
    # sanitize_html=False: every text taken from the feed goes through `html_to_text`, which
    # keeps only visible text; feedparser's sanitizer only added time, quadratic in markup
    # such as an escaped "<!--" repeated (547 KB took 9 s).
    content = _defused(_no_surrogates(_mended_utf8(_trimmed(content), content_type)))
    d = feedparser.parse(content, sanitize_html=False,
                         response_headers={"content-location": base_url,
                                           "content-type": content_type or "application/xml"})
    bozo = d.bozo and not isinstance(d.bozo_exception, _BENIGN_BOZO)
    if not d.entries:
        if looks_html(content) and (bozo or not d.get("version")):
            raise FeedError(_html_page(content, base_url))
        if bozo:
            raise FeedError(f"not a feed: {_bozo_reason(d.bozo_exception)}")
        if not d.get("version"):
            raise FeedError("not a feed: no RSS, Atom or JSON Feed content found")
    link = d.feed.get("link") or base_url
    # Atom (RFC 4287 §4.2.1): an entry without an author has the feed's. RSS says nothing of
    # the kind, and a channel's managingEditor is seldom every post's author.
    inherited = _names(d.feed) if str(d.get("version", "")).startswith("atom") else ()
    encoding = str(d.get("encoding") or "")
    written = _written_urls(content, encoding)
    relative = _relative_permalinks(content, encoding, base_url)
    pairs = [(it, _enclosure(e, link)) for e in d.entries
             if (it := _entry_item(e, source, link, kind, person, inherited, written, relative))]
    items = _distinct([it for it, _ in pairs], [enc for _, enc in pairs], written)
    if bozo:
        items = [_guid_link_decoded(it, link) for it in items]
    if d.entries and not items:
        raise FeedError("feed has entries but none with a link")
    warning = f"malformed feed, read anyway: {_bozo_reason(d.bozo_exception)}" if bozo else ""
    return ParsedFeed(html_to_text(d.feed.get("title", "")), items, warning, malformed=bozo)


# feedparser looks for an e-mail address in every RSS author-like field with a regular
# expression that takes time quadratic in the longest run of letters, digits and ".+-_" there:
# 40 kB of one author took 7 s, a megabyte hours, and no other source was fetched meanwhile (the
# parse runs on the event loop). Such runs are cut to RUN_LIMIT bytes in those fields' text
# before parsing, which no name or address comes near. Only ASCII bytes are touched, so the cut
# is safe in any ASCII-compatible encoding.
RUN_LIMIT = 64
_AUTHOR_TEXT = re.compile(rb"<(?:[\w.-]+:)?(?:author|creator|managingeditor|webmaster|publisher|"
                          rb"owner|email|name)\b[^<>]*>([^<]*(?:<(?!/)[^<]*)*)", re.IGNORECASE)
_LONG_RUN = re.compile(rb"(?<![A-Za-z0-9_.+\-])([A-Za-z0-9_.+\-]{%d})[A-Za-z0-9_.+\-]+"
                       % RUN_LIMIT)


_BOM = b"\xef\xbb\xbf"


def _trimmed(content: bytes) -> bytes:
    """`content` without the blank lines and spaces before its first `<` (after a UTF-8 BOM):
    an XML declaration after them made the whole document malformed to the XML parser, so
    a feed with a stray newline up front (a classic WordPress plugin fault) never kept its
    validators."""
    bom = _BOM if content.startswith(_BOM) else b""
    rest = content[len(bom):]
    stripped = rest.lstrip(b" \t\r\n")
    return bom + stripped if stripped is not rest and stripped.startswith(b"<") else content


_DECLARED = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._-]+)", re.IGNORECASE)


def _cp1252_byte(e: UnicodeError) -> tuple[str, int]:
    if not isinstance(e, UnicodeDecodeError):
        raise e
    return e.object[e.start:e.end].decode("cp1252", "replace"), e.end


codecs.register_error("feedbot.cp1252", _cp1252_byte)


def _mended_utf8(content: bytes, content_type: str) -> bytes:
    """A document in UTF-8 (as it declares, or by default) with a few bytes that are not: each
    such byte read as Windows-1252 (a smart quote pasted from Word), the rest as UTF-8. Left
    to feedparser, one such byte made it read the whole feed as Windows-1252, and every other
    accent, emoji and CJK character of the feed turned to mojibake."""
    try:
        content.decode("utf-8")
        return content
    except UnicodeDecodeError:
        pass
    if content.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in content[:4]:
        return content  # UTF-16 or UTF-32
    declared = _DECLARED.match(content[:512].removeprefix(_BOM))
    charset = _CHARSET.search(content_type)
    utf8 = ("utf-8", "utf8")
    if (declared and declared.group(1).decode().lower() not in utf8) or \
            (charset and charset.group(1).lower() not in utf8):
        return content
    return content.decode("utf-8", "feedbot.cp1252").encode("utf-8")


_CHARREF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));")


def _no_surrogates(content: bytes) -> bytes:
    """`content` with each character reference to a UTF-16 surrogate (`&#xD800;`, `&#55296;`)
    made U+FFFD: feedparser cannot encode such a character and lost the whole feed to it."""
    if b"&#" not in content:
        return content

    def fix(m: re.Match[bytes]) -> bytes:
        code = int(m.group(1), 16) if m.group(1) else int(m.group(2))
        return b"&#xFFFD;" if 0xD800 <= code <= 0xDFFF else m.group(0)

    return _CHARREF.sub(fix, content)


def _defused(content: bytes) -> bytes:
    """`content` with runs longer than RUN_LIMIT cut in the text of author-like elements."""
    def cut(m: re.Match[bytes]) -> bytes:
        start, end = m.span(1)
        text = m.group(1)
        short = _LONG_RUN.sub(rb"\1", text)
        return m.group(0) if short == text else \
            m.string[m.start():start] + short + m.string[end:m.end()]

    if not _LONG_RUN.search(content):
        return content
    return _AUTHOR_TEXT.sub(cut, content)


_HTML_START = re.compile(rb"^(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]",
                         re.IGNORECASE | re.DOTALL)


def looks_html(content: bytes) -> bool:
    """Whether `content` starts as an HTML page does (after a BOM, an XML declaration or
    comments): a web page where a feed was expected."""
    return bool(_HTML_START.match(content[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")))


def _html_page(content: bytes, base_url: str) -> str:
    """Why an HTML page is not a feed, with the feed it advertises (<link rel="alternate">)
    when it names one: the user gave a blog's home page rather than its feed."""
    from ..follow import find_feed_links  # follow imports this module

    links, _ = find_feed_links(content[:MAX_HTML_SCAN].decode("utf-8", "replace"), base_url)
    feeds = [u for u in links if _web_link(u, "")]
    if not feeds:
        return "not a feed: a web page, which advertises no feed; give the feed's own URL"
    return f"not a feed: a web page; its feed is {shorten(feeds[0], 200)} (use that URL)"


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


# Before any web feed existed: a placeholder such as Go's zero time (0001-01-01, which Hugo
# writes for an unset date) or the Unix epoch, not a publication date. Kept, it filed the entry
# decades back, where no digest ever looks.
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)

# Month names feedparser does not know (it reads English only), by their first three letters;
# French juin and juillet by four. A feed in Portuguese writes "Seg, 24 Set 2018 19:18:49".
_MONTHS = {
    "gen": "Jan", "ene": "Jan", "jän": "Jan", "fev": "Feb", "fév": "Feb", "mär": "Mar",
    "mrz": "Mar", "avr": "Apr", "abr": "Apr", "mag": "May", "mai": "May", "juin": "Jun",
    "giu": "Jun", "juil": "Jul", "lug": "Jul", "ago": "Aug", "aoû": "Aug", "set": "Sep",
    "ott": "Oct", "out": "Oct", "okt": "Oct", "dic": "Dec", "dez": "Dec", "déc": "Dec",
}
_RFC822ISH = re.compile(r"^\s*(?:[^\W\d_]+\.?,?\s*)?(\d{1,2})\s+([^\W\d_]+)\.?\s+(\d{4})(.*)$")


# Zone abbreviations that RFC 822 does not define and feedparser reads as UTC (it knows UT, GMT,
# Z, the US zones, MET and MEST, and a few military letters), in minutes east of UTC. Only
# abbreviations with one meaning in use: IST is India (+05:30), Ireland (+01) and Israel (+02),
# CST US Central and China, AST Atlantic and Arabia, SST Samoa and Singapore; those keep what
# RFC 822 and feedparser say (CST -06, AST -04, IST and SST UTC, as any zone unknown to them:
# the date is kept, a few hours off at worst, rather than dropped).
_ZONES = {
    "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "CEST": 120, "MEZ": 60, "MESZ": 120,
    "EET": 120, "EEST": 180, "MSK": 180, "WAT": 60, "SAST": 120, "EAT": 180,
    "PKT": 300, "NPT": 345, "ICT": 420, "WIB": 420, "WITA": 480, "WIT": 540, "HKT": 480,
    "SGT": 480, "MYT": 480, "PHT": 480, "JST": 540, "KST": 540,
    "AWST": 480, "ACST": 570, "ACDT": 630, "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780,
    "HST": -600, "AKST": -540, "AKDT": -480, "NST": -210, "NDT": -150, "BRT": -180, "ART": -180,
}
# A zone abbreviation right after the time ("14:00:00 CEST", "14:00:00.250 JST"; not
# "+0200 (CEST)" nor "+02:00 CEST", whose offset is already there: an offset with a colon is no
# time), or an offset in hours from GMT or UTC ("GMT+2", "UTC-5:30"), which neither feedparser
# nor the email package reads. An abbreviation in capitals only, as feeds write them: a word
# after the time ("14:00 wit") is no zone.
_ZONE_AFTER_TIME = re.compile(r"(?<![\d:+-])\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*"
                              r"(?:\s([A-Z]{2,5})|(?i:GMT|UTC)([+-])(\d{1,2})(?::?(\d\d))?)\s*$")


def _zone_minutes(name: str) -> int:
    """A zone abbreviation's offset in minutes east of UTC: from `_ZONES`, else as feedparser
    reads it in an RFC 822 date (EST and CST as in the US, GMT; any other name as UTC)."""
    if name in _ZONES:
        return _ZONES[name]
    return feedparser_rfc822.timezone_names.get(name.lower(), 0) * 60


def _zone_as_offset(raw: str) -> str | None:
    """`raw` with the zone abbreviation after its time, or GMT+H, written as the offset
    ("14:00:00 CEST" → "14:00:00 +0200"); None when it ends otherwise."""
    m = _ZONE_AFTER_TIME.search(raw)
    if m is None:
        return None
    name, sign, hours, mins = m.groups()
    if name is None:  # GMT+2: the 3 letters before the sign go
        return f"{raw[:m.start(2) - 3]} {sign}{int(hours):02d}{mins or '00'}"
    h, mm = divmod(abs(minutes := _zone_minutes(name)), 60)
    return f"{raw[:m.start(1)]}{'-' if minutes < 0 else '+'}{h:02d}{mm:02d}"


# A date that starts year/month/day with slashes, as Chinese and Japanese feeds write it.
_SLASHED = re.compile(r"^\s*(\d{4})/(\d{1,2})/(\d{1,2})(?=[\sT]|$)")


def _dashed(raw: str) -> str:
    """`raw` with a year/month/day date written the ISO 8601 way ("2020/1/10 14:33:00" →
    "2020-01-10 14:33:00"): feedparser read "2020/1/10" as 2020-11-01 at midnight."""
    return _SLASHED.sub(lambda m: f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}", raw, count=1)


# A time on the 12-hour clock ("02:02:33 PM", "2:02 p.m."), and whether the date ends there.
_TWELVE_HOUR = re.compile(r"(?<![\d:])(\d{1,2})(:\d{2}(?::\d{2})?)\s*([AP])\.?M\.?(?=\s|$)(\s*$)?",
                          re.IGNORECASE)


def _24_hour(raw: str) -> str:
    """`raw` with a 12-hour time written on the 24-hour clock ("02:02:33 PM" → "14:02:33"),
    and as UTC where no zone follows, as a date without one is read: feedparser took PM for
    the zone, and the afternoon for the morning."""
    def fix(m: re.Match[str]) -> str:
        hour = int(m[1])
        if not 1 <= hour <= 12:
            return m[0]
        hour = hour % 12 + (12 if m[3] in "Pp" else 0)
        return f"{hour:02d}{m[2]}{' +0000' if m[4] is not None else ''}"

    return _TWELVE_HOUR.sub(fix, raw, count=1)


def _rewritten(raw: str) -> str | None:
    """`raw` written the way feedparser reads it right, where it misreads `raw` itself: a
    year/month/day date with dashes, a 12-hour time on the 24-hour clock, a zone's name as its
    offset; None when nothing is to mend."""
    fixed = _24_hour(_dashed(raw))
    fixed = _zone_as_offset(fixed) or fixed
    return fixed if fixed != raw else None


def _mended_date(raw: Any) -> datetime | None:
    """A date feedparser misreads (see `_rewritten`), read as feedparser reads it mended; None
    for any other date. feedparser read a zone's name as UTC ("14:00 CEST" was filed two hours
    late), in an ISO 8601 date any name at all (EST too), or lost the time of day to it
    ("2026-11-10 14:00:00 CEST" was midnight); "2020/1/10" was 1 November."""
    fixed = _rewritten(raw) if isinstance(raw, str) else None
    return (_struct_to_dt(feedparser_date(fixed)) or _loose_date(fixed)) if fixed else None


# An offset written the ISO 8601 way, with a colon ("+01:00"), after the time of day.
_COLON_OFFSET = re.compile(r"(?<=\s)([+-]\d{2}):(\d{2})(?![\d:])")


def _loose_date(raw: Any) -> datetime | None:
    """A date feedparser could not read: an RFC 822 date without a time zone (taken as UTC,
    as feedparser takes ISO dates without one) or with the day and month named in another
    language; an offset with a colon counts (the email package read "14:00 +01:00" as 14:00
    UTC, and a JSON Feed date, which feedparser does not read, was filed an hour late). None
    when it is not such a date."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    m = _RFC822ISH.match(raw)
    if not m:
        return None
    day, month, year, rest = m.groups()
    month = month.lower()
    month = _MONTHS.get(month[:4]) or _MONTHS.get(month[:3]) or month[:3]
    rest = _COLON_OFFSET.sub(r"\1\2", rest, count=1)
    try:
        dt = email.utils.parsedate_to_datetime(f"{day} {month} {year}{rest or ' 00:00:00'}")
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _as_utc(dt)


def _as_utc(dt: datetime) -> datetime | None:
    """`dt` in UTC (naive taken as UTC); None where that is out of datetime's range (Go's zero
    time with an offset, `0001-01-01T00:00:00+05:30`, ends before year 1 in UTC)."""
    try:
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except OverflowError:
        return None


def _plausible(dt: datetime | None) -> datetime | None:
    return dt if dt is not None and dt >= EARLIEST else None


def _entry_date(e: Any) -> datetime | None:
    """When an entry was published (else updated, else created), each read by feedparser or,
    failing that, by `_loose_date`; a date feedparser misreads (a named zone, GMT+H, a
    year/month/day date, a 12-hour time) is mended first. A date before EARLIEST counts as none."""
    for field in ("published", "updated", "created"):
        raw = e.get(field)
        found = _plausible(_mended_date(raw) or _struct_to_dt(e.get(f"{field}_parsed"))
                           or _loose_date(raw))
        if found is not None:
            return found
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


def _entry_link(e: Any, guid: str, base: str, written: Callable[[str], bool],
                relative: Callable[[str], bool]) -> str:
    """Where an entry leads: its link, else an alternate link (feedparser files an id such as
    `tag:…` as the link when the only alternate is not HTML, a PDF say), else a guid that the
    feed writes as a web URL (see `_written_urls`), else its enclosure (a podcast episode with
    no page of its own), else a guid that the feed writes as a page's relative path (see
    `_relative_permalinks`). feedparser files a guid as the link of an entry without one, made
    a URL against the feed's own where it was none: that link is the guid's, and no more.

    A relative guid comes last: an entry with an enclosure led to it before such guids were
    read, and an upgrade that gave it another link would give it another key, and store it
    twice; without one, the entry was lost."""
    links = [x for x in e.get("links", []) if isinstance(x, dict)]
    alternates = [str(x.get("href") or "") for x in links
                  if x.get("rel", "alternate") == "alternate"]
    link = str(e.get("link") or "")

    def candidates() -> Iterator[str]:  # lazily: `written` reads the document on first use
        if link in alternates or written(link):  # else the guid's (any guid's)
            yield link
        yield from alternates
        if written(guid):
            yield guid
        yield from (str(x.get("href") or "") for x in links if x.get("rel") == "enclosure")
        if relative(guid):
            yield guid

    return next((w for c in candidates() if c and (w := _web_link(c, base))), "")


# What a feed writes that may be a URL (it starts with an h, or with an entity, which may hide
# one): an element's text, a CDATA section's, an attribute's value; each up to its end, for a
# URL may carry quotes, brackets and spaces. Each pattern stops at the next `<` (or quote), so
# the document is read in linear time however it is built.
_WRITTEN_TEXT = re.compile(r"<!\[CDATA\[\s*([hH](?:[^\]<]|\](?!\]>))*)\]\]>|>\s*([hH&][^<]*)"
                           r"|=\s*(?:\"\s*([hH&][^\"]*)\"|'\s*([hH&][^']*)')")
_EXTRA_SLASHES = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)/+")  # as feedparser cuts them
_UNESCAPE_ROUNDS = 4  # `&amp;amp;` written for `&amp;` and the like; no URL needs more


def _url_key(url: str) -> str:
    """`url` in one form, whatever feedparser made of it: with its entities decoded (the lenient
    parser of a malformed feed keeps `&amp;`), the slashes after its scheme cut to two, and
    split and put back together as feedparser's resolving against a base of the same scheme
    does (the scheme lower-cased, tabs and line breaks and an empty query dropped)."""
    for _ in range(_UNESCAPE_ROUNDS):
        unescaped = html.unescape(url)
        if unescaped == url:
            break
        url = unescaped
    url = _EXTRA_SLASHES.sub(r"\1", url.strip())
    try:
        return urlunparse(urlparse(url))
    except ValueError:  # a host such as "[x" (feedparser makes the whole URL '' then)
        return url


def _written_urls(content: bytes, encoding: str) -> Callable[[str], bool]:
    """A test of whether a guid is an http(s) URL as `content` writes it: feedparser makes a
    guid that is none ("g0", "post-17", without isPermaLink="false") a URL against the feed's
    own (https://host/feeds/g0), a page that does not exist. Both sides are compared in the
    form `_url_key` gives: the feed writes `HTTP://…`, `&amp;` or `ht&#116;p://` where
    feedparser's value has `http://`, `&`; each such entry was lost. `content` is read on the
    first question only: most feeds never ask."""
    @functools.cache
    def urls() -> frozenset[str]:
        text = _document_text(content, encoding)
        found = ("".join(m.groups("")) for m in _WRITTEN_TEXT.finditer(text))
        keys = (_url_key(w) for w in found if _is_web(w) or "&" in w)  # an entity may hide one
        return frozenset(k for k in keys if _is_web(k))

    return lambda url: _is_web(url) and _url_key(url) in urls()


def _document_text(content: bytes, encoding: str) -> str:
    """`content` as text, in the encoding feedparser found (UTF-8 if none, or one unknown)."""
    try:
        return content.decode(encoding or "utf-8", "replace")
    except LookupError:
        return content.decode("utf-8", "replace")


# A guid (RSS) or an id (Atom) as the document writes it: its element's attributes, then its
# text or its CDATA section's. Each part stops at the next `>`, `<` or `]`: linear time.
_WRITTEN_ID = re.compile(r"<(?:[\w.-]+:)?(?:guid|id)\b([^<>]*)>\s*(?:<!\[CDATA\[([^\]]*)|([^<]*))",
                         re.IGNORECASE)
_PERMALINK_ATTR = re.compile(r"\bisPermaLink\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.IGNORECASE)
_XML_BASE = re.compile(r"\bxml:base\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
# A relative reference that is a page's path: one from the site's root ("/posts/17"), or one
# to a web page's file ("posts/17.html", "17.html?lang=en").
_PAGE_PATH = re.compile(r"/.*|[^:?#]*\.(?:s?html?|xhtml|php|aspx?|jsp)(?:[?#].*)?",
                        re.IGNORECASE | re.DOTALL)


def _relative_permalinks(content: bytes, encoding: str, base: str) -> Callable[[str], bool]:
    """A test of whether a guid, as feedparser made it absolute against the document's base
    (an `xml:base`, else `base`, the URL the feed came from), is one that `content` writes as
    a page's relative path (`_PAGE_PATH`), and as a permalink (isPermaLink "true" or left out,
    as feedparser reads it): such an entry, with no other link, was lost.

    A relative guid may as well be an id, and "17", "post-17" or "2020/01/post" read as paths
    against the feed's folder (https://host/feeds/17: no page). Only a path from the site's
    root, or to a page's file, says it is a page; an id is neither. A URL that some guid
    written otherwise resolves to as well (an id "17" beside a path "/feeds/17") is not taken:
    which of them the entry wrote cannot be told. `content` is read on the first question
    only: an entry asks only when nothing else leads anywhere."""
    @functools.cache
    def pages() -> frozenset[str]:
        text = _document_text(content, encoding)
        bases = {base, *(_joined(base, "".join(m.groups(""))) for m in _XML_BASE.finditer(text))}
        found: dict[str, bool] = {}  # each URL: whether every guid that resolves to it is a page
        for m in _WRITTEN_ID.finditer(text):
            attrs, cdata, plain = m.groups()
            written = (cdata if cdata is not None else html.unescape(plain)).strip()
            permalink = _PERMALINK_ATTR.search(attrs)
            if not written or (permalink and "".join(permalink.groups("")) != "true"):
                continue  # feedparser leaves such a guid as written: no URL
            page = bool(_PAGE_PATH.fullmatch(written))
            for key in {_url_key(_joined(b, written)) for b in bases}:
                found[key] = found.get(key, True) and page
        return frozenset(k for k, page in found.items() if page)

    return lambda guid: bool(guid) and _url_key(guid) in pages()


def _guid_link_decoded(it: Item, base: str) -> Item:
    """`it`, read from a malformed feed, leading where its guid does with the guid's references
    decoded: feedparser's lenient parser leaves them as written in a guid (not in a link), and
    the entry led to `…?a=1&amp;b=2`. The guid itself stays as it is: an item stored before,
    its link as written, is found again by its guid (its link, so its key, changes), and not
    stored twice."""
    if not it.guid or _web_link(it.guid, base) != it.url:
        return it
    url = html.unescape(it.url)
    if url == it.url:
        return it
    arxiv_id, version = split_arxiv_id(url)
    return replace(it, url=url, arxiv_id=arxiv_id, arxiv_version=version)


def _names(e: Any) -> tuple[str, ...]:
    """The author names of an entry (or of a feed), each once, without e-mail addresses.

    feedparser splits an RSS author ("jonas@insanity.industries (Jonas Große Sundrup)") with
    a pattern that knows top-level domains of 2 to 4 letters only, and leaves "mailto:"
    behind: it named him "stries (Jonas Große Sundrup". It keeps the raw text of the entry's
    last author as `author`; that author is named as `_split_author` reads it. The others
    keep feedparser's names: several authors may share one address (Blogger writes
    noreply@blogger.com for each), and each was named as the last one. An address alone
    names no one: the digest showed "webmaster@example.org" as who wrote a post, and a
    search for a person looks at names."""
    raw = str(e.get("author") or "")
    authors = list(e.get("authors", []))
    found = [_split_author(str(x.get("name") or ""))[0] for x in authors[:-1]]
    found += [_last_author_name(x, raw) for x in authors[-1:]]
    return tuple(dict.fromkeys(n for n in map(html_to_text, found) if n)) or \
        tuple(n for n in [html_to_text(_split_author(raw)[0])] if n)


def _last_author_name(author: Any, raw: str) -> str:
    """The name of an entry's last author, whose raw text is `raw`: as `_split_author` reads
    `raw`, where feedparser took the author's address from there; else feedparser's name."""
    email = str(author.get("email") or "")
    name, address = _split_author(raw)
    if email and (_cut_short(address, email) if address else email in raw):
        return name
    return _split_author(str(author.get("name") or ""))[0]


def _cut_short(address: str, email: str) -> bool:
    """Whether feedparser's `email` is `address`, or `address` cut short within its top-level
    domain as feedparser's pattern does (jonas@insanity.indu): al@example.org is not
    al@example.org.uk."""
    return address.startswith(email) and "." not in address[len(email):]


_ADDRESS = r"(?:mailto:)?(?P<address>[^\s@()<>:]+@[^\s@()<>]+)"
# Each closing bracket may be missing (a field cut short): "Name <addr" shows as "Name".
_AUTHOR_FORMS = [re.compile(form, re.IGNORECASE) for form in (
    rf"{_ADDRESS} ?\((?P<name>.*?)\)?",  # addr (Name): RSS 2.0, after RFC 822
    rf"(?P<name>.*?) ?<{_ADDRESS}>?",  # Name <addr>: RFC 5322
    rf"(?P<name>.*?) ?\({_ADDRESS}\)?",  # Name (addr), Name (mailto:addr)
    rf"(?=.*@.*\.){_ADDRESS}",  # the address alone, its domain dotted: Team@Lab is a name
)]


def _split_author(text: str) -> tuple[str, str]:
    """(name, e-mail address) of an author as feeds write one: "addr (Name)", "Name <addr>",
    "Name (addr)", or the address alone (name ''); any other text is all name (address ''),
    a fediverse handle ("@alice@example.org") included."""
    text = " ".join(text.split())  # one space at most between the parts
    for form in _AUTHOR_FORMS:
        if m := form.fullmatch(text):
            return (m.groupdict().get("name") or "").strip(), m["address"]
    return text, ""


def _entry_item(e: Any, source: str, base: str, kind: str, person: str,
                inherited: tuple[str, ...], written: Callable[[str], bool],
                relative: Callable[[str], bool]) -> Item | None:
    guid = str(e.get("id") or "")
    link = _entry_link(e, guid, base, written, relative)
    html_body = _body(e)
    summary = shorten(html_to_text(html_body), MAX_SUMMARY)
    title = _plain(e.get("title_detail"), e.get("title", ""))
    if not title:
        title = shorten(summary, 90) if summary else ""
    if not link:  # a digest entry must lead somewhere
        return None
    authors = _names(e) or inherited
    published = _entry_date(e)
    arxiv_id, version = split_arxiv_id(link) if link else ("", 0)
    links = tuple(extract_links(html_body)) if kind == "social" else ()
    return Item(
        title=title or link, url=link, source=source, kind=kind, authors=authors,
        published=published, summary=summary, guid=guid, arxiv_id=arxiv_id,
        arxiv_version=version, links=links, person=person,
    )


def _enclosure(e: Any, base: str) -> str:
    """The entry's first enclosure (a podcast episode's file) as a web URL, or ''."""
    return next((w for x in e.get("links", []) if isinstance(x, dict)
                 and x.get("rel") == "enclosure" and (w := _web_link(str(x.get("href") or ""),
                                                                 base))), "")


def _distinct(items: list[Item], own: list[str] | None = None,
              written: Callable[[str], bool] | None = None) -> list[Item]:
    """Entries that share a link but not a guid are different entries: a podcast whose every
    episode links to the show's home page, a blog whose entries all link to its feed. Such an
    entry leads to its guid instead when the feed writes that as a web URL of its own
    (`written`, as `_written_urls` answers; by default a guid is as written, as in a JSON
    Feed); without it, all but one of them were merged away as duplicates of the first.

    The other way round, entries that share a guid but not a link are different entries too
    (a CMS that writes one guid, or the home page, for every entry): the store finds an item
    by its source's guid, so each overwrote the one before. Their guid is dropped."""
    by_key: dict[str, set[str]] = {}
    by_guid: dict[str, set[str]] = {}
    for it in items:
        by_key.setdefault(it.key, set()).add(it.guid)
        if it.guid:
            by_guid.setdefault(it.guid, set()).add(it.key)
    shared = {key for key, guids in by_key.items() if len(guids) > 1}
    reused = {guid for guid, keys in by_guid.items() if len(keys) > 1}
    if not shared and not reused:
        return items
    written = written or _is_web
    out = []
    for i, it in enumerate(items):
        if it.guid in reused:
            it = replace(it, guid="")
        elif it.key in shared and it.guid != it.url and written(it.guid):
            arxiv_id, version = split_arxiv_id(it.guid)
            it = replace(it, url=it.guid, arxiv_id=arxiv_id, arxiv_version=version)
        elif it.key in shared and it.guid and own and own[i]:  # its own file (an episode)
            it = replace(it, url=own[i])
        out.append(it)
    return out


def _parse_json_feed(content: bytes, source: str, base: str, kind: str,
                     person: str) -> ParsedFeed:
    try:
        doc = json.loads(content.decode("utf-8-sig"), strict=False)
    except ValueError as err:  # not UTF-8, not JSON, an integer of thousands of digits
        raise FeedError(f"not a feed: invalid JSON ({err})") from None
    except RecursionError:
        raise FeedError("not a feed: JSON nested too deeply") from None
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
        link = _web_link(_str(e, "url"), base) or _web_link(_str(e, "external_url"), base) \
            or _attachment(e, base)
        body = _str(e, "content_html") or _str(e, "summary") or _str(e, "content_text")
        summary = shorten(html_to_text(body), MAX_SUMMARY)
        title = html_to_text(_str(e, "title")) or shorten(summary, 90)
        if not link:
            continue
        guid = _str(e, "id") or (str(e["id"]) if type(e.get("id")) is int else "")
        published = _plausible(_iso(e.get("date_published"))) or \
            _plausible(_iso(e.get("date_modified")))
        arxiv_id, version = split_arxiv_id(link) if link else ("", 0)
        items.append(Item(
            title=title or link, url=link, source=source, kind=kind,
            authors=_json_authors(e) or feed_authors, published=published, summary=summary,
            guid=guid, arxiv_id=arxiv_id, arxiv_version=version,
            links=tuple(extract_links(body)) if kind == "social" else (), person=person,
        ))
    if doc["items"] and not items:
        raise FeedError("feed has entries but none with a link")
    return ParsedFeed(html_to_text(_str(doc, "title")), _distinct(items))


def _attachment(e: dict[str, Any], base: str) -> str:
    """The first attachment's URL (a podcast episode with no page of its own), or ''."""
    found = e.get("attachments")
    for a in found if isinstance(found, list) else []:
        if isinstance(a, dict) and (url := _web_link(_str(a, "url"), base)):
            return url
    return ""


def _str(obj: dict[str, Any], key: str) -> str:
    """A JSON Feed string field; '' when missing or of another type (a number, a list)."""
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _is_web(url: str) -> bool:
    """Whether `url` is http(s), its scheme in any case ("HTTPS://" is as good as "https://")."""
    return url[:8].lower().startswith(("http://", "https://"))


def _web_link(link: str, base: str) -> str:
    """An absolute http(s) URL, its scheme in lower case, or '' (a `tag:` id is not somewhere
    a reader can go)."""
    link = link.strip()
    if link and base and not _is_web(link):
        if ":" in link.split("/", 1)[0]:  # another scheme (tag:, urn:, mailto:)
            return ""
        link = _joined(base, link)
    if not _is_web(link):
        return ""
    scheme, sep, rest = link.partition("://")
    return scheme.lower() + sep + rest


def _joined(base: str, ref: str) -> str:
    """`ref` resolved against `base`, or '' where either is no URL (a host such as "[x", which
    urljoin raises on: one entry's link lost the whole feed)."""
    try:
        return urljoin(base, ref)
    except ValueError:
        return ""


def _json_authors(obj: dict[str, Any]) -> tuple[str, ...]:
    raw = obj.get("authors") or ([obj["author"]] if isinstance(obj.get("author"), dict) else [])
    if not isinstance(raw, list):
        return ()
    names = (html_to_text(_str(a, "name")) for a in raw if isinstance(a, dict))
    return tuple(dict.fromkeys(n for n in names if n))


_TZ_FIX = re.compile(r"Z$", re.IGNORECASE)


def _iso(value: Any) -> datetime | None:
    """A JSON Feed date: RFC 3339 as the spec says, or RFC 822 as some feeds write it."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(_TZ_FIX.sub("+00:00", value.strip()))
    except ValueError:
        return _mended_date(value) or _loose_date(value)
    return _as_utc(dt)


_SOCIAL_FEED = re.compile(r"/profile/[^/]+/rss/?|/@[A-Za-z0-9_.]+\.rss")


def feed_kind(spec: SourceSpec) -> str:
    """'social' for the posts of a Bluesky or Mastodon account (they share links: a post
    folds into what it links to), by the person's place or by the feed's URL: the same
    feed followed as a blog (pasted as Mastodon gives it, `https://host/@u.rss`, or taken in
    from an OPML file that `export-opml` wrote) was a blog, and no post of it was a share."""
    if spec.name.endswith(("/bluesky", "/mastodon")):
        return "social"
    parts = urlsplit(spec.target)
    path = parts.path
    if (parts.hostname == "bsky.app" and path.startswith("/profile/")) or \
            path.startswith("/@"):
        return "social" if _SOCIAL_FEED.fullmatch(path) else "post"
    return "post"


def moved_note(url: str, moved_to: str) -> str:
    """What the source's report says of a permanent move of `url` ('' for none). A feed that
    moved for good is followed there, and the user told to update the URL: the old address
    costs a request per fetch, and may one day serve something else. But not from https to
    plain http: that would have the user give up encryption on the say of an answer that
    anyone on the network could forge (`feedbot follow` keeps the https address too)."""
    if not moved_to:
        return ""
    if urlsplit(url).scheme.lower() == "https" and urlsplit(moved_to).scheme.lower() == "http":
        return (f"moved permanently to {moved_to}, plain http: its posts come unencrypted; "
                "keep the https address, or give the http one in sources.yaml if you trust it")
    return f"moved permanently to {moved_to}: update its URL in sources.yaml"


async def collect_feed(ctx: Context, spec: SourceSpec, state: SourceState) -> Collected:
    """Conditional GET, then parse. Raises FetchError / FeedError for the caller to record."""
    try:
        got: Fetched = await fetch(ctx.http, spec.target, etag=state.etag,
                                   last_modified=state.last_modified, deadline=ctx.deadline,
                                   now=ctx.now)
    except FetchError as e:
        if e.status != 410:
            raise
        raise FetchError(f"{e}: the feed was removed for good; stop fetching it with "
                         f"`feedbot unfollow {shlex.quote(spec.name)}`", e.status,
                         e.retry_after) from None
    moved = moved_note(spec.target, got.moved_to)
    if got.not_modified:
        return Collected([], not_modified=True, etag=got.etag, last_modified=got.last_modified,
                         warning=moved)
    # In a thread: feedparser takes seconds over a large feed (it is pure Python), and on the
    # event loop every other fetch, and the bot, stood still meanwhile. Within a deadline, as
    # the fetch is: one feed must not hold up a whole collection.
    try:
        parsed = await asyncio.wait_for(in_daemon_thread(functools.partial(
            parse_feed, got.content, spec.name, base_url=got.url, kind=feed_kind(spec),
            person=spec.person, content_type=got.content_type), name="feed-parse"),
            PARSE_TIMEOUT)
    except TimeoutError:
        raise FeedError(f"not read: parsing its {len(got.content):,} bytes took more than "
                        f"{PARSE_TIMEOUT:g} s") from None
    # A feed cut short, or malformed and read anyway (a body may end early with no length to
    # tell), keeps no validators: they would answer the next fetch "not modified", and the
    # rest of it would never come. "" clears those stored before.
    cut = f"the response was cut short ({got.cut_short})" if got.cut_short else ""
    keep = not (parsed.malformed or cut)
    return Collected(parsed.items, etag=got.etag if keep else "",
                     last_modified=got.last_modified if keep else "",
                     warning="; ".join(w for w in (cut, parsed.warning, moved) if w))
