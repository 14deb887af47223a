"""Digest renderers: terminal text (rich), Markdown, HTML and JSON. Pure: digest in, text out.

Telegram has its own renderer in `telegram_render.py` (its HTML subset and length limits).
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from .items import clean_url, percent_encoded
from .text import UNSHOWN, mend_surrogates, shorten

if TYPE_CHECKING:
    from rich.console import Console

    from .digest import Digest, DigestEntry

FORMATS = ("text", "markdown", "html", "json")


def local_date(dt: datetime, tz: str) -> str:
    """`dt`'s calendar date in the learner's time zone `tz` (`learner.timezone`): a paper
    published at 23:12 UTC on the 4th came out on the 5th in Berlin, where it was shown as the
    4th's. Only the views show it so; the JSON keeps the UTC timestamp."""
    return dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d")


def _date(dt: datetime | None, tz: str) -> str:
    return local_date(dt, tz) if dt else "undated"


# What no view may show as written (`text.UNSHOWN`: `\x1b[2J` clears the screen, `\x1bc` resets
# the terminal, `\x1b]8;;URL` opens a hyperlink to anywhere, "\u202etxt.exe" reads "exe.txt").
# Line breaks and tabs become spaces (a title with a line break printed lines that looked like
# another item); the others are dropped, as items drop them when collected (and Telegram does).
_UNSHOWN = dict.fromkeys(UNSHOWN) | {ord(c): " " for c in "\t\n\v\f\r\x85"}


def shown(text: str) -> str:
    """`text` (a title, a name, a summary from a feed) as one line that the terminal, a
    Markdown or an HTML view shows as written: see `_UNSHOWN`; a lone surrogate, which no
    UTF-8 output can write, becomes U+FFFD."""
    return mend_surrogates(" ".join(text.translate(_UNSHOWN).split()))


def _title(e: DigestEntry) -> str:
    """The title as shown: "(untitled)" rather than a link with no text to click (or, in
    Markdown, `****`, which is a thematic break)."""
    return shown(e.title) or "(untitled)"


def _byline(e: DigestEntry, tz: str) -> str:
    parts = [" · ".join(dict.fromkeys(e.sources or [e.source]))]
    if e.shared_by:
        parts.append("shared by " + ", ".join(e.shared_by))
    if e.authors:
        names = ", ".join(e.authors[:3]) + (" et al." if len(e.authors) > 3 else "")
        parts.append(names)
    parts.append(_date(e.published, tz))
    return " — ".join(parts)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~&#!"})
# What opens a block at the start of a line even inside a paragraph: a list item (`- `, `+ `,
# `1. `, `1) `) or a setext underline (`---`, `===`), which turns the lines above into a heading.
_MD_LINE_START = re.compile(r"^(\d{0,9})([-+=.)])")


def md_text(text: str) -> str:
    """Text that Markdown shows as written: emphasis marks, brackets, HTML tags and entities,
    backslashes are escaped (a feed's `<script>` title must not become a live element), and
    so is a list or heading mark it starts with (a summary "1. Introduction …" or "---" begins
    a line of the digest)."""
    text = shown(text).translate(_MD_SPECIAL)
    return _MD_LINE_START.sub(r"\1\\\2", text, count=1)


# A command that a note names in backticks, as the terminal shows it ("run `feedbot collect`
# first"): the Markdown, HTML and Telegram views show it as code, not the backticks as typed.
COMMAND = re.compile(r"`(feedbot(?: [^`\n]*)?)`")
# the same in `md_text`'s output, where each backtick (and what else Markdown marks) is escaped
_MD_COMMAND = re.compile(r"\\`(feedbot(?: [^`\n]*?)?)\\`")
_MD_ESCAPED = re.compile(r"\\(.)")


def md_note(note: str) -> str:
    """A note (`Digest.notes`) for Markdown: `md_text`, with its commands (`COMMAND`) as code
    spans, which show their text as written."""
    return _MD_COMMAND.sub(lambda m: "`" + _MD_ESCAPED.sub(r"\1", m.group(1)) + "`",
                           md_text(note))


def html_note(text: str) -> str:
    """Escaped text (`html.escape`) with its commands (`COMMAND`) as <code>."""
    return COMMAND.sub(r"<code>\1</code>", text)


_LINKABLE = re.compile(r"^https?://[^/?#\\]", re.IGNORECASE)


def link_url(url: str) -> str | None:
    """The URL to link to, or None where it must not be a link: only http(s) URLs with a host
    are (never `javascript:`, `data:` or a relative path)."""
    url = clean_url(url)
    return url if _LINKABLE.match(url) else None


def md_url(url: str) -> str:
    """A link destination in angle brackets, which may hold parentheses; the characters that
    would end it (a line break, `>`, an escaping backslash) are percent-encoded."""
    return "<" + "".join(percent_encoded(c) if c in "<>\\" else c for c in clean_url(url)) + ">"


def render_markdown(d: Digest, explain: bool = False) -> str:
    lines = [f"# {md_text(d.heading)}", ""]
    if d.demo:
        lines += ["> **Demo items** — nothing has been collected yet; these are examples.", ""]
    for note in d.notes:
        lines.append(f"_{md_note(note)}_")
    if d.notes:
        lines.append("")
    if not d.items and d.nothing:
        lines.append(d.nothing)
    for n, e in enumerate(d.items, 1):
        link = link_url(e.url)
        title = f"[{md_text(_title(e))}]({md_url(link)})" if link else md_text(_title(e))
        lines.append(f"{n}. **{title}**  ")
        lines.append(f"   {md_text(_byline(e, d.timezone))}  ")
        lines.append(f"   _Why:_ {md_text(e.why)}  ")
        summary = md_text(shorten(e.summary, 280)) if e.summary else ""
        if summary.strip():  # one that shows nothing (a bidi mark) left a blank line, which
            lines.append(f"   {summary}  ")  # ended the list from the 10th entry on
        if explain:
            lines.append(f"   `{_parts(e, d.weights)}`  ")
        lines.append(f"   id: `{e.id}`")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_html(d: Digest, explain: bool = False) -> str:
    def esc(text: str) -> str:
        return html.escape(shown(text))

    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(d.heading)}</title>",
           "<style>body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;"
           "line-height:1.45;padding:0 1rem}li{margin-bottom:1.1rem}.meta{color:#555;"
           "font-size:.9em}.why{font-style:italic}.demo{background:#fff3cd;padding:.5rem}"
           "</style></head><body>", f"<h1>{esc(d.heading)}</h1>"]
    if d.demo:
        out.append('<p class="demo"><strong>Demo items</strong> — nothing has been collected '
                   "yet; these are examples.</p>")
    out += [f"<p><em>{html_note(esc(n))}</em></p>" for n in d.notes]
    if not d.items:
        out += [f"<p>{esc(d.nothing)}</p>"] if d.nothing else []
    else:
        out.append("<ol>")
        for e in d.items:
            link = link_url(e.url)
            title = f'<a href="{html.escape(link)}">{esc(_title(e))}</a>' if link else \
                f"<strong>{esc(_title(e))}</strong>"
            out.append(f'<li id="{esc(e.id)}">{title}'
                       f'<div class="meta">{esc(_byline(e, d.timezone))}</div>'
                       f'<div class="why">Why: {esc(e.why)}</div>')
            summary = esc(shorten(e.summary, 400)) if e.summary else ""
            if summary.strip():
                out.append(f"<p>{summary}</p>")
            if explain:
                out.append(f"<code>{esc(_parts(e, d.weights))}</code>")
            out.append(f'<div class="meta">id: <code>{esc(e.id)}</code></div>')
            out.append("</li>")
        out.append("</ol>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# In JSON text, what may not reach a terminal raw (C1 controls, DEL, bidi controls: see
# `_UNSHOWN`; json escapes C0 itself), the line separators JavaScript once took for line ends,
# and lone surrogates, which UTF-8 cannot write: escaped as \uXXXX, the same JSON value.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def render_json(d: Digest, explain: bool = False, ascii_only: bool = False) -> str:
    """The digest as JSON. `ascii_only` escapes every non-ASCII character (for an output that
    is not UTF-8); without it, the characters of `_JSON_RAW` are escaped all the same, so the
    result is always valid JSON that any stdout can write and no terminal takes for escape
    sequences, with every value as it was."""
    text = json.dumps(d.to_json(explain), ensure_ascii=ascii_only, indent=2)
    if not ascii_only:  # these can only be inside strings, where the escape means the same
        text = _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text + "\n"


def _parts(e: DigestEntry, weights: dict[str, float] | None = None) -> str:
    """`score 0.658 = similarity +0.534×1 + recency +0.794×0.15 + …`: each part with the
    weight it counts with, so that the line adds up to the score (the parts alone do not)."""
    if not weights:
        return f"score {e.score:.3f}: " + ", ".join(
            f"{k} {v:+.3f}" for k, v in e.parts.items())
    return f"score {e.score:.3f} = " + " + ".join(
        f"{k} {v:+.3f}×{weights.get(k, 0.0):g}" for k, v in e.parts.items())


def print_text(d: Digest, console: Console, explain: bool = False) -> None:
    """The terminal view: numbered items, title as a link, why, a short summary."""
    from rich.style import Style
    from rich.text import Text

    console.print(Text(shown(d.heading), style="bold"))
    if d.demo:
        console.print(Text("DEMO ITEMS — nothing has been collected yet; these are examples.",
                           style="black on yellow"))
    for note in d.notes:
        console.print(Text(shown(note), style="dim"))
    console.print()
    if not d.items and d.nothing:
        console.print(Text(shown(d.nothing)))
    for n, e in enumerate(d.items, 1):
        title = Text(f"{n:>2}. ", style="bold")  # a Style, not markup: URLs may hold "]"
        title.append(_title(e), style=Style(bold=True, link=link_url(e.url)))
        console.print(title)
        console.print(Text(f"    {shown(_byline(e, d.timezone))}", style="dim"))
        console.print(Text(f"    why: {shown(e.why)}", style="cyan"))
        if e.summary:
            console.print(Text("    " + shorten(shown(e.summary), 220)))
        console.print(Text(f"    {clean_url(e.url)}  [{shown(e.id)}]", style="dim"))
        if explain:
            console.print(Text(f"    {_parts(e, d.weights)}", style="magenta"))
        console.print()
