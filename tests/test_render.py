"""The terminal and Markdown renderers with hostile item text: a feed controls titles, URLs and
summaries, and neither view may turn them into markup, links elsewhere or live HTML."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from feedbot.config import Config
from feedbot.digest import Digest, DigestEntry, build_digest
from feedbot.items import Item
from feedbot.render import print_text, render_json, render_markdown
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
