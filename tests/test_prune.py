"""Retention: `feedbot prune` (and the daily prune of `feedbot run`) removes old items nobody
voted on or saved, with their sources, deliveries and vectors; keeps the stage vectors a
cached digest needs; never lets a pruned item come back as new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from click.testing import CliRunner, Result

import feedbot.embed
from feedbot import learn, runner
from feedbot.cli import main
from feedbot.collect import collect
from feedbot.config import load_config
from feedbot.digest import stage_vectors
from feedbot.embed import DEFAULT_MODEL, Embedder, embed_cached
from feedbot.items import Item, content_hash
from feedbot.pipeline import make_digest
from feedbot.prune import protected_hashes, prune
from feedbot.roadmap import load_roadmap
from feedbot.store import Store

from .support import CORPUS, LocalServer, atom_feed, fake_embedder
from .test_lazy_imports import _CacheOnly  # fills the cache under the real model id

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
YEAR = 365 * 86400.0
LONG_AGO = NOW - timedelta(days=500)
MODEL = "fake-model"


def post(n: int | str, published: datetime | None, source: str = "Blog", **kw: object) -> Item:
    return Item(f"Post {n} on convolutional networks", f"https://blog.example.org/{n}", source,
                published=published, summary=f"About post {n}.", **kw)  # type: ignore[arg-type]


def vectors(store: Store, items: list[Item], model: str = MODEL) -> None:
    rng = np.random.default_rng(0)
    store.put_vectors(model, {content_hash(i.embed_text): rng.standard_normal(8)
                              for i in items})


def ids(store: Store) -> set[str]:
    return {r[0] for r in store.db.execute("SELECT id FROM items")}


def run_prune(store: Store, **kw: object) -> object:
    args: dict[str, object] = dict(older_than=YEAR, label="365d", now=NOW, keep_hashes=set())
    return prune(store, **(args | kw))  # type: ignore[arg-type]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def store(feedbot_env: Path) -> Store:
    """The store `feedbot` uses in these tests, beside a minimal sources.yaml."""
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("learner: {stage: cnn}\n", encoding="utf-8")
    s = Store.open(feedbot_env)
    yield s  # type: ignore[misc]
    s.close()


def test_old_items_go_with_sources_deliveries_and_vectors_voted_saved_and_recent_stay(
        store: Store) -> None:
    old = post("old", LONG_AGO)
    upvoted, downvoted = post("up", LONG_AGO), post("down", LONG_AGO)
    saved = post("later", LONG_AGO)
    late = post("late", LONG_AGO)  # dated long ago, first collected yesterday
    recent = post("recent", NOW - timedelta(days=2))
    store.upsert_items([old, upvoted, downvoted, saved], LONG_AGO)
    store.upsert_items([replace(old, source="Other")], LONG_AGO)  # a second source
    store.upsert_items([late, recent], NOW - timedelta(days=1))
    vectors(store, [old, upvoted, downvoted, saved, late, recent])
    store.set_feedback("42", upvoted.id, "up", NOW)
    store.set_feedback("42", downvoted.id, "down", NOW)
    store.set_feedback("42", saved.id, "later", NOW)
    store.mark_delivered("42", [old.id, recent.id], LONG_AGO)
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    report = run_prune(store)
    assert ids(store) == {upvoted.id, downvoted.id, saved.id, late.id, recent.id}
    assert (report.items, report.kept, report.vectors) == (1, 3, 1)  # type: ignore[attr-defined]
    assert store.db.execute("SELECT count(*) FROM item_sources WHERE item_id = ?",
                            (old.id,)).fetchone()[0] == 0
    assert store.delivered("42") == {recent.id}
    assert content_hash(old.embed_text) not in store.get_vectors(
        MODEL, [content_hash(i.embed_text) for i in (old, upvoted, late)])
    assert store.vector_count(MODEL) == 5
    assert [s.id for s in store.bookmarked_items("42")] == [saved.id]


def test_a_vector_another_item_still_has_stays(store: Store) -> None:
    """Two items with the same text (a reposted story) share one cached vector."""
    old = post("old", LONG_AGO)
    again = Item(old.title, "https://elsewhere.example.org/repost", "Other", published=NOW,
                 summary=old.summary)
    store.upsert_items([old], LONG_AGO)
    store.upsert_items([again], NOW)
    vectors(store, [old])
    run_prune(store)
    assert ids(store) == {again.id}
    assert store.vector_count(MODEL) == 1


def test_a_vote_given_after_the_items_were_chosen_still_keeps_the_item(store: Store) -> None:
    old = post("old", LONG_AGO)
    store.upsert_items([old], LONG_AGO)
    chosen = store.prune_candidates(NOW - timedelta(days=365)).ids
    store.set_feedback("42", old.id, "up", NOW)  # arrives while the prune runs
    assert store.delete_items(chosen, NOW - timedelta(days=365), NOW) == []
    assert ids(store) == {old.id}


def test_dry_run_changes_nothing(store: Store, feedbot_env: Path) -> None:
    items = [post(i, LONG_AGO) for i in range(20)]
    store.upsert_items(items, LONG_AGO)
    vectors(store, items)
    store.put_vectors("another-model", {content_hash(items[0].embed_text): np.ones(8)})
    store.close()
    db = feedbot_env / "feedbot.db"

    def dump() -> list[str]:
        with Store(db) as s:
            return list(s.db.iterdump())

    before = dump()
    result = cli("prune", "--dry-run", "--other-models")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("would remove 20 items older than 365d and 21 cached "
                                    "vectors")
    assert "nothing was changed (--dry-run)" in result.output
    assert dump() == before


def test_other_models_vectors_go_only_when_asked(store: Store,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBOT_EMBED_BACKEND", "fp32")  # the cache key without the model
    now = datetime.now(UTC)  # the command's clock (from NOW, the item is old a year later)
    item = post("recent", now)
    store.upsert_items([item], now)
    h = content_hash(item.embed_text)
    for model in (DEFAULT_MODEL, "old-model", f"{DEFAULT_MODEL}#onnx-int8"):
        store.put_vectors(model, {h: np.ones(8)})
    assert cli("prune").exit_code == 0
    assert store.vector_count() == 3
    result = cli("prune", "--other-models")
    assert result.exit_code == 0, result.output
    assert "removed 0 items older than 365d and 2 cached vectors (2 of other models)" \
        in result.output
    assert f"current model: {DEFAULT_MODEL}" in result.output
    assert store.get_vectors(DEFAULT_MODEL, [h]).keys() == {h}
    assert store.vector_count() == 1


def test_stage_and_demo_vectors_stay(store: Store) -> None:
    emb = fake_embedder()
    roadmap = load_roadmap()
    stage_vectors(store, emb, roadmap)
    from feedbot.digest import demo_pool

    demo_pool(store, emb, NOW)
    old = post("old", LONG_AGO)
    store.upsert_items([old], LONG_AGO)
    vectors(store, [old], emb.model_id)
    cached = store.vector_count()
    report = run_prune(store, keep_hashes=protected_hashes(roadmap, NOW))
    assert report.vectors == 1  # type: ignore[attr-defined]
    assert store.vector_count() == cached - 1
    calls = list(emb._encoder.calls)
    stage_vectors(store, emb, roadmap)
    demo_pool(store, emb, NOW)
    assert emb._encoder.calls == calls  # nothing embedded again


PROBE = """
import json, sys
from feedbot.cli import main
codes = []
for args in (["prune"], ["digest", "--no-collect", "--format", "json"]):
    try:
        main(args)
    except SystemExit as e:
        codes.append(e.code)
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers", "onnxruntime",
                           "openvino", "sklearn") if m in sys.modules)
print(json.dumps({"heavy": heavy, "codes": codes}), file=sys.stderr)
"""


def test_a_cached_digest_after_a_prune_still_imports_no_model_code(
        feedbot_env: Path, tmp_path: Path) -> None:
    """Issue 6: the stage texts' vectors are no item's, and must survive the prune."""
    now = datetime.now(UTC)
    store = Store.open(feedbot_env)
    fresh = [Item(f"Convolutional networks, note {i}", f"https://e.org/{i}", "Blog",
                  published=now - timedelta(hours=i), summary="Image classification.")
             for i in range(20)]
    old = [Item(f"Old note {i}", f"https://e.org/old{i}", "Blog",
                published=now - timedelta(days=400)) for i in range(5)]
    store.upsert_items(old, now - timedelta(days=400))
    store.upsert_items(fresh, now)
    emb = Embedder(backend="fp32")
    emb._encoder = _CacheOnly()  # type: ignore[assignment]
    assert emb.model_id == DEFAULT_MODEL
    stage_vectors(store, emb, load_roadmap())
    embed_cached(store, emb, [i.embed_text for i in fresh + old])
    store.close()
    sources = tmp_path / "sources.yaml"
    sources.write_text("learner: {stage: cnn}\nblogs:\n  - {name: Blog, url: 'https://e.org/f'}\n")
    env = dict(os.environ, FEEDBOT_SOURCES=str(sources), FEEDBOT_EMBED_BACKEND="fp32")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=120)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report["codes"] == [0, 0], out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("removed 5 items older than 365d and 5 cached vectors")
    assert report["heavy"] == []
    assert len(json.loads("\n".join(lines[1:]))["items"]) == 10


# --- a pruned item does not come back ---------------------------------------------------------

def undated_feed(server: LocalServer) -> str:
    """The RSS 1.0 specification's example feed, as recorded: RSS 1.0 has no date element, so
    both entries are undated and count from when they were first seen (as in many feeds)."""
    path = CORPUS / "feeds" / "feed-rs" / "rss1" / "rss_1.0_spec_1.xml"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return server.add("/news.rss", body=path.read_bytes(), content_type="application/rss+xml")


def test_a_pruned_undated_item_a_feed_still_lists_does_not_come_back_as_new(
        server: LocalServer, tmp_path: Path, store: Store) -> None:
    url = undated_feed(server)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"learner: {{stage: cnn}}\nblogs:\n  - {{name: XML, url: '{url}'}}\n")
    cfg = load_config(sources)
    (first,) = collect(cfg, store, now=LONG_AGO)
    assert first.new == 2
    assert all(s.item.published is None for s in store.items_since())
    run_prune(store)
    assert store.item_count() == 0
    tombstones = store.tombstone_count()  # the key and the GUID of each
    (again,) = collect(cfg, store, now=NOW)
    assert again.status == "ok" and again.new == 0
    assert store.item_count() == 0
    assert store.items_since(NOW - timedelta(days=7)) == []
    digest = make_digest(cfg, store, fake_embedder(), load_roadmap(), now=NOW)
    assert digest.demo  # nothing collected as far as the digest can tell: the demo items
    # a tombstone that feeds keep listing stays; one no feed lists for the retention goes
    later = NOW + timedelta(days=300)
    (seen,) = collect(cfg, store, now=later)
    assert seen.new == 0
    run_prune(store, now=later + timedelta(days=300))
    assert store.tombstone_count() == tombstones > 0


def test_a_pruned_item_matched_by_its_guid_does_not_come_back(store: Store) -> None:
    """The entry's link changed since (a feed moved its posts), its GUID did not."""
    first = Item("Undated note", "https://blog.example.org/note", "Blog", guid="tag:note-1")
    store.upsert_items([first], LONG_AGO)
    run_prune(store)
    moved = Item("Undated note", "https://new.example.org/note", "Blog", guid="tag:note-1")
    result = store.upsert_items([moved], NOW)
    assert (result.new, result.skipped) == (0, 1)
    assert store.item_count() == 0


def test_tombstones_no_feed_listed_for_the_retention_are_forgotten(store: Store) -> None:
    store.upsert_items([Item("Undated", "https://blog.example.org/u", "Blog")], LONG_AGO)
    run_prune(store)
    assert store.tombstone_count() == 1
    # the dry run says so too: it said "would remove 0 items … and 0 cached vectors"
    dry = run_prune(store, now=NOW + timedelta(days=366), dry_run=True)
    assert dry.line().startswith(  # type: ignore[attr-defined]
        "would remove 0 items older than 365d and 0 cached vectors and 1 tombstone of items "
        "no feed lists any more: about ")
    assert store.tombstone_count() == 1
    report = run_prune(store, now=NOW + timedelta(days=366), vacuum=True)
    assert store.tombstone_count() == 0
    # said (it was not), and not worth rewriting the file for (it was vacuumed)
    assert report.line().startswith(  # type: ignore[attr-defined]
        "removed 0 items older than 365d and 0 cached vectors and 1 tombstone of items no "
        "feed lists any more; database ")
    assert not report.vacuumed  # type: ignore[attr-defined]


def test_an_old_item_shared_lately_stays(store: Store) -> None:
    """An old paper a followed post shares today is news again, and is sent: the prune that
    night removed it (old by date and first seen, no vote yet), with its delivered mark, so a
    👍 on the morning's message found no item, and the post about it came the next day."""
    from feedbot.collect import link_shares

    paper = Item("Attention is all you need", "https://arxiv.org/abs/1706.03762",
                 "arXiv cs.CL", kind="paper", arxiv_id="1706.03762", arxiv_version=1,
                 published=LONG_AGO, summary="Transformers.")
    old = post("old", LONG_AGO)
    store.upsert_items([paper, old], LONG_AGO)
    share = Item("Re-reading this today", "https://x.com/ada/status/1", "Ada/x",
                 kind="social", person="Ada", published=NOW - timedelta(hours=2),
                 links=("https://arxiv.org/abs/1706.03762",))
    store.upsert_items([share], NOW - timedelta(hours=1))
    link_shares(store, NOW)
    store.mark_delivered("42", [paper.id], NOW)  # the morning's digest
    report = run_prune(store)
    assert ids(store) == {paper.id, share.id}  # the old post no one shared went
    assert report.kept == 1  # type: ignore[attr-defined]
    assert "(1 as old kept: voted on, saved, or shared since)" in \
        report.line()  # type: ignore[attr-defined]
    assert store.delivered("42") == {paper.id}
    run_prune(store, now=NOW + timedelta(days=400))  # a year on, nothing keeps them
    assert ids(store) == set()


def test_dated_items_before_the_last_prune_are_not_taken_in_again(
        server: LocalServer, tmp_path: Path, store: Store) -> None:
    entries = [{"title": f"Old post {i}", "link": f"https://blog.example.org/old-{i}",
                "updated": "2025-01-10T09:00:00Z"} for i in range(3)]
    url = server.add("/feed.xml", body=atom_feed(entries))
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"learner: {{stage: cnn}}\nblogs:\n  - {{name: Blog, url: '{url}'}}\n")
    cfg = load_config(sources)
    (first,) = collect(cfg, store, now=LONG_AGO)
    assert first.new == 3
    run_prune(store)
    assert store.item_count() == 0
    entries.append({"title": "New post", "link": "https://blog.example.org/new",
                    "updated": "2026-11-19T09:00:00Z"})
    server.add("/feed.xml", body=atom_feed(entries))
    (again,) = collect(cfg, store, now=NOW)
    assert again.new == 1
    assert [s.item.title for s in store.items_since()] == ["New post"]


# --- the command ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--older-than", "soon"], "--older-than: not a duration: 'soon'"),
        (["--older-than", "30"], "--older-than: 30 needs a unit"),
        (["--older-than", "0d"], "is no time at all"),
        (["--older-than", "3d"], "3d is shorter than learner.since (7d)"),
    ],
)
def test_a_bad_age_is_one_line_and_exit_2(store: Store, args: list[str], words: str) -> None:
    item = post("old", LONG_AGO)
    store.upsert_items([item], LONG_AGO)
    result = cli("prune", *args)
    assert result.exit_code == 2
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert store.item_count() == 1


def test_retention_from_sources_yaml_and_never(store: Store, tmp_path: Path) -> None:
    now = datetime.now(UTC)  # the command's clock
    store.upsert_items([post("a", now - timedelta(days=40)), post("b", now - timedelta(days=20))],
                       now - timedelta(days=40))
    sources = tmp_path / "sources.yaml"
    sources.write_text("retention: {items: never}\n")
    result = cli("prune")
    assert result.exit_code == 0
    assert result.output.startswith("items are kept (retention never); removed 0 cached")
    assert store.item_count() == 2
    sources.write_text("retention: {items: 30d}\n")
    assert "removed 1 item older than 30d" in cli("prune").output
    assert cli("prune", "--older-than", "10d").exit_code == 0
    assert store.item_count() == 0


def test_a_broken_retention_setting_is_a_located_config_error(tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text("learner: {stage: cnn}\nretention:\n  items: 1 year\n")
    result = cli("prune")
    assert result.exit_code == 2
    assert "sources.yaml:3: retention.items: not a duration: '1 year'" in result.output


def test_prune_vacuums_after_removing_unless_told_not_to(store: Store) -> None:
    items = [Item(f"Post {i}", f"https://e.org/{i}", "Blog", summary="x" * 2000)
             for i in range(400)]  # undated: first seen long ago
    store.upsert_items(items[:200], LONG_AGO)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = store.disk_bytes()
    result = cli("prune", "--no-vacuum")
    assert "removed 200 items" in result.output and " → " not in result.output
    assert "now free space that new items reuse" in result.output
    assert store.disk_bytes() >= size * 0.9
    store.upsert_items(items[200:], LONG_AGO)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = store.disk_bytes()
    result = cli("prune")
    assert result.exit_code == 0, result.output
    assert "removed 200 items" in result.output and " → " in result.output
    assert store.disk_bytes() < size / 2


def test_words_are_found_in_the_right_summaries_after_a_prune_and_its_vacuum(
        store: Store) -> None:
    """`feedbot prune` deletes old items, then VACUUMs, which may renumber the rowids of
    `items` (it has no INTEGER PRIMARY KEY): the word index must still name the items that
    hold each word, and none that are gone."""
    tail = "x " * 300  # the words come after the summary's first 400 characters
    old = [Item(f"Old {i}", f"https://e.org/old/{i}", "Blog", summary=f"{tail} oldword{i}")
           for i in range(300)]
    new = [Item(f"New {i}", f"https://e.org/new/{i}", "Blog", summary=f"{tail} newword{i}")
           for i in range(300)]
    now = datetime.now(UTC)  # the command's clock
    for a, b in zip(old, new, strict=True):  # interleaved: deletes leave holes in the rowids
        store.upsert_items([a], LONG_AGO)
        store.upsert_items([b], now)
    result = cli("prune")
    assert result.exit_code == 0 and "removed 300 items" in result.output, result.output
    assert " → " in result.output  # vacuumed
    for i in (0, 1, 150, 299):
        assert store.summary_matches(f'"newword{i}"') == [(new[i].id, "")]
        assert store.summary_matches(f'"oldword{i}"') == []
    late = Item("Late", "https://e.org/late", "Blog", summary=f"{tail} lateword")
    store.upsert_items([late], now)
    assert store.summary_matches('"lateword"') == [(late.id, "")]


def test_doctor_says_how_much_is_due(store: Store, fake_emb: object,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedbot.embed, "Embedder", lambda *a, **k: fake_emb)
    store.upsert_items([post("old", LONG_AGO)], LONG_AGO)
    out = cli("doctor").output
    assert "retention: items older than 365d go" in out and "1 due now" in out


def test_after_retention_never_items_of_every_date_are_taken_in_again(store: Store) -> None:
    """A prune's cutoff kept old-dated items out for good, even after the learner chose to keep
    everything (`retention: {items: never}`)."""
    store.upsert_items([post("old", LONG_AGO)], LONG_AGO)
    run_prune(store)
    assert store.upsert_items([post("older", LONG_AGO - timedelta(days=1))], NOW).skipped == 1
    prune(store, older_than=None, label="", now=NOW, keep_hashes=set())  # retention: never
    taken = store.upsert_items([post("older", LONG_AGO - timedelta(days=1))], NOW)
    assert taken.new == 1 and taken.skipped == 0


# --- saved 👍/👎 models no chat, stage or embedding model can use any more ---------------------

def _age(path: Path, days: float) -> None:
    """As if last written or loaded `days` ago (file times are the system clock's)."""
    t = time.time() - days * 86400
    os.utime(path, (t, t))


def _votes_and_models(store: Store, emb: Any) -> dict[str, Path]:
    """Chats c1 (a model for cnn, one for nlp) and c2 (one for cnn); then a vote of c1 at nlp
    changes the nlp model's votes. Returns the model files by name."""
    items = [post(n, NOW) for n in range(4)]
    store.upsert_items(items, NOW)
    found = store.find_by_urls(it.url for it in items)
    i = [found[it.url] for it in items]
    for chat in ("c1", "c2"):
        store.set_feedback(chat, i[0], "up", NOW, stage="cnn")
        store.set_feedback(chat, i[1], "down", NOW, stage="nlp")
    models = {}
    for chat, stage in (("c1", "cnn"), ("c1", "nlp"), ("c2", "cnn")):
        assert learn.feedback_scorer(store, emb, chat=chat, now=NOW, stage=stage,
                                     other_stages=0.1) is not None
        models[f"{chat}-{stage}"] = learn.model_path(chat, stage=stage)
    store.set_feedback("c1", i[2], "up", NOW + timedelta(hours=1), stage="nlp")
    return models


def test_saved_models_no_digest_can_use_go_once_unused_for_a_week(store: Store,
                                                                   fake_emb: Any) -> None:
    models = _votes_and_models(store, fake_emb)
    directory = models["c1-cnn"].parent
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="cnn",
                                   other_stages=0.1)
    assert scorer is not None
    m = scorer.model
    other_model = learn.model_path("c3", stage="cnn")  # another embedding model's
    learn.save_model(other_model, replace(m, model_id="old-model"),
                     scope={"chat": "c1", "stage": "cnn", "other_stages": 0.1})
    legacy = learn.model_path("c1")  # before stages: one per chat, and no scope recorded
    learn.save_model(legacy, m)
    unreadable = directory / "feedback-junk-0123abcd.joblib"
    unreadable.write_bytes(b"not a joblib file")
    temp = directory / f".{models['c1-cnn'].name}.4242-77.tmp"  # a killed writer's
    temp.write_bytes(b"half")
    notes = directory / "notes.txt"  # not feedbot's: never touched
    notes.write_text("mine")
    for path in [*models.values(), other_model, legacy, unreadable, temp, notes]:
        _age(path, 30)
    _age(models["c2-cnn"], 3)  # c2 votes again below: unusable, but used 3 days ago
    store.set_feedback("c2", "another", "down", NOW + timedelta(hours=2), stage="cnn")
    going = {models["c1-nlp"].name: "the votes have changed since it was trained",
             other_model.name: "of another embedding model (old-model)",
             legacy.name: "does not say which chat and stage it is for",
             unreadable.name: "cannot be read",
             temp.name: "a temporary file left by an interrupted save"}
    current = fake_emb.model_id

    def run(**kw: object) -> Any:
        return run_prune(store, embedding_model=lambda model: model == current, **kw)

    report = run(dry_run=True)
    assert {line.split(":")[0]: line.split(": ", 1)[1] for line in report.models} == \
        {name: f"{why}, unused for 30 days" for name, why in going.items()}
    assert "would remove 0 items older than 365d and 0 cached vectors and 5 unused 👍/👎 model " \
        "files (" in report.line()
    assert all(p.exists() for p in [*models.values(), other_model, legacy, unreadable, temp])
    report = run()
    assert sorted(line.split(":")[0] for line in report.models) == sorted(going)
    assert "removed 0 items older than 365d and 0 cached vectors and 5 unused 👍/👎 model " \
        "files (" in report.line()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [models["c1-cnn"].name, models["c2-cnn"].name, notes.name])
    # what was kept is what a digest can still use: the model of c1 at cnn, loaded as is
    assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="cnn",
                                 other_stages=0.1).model.key == m.key


@pytest.mark.real_clock  # file times against the clock: see tests/clock_ahead.py
def test_a_model_being_loaded_or_used_lately_is_never_removed(store: Store,
                                                             fake_emb: Any) -> None:
    from feedbot.locks import shared

    models = _votes_and_models(store, fake_emb)
    stale = models["c1-nlp"]  # its votes changed: unusable
    _age(stale, 30)
    with shared(stale.with_name(stale.name + ".lock")):  # another feedbot is loading it
        assert run_prune(store).models == []
    assert stale.exists()
    legacy = learn.model_path("c1", stage="cnn")  # written before models recorded their scope
    content = joblib.load(legacy)
    del content["scope"]
    joblib.dump(content, legacy)
    _age(legacy, 30)
    # The digest loads it (its key fits), which marks it used: it stays.
    assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="cnn",
                                 other_stages=0.1) is not None
    assert [line.split(":")[0] for line in run_prune(store).models] == [stale.name]
    assert legacy.exists() and not stale.exists()


def test_feedbot_prune_lists_and_the_daily_prune_removes_unused_models(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBOT_EMBED_BACKEND", "fp32")  # the current model: the packaged one
    models = _votes_and_models(store, fake_emb)
    for path in models.values():
        _age(path, 10)
    result = cli("prune", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 unused 👍/👎 model files (" in result.output
    for path in models.values():  # all of the fake model's
        assert f"{path.name}: of another embedding model (fake-model#fake), unused for 10 " \
            "days" in result.output
        assert path.exists()
    cfg = load_config(Path(os.environ["FEEDBOT_SOURCES"]))
    report = runner._prune(store, cfg, load_roadmap(), NOW, stop=lambda: False)
    assert len(report.models) == 3 and not any(p.exists() for p in models.values())
