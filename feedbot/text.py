"""Plain-text helpers: HTML to text, link extraction, shortening, lone surrogates mended,
folding for search. Pure functions, stdlib only."""

from __future__ import annotations

import html
import re
import unicodedata
from functools import cache
from html.parser import HTMLParser
from typing import TypeVar

_BLOCK = {"p", "br", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
          "blockquote", "pre", "section", "article", "figure", "table"}
_SKIP = {"script", "style", "head", "noscript", "template"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCK:
            self.parts.append(" ")
        if tag == "a":
            href = dict(attrs).get("href")
            if href and href.startswith(("http://", "https://")):
                self.links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self._skip:
            self._skip -= 1
        elif tag in _BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


P = TypeVar("P", bound=HTMLParser)


def run_parser(parser: P, markup: str) -> P:
    """Feed `markup` to an HTMLParser, `defang`ed (in linear time); pathological markup keeps
    what was parsed so far."""
    try:
        parser.feed(defang(markup))
        parser.close()
    except (AssertionError, ValueError):
        pass
    return parser


def _extract(markup: str) -> _TextExtractor:
    return run_parser(_TextExtractor(), markup)


# HTMLParser (CPython 3.11) looks ahead to the end of the text for the close of a tag, comment
# or marked section it cannot finish, then moves on by one character and looks again: markup
# with many such openings takes time quadratic in its length (30 KB of "<a " took 10 s, and a
# feed may bring megabytes). `defang` rewrites them first, in one pass, so that every "<" left
# has its ">" before the next "<", and no comment or marked section is left to look for.
_OPEN_NO_CLOSE = re.compile(r"<(?=[^<>]*(?:<|\Z))")  # a "<" no ">" closes before the next "<"


def defang(markup: str) -> str:
    """`markup` with what HTMLParser would look ahead for made plain: comments and marked
    sections (`<![CDATA[…]]>`, `<![if …]>`) removed, as HTMLParser and a browser hide them
    (one left open hides the rest, as in a browser), and a "<" that opens no tag escaped."""
    return _OPEN_NO_CLOSE.sub("&lt;", _without_hidden(markup))


def _without_hidden(markup: str) -> str:
    """Comments and marked sections removed. Linear: once a close ("-->", "]]>", ">") is
    missing from the rest of the text, it is not looked for again."""
    if "<!" not in markup:
        return markup
    missing: set[str] = set()

    def find(close: str, at: int) -> int:
        k = -1 if close in missing else markup.find(close, at)
        if k < 0:
            missing.add(close)
        return k

    out: list[str] = []
    i = 0
    while (start := markup.find("<!", i)) >= 0:
        if markup.startswith("<!--", start):
            close, end = "-->", find("-->", start + 2)
        elif markup.startswith("<![CDATA[", start):
            close, end = "]]>", find("]]>", start + 9)
        elif markup.startswith("<![", start):
            close, end = ">", find(">", start)
        else:  # a declaration ("<!DOCTYPE html>"): HTMLParser finds its ">" at once
            out.append(markup[i:start + 2])
            i = start + 2
            continue
        out.append(markup[i:start])
        if end < 0:
            return "".join(out)
        i = end + len(close)
    out.append(markup[i:])
    return "".join(out)


def html_to_text(markup: str | None) -> str:
    """Visible text of an HTML fragment, entities decoded, whitespace collapsed."""
    if not markup:
        return ""
    if "<" not in markup and "&" not in markup:
        return " ".join(markup.split())
    # decoded once, by the parser (convert_charrefs): a second decode made "&amp;region=eu"
    # "®ion=eu" (html.unescape takes "&reg" without its ";") and "&amp;lt;" "<"
    return " ".join("".join(_extract(markup).parts).split())


_URL = re.compile(r"https?://[^\s<>\"'\)\]]+")


def extract_links(markup: str | None) -> list[str]:
    """http(s) links in an HTML fragment or plain text, in order, without duplicates."""
    if not markup:
        return []
    found = _extract(markup).links if "<" in markup else []
    found += [u.rstrip(".,;:!?") for u in _URL.findall(html.unescape(markup))]
    return list(dict.fromkeys(found))


def shorten(text: str, width: int) -> str:
    """Cut at a word boundary and add an ellipsis when longer than `width` characters. Where
    there is no word boundary to cut at, the cut never splits what shows as one character: a
    letter and its accents, an emoji and its skin tone or ZWJ sequence, a flag's pair."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    end = width - 1
    space = text.rfind(" ", 0, end)
    if space > width * 0.6:
        end = space
    else:
        while end > 0 and _joined(text, end):
            end -= 1
    return text[:end].rstrip(" ,;:.-") + "…"


_ZWJ = "\u200d"


def _joined(text: str, i: int) -> bool:
    """Whether text[i - 1] and text[i] belong to one grapheme cluster (Unicode UAX #29, the rules
    that matter for a cut: extending marks and modifiers, ZWJ sequences, regional-indicator
    pairs, Hangul syllables written as jamo)."""
    before, after = text[i - 1], text[i]
    code = ord(after)
    if (unicodedata.category(after) in ("Mn", "Mc", "Me") or after in (_ZWJ, "\u200c")
            or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F):
        return True  # marks, variation selectors, skin tones, tag characters extend
    if before == _ZWJ:
        return True
    if _regional(after) and _regional(before):
        run = i  # regional indicators pair off from the start of their run
        while run > 0 and _regional(text[run - 1]):
            run -= 1
        return (i - run) % 2 == 1
    return 0x1100 <= ord(before) <= 0x11FF and 0x1160 <= code <= 0x11FF  # jamo L/V + V/T


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


# Code points no view shows as written: C0 and C1 control characters (ESC begins a terminal
# escape sequence; U+009B is CSI on its own) and the bidi embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069), with which a title shows what follows it in another order.
UNSHOWN = (*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))

_SURROGATE = re.compile("[\ud800-\udfff]")


def mend_surrogates(text: str) -> str:
    """`text` with each lone surrogate as U+FFFD. Python keeps bytes that were not UTF-8 (from
    a terminal) and a JSON "\\ud800" as lone surrogates, which no UTF-8 output, tokenizer or
    SQLite text can hold."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


# The combining accents that Latin letters decompose into (NFD), which SQLite's unicode61
# tokenizer with remove_diacritics 2 takes off a letter (25 of U+0300–U+036F; it cuts words at
# the other marks), and what holds them: `fold` works on text where `_FOLDABLE` finds one.
_MARKS = "\u0300-\u0304\u0306-\u030c\u030f\u0311\u031b\u0323-\u0328\u032d\u032e\u0330\u0331"
_LATIN_MARKS = re.compile(f"(?<=[\x00-\u024f\u1e00-\u1eff])[{_MARKS}]+")
_FOLDABLE = re.compile(f"[\u00c0-\u024f\u1e00-\u1eff{_MARKS}]")


@cache
def mark_chars() -> tuple[str, ...]:
    """Every combining mark (Unicode Mn, Mc, Me), in order."""
    return tuple(c for c in map(chr, (*range(0x300, 0x30000), *range(0xE0100, 0xE01F0)))
                 if unicodedata.category(c)[0] == "M")  # none below U+0300


@cache
def word_marks() -> str:
    r"""The combining marks (`mark_chars`) as ranges for a regex class. Python's `\w`
    has none of them, so that to it "मशीन" (machine: the vowel sign ी is a mark) was the two
    words "मश" and "न", and "मशाल" (torch) found it through "मश"; every Indic script, Thai's
    vowel signs and others write words with marks. A word is `\w` with these after it."""
    ranges: list[tuple[int, int]] = []
    for cp in map(ord, mark_chars()):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "")
                   for a, b in ranges)


def is_word_char(c: str) -> bool:
    r"""Whether `c` is part of a word as search cuts words: `\w` or a mark (`word_marks`)."""
    return c.isalnum() or c == "_" or unicodedata.category(c)[0] == "M"


def fold(text: str) -> str:
    """`text` as search compares it: lower case, and Latin letters without their accents
    ("Müller" → "muller", also when the "ü" is a "u" and a combining mark; "İ" → "i"), as
    SQLite's unicode61 tokenizer with remove_diacritics 2 folds the words of the store's index
    of summaries, so that a word folds alike in a title, an author, the start of a summary
    and the index. Letters that are no letter and an accent stay ("ł", "ø", "ß"), as they do
    there; so do ligatures and other compatibility forms ("ﬁ", "™", "²"), which the index
    keeps as they are. Text without a Latin letter beyond ASCII or an accent, most text, is
    only lowered."""
    low = text.lower()
    if low.isascii() or not _FOLDABLE.search(low):
        return low
    return unicodedata.normalize("NFC", _LATIN_MARKS.sub("", unicodedata.normalize("NFD", low)))
