"""`feedbot search`: what feedbot collected, found again by meaning, by words and by id.

Most tests use the fake embedder (a hashed bag of words: "close in meaning" is shared words);
the quality test and the no-torch test use the real packaged model (marked `model`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import feedbot.embed
from feedbot.cli import main
from feedbot.config import Config, load_config
from feedbot.digest import DigestEntry, _vectors
from feedbot.embed import Embedder
from feedbot.items import Item
from feedbot.roadmap import load_roadmap
from feedbot.search import SUMMARY_HEAD, SearchError, query_words, search
from feedbot.store import Store
from feedbot.telegram_render import render_search

from .fake_bot_api import telegram_html_problems

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SOURCES = """\
learner: {stage: nlp}
blogs:
  - name: Lab Notes
    url: https://lab.example.org/feed.xml
  - name: Other Blog
    url: https://other.example.org/feed.xml
arxiv:
  - name: cs.CL
    category: cs.CL
"""


def config(text: str = SOURCES) -> Config:
    return load_config("sources.yaml", text=text)


def post(title: str, summary: str = "", *, source: str = "Lab Notes", days: float = 2,
         authors: tuple[str, ...] = (), slug: str = "", links: tuple[str, ...] = (),
         now: datetime = NOW) -> Item:
    slug = slug or title.lower().replace(" ", "-")[:40]
    return Item(title, f"https://{source.lower().replace(' ', '')}.example.org/{slug}", source,
                "post", authors=authors, published=now - timedelta(days=days), summary=summary,
                links=links)


def paper(aid: str, title: str, summary: str = "", *, authors: tuple[str, ...] = (),
          days: float = 2, now: datetime = NOW) -> Item:
    return Item(title, f"https://arxiv.org/abs/{aid}", "cs.CL", "paper", authors=authors,
                published=now - timedelta(days=days), summary=summary, arxiv_id=aid)


LIBRARY = [
    post("Sparse attention for very long documents",
         "Attention that looks at a few tokens lets transformers read whole books."),
    post("Gradient descent, step by step", "The learning rate and the loss surface."),
    paper("2106.09685", "Low-rank adapters for large language models",
          "We freeze the weights and train LoRA matrices injected into each layer.",
          authors=("Edward Hu", "Yelong Shen")),
    post("Let's build a tokenizer", "Byte pair encoding from scratch, in a video.",
         authors=("Andrej Karpathy",)),
    post("Convolutional networks for image classification", "Filters and pooling.",
         source="Other Blog"),
]


def stored(store: Store, emb: Any, items: list[Item], now: datetime = NOW) -> Store:
    store.upsert_items(items, now)
    _vectors(store, emb, store.items_since())
    return store


def find(store: Store, emb: Any, query: str, cfg: Config | None = None, **kw: Any) -> Any:
    return search(cfg or config(), store, emb, load_roadmap(), query, now=NOW, **kw)


def titles(result: Any) -> list[str]:
    return [e.title for e in result.items]


# --- the search itself -------------------------------------------------------------------------

def test_words_of_the_query_find_the_item_and_say_where(fake_emb: Any) -> None:
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    found = find(store, fake_emb, "that paper on sparse attention")
    assert titles(found)[0] == "Sparse attention for very long documents"
    assert found.items[0].why.startswith("“sparse”, “attention” in the title")
    assert found.searched == len(LIBRARY) and found.unembedded == 0
    assert [w.text for w in query_words("that paper on sparse attention")] == \
        ["sparse", "attention"]  # stop words are not looked up


def test_a_name_or_an_acronym_finds_its_items_though_the_vectors_miss_it(fake_emb: Any
                                                                         ) -> None:
    """The fake vectors of "Karpathy" and "LoRA" share nothing with the items (the name is an
    author's, the acronym is only in a summary): only the lexical signal finds them."""
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    by_name = find(store, fake_emb, "Karpathy")
    assert titles(by_name) == ["Let's build a tokenizer"]
    assert by_name.items[0].why == "by Andrej Karpathy"
    acronym = find(store, fake_emb, "LoRA")
    assert titles(acronym) == ["Low-rank adapters for large language models"]
    assert acronym.items[0].why == "“LoRA” in the summary"
    assert find(store, fake_emb, "Karpathy", lexical_weight=0.0).items == []  # cosine alone
    assert titles(find(store, fake_emb, "tokenizers")) == ["Let's build a tokenizer"]  # plural


def test_a_capitalised_name_or_news_is_not_taken_for_a_plural(fake_emb: Any) -> None:
    """"Williams" found "William" (and "Adams" "Adam", "news" "New"), the why saying
    “Williams” by William T. Freeman: a query word ending in "s" lost it whatever it was."""
    lib = [post("Motion in videos", "Optical flow.", authors=("William T. Freeman",)),
           post("Embodied agents", "Robots that talk.", authors=("Iwan Williams",)),
           post("A new semi-supervised technique", "Labels are few."),
           post("Fake news detection with transformers", "Claims and sources."),
           post("A transformer for tables", "Rows and columns.")]
    store = stored(Store(":memory:"), fake_emb, lib)
    williams = find(store, fake_emb, "Williams")
    assert titles(williams)[0] == "Embodied agents"
    assert all(e.parts["words"] == 0 for e in williams.items[1:])  # William: by meaning only
    def by_words(query: str) -> set[str]:
        return {e.title for e in find(store, fake_emb, query).items if e.parts["words"] > 0}

    assert by_words("news") == {"Fake news detection with transformers"}
    assert by_words("transformers") == {"Fake news detection with transformers",
                                        "A transformer for tables"}  # the plural: still both
    assert [w.stem for w in query_words("LLMs NeRFs ViTs Pandas")] == ["llm", "nerf", "vit",
                                                                 "pandas"]


def test_a_query_in_sentence_case_finds_the_singular_of_its_first_word(fake_emb: Any) -> None:
    """A phone capitalises the first word: "Transformers for tables" took "Transformers" for
    a name and found no "transformer". A first word in sentence case before a word in lower
    case is a plural again; a name alone, with another name or with "et al" stays a name."""
    lib = [post("A transformer for table understanding", "Rows and columns."),
           post("Embodied agents", "Robots that talk.", authors=("Iwan Williams",)),
           post("Motion in videos", "Optical flow.", authors=("William T. Freeman",))]
    store = stored(Store(":memory:"), fake_emb, lib)
    found = find(store, fake_emb, "Transformers for tables")
    assert found.items[0].title == lib[0].title
    assert found.items[0].why.startswith("“Transformers”, “tables” in the title")
    stems = {q: [w.stem for w in query_words(q)] for q in (
        "Transformers for tables", "Williams", "Williams Freeman", "Williams et al.",
        "Adams optimizer", "LLMs for code")}
    assert stems == {"Transformers for tables": ["transformer", "table"],
                     "Williams": ["williams"], "Williams Freeman": ["williams", "freeman"],
                     "Williams et al.": ["williams"], "Adams optimizer": ["adam", "optimizer"],
                     "LLMs for code": ["llm", "code"]}


@pytest.mark.parametrize("ref", ["2106.09685", "arXiv:2106.09685v2",
                                 "https://arxiv.org/abs/2106.09685v1",
                                 "<https://arxiv.org/pdf/2106.09685>"])
def test_an_arxiv_id_or_url_finds_that_item_directly(fake_emb: Any, ref: str) -> None:
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY[:2], paper(
        "2106.09685", "Low-rank adapters", "LoRA.", days=900)])  # older than the window
    found = find(store, fake_emb, ref)
    assert found.direct and [e.id for e in found.items] == ["arxiv:2106.09685"]
    assert found.items[0].why == "the item with this arXiv id"


def test_an_item_id_or_link_finds_it_and_an_unknown_id_says_so(fake_emb: Any) -> None:
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    blog = LIBRARY[0]
    assert [e.id for e in find(store, fake_emb, blog.id).items] == [blog.id]
    by_link = find(store, fake_emb, blog.url + "?utm_source=x")
    assert [e.id for e in by_link.items] == [blog.id]
    assert by_link.items[0].why == "the item at this link"
    missing = find(store, fake_emb, "2401.99999")
    assert missing.items == [] and missing.empty == (
        "no stored item has the arXiv id 2401.99999: feedbot has not collected it (or it was "
        "pruned)")


def test_a_withdrawn_paper_kept_for_a_vote_is_found_by_no_search(fake_emb: Any) -> None:
    """A chat voted on the paper, then arXiv's v2 withdrew it: kept for that vote, it was
    still found by its words and its id. Named, the answer says why it is not shown."""
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    lora = LIBRARY[2]
    store.set_feedback("c1", lora.id, "up", NOW)
    assert titles(find(store, fake_emb, "LoRA")) == [lora.title]
    store.upsert_items([replace(lora, arxiv_version=2, withdrawn=True)], NOW)
    for query in ("LoRA", "low-rank adapters", "Yelong Shen"):
        assert lora.title not in titles(find(store, fake_emb, query)), query
    named = find(store, fake_emb, "arXiv:2106.09685")
    assert named.items == [] and named.empty == (
        "the stored paper that has the arXiv id 2106.09685 was withdrawn by its authors on "
        "arXiv: it is kept for the votes and read-later lists that have it, and searches and "
        "digests leave it out")


def test_a_withdrawn_paper_removed_is_named_as_withdrawn_not_as_pruned(fake_emb: Any) -> None:
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    lora = LIBRARY[2]
    store.upsert_items([replace(lora, arxiv_version=2, withdrawn=True)], NOW)
    named = find(store, fake_emb, "https://arxiv.org/abs/2106.09685v1")
    assert named.items == [] and named.empty == (
        "the paper that has the arXiv id 2106.09685 was withdrawn by its authors on arXiv, and "
        "feedbot removed it")


def test_since_sets_the_window(fake_emb: Any) -> None:
    old = post("Sparse attention, the first attempt", "An old post.", days=500)
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, old])
    assert old.title not in titles(find(store, fake_emb, "sparse attention"))  # 365 days
    wide = find(store, fake_emb, "sparse attention", since=timedelta(days=600))
    assert old.title in titles(wide) and wide.searched == len(LIBRARY) + 1
    narrow = find(store, fake_emb, "sparse attention", since=timedelta(days=1))
    assert narrow.items == [] and narrow.empty == (
        "nothing published in the last 1 day; a longer --since looks further back")


def test_source_keeps_one_sources_items(fake_emb: Any) -> None:
    same = post("Image classification with convolutional networks", "Our take.")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, same])
    everywhere = find(store, fake_emb, "convolutional image classification")
    assert len(everywhere.items) == 2
    other = find(store, fake_emb, "convolutional image classification", source="other blog")
    assert titles(other) == ["Convolutional networks for image classification"]
    assert other.searched == 1
    with pytest.raises(SearchError, match=r"no source named 'Nope'; sources: Lab Notes"):
        find(store, fake_emb, "convolutional", source="Nope")


def test_a_story_is_listed_once_with_its_sources(fake_emb: Any) -> None:
    """A paper and a blog post about it (it links the paper) are one entry, as in the digest."""
    about = post("Reading the LoRA paper", "Why low-rank adapters work.",
                 source="Other Blog", links=("https://arxiv.org/abs/2106.09685",))
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, about])
    found = find(store, fake_emb, "LoRA low-rank adapters")
    assert len(found.items) == 1
    assert set(found.items[0].sources) == {"arXiv cs.CL", "Other Blog"}


def test_items_of_unfollowed_sources_are_not_found(fake_emb: Any) -> None:
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    store.record_success("Other Blog", NOW)  # feedbot collected it: a known source
    cfg = config(SOURCES.replace("  - name: Other Blog\n    url: https://other.example.org/"
                                 "feed.xml\n", ""))
    hidden = find(store, fake_emb, "convolutional image classification", cfg)
    assert "Convolutional networks for image classification" not in titles(hidden)
    assert hidden.searched == len(LIBRARY) - 1
    assert "Convolutional networks for image classification" in titles(
        find(store, fake_emb, "convolutional image classification"))  # followed again
    only_hidden = Store(":memory:")
    stored(only_hidden, fake_emb, [LIBRARY[4]])
    only_hidden.record_success("Other Blog", NOW)
    nothing = find(only_hidden, fake_emb, "convolutional", cfg)
    assert nothing.empty.startswith("nothing from the sources you follow in the last 365 days:"
                                    " the 1 item collected then came from sources you no "
                                    "longer follow")


def test_items_without_a_vector_are_embedded_first_or_matched_by_words(
        fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Collection embeds only the last 60 days: a new blog's older posts had no vector, and
    the note said `feedbot collect` would embed them, which it never did. The search embeds
    them (the newest SEARCH_EMBEDS); when it cannot, words still find them."""
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    late = post("Sparse mixture of experts", "Routing tokens to experts.", slug="moe",
                days=200)
    store.upsert_items([late], NOW)  # collected, not embedded
    assert len(store.missing_vectors(fake_emb.model_id)) == 1

    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("the model could not load")

    with monkeypatch.context() as m:
        m.setattr("feedbot.pipeline.embed_cached", broken)
        found = find(store, fake_emb, "sparse experts")
    assert titles(found)[0] == late.title and found.unembedded == 1
    assert found.notes == ["1 item searched has no vector yet: matched by its words only "
                           "(a search embeds up to 1,000 first, the newest: search again for "
                           "more)"]
    in_chat = find(store, fake_emb, "sparse experts", embeds=0)  # the bot's: embeds nothing
    assert in_chat.unembedded == 1 and in_chat.notes[0].endswith(
        "(`feedbot search` in a terminal embeds them)")
    # the chat shows the command as code, as its other messages do: Telegram's HTML showed
    # the backticks as typed
    [msg] = render_search(in_chat.query, in_chat.items, in_chat.notes)
    assert telegram_html_problems(msg.text) == []
    assert "\n<i>1 item searched has no vector yet: matched by its words only (</i><code>" \
        "feedbot search</code><i> in a terminal embeds them)</i>\n" in msg.text
    assert "`" not in msg.text
    found = find(store, fake_emb, "sparse experts")
    assert titles(found)[0] == late.title and found.unembedded == 0 and found.notes == []
    assert store.missing_vectors(fake_emb.model_id) == []


def test_a_model_that_cannot_load_says_why_the_search_is_by_words(
        fake_emb: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged model: the search said only "search again for more", which cannot help."""
    from feedbot.embed import EmbedSettingError

    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    store.upsert_items([post("Sparse mixture of experts", "Routing tokens.", slug="moe",
                             days=200)], NOW)

    def broken(*a: Any, **k: Any) -> Any:
        raise EmbedSettingError("FEEDBOT_MODEL=/m: the model at /m cannot be loaded (OSError)")

    monkeypatch.setattr("feedbot.pipeline.embed_cached", broken)
    with caplog.at_level("WARNING", logger="feedbot.search"):
        found = find(store, fake_emb, "sparse experts")
    assert found.unembedded == 1
    assert [r.getMessage() for r in caplog.records] == [
        "searching by words only: FEEDBOT_MODEL=/m: the model at /m cannot be loaded (OSError)"]


def test_empty_query_no_items_and_no_match_are_one_line_each(fake_emb: Any) -> None:
    empty = Store(":memory:")
    with pytest.raises(SearchError, match="search for what"):
        find(empty, fake_emb, "   ")
    assert find(empty, fake_emb, "attention").empty == (
        "nothing collected yet: run `feedbot collect` first, then search what it brings")
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    none = find(store, fake_emb, "quantum chromodynamics")
    assert none.items == [] and none.empty == (
        "nothing matches “quantum chromodynamics” in the last 365 days (5 items searched)")


def test_a_direct_lookup_keeps_to_the_source_asked_for(fake_emb: Any) -> None:
    """--source holds for an arXiv id, an item id or a link as for words: the item named is
    shown only when that source brought it, else one line says where it came from."""
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    blog, other = LIBRARY[0], LIBRARY[4]
    for ref in ("2106.09685", blog.id, other.url):
        found = find(store, fake_emb, ref, source="Lab Notes" if ref != blog.id else "cs.CL")
        assert found.direct and found.items == [], ref
        assert found.empty.startswith("the stored item that "), found.empty
    assert find(store, fake_emb, "2106.09685", source="cs.CL").empty == ""
    by_id = find(store, fake_emb, blog.id, source="other blog")
    assert by_id.empty == (f"the stored item that has the id {blog.id} is not from other "
                           "blog: it came from Lab Notes")
    kept = find(store, fake_emb, other.url, source="Other Blog")
    assert [e.id for e in kept.items] == [other.id] and kept.items[0].source == "Other Blog"
    assert "from Other Blog" in kept.heading


def test_a_pages_link_finds_every_entry_on_it(fake_emb: Any) -> None:
    """A day's posts on one page, told apart by their #fragment: the page's link found one
    of them, called "the item at this link". Each entry's own link still finds just it."""
    page = "https://lab.example.org/2017/06/26.html"
    notes = [Item(f"Note {n}", f"{page}#a{n}", "Lab Notes", guid=f"{page}#a{n}",
                  published=NOW - timedelta(days=2)) for n in range(3)]
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, *notes])
    for ref in (page, f"{page}#nonexistent", "lab.example.org/2017/06/26.html"):
        found = find(store, fake_emb, ref)
        assert found.direct and [e.id for e in found.items] == [n.id for n in notes], ref
        assert {e.why for e in found.items} == {"one of the 3 items on this page"}
    exact = find(store, fake_emb, notes[1].url)
    assert [e.id for e in exact.items] == [notes[1].id]
    assert exact.items[0].why == "the item at this link"
    elsewhere = find(store, fake_emb, page, source="Other Blog")
    assert elsewhere.items == [] and elsewhere.empty == (
        f"none of the 3 stored items at {page} is from Other Blog: they came from Lab Notes")


@pytest.mark.parametrize("query", ["???", "!!! ...", "🚀", "-", "the of and", "What is this?"])
def test_a_query_of_punctuation_or_common_words_only_says_so(fake_emb: Any, query: str
                                                               ) -> None:
    """Nothing to look up and nothing to mean: one line that says so (exit 2 in the CLI),
    not "nothing matches" as if the store lacked it, nor items near a vector of "the"."""
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    with pytest.raises(SearchError, match=r"^(nothing to search for in|“.+” has only common "
                                          r"words)") as e:
        find(store, fake_emb, query)
    assert "\n" not in str(e.value)
    # the bot's /search answers with this line as plain text: no backticks, and no command
    # of the terminal's ("`feedbot search sparse attention`" was shown so in the chat)
    assert str(e.value).endswith(": give some words, e.g. “sparse attention”, an arXiv id or "
                                 "a link") or str(e.value).endswith(
        ": say what the item is about, e.g. “sparse attention”, an arXiv id or a link")
    assert titles(find(store, fake_emb, "the tokenizer"))[0] == "Let's build a tokenizer"


def test_a_pasted_page_is_cut_where_the_answer_repeats_it(fake_emb: Any) -> None:
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    query = "quantum chromodynamics " * 90  # 2,000 characters
    none = find(store, fake_emb, query)
    assert none.items == [] and len(none.empty) < 200 and "…”" in none.empty
    assert none.query == " ".join(query.split())  # the JSON keeps it whole
    found = find(store, fake_emb, "sparse attention " * 120)
    assert titles(found)[0] == "Sparse attention for very long documents"
    assert len(found.heading) < 200
    with pytest.raises(SearchError) as e:
        find(store, fake_emb, "? " * 1000)
    assert len(str(e.value)) < 250


def test_words_of_scripts_without_spaces_are_found_inside_longer_runs(fake_emb: Any) -> None:
    """Chinese and Japanese put no space between words: "注意力" (attention) is a word of
    "稀疏注意力机制" (sparse attention mechanism), which the look for whole words missed."""
    zh = post("稀疏注意力机制", "长文档的高效注意力。", slug="zh")
    ja = post("トランスフォーマーの解説", "自己注意の仕組み。", slug="ja")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, zh, ja])
    found = find(store, fake_emb, "注意力")
    assert titles(found) == [zh.title] and found.items[0].why.startswith("“注意力” in the title")
    assert titles(find(store, fake_emb, "トランスフォーマー")) == [ja.title]
    assert titles(find(store, fake_emb, "自己注意")) == [ja.title]  # in the summary
    assert "Sparse attention for very long documents" not in titles(
        find(store, fake_emb, "注意"))  # Latin text is not searched by substrings


def test_a_word_without_spaces_is_found_late_in_a_long_summary(fake_emb: Any) -> None:
    """The word index cannot answer for words of scripts without spaces, so they were looked
    for in the first SUMMARY_HEAD characters only: a Chinese abstract naming its method late
    was not found by it."""
    filler = "我们研究长文档的高效表示方法，并在多个数据集上进行实验。" * 20  # 560 characters
    late = post("长文档模型", filler + "最后我们提出稀疏注意力机制。", slug="late")
    english = post("Notes on long documents", "word " * 100 + "注意力", slug="en")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, late, english])
    assert len(filler) > SUMMARY_HEAD
    found = find(store, fake_emb, "稀疏注意力")
    assert titles(found) == [late.title]
    assert found.items[0].why.startswith("“稀疏注意力” in the summary")
    # an English summary is not read whole for it: a CJK word there only counts in its start
    assert english.title not in titles(find(store, fake_emb, "注意力"))


@pytest.mark.parametrize(("query", "text"), [
    ("sparse-attention", "Sparse attention for very long documents"),
    ("self-attention", "Why self attention works"), ("GPT-4", "What GPT4 knows")])
def test_a_hyphen_of_the_query_finds_the_words_spaced_or_joined(query: str, text: str) -> None:
    """(The other way, "self attention" already found "self-attention": two words.)"""
    [word] = query_words(query)
    assert word.pattern.search(text.lower())
    assert not query_words("self-attention")[0].pattern.search("self\nattention")


def test_a_hyphenated_query_finds_the_title_by_its_words(fake_emb: Any) -> None:
    item = post("Why self attention works", "Queries, keys and values.", slug="sa")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, item])
    found = find(store, fake_emb, "self-attention")
    assert titles(found)[0] == item.title
    assert found.items[0].why.startswith("“self-attention” in the title")


@pytest.mark.parametrize("ref", ["{}", "<{}>", "{}?utm_source=x"])
def test_a_link_without_its_scheme_finds_the_item(fake_emb: Any, ref: str) -> None:
    ref = ref.format(LIBRARY[0].url.removeprefix("https://"))  # labnotes.example.org/sparse-…
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    found = find(store, fake_emb, ref)
    assert found.direct and [e.id for e in found.items] == [LIBRARY[0].id]
    assert found.items[0].why == "the item at this link"
    # not a stored link: its words are searched ("cs.CL/cs.LG" is no link)
    assert not find(store, fake_emb, "cs.CL/cs.LG").direct
    assert not find(store, fake_emb, "unknown.example.org/sparse-attention").direct


@pytest.mark.parametrize(("ref", "want"), [
    ("{url}.", "{id}"), ("{url},", "{id}"), ("({url}).", "{id}"), ("{id}.", "{id}"),
    ("2106.09685.", "arxiv:2106.09685"), ("arXiv:2106.09685v2;", "arxiv:2106.09685")])
def test_a_link_or_id_pasted_with_the_end_of_its_sentence_finds_the_item(
        fake_emb: Any, ref: str, want: str) -> None:
    """Copied from the end of a sentence, a link kept its full stop: "no stored item is at
    …/post." (its page is stored without it), and an arXiv id with one was searched as words."""
    blog = LIBRARY[0]
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    found = find(store, fake_emb, ref.format(url=blog.url, id=blog.id))
    assert found.direct and [e.id for e in found.items] == [want.format(id=blog.id)]
    missing = find(store, fake_emb, "2401.99999.")
    assert missing.direct and missing.empty.startswith(
        "no stored item has the arXiv id 2401.99999: ")


# --- words anywhere in a summary (the store's word index) ------------------------------------

# An abstract's first 400 characters, none of the words looked for below.
OPENING = ("We study how language models learn from data. " * 10).strip()


def late(title: str, tail: str, slug: str) -> Item:
    """A post whose summary holds `tail` only after its first 400 characters."""
    return post(title, f"{OPENING} {tail}", slug=slug)


def in_summary(store: Store, emb: Any, query: str) -> list[str]:
    """Titles of the items found for `query` by its words in their summaries. (At the lexical
    weight 1 a summary hit alone passes the score floor: the fake vectors share nothing.)"""
    return [e.title for e in find(store, emb, query, lexical_weight=1.0).items
            if e.why == f"“{query}” in the summary"]


def test_a_word_late_in_a_long_summary_is_found_by_its_word(fake_emb: Any) -> None:
    """Words used to be looked for in a summary's first 400 characters only: a word that
    appears later in an abstract was found, if at all, only weakly by meaning."""
    item = late("Notes on a field study", "Our case study is the quokka population.", "q")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, item])
    assert len(OPENING) > 400 and item.summary.index("quokka") > 400
    found = find(store, fake_emb, "quokka")
    assert titles(found) == [item.title] and found.items[0].why == "“quokka” in the summary"
    assert in_summary(store, fake_emb, "quokkas") == [item.title]  # the plural as before
    assert in_summary(store, fake_emb, "quok") == []  # whole words, not parts of them
    assert in_summary(store, fake_emb, "LoRA") == [LIBRARY[2].title]  # early words still


PLURALS = [("classes", "class"), ("losses", "loss"), ("patches", "patch"),
           ("biases", "bias"), ("policies", "policy"), ("libraries", "library"),
           ("GPUs", "GPU")]


@pytest.mark.parametrize(("plural", "singular"), PLURALS)
def test_plurals_in_es_and_ies_find_the_singular_and_back(fake_emb: Any, plural: str,
                                                           singular: str) -> None:
    """"classes" was looked up as "classe" (+ s/es), "policies" as "policie" and "GPUs" not
    as a plural at all ("-us"): none found "class", "policy", "GPU", and "policy" or
    "library" did not find "policies" or "libraries". Checked in a title (the scan), late in
    a summary (the word index) and with the words of a summary's start alone (no index)."""
    for a, b in ((plural, singular), (singular, plural)):
        item = late(f"Notes on one {b} and more", f"Our note is on the {b} here.", "x")
        store = stored(Store(":memory:"), fake_emb, [*LIBRARY, item])
        found = find(store, fake_emb, a)
        assert titles(found)[0] == item.title, (a, b)
        assert found.items[0].why.startswith(f"“{a}” in the title")
        assert item.title not in in_summary(store, fake_emb, a)  # the title's, not both
        summary_only = late("Field notes", f"Our note is on the {b} here.", "y")
        store = stored(Store(":memory:"), fake_emb, [*LIBRARY, summary_only])
        assert [e.why.startswith(f"“{a}” in the summary")
                for e in find(store, fake_emb, a, lexical_weight=1.0).items
                if e.title == summary_only.title] == [True], (a, b)
    assert singular.lower() in query_words(plural)[0].stems


@pytest.mark.parametrize(("query", "text"), [
    ("uses", "let us go"), ("cases", "the cas latency"), ("axes", "an ax"),
    ("Hughes", "a hugh fee"), ("series", "a serie"), ("news", "a new one"),
    ("GPUS", "one gpu")])
def test_words_that_only_look_like_plurals_in_es_keep_their_own_stem(query: str, text: str
                                                                     ) -> None:
    [word] = query_words(query)
    assert not word.pattern.search(text)


def test_without_fts5_plurals_in_es_are_found_at_the_start_of_a_summary(
        fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import feedbot.store

    monkeypatch.setattr(feedbot.store, "fts5_available", lambda: False)
    item = post("Field notes", "Two policies of one class.")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, item])
    assert not store.has_word_index()
    assert item.title in in_summary(store, fake_emb, "classes")
    assert item.title in in_summary(store, fake_emb, "policy")


@pytest.mark.parametrize(("query", "tail", "other"), [
    ("self-attention", "Self attention is what we add.", "Self and attention apart."),
    ("self-attention", "Selfattention is what we add.", None),
    ("state-of-the-art", "It is state of the art on two sets.", "The state of art."),
    ("GPT-4", "We compare with gpt4 throughout.", "GPT and 4 more."),
    ("node.js", "The demo runs on Node.js servers.", "It runs on node, js and go."),
    ("c++", "Written in C++ for speed.", "Written in C for speed."),
])
def test_words_with_hyphens_and_dots_are_found_late_in_a_summary(
        fake_emb: Any, query: str, tail: str, other: str | None) -> None:
    """As at the start of a summary: a hyphen of the query matches a hyphen, a space or
    nothing; other punctuation stands as typed (`other`: a summary that must not match)."""
    item = late("Notes on a system", tail, "sys")
    items = [*LIBRARY, item] + ([late("Notes on another", other, "other")] if other else [])
    store = stored(Store(":memory:"), fake_emb, items)
    assert in_summary(store, fake_emb, query) == [item.title]


def test_a_word_of_a_late_summary_is_found_after_the_item_is_updated(fake_emb: Any) -> None:
    """A new arXiv version changes the summary: its words are found, the old ones no more;
    the same paper from a second source is still one item."""
    v1 = paper("2403.00001", "A paper on adapters", f"{OPENING} We test on wombats.")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, v1])
    assert in_summary(store, fake_emb, "wombat") == [v1.title]
    v2 = Item(v1.title, v1.url, "cs.LG", "paper", published=v1.published, arxiv_id=v1.arxiv_id,
              summary=f"{OPENING} We test on numbats.", arxiv_version=2)
    stored(store, fake_emb, [v2])
    assert in_summary(store, fake_emb, "numbat") == [v1.title]
    assert in_summary(store, fake_emb, "wombat") == []


def test_without_fts5_the_start_of_each_summary_is_searched_as_before(
        fake_emb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some distributions build SQLite without FTS5: no error, the first 400 characters of a
    summary are searched as before. A database indexed where FTS5 was, opened by one without
    it, still takes new items (its triggers would fail every insert), and gets its index
    back, with the items that came meanwhile, where FTS5 is again."""
    import feedbot.store

    path = tmp_path / "feedbot.db"
    early = late("Notes on a field study", "Our case study is the quokka population.", "q")
    stored(Store(path), fake_emb, [*LIBRARY, early]).close()
    monkeypatch.setattr(feedbot.store, "fts5_available", lambda: False)
    store = Store(path)
    assert not store.has_word_index()
    assert store.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                            ).fetchall() == []  # they write the index: each would fail
    meanwhile = late("Notes on a second study", "The numbat, this time.", "n")
    stored(store, fake_emb, [meanwhile])  # the index's triggers are gone: no error
    assert in_summary(store, fake_emb, "LoRA") == [LIBRARY[2].title]  # at the start
    assert in_summary(store, fake_emb, "quokka") == []  # late: as before the index
    store.close()
    monkeypatch.undo()
    store = Store(path)
    assert store.has_word_index()
    assert in_summary(store, fake_emb, "quokka") == [early.title]
    assert in_summary(store, fake_emb, "numbat") == [meanwhile.title]
    store.close()


def test_a_word_glued_to_an_emoji_is_found_in_a_summary(fake_emb: Any) -> None:
    """Posts glue emoji to words ("SmolLM3🤗", "🤖agents"). SQLite's tokenizer knows Unicode
    6.1 only, and kept the emoji added since inside the word: the index had "smollm3🤗", no
    "smollm3", so a post the scan of its start used to find was lost."""
    short = post("A release", "Out today: SmolLM3🤗, small and open.", slug="smol")
    long = late("Notes on software", "We build 🤖agents that call tools🧠.", "agents")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, short, long])
    assert in_summary(store, fake_emb, "SmolLM3") == [short.title]
    assert in_summary(store, fake_emb, "agents") == [long.title]
    assert in_summary(store, fake_emb, "tools") == [long.title]


def test_a_word_with_a_dotted_capital_i_is_found_in_a_summary(fake_emb: Any) -> None:
    """Python lowers the Turkish "İ" to "i" and a combining dot, which the index never held
    (it kept "İ"): the word was looked for only at the start of each summary. Folded, it is
    "istanbul" in the query and in the index, found anywhere in the summary."""
    item = late("A workshop", "Held in İstanbul, on parsing Turkish.", "ws")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, item])
    for query in ("İstanbul", "Istanbul", "istanbul"):
        found = find(store, fake_emb, query, lexical_weight=1.0)
        assert titles(found) == [item.title], query
        assert found.items[0].why.startswith(f"“{query}” in the summary")


def test_accents_do_not_keep_a_word_from_being_found(fake_emb: Any) -> None:
    """"Muller" found no "Müller" (nor "Müller" a "Muller"), in a title, an author or a
    summary. Words are compared folded: lower case, Latin letters without accents. A symbol
    after a word stays no part of it ("Gaudi™"), and a ligature is found as it is written,
    at the start of a summary and late in it alike."""
    titled = post("Schrödinger bridges in Málaga", "Entropic transport.", slug="sb")
    authored = paper("2401.00077", "A study of priors", "Priors.", authors=("Łukasz Müller",))
    summed = late("Notes on a proof", "We follow Erdős and Rényi on random graphs.", "er")
    plain = post("Muller and Renyi, revisited", "Plain ASCII spellings.", slug="plain")
    marked = post("Intel Gaudi™ 3 accelerators", "Out now: ﬁne-tuning kits.", slug="g3")
    ligature = late("A PDF pasted", "Then ﬁne-tuning, as printed.", "pdf")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, titled, authored, summed, plain,
                                                 marked, ligature])

    def found(query: str) -> list[tuple[str, str]]:  # by words (the fake vectors mean nothing)
        return sorted((e.title, e.why.split("; close in meaning")[0])
                      for e in find(store, fake_emb, query, lexical_weight=1.0).items
                      if not e.why.startswith("close in meaning"))

    assert found("schrodinger malaga") == [
        (titled.title, "“schrodinger”, “malaga” in the title")]
    assert found("łukasz") == [(authored.title, "by Łukasz Müller")]  # LIKE: ASCII case only
    assert found("MÜLLER") == sorted([(authored.title, "by Łukasz Müller"),
                                      (plain.title, "“MÜLLER” in the title")])
    assert found("erdos") == [(summed.title, "“erdos” in the summary")]
    assert found("Rényi") == sorted([(summed.title, "“Rényi” in the summary"),
                                     (plain.title, "“Rényi” in the title")])
    assert found("gaudi") == [(marked.title, "“gaudi” in the title")]
    assert found("ﬁne-tuning") == sorted([(marked.title, "“ﬁne-tuning” in the summary"),
                                          (ligature.title, "“ﬁne-tuning” in the summary")])


def test_folding_is_what_the_word_index_does() -> None:
    """A word must fold alike in the query, in titles (`fold`) and in the index of summaries
    (SQLite's unicode61, remove_diacritics 2), or the same word is found in a title and not
    in a summary. Every Latin letter, and every combining accent after one: where the index
    keeps "x?y" one word, `fold` gives that word; where it cuts at the character, `fold` keeps
    it (so the word is not found through it anywhere). Other scripts keep their marks: "й"
    is another letter than "и"."""
    import sqlite3

    from feedbot.store import _words_tokenizer
    from feedbot.text import fold

    chars = [chr(c) for r in ((0xC0, 0x250), (0x300, 0x370), (0x1E00, 0x1F00)) for c in range(*r)
             if chr(c).isalpha() or 0x300 <= c < 0x370]
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize=\"{_words_tokenizer()}\")")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)",
                   [(n, f"x{c}y") for n, c in enumerate(chars)])
    terms: dict[int, list[str]] = {}
    for doc, term in db.execute("SELECT doc, term FROM v ORDER BY doc, offset"):
        terms.setdefault(doc, []).append(term)
    wrong = {c for n, c in enumerate(chars)
             if (terms.get(n) == [fold(f"x{c}y")]) != (len(terms.get(n, [])) == 1)}
    # SQLite's own exceptions, left so: it folds the long s ("ſ", "ẛ") to "s" and keeps the
    # accents of "ǡ", "ǣ", "ǽ" and "ǿ" (of 766 characters; none in the corpus's texts); and
    # the Greek iota subscript (U+0345), a mark kept in a word since marks are, it folds to
    # "ι" (a query word with it is looked for in the summary's start: `Word.indexed`)
    assert wrong == set("ſẛǠǡǢǣǼǽǾǿ\u0345")
    assert [w.indexed for w in query_words("x\u0345y xy")] == [False, True]
    assert fold("Йошкар ά Łódź Øresund Straße ﬁne Gaudi™") == \
        "йошкар ά łodz øresund straße ﬁne gaudi™"
    assert fold("İstanbul NGUYỄN Mu\u0308ller") == "istanbul nguyen muller"


def test_a_query_pasted_with_separate_accents_finds_the_composed_text(fake_emb: Any) -> None:
    """Text copied from a PDF often has its accents as separate marks ("o" and U+0308): the
    query was cut at each mark ("schro", "dinger") and found neither title nor summary."""
    title = post("Schrödinger bridges for generative models", "Entropic transport.", slug="sb")
    late_word = late("Notes on a proof", "We follow Erdős and Rényi.", "er")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, title, late_word])
    found = find(store, fake_emb, "Schro\u0308dinger")
    assert titles(found) == [title.title]
    assert found.items[0].why.startswith("“Schrödinger” in the title")
    late_found = find(store, fake_emb, "Re\u0301nyi", lexical_weight=1.0)
    assert [(e.title, e.why) for e in late_found.items] == [
        (late_word.title, "“Rényi” in the summary")]


def test_a_prune_by_another_process_during_a_search_loses_nothing(
        fake_emb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`feedbot prune` (another connection) deleted an item between the search's reads: the
    item was among the candidates but gone when its entry was made, a KeyError traceback.
    The search reads one state of the database, and takes no write lock while it runs (a
    collect meanwhile is not kept waiting: its busy timeout here is a tenth of a second)."""
    path = tmp_path / "feedbot.db"
    stored(Store(path), fake_emb, LIBRARY).close()
    reader, other = Store(path), Store(path, timeout=0.1)
    sparse, later = LIBRARY[0], post("Sparse attention, revisited", "More.", slug="rev")
    real = reader.summary_matches
    writes: list[Any] = []

    def meanwhile(match: str, **kw: Any) -> Any:
        if not writes:  # once, in the middle of the search
            writes.append(other.delete_items([sparse.id], NOW + timedelta(days=9), NOW))
            writes.append(other.upsert_items([later], NOW))  # a collect
        return real(match, **kw)

    monkeypatch.setattr(reader, "summary_matches", meanwhile)
    found = find(reader, fake_emb, "sparse attention")
    assert writes[0] == [sparse.id] and writes[1].new == 1
    assert titles(found) == [sparse.title]  # as the database was when the search began
    monkeypatch.undo()
    assert titles(find(reader, fake_emb, "sparse attention")) == [later.title]
    reader.close()
    other.close()


# --- the command --------------------------------------------------------------------------------

@pytest.fixture
def cli_store(feedbot_env: Path, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The library in $FEEDBOT_HOME, dated from the real clock (the command reads it), and
    the fake embedder in place of the model."""
    monkeypatch.setattr(feedbot.embed, "Embedder", lambda *a, **k: fake_emb)
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(SOURCES, encoding="utf-8")
    now = datetime.now(UTC)
    items = [Item(i.title, i.url, i.source, i.kind, i.authors, now - (NOW - i.published),
                  i.summary, arxiv_id=i.arxiv_id) if i.published else i for i in LIBRARY]
    with Store.open(feedbot_env) as store:
        stored(store, fake_emb, items, now)
    return store


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["search", *args], catch_exceptions=False)


def test_json_is_shaped_like_the_digest_with_the_query(cli_store: Store) -> None:
    res = invoke("sparse", "attention", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["query"] == "sparse attention" and doc["searched"] == len(LIBRARY)
    assert {"stage", "generated_at", "notes", "items", "candidates"} <= doc.keys()
    first = doc["items"][0]
    entry = DigestEntry("x", "t", "u", "s", "post", [], None, 0.0, "")
    assert first.keys() == entry.to_json().keys()  # the digest's item keys, no more, no less
    assert first["title"] == "Sparse attention for very long documents"
    assert "“sparse”, “attention” in the title" in first["why"]
    # its id takes 👍/👎 like a digest item's
    vote = CliRunner().invoke(main, ["feedback", first["id"], "up"], catch_exceptions=False)
    assert vote.exit_code == 0 and first["title"] in vote.stdout


def test_source_given_twice_is_refused_not_the_last_one_searched(cli_store: Store) -> None:
    """`--source A --source B` searched B alone, and said "nothing matches … from B"."""
    res = invoke("attention", "--source", "A", "--source", "B")
    assert res.exit_code == 2
    assert "--source given 2 times; search one source at a time" in res.output


@pytest.mark.parametrize(("fmt", "marker"), [
    ("text", "feedbot search — “Karpathy”"), ("markdown", "# feedbot search — “Karpathy”"),
    ("html", "<!doctype html>")])
def test_formats(cli_store: Store, fmt: str, marker: str) -> None:
    res = invoke("Karpathy", "--format", fmt, "--limit", "3")
    assert res.exit_code == 0, res.output
    assert marker in res.stdout
    title = "Let&#x27;s build a tokenizer" if fmt == "html" else "Let's build a tokenizer"
    assert title in res.stdout
    assert "by Andrej Karpathy" in res.stdout
    assert LIBRARY[3].id in res.stdout  # the id, for `feedbot feedback ID up`
    assert "stage" not in res.stdout.split("\n")[0]


def test_the_command_says_one_line_for_nothing(cli_store: Store) -> None:
    none = invoke("quantum", "chromodynamics")
    assert none.exit_code == 0
    assert none.stdout == ("nothing matches “quantum chromodynamics” in the last 365 days "
                           "(5 items searched)\n")
    for args in ((), ("  ",)):
        res = invoke(*args)
        assert res.exit_code == 2 and res.stdout == ""
        assert res.stderr.count("\n") == 1 and "search for what?" in res.stderr
    unknown = invoke("cnn", "--source", "Nope")
    assert unknown.exit_code == 2 and "no source named 'Nope'" in unknown.stderr
    bad = invoke("cnn", "--since", "0d")
    assert bad.exit_code == 2 and "--since" in bad.stderr
    direct = invoke("2106.09685")
    assert direct.exit_code == 0 and "Low-rank adapters for large language models" in \
        direct.stdout and "the item with this arXiv id" in direct.stdout


def test_the_command_shows_the_notes_when_nothing_matches(
        cli_store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing found, the text output was the one "nothing matches" line, and the note
    that some items could only be matched by words was not shown."""
    with Store.open(Path(os.environ["FEEDBOT_HOME"])) as store:  # collected, not embedded
        store.upsert_items([post("Routing tokens", "Experts.", slug="r", days=1,
                                 now=datetime.now(UTC))], datetime.now(UTC))
    monkeypatch.setattr("feedbot.pipeline.embed_cached",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no model")))
    lines = invoke("quantum", "chromodynamics").stdout.splitlines()
    assert lines[0].startswith("nothing matches “quantum chromodynamics”")
    assert lines[1].startswith("1 item searched has no vector yet")


def test_bytes_of_a_terminal_that_are_not_utf8_are_no_traceback(cli_store: Store) -> None:
    """A terminal that sends Latin-1 ("lo\\xedra") or a cut character: Python keeps each bad
    byte as a lone surrogate, which the model's tokenizer refused (TypeError) and SQLite too
    (UnicodeEncodeError, for a link): a traceback. The command refuses such bytes now, naming
    the query, in a usage error (the bot's queries, whose JSON may carry a lone surrogate, are
    mended: test_bot)."""
    for args in (("Karpathy", "\udced"), ("https://lab.example.org/\udcff",),
                 ("\udcff\udcfe",)):
        res = invoke(*args, "--format", "json")
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert "Invalid value for '[QUERY]...'" in res.stderr
        assert "is not UTF-8 text" in res.stderr


def test_source_option_of_the_command(cli_store: Store) -> None:
    res = invoke("convolutional", "--source", "Other Blog", "--format", "json")
    doc = json.loads(res.stdout)
    assert [i["source"] for i in doc["items"]] == ["Other Blog"] and doc["source"] == \
        "Other Blog"


# --- with the real model ----------------------------------------------------------------------

@pytest.mark.model
def test_the_real_model_finds_by_meaning_and_the_blend_finds_names(real_embedder: Any
                                                                  ) -> None:
    """No word of the first query is in the item; the second is a name the model cannot
    place: the cosine alone ranks it nowhere, the blend first."""
    library = [*LIBRARY,
               post("Training vision models on many GPUs", "Data parallel training."),
               post("A survey of recurrent networks", "LSTMs and GRUs for sequences."),
               post("Notes on linear regression", "Least squares, by hand.",
                    authors=("Yann LeCun",))]
    store = stored(Store(":memory:"), real_embedder, library)
    meaning = find(store, real_embedder, "cheaper self-attention for lengthy texts")
    assert titles(meaning)[0] == "Sparse attention for very long documents"
    assert meaning.items[0].why.startswith("close in meaning")
    name = find(store, real_embedder, "LeCun")
    assert titles(name)[0] == "Notes on linear regression"
    cosine = find(store, real_embedder, "LeCun", lexical_weight=0.0)
    assert "Notes on linear regression" not in titles(cosine)



@pytest.mark.model
def test_a_rare_word_only_in_a_summary_finds_its_item_with_the_real_model(real_embedder: Any
                                                                          ) -> None:
    """A word found only in a summary counts half a title hit, so alone it scored 0.25 of
    the 0.3 a result needs, and the model gives one rare word little cosine to a whole
    abstract: `feedbot search posttranscriptional` said "nothing matches" over a store whose
    one bioRxiv abstract had it. An item holding every word of the query is a result."""
    bio = post("Regulation of gene expression in yeast",
               "We map RNA-binding proteins and find that posttranscriptional control sets "
               "the levels of most stress-response transcripts.")
    store = stored(Store(":memory:"), real_embedder, [*LIBRARY, bio])
    found = find(store, real_embedder, "posttranscriptional")
    assert titles(found) == [bio.title]
    assert found.items[0].why == "“posttranscriptional” in the summary"
    both = find(store, real_embedder, "posttranscriptional yeast")
    assert titles(both)[0] == bio.title
    assert titles(find(store, real_embedder, "posttranscriptional quokka")) == []  # not every word



@pytest.mark.model
def test_an_item_with_every_word_comes_before_items_close_in_meaning_only(
        real_embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One rare word found only in a summary scored 0.25 of words: papers about tensors, with
    no "TensorRT" in them, came before the one that names it late in a long abstract (the
    three papers naming it in a real store came 1st, 4th and 26th)."""
    tensors = [post(t, s, slug=t[:12]) for t, s in [
        ("Sparse tensor algebra compilers", "Generating code for sparse tensors."),
        ("Tensor cores and mixed precision", "Half precision on tensor cores."),
        ("Tensor runtimes", "Compiling tensor programs for fast runtimes.")]]
    birds = ("We collect a dataset of bird images from camera traps across three national "
             "parks. Volunteers annotate every species and count the birds in each image. ") * 8
    deployed = post("Counting birds in the wild", birds + "The detector runs with TensorRT.",
                    slug="birds")
    store = stored(Store(":memory:"), real_embedder, [*LIBRARY, *tensors, deployed])
    assert titles(find(store, real_embedder, "TensorRT"))[0] == deployed.title
    monkeypatch.setattr("feedbot.search.EVERY_WORD", 0.0)
    assert titles(find(store, real_embedder, "TensorRT"))[-1] == deployed.title

PROBE = """
import json, sys
from feedbot.cli import main
try:
    main(["search", "convolutional", "networks", "--format", "json"])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers", "sklearn")
               if m in sys.modules)
print(json.dumps({"heavy": heavy, "code": code, "onnx": "onnxruntime" in sys.modules}),
      file=sys.stderr)
"""


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged model's ONNX export, made once for this module (about 10 s)."""
    from feedbot import backends
    from feedbot.embed import resolve_model

    home = tmp_path_factory.mktemp("onnx-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEEDBOT_HOME", str(home))
        return backends.export_onnx(resolve_model()[1])


class _CacheOnly:
    """Fills the vector cache under the real model id; must never embed a query."""

    backend = "fp32"
    device = "cpu"

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        v = np.random.default_rng(len(texts)).standard_normal((len(texts), 384))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.model
def test_a_search_over_cached_items_imports_no_torch(feedbot_env: Path, onnx_export: Path
                                                    ) -> None:
    """The query is one text: the light ONNX encoder embeds it (as `auto` set it up on a
    machine that measured onnx-fp32 to agree with fp32), not the torch model."""
    from feedbot import backends
    from feedbot.embed import DEFAULT_MODEL, resolve_model

    model_ref = resolve_model()[1]
    feedbot_env.mkdir(parents=True, exist_ok=True)
    shutil.copytree(onnx_export, backends.onnx_dir(model_ref))
    (feedbot_env / backends.CHOICE_FILE).write_text(json.dumps({
        backends.choice_key(model_ref): {"backend": "fp32", "device": "cpu", "measured": {
            b: {"agreement": 1.0, "texts_per_s": 1.0} for b in ("fp32", "onnx-fp32")}}}))
    now = datetime.now(UTC)
    emb = Embedder()
    emb._encoder = _CacheOnly()  # type: ignore[assignment]
    assert emb.model_id == DEFAULT_MODEL
    with Store.open(feedbot_env) as store:
        stored(store, emb, [post(f"Convolutional networks, note {i}", "Image classification.",
                                 slug=str(i), now=now) for i in range(20)], now)
    Path(os.environ["FEEDBOT_SOURCES"]).write_text(SOURCES)
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=120)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), out.stderr
    assert report["heavy"] == [] and report["onnx"] is True
    doc = json.loads(out.stdout)
    assert len(doc["items"]) == 10 and doc["searched"] == 20


def test_words_are_found_across_the_chunks_of_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Titles are scanned a few thousand at a time: a match's row is its chunk's offset plus
    its place in the chunk, and a text lower() lengthens (İ) does not shift the rows after."""
    import feedbot.search

    monkeypatch.setattr(feedbot.search, "SCAN_CHUNK", 2)
    texts = ["İİ attention", "nothing", "Attentions please", "x", "subattention", "attention"]
    [rows] = feedbot.search._rows_matching(query_words("attention"), texts)
    assert rows.tolist() == [0, 2, 5]


def test_an_empty_store_is_said_without_loading_the_model(fake_emb: Any) -> None:
    """In a new FEEDBOT_HOME, `feedbot search LoRA` measured the embedding backends (21 s)
    to say that nothing was collected yet."""
    class NoModel:
        @property
        def model_id(self) -> str:
            raise AssertionError("the model was asked for")

    found = find(Store(":memory:"), NoModel(), "LoRA", since=timedelta(hours=1))
    assert found.items == [] and found.empty.startswith("nothing collected yet")


def test_spans_are_said_in_the_singular_when_one() -> None:
    from feedbot.digest import span_text

    assert [span_text(timedelta(hours=h)) for h in (1, 6, 24, 48)] == \
        ["1 hour", "6 hours", "1 day", "2 days"]


def test_a_word_too_long_to_be_one_is_left_to_the_meaning(fake_emb: Any) -> None:
    """SQLite refuses a LIKE pattern over 50,000 bytes: a query of one 60,000-letter word ended
    `feedbot search` in a traceback ("LIKE or GLOB pattern too complex")."""
    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    assert [w.text for w in query_words("x" * 60_000 + " karpathy")] == ["karpathy"]
    found = find(store, fake_emb, "x" * 60_000 + " Karpathy")
    assert titles(found) == ["Let's build a tokenizer"]
    find(store, fake_emb, "漢" * 17_000)  # no spaces between words: one long run


def test_an_item_with_a_damaged_vector_is_found_by_its_words_with_a_number_for_a_score(
        fake_emb: Any) -> None:
    """A cached vector cut short reads back as NaN: the item scored NaN, came last though it
    held every word of the query, and `--format json` printed `"score": NaN` (not JSON)."""
    from feedbot.items import content_hash

    store = stored(Store(":memory:"), fake_emb, LIBRARY)
    tokenizer = next(i for i in LIBRARY if i.title == "Let's build a tokenizer")
    dim = len(next(iter(store.get_vectors(fake_emb.model_id, [
        content_hash(tokenizer.embed_text)]).values())))
    store.put_vectors(fake_emb.model_id,
                      {content_hash(tokenizer.embed_text): np.full(dim, np.nan)})
    found = find(store, fake_emb, "Karpathy tokenizer")
    assert titles(found)[0] == "Let's build a tokenizer"
    assert found.unembedded == 1
    json.loads(json.dumps(found.to_json(explain=True), allow_nan=False))
    # and the score's parts add up to it, "every word" included
    entry = found.to_json(explain=True)["items"][0]
    weights = found.to_json(explain=True)["weights"]
    assert abs(sum(entry["parts"][k] * weights[k] for k in weights) - entry["score"]) < 1e-3


@pytest.mark.parametrize("fts", [True, False])
def test_words_of_indic_scripts_are_whole_words(fake_emb: Any, fts: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A vowel sign or a virama is a mark, no `\\w`: "मशीन" (machine) was "मश" and "न" to the
    query and to the word index alike, so "मशाल" (torch) found it through "मश", and a word
    with a virama ("लर्निंग") was never looked for in the index."""
    import feedbot.store

    if not fts:
        monkeypatch.setattr(feedbot.store, "fts5_available", lambda: False)
    assert [w.text for w in query_words("मशीन लर्निंग, मशाल")] == ["मशीन", "लर्निंग", "मशाल"]
    machine = post("मशीन के बारे में", "एक परिचय.", slug="m")
    learning = late("Notes", "यह मशीन लर्निंग के बारे में है.", "l")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, machine, learning])
    assert not any(e.parts["words"] for e in find(store, fake_emb, "मशाल").items)
    assert titles(find(store, fake_emb, "मशीन"))[0] == machine.title
    late_words = [e.title for e in find(store, fake_emb, "लर्निंग", lexical_weight=1.0).items
                  if e.parts["words"]]
    assert late_words == ([learning.title] if fts else [])  # late: only the index has it
    assert all(w.indexed == fts or not fts for w in query_words("मशीन लर्निंग"))


def test_a_post_sharing_a_found_item_is_its_shared_by_not_a_result_beside_it(
        fake_emb: Any) -> None:
    """The digest lists Bob's post as "shared by Bob" on the blog post it links; search
    listed it as a second result, and a 👎 on it left the story in the next digest."""
    from feedbot.collect import link_shares

    cfg = config(SOURCES + "people:\n  - name: Bob\n    bluesky: bob.bsky.social\n")
    blog = post("Backpropagation explained", "The chain rule, layer by layer.", slug="bp")
    share = Item("Great explainer on backpropagation", "https://bsky.app/profile/bob/post/1",
                 "Bob/bluesky", "social", authors=("Bob",), published=NOW - timedelta(days=1),
                 summary=f"Great explainer on backpropagation {blog.url}", links=(blog.url,),
                 person="Bob")
    store = stored(Store(":memory:"), fake_emb, [*LIBRARY, blog, share])
    assert link_shares(store, NOW) == 1
    found = find(store, fake_emb, "backpropagation", cfg)
    assert [(e.title, e.shared_by) for e in found.items if e.parts["words"]] == \
        [(blog.title, ["Bob"])]
    by_post = find(store, fake_emb, "explainer", cfg)  # only the post has the word
    assert titles(by_post)[0] == blog.title and by_post.items[0].shared_by == ["Bob"]
    assert "“explainer” in a post sharing it" in by_post.items[0].why
    assert share.title not in titles(by_post)


def test_results_show_dates_in_the_learners_time_zone(fake_emb: Any) -> None:
    """Search results render as a digest does: a post of 23:12 UTC on the 4th is the 5th's in
    Berlin (it was shown as the 4th's)."""
    from feedbot.render import render_markdown

    late = datetime(2026, 12, 4, 23, 12, tzinfo=UTC)
    store = stored(Store(":memory:"), fake_emb, [post("Sparse attention", now=late, days=0)],
                   now=late)
    cfg = config(SOURCES.replace("{stage: nlp}", "{stage: nlp, timezone: Europe/Berlin}"))
    found = search(cfg, store, fake_emb, load_roadmap(), "sparse attention", now=late)
    assert titles(found) == ["Sparse attention"]
    assert "2026-12-05" in render_markdown(found) and "2026-12-04" not in render_markdown(found)
