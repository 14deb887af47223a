"""The terminal and Markdown renderers with hostile item text: a feed controls titles, URLs and
summaries, and neither view may turn them into markup, links elsewhere or live HTML."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from feedbot.config import Config, load_config
from feedbot.digest import Digest, DigestEntry, build_digest
from feedbot.items import Item
from feedbot.render import print_text, render_html, render_json, render_markdown
from feedbot.roadmap import load_roadmap
from feedbot.store import Store

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


def test_the_explained_parts_add_up_to_the_score(fake_emb: object) -> None:
    """`--explain` printed `score 0.658 = similarity +0.534, …, recency +0.794, …`: the raw
    parts, which add up to far more than the score (recency counts 0.15)."""
    now = datetime(2026, 11, 25, tzinfo=UTC)
    store = Store(":memory:")
    titles = ["Convolutional networks for image segmentation",
              "Machine translation with attention", "Sampling from a posterior distribution"]
    store.upsert_items([Item(t, f"https://e.org/{n}", f"blog{n}", published=now - timedelta(days=n),
                             summary=t + ".") for n, t in enumerate(titles, 1)], now)
    d = build_digest(Config(), store, fake_emb, load_roadmap(), now=now, stage_id="cnn",
                     allow_demo=False)
    lines = [ln for ln in render_markdown(d, explain=True).splitlines() if "score " in ln]
    assert len(lines) == len(d.items) == 3
    for line, e in zip(lines, d.items, strict=True):
        terms = re.findall(r"(\w+) ([+-]\d+\.\d+)×([\d.]+)", line)
        assert {t[0] for t in terms} == set(e.parts)
        assert sum(float(v) * float(w) for _, v, w in terms) == pytest.approx(e.score, abs=0.005)
    doc = json.loads(render_json(d, explain=True))
    for item in doc["items"]:
        total = sum(doc["weights"][k] * v for k, v in item["parts"].items())
        assert total == pytest.approx(item["score"], abs=1e-3)
    assert "weights" not in json.loads(render_json(d))


# --- links, terminal escapes and output encodings ---------------------------------------------

def entry(url: str, title: str = "A title", **kw: object) -> DigestEntry:
    return DigestEntry(id=kw.pop("id", "abc123def456"), title=title, url=url,  # type: ignore[arg-type]
                       source="Blog", kind="post", authors=[], published=None, score=0.5,
                       why="matches “attention”", **kw)  # type: ignore[arg-type]


def digest_of(*entries: DigestEntry) -> Digest:
    return Digest(load_roadmap().get("nlp"), datetime(2026, 11, 25, tzinfo=UTC), list(entries))


NOT_LINKS = ["javascript:alert(1)", " JavaScript:alert(document.cookie)",
             "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)", "/relative/path",
             "java\tscript:alert(1)", "", "https:///no-host"]


@pytest.mark.parametrize("url", NOT_LINKS)
def test_only_http_urls_become_links(url: str) -> None:
    """A `javascript:` or `data:` URL was written as the link of the title, in Markdown
    (`[t](<javascript:alert(1)>)`, live in any renderer that does not filter schemes) and in
    HTML (`<a href="javascript:alert(1)">`). The title stays; the link goes."""
    d = digest_of(entry(url, title="Hostile link"), entry("https://e.org/ok", title="Fine"))
    md = render_markdown(d)
    assert re.findall(r"\]\(<([^>]*)>\)", md) == ["https://e.org/ok"]
    assert "**Hostile link**" in md
    page = render_html(d)
    assert re.findall(r'href="([^"]*)"', page) == ["https://e.org/ok"]
    assert "Hostile link" in page
    out = io.StringIO()
    print_text(d, Console(file=out, force_terminal=True, width=200))
    assert re.findall(r"\x1b\]8;id=\d+;([^\x1b]*)\x1b\\", out.getvalue()) == \
        ["https://e.org/ok"]


ESCAPES = "https://e.org/a\x1b]0;pwned\x07b\x1b[2Jc\u202etxt.exe"


def test_a_urls_escape_sequences_never_reach_the_terminal() -> None:
    """A feed's URL with ESC in it (a JSON Feed may hold one) went to the terminal as is:
    `feedbot digest` set the terminal's title and cleared the screen."""
    d = digest_of(entry(ESCAPES))
    for console in (Console(file=io.StringIO(), force_terminal=True, width=200),
                    Console(file=io.StringIO(), soft_wrap=True, highlight=False)):
        print_text(d, console)
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert "\x1b]0;" not in text and "\x1b[2J" not in text and "\u202e" not in text
        assert "https://e.org/a%1B]0;pwned%07b%1B[2Jc%E2%80%AEtxt.exe" in text


def test_a_url_with_a_line_break_stays_one_link_in_markdown() -> None:
    """`md_url` encoded spaces and angle brackets only: a newline or a trailing backslash in a
    URL ended the link, and Markdown showed `[title](<https://…` as text."""
    for url, want in [("https://e.org/a b\nc", "https://e.org/a%20b%0Ac"),
                      ("https://e.org/dir\\", "https://e.org/dir%5C")]:
        out = MarkdownIt("commonmark").render(render_markdown(digest_of(entry(url))))
        assert f'<a href="{want}">A title</a>' in out


def test_json_is_valid_utf8_even_with_a_lone_surrogate() -> None:
    """`json.dumps(ensure_ascii=False)` kept a lone surrogate, which no UTF-8 stdout can
    write: the JSON digest died with UnicodeEncodeError."""
    d = digest_of(entry("https://e.org/a", title="half an emoji \ud83c here", summary="é"))
    text = render_json(d)
    text.encode("utf-8")
    assert json.loads(text)["items"][0]["title"] == "half an emoji \ud83c here"
    assert json.loads(text)["items"][0]["summary"] == "é"
    ascii_text = render_json(d, ascii_only=True)
    assert ascii_text.isascii() and json.loads(ascii_text) == json.loads(text)


def test_explained_json_has_weights_even_without_items() -> None:
    """`--explain` gave `weights` only when there were items: a script reading it failed on
    the empty digest (`make_digest` fills them in either way: test_cli)."""
    doc = json.loads(render_json(digest_of(), explain=True))
    assert doc["weights"] == {} and doc["items"] == []
    weights = {"similarity": 1.0, "contrast": 0.5}
    doc = json.loads(render_json(replace(digest_of(), weights=weights), explain=True))
    assert doc["weights"] == weights


@pytest.mark.parametrize("summary", ["1. Introduction We study attention.", "- a dash first",
                                     "+ plus first", "---", "===", "1) One"])
def test_a_summary_that_starts_like_a_list_or_an_underline_stays_text(summary: str) -> None:
    """A summary line of the Markdown digest starting "1. Introduction" or "- " opened a
    list inside the item, and "---" or "===" turned the title, byline and why above it into a
    heading: the line is the item's text, shown as written."""
    d = digest_of(entry("https://e.org/a", summary=summary))
    out = MarkdownIt("commonmark").render(render_markdown(d))
    assert "<ul>" not in out and "<h2>" not in out and out.count("<h1>") == 1
    assert out.count("<ol>") == 1 and out.count("<li>") == 1  # the digest's own list only
    assert summary in out


# --- text a terminal would run, and titles that are not one line ------------------------------

RUNS = {"erase the screen": "\x1b[2J", "reset the terminal": "\x1bc",
        "link elsewhere": "\x1b]8;;https://evil.example\x1b\\", "8-bit CSI": "\x9b2J",
        "NUL": "\x00", "DEL": "\x7f", "right-to-left override": "\u202e",
        "isolate": "\u2067"}
RAN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def hostile_digest() -> Digest:
    text = "Safe " + " ".join(f"{name}:{seq}" for name, seq in RUNS.items()) + " txt.exe"
    e = entry("https://e.org/a", title=text, summary=text, sources=[text], shared_by=[text])
    e.source, e.why, e.authors = text, text, [text]
    return digest_of(e)


def test_a_feeds_escape_sequences_never_reach_the_terminal_in_any_format() -> None:
    """Titles, summaries, source and sharer names went to stdout as they came: a title with
    `\\x1b[2J` cleared the terminal of `feedbot digest` (and of `--format markdown|html`,
    which print to the terminal too), `\\x1bc` reset it, `\\x1b]8;;URL` made the text after
    it a link to anywhere, and U+202E showed "txt.exe" as "exe.txt". JSON escaped C0 but not
    DEL, the C1 controls (U+009B is a CSI of its own) or the bidi overrides. The text around
    them stays, and JSON keeps every value as it was."""
    d = hostile_digest()
    for out in (render_markdown(d), render_html(d)):
        assert not RAN.search(out), RAN.search(out)
        assert "Safe erase the screen:[2J reset the terminal:c" in out.replace("\\", "")
        assert "isolate: txt.exe" in out
    doc = render_json(d)
    assert not RAN.search(doc) and json.loads(doc)["items"][0]["title"] == d.items[0].title
    pipe = Console(file=io.StringIO(), soft_wrap=True, highlight=False)
    print_text(d, pipe)
    text = pipe.file.getvalue()  # type: ignore[attr-defined]
    assert not RAN.search(text) and text.count("isolate: txt.exe") == 6
    tty = Console(file=io.StringIO(), force_terminal=True, width=200)
    print_text(d, tty)
    text = tty.file.getvalue()  # type: ignore[attr-defined]
    for seq in RUNS.values():
        assert seq not in text
    # what ESC is left is rich's own styling, and the one hyperlink is the item's
    assert re.findall(r"\x1b\]8;id=\d+;([^\x1b]*)\x1b\\", text) == ["https://e.org/a"]
    rich_own = re.sub(r"\x1b\[[\d;]*m|\x1b\]8;(?:id=\d+)?;[^\x1b]*\x1b\\", "", text)
    assert not RAN.search(rich_own) and "isolate: txt.exe" in rich_own


def test_a_title_with_line_breaks_cannot_pass_for_another_item_in_the_terminal() -> None:
    """A feed title "Real\\n 2. Fake item\\n    why: …" printed as lines of their own, one
    of them numbered like the next item of the digest."""
    d = digest_of(entry("https://e.org/a", title="Real\n 2. Fake item\n    why: spoof\r\v\f",
                        summary="s\u2028 3. also fake"))
    out = io.StringIO()
    print_text(d, Console(file=out, soft_wrap=True, highlight=False))
    lines = out.getvalue().splitlines()
    assert " 1. Real 2. Fake item why: spoof" in lines and "    s 3. also fake" in lines
    assert not any(ln.startswith(" 2.") for ln in lines)


def test_an_empty_title_is_shown_as_untitled_not_as_an_empty_link() -> None:
    """An item without a title was `1. ****` in Markdown, a thematic break (a rule across
    the list item), or a link with nothing to click in every view."""
    d = digest_of(entry("https://e.org/a", title=" \n"), entry("", title="", id="2" * 12))
    page = MarkdownIt("commonmark").render(render_markdown(d))
    assert "<hr" not in page and '<a href="https://e.org/a">(untitled)</a>' in page
    assert page.count("<strong>(untitled)</strong>") == 1
    assert render_html(d).count("(untitled)") == 2
    out = io.StringIO()
    print_text(d, Console(file=out, soft_wrap=True, highlight=False))
    assert " 1. (untitled)" in out.getvalue() and " 2. (untitled)" in out.getvalue()


def test_json_keeps_other_text_as_written_beside_a_lone_surrogate() -> None:
    """One lone surrogate anywhere made the whole digest ASCII (`\\u00e9` for every é); only
    what UTF-8 or a terminal cannot take is escaped now, in the same valid JSON."""
    d = digest_of(entry("https://e.org/a", title="half \ud83c, é 😀 中 \x9b"))
    text = render_json(d)
    assert "é 😀 中" in text and "\\ud83c" in text and "\\u009b" in text
    text.encode("utf-8")
    assert json.loads(text)["items"][0]["title"] == "half \ud83c, é 😀 中 \x9b"


# what shows as one character: a letter with accents, emoji with skin tone, ZWJ and variation
# selector, flags (a regional-indicator pair, and a subdivision flag of tag characters), a
# Devanagari syllable with a spacing mark, a Hangul syllable written as jamo
_CLUSTERS = ["e\u0301\u0323", "👍🏽", "👩\u200d🔬", "❤\ufe0f", "🇫🇷", "🇩🇪",
             "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "कि",
             "\u1100\u1161\u11a8", "a", "字"]


@pytest.mark.parametrize("seed", range(40))
def test_shorten_never_splits_what_shows_as_one_character(seed: int) -> None:
    import random

    from feedbot.text import shorten

    rng = random.Random(seed)
    clusters = [rng.choice(_CLUSTERS) for _ in range(rng.randrange(5, 40))]
    text = "".join(clusters)  # no space: the cut cannot fall back on a word boundary
    for width in range(2, len(text) + 2):
        got = shorten(text, width)
        assert len(got) <= width
        if got == text:
            continue
        assert got.endswith("…")
        kept = got[:-1]
        whole = ["".join(clusters[:k]) for k in range(len(clusters) + 1)]
        assert kept in whole, (width, kept)
        # and it keeps every whole cluster that fits
        assert len("".join(clusters[:whole.index(kept) + 1])) > width - 1


def test_shorten_still_cuts_at_a_word_boundary_and_under_width() -> None:
    from feedbot.text import shorten

    assert shorten("Attention is all you need, again", 20) == "Attention is all…"
    assert shorten("short", 20) == "short"
    assert shorten("é" * 30, 10) == "é" * 9 + "…"  # composed: one code point each


def test_every_format_shows_the_id_that_feedback_takes() -> None:
    """The README: ITEM is the id every digest format shows. The HTML page had it only as
    the `<li>`'s id attribute, which a reader never sees."""
    d = digest_of(entry("https://e.org/a", id="0123456789ab"))
    assert "<code>0123456789ab</code>" in render_html(d)
    assert "`0123456789ab`" in render_markdown(d)
    assert json.loads(render_json(d))["items"][0]["id"] == "0123456789ab"
    console = Console(file=io.StringIO(), width=120)
    print_text(d, console)
    assert "0123456789ab" in console.file.getvalue()


def test_a_summary_that_shows_nothing_leaves_no_blank_line_in_the_list() -> None:
    """A summary of only a bidi mark (shown as nothing) wrote an empty line: from the 10th
    entry on (4-space indent) the `id:` line fell out of the Markdown list."""
    base = digest().items[0]
    entries = [replace(base, id=f"{n:012d}", title=f"Post {n}",
                       summary="\u202e" if n == 10 else "A summary.") for n in range(1, 13)]
    d = replace(digest(), items=entries)
    html = MarkdownIt("commonmark").render(render_markdown(d))
    assert html.count("<ol") == 1
    assert re.search(r"<li>(?:(?!</li>).)*000000000010(?:(?!</li>).)*</li>", html, re.S)
    assert "<p></p>" not in render_html(d)


# --- dates ------------------------------------------------------------------------------------

LATE_EVENING = datetime(2026, 12, 4, 23, 12, tzinfo=UTC)  # 00:12 on the 5th in Berlin


def test_dates_are_the_learners_and_the_json_keeps_the_utc_timestamp(fake_emb: object) -> None:
    """With `timezone: Europe/Berlin`, a paper published at 23:12 UTC on the 4th (00:12 on
    the 5th in Berlin) was shown as the 4th's in every view."""
    cfg = load_config("sources.yaml", text="learner: {stage: nlp, timezone: Europe/Berlin}\n")
    store = Store(":memory:")
    now = LATE_EVENING + timedelta(hours=8)
    store.upsert_items([Item("Machine translation with attention", "https://e.org/1", "blog",
                             published=LATE_EVENING, summary="Attention.")], now)
    d = build_digest(cfg, store, fake_emb, load_roadmap(), now=now, allow_demo=False)
    console = Console(file=io.StringIO(), width=200)
    print_text(d, console)
    for view in (render_markdown(d), render_html(d), console.file.getvalue()):
        assert "2026-12-05" in view and "2026-12-04" not in view, view
    assert json.loads(render_json(d))["items"][0]["published"] == "2026-12-04T23:12:00+00:00"
    assert "2026-12-04" in render_markdown(replace(d, timezone="UTC"))
    assert "2026-12-04" in render_markdown(replace(d, timezone="America/New_York"))


def test_a_command_a_note_names_shows_as_code_in_markdown_and_html(fake_emb: object) -> None:
    """`feedbot search --format markdown` (or html) before any collection said "run
    \\`feedbot collect\\` first", backticks and all, as the terminal writes it."""
    from feedbot.search import search

    cfg = load_config("sources.yaml", text="learner: {stage: nlp}\n")
    found = search(cfg, Store(":memory:"), fake_emb, load_roadmap(), "attention",
                   now=datetime(2026, 11, 25, tzinfo=UTC))
    assert found.notes == ["nothing collected yet: run `feedbot collect` first, then search "
                           "what it brings"]
    md = MarkdownIt("commonmark").render(render_markdown(found))
    page = render_html(found)
    for out in (md, page):
        assert "<em>nothing collected yet: run <code>feedbot collect</code> first, then search " \
            "what it brings</em>" in out
        assert "`" not in out
