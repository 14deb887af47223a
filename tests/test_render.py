"""The terminal and Markdown renderers with hostile item text: a feed controls titles, URLs and
summaries, and neither view may turn them into markup, links elsewhere or live HTML."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from markdown_it import MarkdownIt
from rich.console import Console

from feedbot.digest import Digest, DigestEntry
from feedbot.render import print_text, render_markdown
from feedbot.roadmap import load_roadmap

HOSTILE_TITLE = "<script>alert('x')</script> *Transformers* & _attention_ [explained] \\"
ODD_URL = "https://blog.example.org/posts/a_(b)]x?tags[]=cnn"


def digest() -> Digest:
    entry = DigestEntry(
        id="abc123def456", title=HOSTILE_TITLE, url=ODD_URL, source="Evil <b>blog</b>",
        kind="post", authors=["A. *Author*"], published=datetime(2026, 11, 20, tzinfo=UTC),
        score=0.5, why="matches “attention”", summary="A <img src=x onerror=alert(1)> summary")
    return Digest(load_roadmap().get("nlp"), datetime(2026, 11, 25, tzinfo=UTC), [entry])


def test_markdown_shows_a_hostile_title_as_written_and_links_the_whole_url() -> None:
    html = MarkdownIt("commonmark").render(render_markdown(digest()))
    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert html.count("<em>") == 1  # only feedbot's own _Why:_; *Transformers* stays literal
    assert "&lt;script&gt;alert(" in html and "*Transformers*" in html
    assert "[explained] \\" in html  # the trailing backslash does not break the link
    href = ODD_URL.replace("&", "&amp;")
    assert f'<a href="{href.replace("[", "%5B").replace("]", "%5D")}">' in html


def test_the_terminal_link_is_the_whole_url_and_the_title_is_intact() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system="truecolor")
    print_text(digest(), console)
    text = out.getvalue()
    assert HOSTILE_TITLE in text  # no markup was interpreted
    assert "\x1b]8;id=" in text and f";{ODD_URL}\x1b\\" in text  # the OSC 8 hyperlink
