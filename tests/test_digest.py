"""The digest pipeline around the ranker: the JSON shape others rely on, one entry per story
(near-duplicates and posts about a paper collapse and list every source), the sharer in `why`,
the per-source cap and the score parts behind `--explain`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feedbot.config import Config, load_config
from feedbot.digest import build_digest, gather, stage_vectors, story_group
from feedbot.items import Item
from feedbot.roadmap import load_roadmap
from feedbot.store import Store

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SOURCES = """\
blogs:
  - name: Vision Notes
    url: https://vision.example.org/feed.xml
  - name: Pixel Digest
    url: https://pixel.example.org/feed.xml
arxiv:
  - name: cs.CV
    category: cs.CV
"""
PAPER = ("Convolutional networks for image segmentation",
         "We segment street scenes with a convolutional network and pooling layers.")


def cfg() -> Config:
    return load_config("sources.yaml", text=SOURCES)


def paper(n: int = 1, title: str = PAPER[0], summary: str = PAPER[1]) -> Item:
    return Item(title=title, url=f"https://arxiv.org/abs/2611.0000{n}", source="cs.CV",
                kind="paper", arxiv_id=f"2611.0000{n}", published=NOW - timedelta(hours=n),
                summary=summary, authors=("A. Author",))


def post(source: str, slug: str, title: str, summary: str, links: tuple[str, ...] = ()) -> Item:
    return Item(title=title, url=f"https://{source.split()[0].lower()}.example.org/{slug}",
                source=source, kind="post", published=NOW - timedelta(hours=2), summary=summary,
                links=links)


def digest(store: Store, emb: Any, **kw: Any) -> Any:
    return build_digest(cfg(), store, emb, load_roadmap(), now=NOW, stage_id="cnn",
                        allow_demo=False, **kw)


def test_json_keeps_the_public_shape(fake_emb: Any) -> None:
    store = Store(":memory:")
    store.upsert_items([paper()], NOW)
    d = digest(store, fake_emb)
    [item] = d.to_json()["items"]
    assert list(item)[:9] == ["id", "title", "url", "source", "kind", "authors", "published",
                              "score", "why"]
    assert item["source"] == "arXiv cs.CV" and item["id"] == "arxiv:2611.00001"
    assert "parts" not in item
    parts = d.to_json(explain=True)["items"][0]["parts"]
    assert set(parts) == {"similarity", "contrast", "recency", "source", "feedback", "level"}


def test_a_paper_and_a_blog_post_about_it_are_one_entry_with_both_sources(fake_emb: Any) -> None:
    store = Store(":memory:")
    about = post("Vision Notes", "seg", "Reading group: segmentation with convolutions",
                 "Our notes on a new paper.", links=("https://arxiv.org/abs/2611.00001v2",))
    store.upsert_items([paper(), about, paper(2, "Vision transformers for video",
                                              "Video understanding with attention.")], NOW)
    d = digest(store, fake_emb)
    [entry] = [e for e in d.items if "2611.00001" in e.url or "vision.example" in e.url]
    assert set(entry.sources) == {"arXiv cs.CV", "Vision Notes"}
    assert len(d.items) == 2


def test_near_identical_texts_collapse_and_list_every_source(fake_emb: Any) -> None:
    store = Store(":memory:")
    text = ("Pooling in convolutional networks, explained",
            "A walk through convolution filters, stride and pooling for image recognition.")
    store.upsert_items([post("Vision Notes", "pool", *text), post("Pixel Digest", "pool", *text),
                        paper()], NOW)
    d = digest(store, fake_emb)
    assert len(d.items) == 2
    [entry] = [e for e in d.items if e.kind == "post"]
    assert set(entry.sources) == {"Vision Notes", "Pixel Digest"}


def test_per_source_cap_holds_in_the_digest(fake_emb: Any) -> None:
    store = Store(":memory:")
    words = ["segmentation", "detection", "tracking", "pooling", "augmentation", "denoising"]
    store.upsert_items([post("Vision Notes", w, f"Image {w} with convolutional networks",
                             f"A note on {w} of images.") for w in words]
                       + [paper(3, "Video object tracking", "Tracking objects in video.")], NOW)
    d = digest(store, fake_emb, limit=10)
    cap = cfg().ranking.per_source_cap
    head = d.items[: cap + 1]  # while another source has items, one feed gets `cap` places
    assert sum(e.source == "Vision Notes" for e in head) == cap
    assert len(d.items) > cap + 1  # then the digest is filled from the capped feed


def test_the_person_who_shared_an_item_is_named_in_why(fake_emb: Any) -> None:
    store = Store(":memory:")
    store.upsert_items([paper()], NOW)
    share = Item(title="Look at this", url="https://x.com/ada/status/1", source="Ada/x",
                 kind="social", published=NOW - timedelta(minutes=5), person="Ada Lovelace",
                 links=("https://arxiv.org/abs/2611.00001",))
    store.upsert_items([share], NOW)
    store.add_share("arxiv:2611.00001", "Ada/x", "Ada Lovelace", share.id, NOW)
    pool = gather(store, fake_emb, now=NOW, since=timedelta(days=7))
    assert pool.ids == ["arxiv:2611.00001"]  # the post gave way to the paper
    [entry] = digest(store, fake_emb).items
    assert "shared by Ada Lovelace" in entry.why and entry.shared_by == ["Ada Lovelace"]


def test_story_group_is_the_arxiv_id_of_the_paper_or_of_a_link() -> None:
    from feedbot.store import StoredItem

    def stored(it: Item) -> StoredItem:
        return StoredItem(it.id, it, (it.source,), (), NOW, "h")

    assert story_group(stored(paper())) == "arxiv:2611.00001"
    linked = post("Vision Notes", "x", "t", "s", links=("https://example.org",
                                                        "https://arxiv.org/pdf/2611.00001v3"))
    assert story_group(stored(linked)) == "arxiv:2611.00001"
    assert story_group(stored(post("Vision Notes", "y", "t", "s"))) == ""


def test_stage_vectors_cover_every_stage_text(fake_emb: Any) -> None:
    rm = load_roadmap()
    sv = stage_vectors(Store(":memory:"), fake_emb, rm)
    assert sv.ids == tuple(rm.ids) and sv.levels == tuple(s.level for s in rm.stages)
    for st, labels, rows in zip(rm.stages, sv.labels, sv.rows, strict=True):
        assert labels == tuple(st.texts()) and rows.shape[0] == len(labels)
        assert labels[:2] == ("title", "summary")


@pytest.mark.parametrize("stage", ["cnn", "nlp"])
def test_every_entry_explains_itself(fake_emb: Any, stage: str) -> None:
    store = Store(":memory:")
    store.upsert_items([paper(), paper(2, "Machine translation with transformers",
                                       "Translating text between languages.")], NOW)
    d = build_digest(cfg(), store, fake_emb, load_roadmap(), now=NOW, stage_id=stage,
                     allow_demo=False)
    assert d.items and all(e.why for e in d.items)


def test_a_delivered_story_does_not_come_back_through_its_other_items(fake_emb: Any) -> None:
    """Only an entry's own id is recorded as delivered; the items collapsed into it (the blog
    post about the paper, the same post on another blog) came back the next day as new."""
    store = Store(":memory:")
    about = post("Vision Notes", "seg", "Reading group: segmentation with convolutions",
                 "Our notes on a new paper.", links=("https://arxiv.org/abs/2611.00001v2",))
    text = ("Pooling in convolutional networks, explained",
            "A walk through convolution filters, stride and pooling for image recognition.")
    store.upsert_items([paper(), about, post("Vision Notes", "pool", *text),
                        post("Pixel Digest", "pool", *text)], NOW)
    first = digest(store, fake_emb)
    assert len(first.items) == 2
    again = digest(store, fake_emb, exclude={e.id for e in first.items})
    assert again.items == []
    # a paper delivered earlier (now out of the window) still keeps its story out
    later = digest(store, fake_emb, exclude={"arxiv:2611.00001"}, since=timedelta(hours=3))
    assert all("2611.00001" not in e.url and "seg" not in e.url for e in later.items)
    assert digest(store, fake_emb, exclude={"arxiv:2611.00001"}).items  # the rest stays


@pytest.mark.parametrize("form", ["[{id}]", "{ID}", "{url}/", "<{url}>"])
def test_feedback_on_a_demo_item_as_copied_says_it_is_a_demo_item(
        fake_emb: Any, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """Copied from the terminal digest (`[id]`) or with a slash, a demo item was 'no stored
    item' instead of being explained as one of the demo items, which take no feedback."""
    from click.testing import CliRunner

    import feedbot.embed
    from feedbot.cli import main
    from feedbot.digest import demo_items

    monkeypatch.setattr(feedbot.embed, "Embedder", lambda *a, **k: fake_emb)
    demo = demo_items(NOW)[0]
    ref = form.format(id=demo.id, ID=demo.id.upper(), url=demo.item.url)
    res = CliRunner().invoke(main, ["feedback", ref, "up"])
    assert res.exit_code == 2 and "bundled demo items" in res.stderr
