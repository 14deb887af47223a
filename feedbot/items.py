"""The one item type every collector returns, and the identity rules that deduplicate items.

An `Item` is plain, frozen data: no I/O, no database, no model. Identity is decided here and
only here: an arXiv paper is its id without version, anything else is its canonical URL
(tracking parameters dropped), falling back to the feed GUID.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .text import mend_surrogates

KINDS = ("paper", "post", "social", "demo")

# Query parameters that only track where a click came from; they never change the page.
_TRACKING_PARAMS = {
    "fbclid", "gclid", "dclid", "msclkid", "yclid", "mc_cid", "mc_eid", "igshid", "ref_src",
    "ref_url", "_hsenc", "_hsmi", "mkt_tok", "cmpid", "s_cid", "trk", "spm", "si", "ncid",
}
_TRACKING_PREFIXES = ("utm_", "pk_", "hsa_", "oly_")

# New-style (2007+) and old-style (archive/YYMMNNN) arXiv identifiers, optional version.
_ARXIV_NEW = r"\d{4}\.\d{4,5}"
_ARXIV_OLD = r"[a-z][a-z\-]+(?:\.[A-Z]{2})?/\d{7}"
_ARXIV_URL = re.compile(
    r"^(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html)/"
    rf"(?P<id>{_ARXIV_NEW}|{_ARXIV_OLD})(?:v\d+)?(?:\.pdf)?/?(?:[?#].*)?$",
    re.IGNORECASE,
)
# Pages that stand for one arXiv paper, as posts link to it: Hugging Face's paper page, alphaXiv,
# and the DOI arXiv gives every paper (10.48550/arXiv.<id>).
_PAPER_PAGE = re.compile(
    r"^(?:https?://)?(?:"
    rf"(?:www\.)?(?:huggingface|hf)\.co/papers/(?P<hf>{_ARXIV_NEW})"
    rf"|(?:www\.)?alphaxiv\.org/(?:abs|overview|pdf)/(?P<ax>{_ARXIV_NEW}|{_ARXIV_OLD})"
    rf"|(?:dx\.)?doi\.org/10\.48550/arxiv\.(?P<doi>{_ARXIV_NEW}|{_ARXIV_OLD})"
    r")(?:v\d+)?/?(?:[?#].*)?$",
    re.IGNORECASE,
)
_ARXIV_ID = re.compile(rf"^(?:arxiv:)?(?P<id>{_ARXIV_NEW}|{_ARXIV_OLD})(?:v(?P<v>\d+))?$", re.I)

# C0 and C1 control characters (terminal escapes and the like) are dropped from an item's text;
# newline and tab stay, and the other line breaks become spaces.
_CONTROL = {c: None for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | \
    {0x09: 0x09, 0x0A: 0x0A, 0x0B: 0x20, 0x0C: 0x20, 0x0D: 0x20}
_HAS_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Lone surrogates (a JSON feed's "\ud800") cannot be written as UTF-8: hashing or storing such
# text failed, and with it the whole collection. They become U+FFFD (`mend_surrogates`).
_SURROGATE = re.compile(r"[\ud800-\udfff]")
FUTURE_TOLERANCE = timedelta(days=1)  # a date later than this after the fetch is not believed


@dataclass(frozen=True, slots=True)
class Item:
    """One thing worth reading: a paper, a blog post or a researcher's post."""

    title: str
    url: str
    source: str  # name of the source that produced it (see config.SourceSpec.name)
    kind: str = "post"  # one of KINDS
    authors: tuple[str, ...] = ()
    published: datetime | None = None  # UTC-aware
    summary: str = ""  # plain text
    guid: str = ""
    arxiv_id: str = ""  # without version
    arxiv_version: int = 0
    categories: tuple[str, ...] = ()
    pdf_url: str = ""
    links: tuple[str, ...] = field(default=())  # URLs mentioned in the item (posts)
    person: str = ""  # the person who wrote or shared it, when the source is a person
    # arXiv's newest version withdraws the paper: never stored as new, and a stored copy is
    # removed unless someone voted on it or saved it (`Store.upsert_items`). A stored item
    # read back says so when it was kept that way: no digest or search offers it.
    withdrawn: bool = False

    def __post_init__(self) -> None:
        for name in ("title", "summary", "source", "person", "guid"):
            value = getattr(self, name)
            if _HAS_CONTROL.search(value) or _SURROGATE.search(value):
                object.__setattr__(self, name, _clean_text(value))
        if any(_HAS_CONTROL.search(a) or _SURROGATE.search(a) for a in self.authors):
            object.__setattr__(self, "authors", tuple(_clean_text(a) for a in self.authors))
        for name in ("url", "pdf_url"):
            value = getattr(self, name)
            if (cleaned := clean_url(value)) != value:
                object.__setattr__(self, name, cleaned)
        links = tuple(clean_url(u) for u in self.links)
        if links != self.links:
            object.__setattr__(self, "links", links)
        if self.kind not in KINDS:
            raise ValueError(f"unknown item kind {self.kind!r}")
        if self.published is not None and self.published.tzinfo is None:
            raise ValueError("Item.published must be timezone-aware")

    @property
    def key(self) -> str:
        """The dedup key: arXiv id, else canonical URL, else source + GUID."""
        return item_key(self.arxiv_id, self.url, self.source, self.guid)

    @property
    def id(self) -> str:
        """Stable public id (used in JSON output and `feedbot feedback`)."""
        return item_id(self.key)

    @property
    def embed_text(self) -> str:
        """The text the embedding model sees: title, then the start of the summary."""
        return embed_text(self.title, self.summary)


def clamp_future(item: Item, now: datetime, tolerance: timedelta = FUTURE_TOLERANCE) -> Item:
    """`item` with a publication date more than `tolerance` after `now` (the fetch) set to
    `now`: a feed's year-3000 date must not keep an item on top of every digest."""
    if item.published is not None and item.published > now + tolerance:
        return replace(item, published=now)
    return item


def embed_text(title: str, summary: str, max_chars: int = 1200) -> str:
    summary = " ".join(summary.split())
    text = title.strip()
    if summary and summary.lower() != text.lower():
        text = f"{text}. {summary[:max_chars]}"
    return text


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _clean_text(text: str) -> str:
    return mend_surrogates(text.translate(_CONTROL))


def percent_encoded(c: str) -> str:
    """`c` as %XX escapes of its UTF-8 bytes (a lone surrogate's too)."""
    return "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))


def _url_unsafe(c: str) -> bool:
    """Whitespace, control characters (terminal escapes), format marks (bidi overrides,
    zero-width spaces) and lone surrogates: nothing a URL holds as such."""
    return c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zs", "Zl", "Zp")


def clean_url(url: str) -> str:
    """`url` without surrounding blanks and with what `_url_unsafe` matches percent-encoded:
    a feed's "https://e.org/a b" or an escape sequence in a link can neither break a line nor
    reach a terminal. Items are stored so; the renderers apply it again to older ones."""
    url = url.strip()
    if not any(_url_unsafe(c) for c in url):
        return url
    return "".join(percent_encoded(c) if _url_unsafe(c) else c for c in url)


def item_key(arxiv_id: str, url: str, source: str = "", guid: str = "") -> str:
    """The dedup key (see `Item.key`). A URL's fragment is dropped, except where the guid is
    the URL itself, fragment and all: a feed that gives each entry an anchor on a shared page
    (`/2017/06/26.html#a080605`, a whole day's posts on one page) says the fragment is what
    tells its entries apart, and dropping it merged a day's posts into one."""
    if arxiv_id:
        return f"arxiv:{arxiv_id}"
    found = arxiv_id_from_url(url) if url else ""
    if found:
        return f"arxiv:{found}"
    if url:
        key = f"url:{canonical_url(url)}"
        _, hashmark, fragment = url.partition("#")
        if hashmark and fragment and clean_url(guid) == url:
            key += f"#{fragment}"
        return key
    return f"guid:{source}:{guid}"


def item_id(key: str) -> str:
    """Short public id: arXiv papers keep their arXiv id, everything else a hash of its key."""
    if key.startswith("arxiv:"):
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def canonical_url(url: str) -> str:
    """Normalise a URL so the same page reached by different links compares equal.

    Lower-cases scheme and host, treats http and https alike, drops default ports, fragments,
    tracking parameters, `www.` and trailing slashes, and sorts the remaining query.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range or not a number
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    scheme = parts.scheme.lower()
    if scheme == "http":
        scheme = "https"
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    port = port if port not in (None, 80, 443) else None
    netloc = f"{host}:{port}" if port else host
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _TRACKING_PARAMS and not k.lower().startswith(_TRACKING_PREFIXES)
    ]
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))


def arxiv_id_from_url(url: str) -> str:
    """`https://arxiv.org/abs/2309.03965v2` → `2309.03965`; '' when the URL is not an arXiv page."""
    m = _ARXIV_URL.match(url.strip())
    return m.group("id") if m else ""


def paper_id_from_link(url: str) -> str:
    """The arXiv id of the paper a link in a post or an entry points to: its arXiv page, or a
    page that stands for it (`huggingface.co/papers/<id>`, alphaXiv, its arXiv DOI); ''
    otherwise. For links only: an item's own URL keeps its own identity (`item_key`)."""
    url = url.strip()
    if found := arxiv_id_from_url(url):
        return found
    m = _PAPER_PAGE.match(url)
    return next((g for g in m.groups() if g), "") if m else ""


def split_arxiv_id(raw: str) -> tuple[str, int]:
    """`2309.03965v2` → (`2309.03965`, 2); accepts `arxiv:` prefixes and abs/pdf URLs."""
    raw = raw.strip()
    m = _ARXIV_URL.match(raw)
    if m:
        tail = raw[m.end("id") :]
        v = re.match(r"v(\d+)", tail)
        return m.group("id"), _version(v.group(1) if v else "")
    m = _ARXIV_ID.match(raw)
    if not m:
        return "", 0
    return m.group("id"), _version(m.group("v") or "")


def _version(digits: str) -> int:
    """An arXiv version number; 0 (unknown) for one no real paper has: a 20-digit version
    overflowed SQLite's integer and failed the whole collection, a 5,000-digit one Python's
    int()."""
    return int(digits) if 0 < len(digits) <= 6 else 0


def utc(dt: datetime) -> datetime:
    """Make a datetime UTC-aware (naive values are taken as UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
