"""OPML in and out: the subscription list every feed reader imports and exports.

`parse_opml` (bytes → `(title, feed URL, page URL)` triples) and `render_opml` (config → OPML
text) are pure. Adding imported feeds to sources.yaml is `follow.add_blogs`' job: this module
never touches files or the network. A document with a DOCTYPE is refused outright, so entity
tricks (billion laughs, external entities) never reach the XML parser's expansion.
"""

from __future__ import annotations

import re
import unicodedata
import xml.etree.ElementTree as ET

from .config import Config, SourceSpec
from .text import UNSHOWN

Feed = tuple[str, str, str]  # (title, xml_url, html_url)

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class OpmlError(ValueError):
    """Not an OPML document we are willing to read."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _attr(el: ET.Element, name: str) -> str:
    """An attribute, matched case-insensitively (xmlUrl, xmlurl and XMLURL all occur)."""
    want = name.lower()
    for key, value in el.attrib.items():
        if _local(key) == want:
            return " ".join(value.split())
    return ""


class _NoDoctype(ET.TreeBuilder):
    """Stops the parse at a DOCTYPE, before any entity in it is declared: the byte search in
    `parse_opml` cannot see one in a UTF-16 (or otherwise re-encoded) document."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise OpmlError(_REFUSED)


_REFUSED = "refusing an OPML file with a DOCTYPE or entity declarations"


# The bidi controls of `text.UNSHOWN` (U+202A-U+202E, U+2066-U+2069), taken out of a title:
# an outline titled "\u202eevil" became a source that `feedbot sources` lists as "evil" (the
# views drop them) and `feedbot unfollow evil` did not find. (The control characters proper
# are left to `follow.add_blogs`, which skips such a title and says why.)
_BIDI = dict.fromkeys(c for c in UNSHOWN if unicodedata.category(chr(c)) == "Cf")


def _title(el: ET.Element) -> str:
    """The outline's title (else its text) without bidi controls (`_BIDI`)."""
    shown = (" ".join(_attr(el, name).translate(_BIDI).split()) for name in ("title", "text"))
    return next((t for t in shown if t), "")


_SCHEME = re.compile(r"^(?:feed:(?://)?)?(https?://)?", re.IGNORECASE)


def feed_url(url: str) -> str:
    """The http(s) URL behind the forms older readers export: `feed://host/rss` (http),
    `feed:https://host/rss`, `HTTPS://host/rss`. Anything else is returned as it is."""
    m = _SCHEME.match(url)
    if m is None or not m.group(0):
        return url
    if m.group(1):
        return m.group(1).lower() + url[m.end():]
    if m.group(0).lower() == "feed://":
        return "http://" + url[m.end():]
    return url


def parse_opml(data: bytes) -> list[Feed]:
    """Every outline with an xmlUrl, however deeply nested in categories, first one wins."""
    if _DOCTYPE.search(data):
        raise OpmlError(_REFUSED)
    parser = ET.XMLParser(target=_NoDoctype())
    try:
        parser.feed(data)
        root = parser.close()
    except ET.ParseError as e:
        raise OpmlError(f"not valid XML: {e}") from None
    except LookupError as e:  # <?xml encoding="bogus"?>: expat's own words
        raise OpmlError(f"not valid XML: {e}") from None
    if _local(root.tag) != "opml":
        raise OpmlError(f"not OPML: the root element is <{_local(root.tag)}>, not <opml>")
    feeds: dict[str, Feed] = {}
    for el in root.iter():
        if _local(el.tag) != "outline":
            continue
        url = feed_url(_attr(el, "xmlUrl"))
        if url and url not in feeds:
            title = _title(el) or url
            feeds[url] = (title, url, _attr(el, "htmlUrl"))
    return list(feeds.values())


def _page_url(spec: SourceSpec) -> str:
    """The human page behind a person's Bluesky or Mastodon feed ('' for blogs: unknown)."""
    if spec.name.endswith("/bluesky"):
        return spec.target.removesuffix("/rss")
    if spec.name.endswith("/mastodon"):
        return spec.target.removesuffix(".rss")
    return ""


def render_opml(cfg: Config, title: str = "feedbot subscriptions") -> str:
    """Blogs, and people's blog, Bluesky and Mastodon feeds, as OPML 2.0 in two folders."""
    root = ET.Element("opml", version="2.0")
    ET.SubElement(ET.SubElement(root, "head"), "title").text = title
    body = ET.SubElement(root, "body")
    folders: dict[str, ET.Element] = {}
    for spec in cfg.sources():
        if spec.kind != "feed":
            continue
        folder_name = "People" if spec.person else "Blogs"
        folder = folders.get(folder_name)
        if folder is None:
            folder = folders[folder_name] = ET.SubElement(body, "outline", text=folder_name,
                                                          title=folder_name)
        attrs = {"type": "rss", "text": spec.label, "title": spec.label, "xmlUrl": spec.target}
        if page := _page_url(spec):
            attrs["htmlUrl"] = page
        ET.SubElement(folder, "outline", attrs)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"
