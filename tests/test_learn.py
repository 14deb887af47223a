"""Learning from 👍/👎: labels, the confidence ramp, retraining only on change, persistence
that refuses a model of another embedding model, and the digest's "like “…”"."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feedbot import learn
from feedbot.config import Config, feedbot_home
from feedbot.digest import build_digest
from feedbot.embed import embed_cached
from feedbot.items import Item
from feedbot.pipeline import make_digest
from feedbot.roadmap import load_roadmap
from feedbot.store import Store

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DIM = 64  # of the fake embedder

VISION = ["Convolutional networks for image segmentation of street scenes",
          "Object detection in aerial images with convolutional features",
          "Image classification with residual convolutional networks",
          "Pooling layers and convolution filters for image recognition"]
LANGUAGE = ["Machine translation of news text with attention",
            "Sentiment analysis of product reviews with word embeddings",
            "Question answering over long documents with a language model",
            "Named entity recognition in clinical text"]


def _item(title: str, n: int, days: float = 1.0) -> Item:
    return Item(title=title, url=f"https://example.org/{n}", source="blog", kind="post",
                published=NOW - timedelta(days=days), summary=title + ".")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "t.db")
    s.upsert_items([_item(t, i) for i, t in enumerate(VISION + LANGUAGE)], NOW)
    return s


def ids(store: Store) -> dict[str, str]:
    return {s.item.title: s.id for s in store.items_since()}


def vote(store: Store, title: str, value: str, chat: str = "c1", minutes: int = 0) -> None:
    store.set_feedback(chat, ids(store)[title], value, NOW + timedelta(minutes=minutes))


def test_no_feedback_means_no_scorer(store: Store, fake_emb: Any) -> None:
    assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW) is None
    vote(store, VISION[0], "later")
    assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW) is None


def test_votes_ignore_later_and_keep_the_latest_vote(store: Store) -> None:
    vote(store, VISION[0], "up", chat="a")
    vote(store, VISION[0], "later", chat="b", minutes=1)
    vote(store, VISION[1], "up", chat="a")
    vote(store, VISION[1], "down", chat="b", minutes=2)
    i = ids(store)
    assert learn.chat_votes(store, "b") == {i[VISION[1]]: ("down", "")}
    assert learn.chat_votes(store, None) == {i[VISION[0]]: ("up", ""), i[VISION[1]]: ("down", "")}


def _scores(store: Store, emb: Any, chat: str = "c1") -> np.ndarray:
    scorer = learn.feedback_scorer(store, emb, chat=chat, now=NOW)
    assert scorer is not None
    items = store.items_since()
    X = emb.embed([s.item.embed_text for s in items])
    return scorer(X)


def test_scores_follow_the_votes_and_grow_with_their_number(store: Store, fake_emb: Any) -> None:
    vote(store, VISION[0], "up")
    vote(store, LANGUAGE[0], "down")
    few = _scores(store, fake_emb)
    for t in VISION[1:3]:
        vote(store, t, "up")
    for t in LANGUAGE[1:3]:
        vote(store, t, "down")
    many = _scores(store, fake_emb)
    titles = [s.item.title for s in store.items_since()]
    vis = np.array([t in VISION for t in titles])
    assert np.all(np.abs(many) <= 1) and np.all(np.abs(few) <= 1)
    assert many[vis].mean() > 0 > many[~vis].mean()
    assert np.abs(few).max() <= learn.confidence(2) < learn.confidence(6)
    assert np.abs(many).max() > np.abs(few).max()  # little feedback moves things only a little


def test_only_likes_learn_against_recent_unlabelled_items(store: Store, fake_emb: Any) -> None:
    items = store.items_since()
    from feedbot.embed import embed_cached

    embed_cached(store, fake_emb, [s.item.embed_text for s in items],
                 [s.content_hash for s in items])  # background must already be embedded
    vote(store, VISION[0], "up")
    vote(store, VISION[1], "up")
    s = _scores(store, fake_emb)
    titles = [x.item.title for x in items]
    vis = np.array([t in VISION for t in titles])
    assert s[vis].mean() > s[~vis].mean()


def test_only_likes_with_nothing_else_embedded_embed_their_background(store: Store,
                                                                       fake_emb: Any) -> None:
    """Nothing embedded under the model yet (a model just chosen, then `digest --no-collect`,
    which embeds its candidates after the scorer is made): the 👍 went unheard, no scorer.
    The recent items are embedded for the background then."""
    vote(store, VISION[0], "up")
    others = [s.content_hash for s in store.items_since() if s.item.title != VISION[0]]
    assert store.get_vectors(fake_emb.model_id, others) == {}
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert scorer is not None and scorer.model.liked_titles == (VISION[0],)
    assert set(store.get_vectors(fake_emb.model_id, others)) == set(others)


def test_model_is_persisted_and_retrained_only_when_feedback_changes(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_train = learn.train
    monkeypatch.setattr(learn, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    vote(store, VISION[0], "up")
    vote(store, LANGUAGE[0], "down")
    first = _scores(store, fake_emb)
    path = learn.model_path("c1")
    assert path.exists() and path.parent == feedbot_home() / "models"
    again = _scores(store, fake_emb)
    assert len(calls) == 1 and np.array_equal(first, again)
    vote(store, LANGUAGE[1], "down")
    _scores(store, fake_emb)
    assert len(calls) == 2
    vote(store, LANGUAGE[1], "later")  # a bookmark beside the 👎: the labels are the same
    _scores(store, fake_emb)
    assert len(calls) == 2
    vote(store, LANGUAGE[1], "up")  # changing one's mind changes them
    _scores(store, fake_emb)
    assert len(calls) == 3


def test_a_model_of_another_embedding_model_is_never_used(store: Store, fake_emb: Any) -> None:
    vote(store, VISION[0], "up")
    vote(store, LANGUAGE[0], "down")
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert scorer is not None
    path = learn.model_path("c1")
    m = scorer.model
    foreign = learn.FeedbackModel("some-other-model", m.key, -m.coef * 100, 5.0, m.n_labels,
                                  m.liked, m.liked_titles)
    learn.save_model(path, foreign)
    assert learn.load_model(path, fake_emb.model_id, m.key) is None
    again = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert again is not None and again.model.model_id == fake_emb.model_id
    assert np.array_equal(again.model.coef, m.coef)
    path.write_bytes(b"not a joblib file")
    assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW) is not None


def test_chats_have_their_own_models_and_none_means_everyone(store: Store,
                                                             fake_emb: Any) -> None:
    vote(store, VISION[0], "up", chat="a")
    vote(store, LANGUAGE[0], "down", chat="a")
    vote(store, LANGUAGE[1], "up", chat="b")
    vote(store, VISION[1], "down", chat="b")
    a, b = _scores(store, fake_emb, "a"), _scores(store, fake_emb, "b")
    pos = {s.item.title: n for n, s in enumerate(store.items_since())}
    assert a[pos[VISION[0]]] > 0 > a[pos[LANGUAGE[0]]]
    assert b[pos[LANGUAGE[1]]] > 0 > b[pos[VISION[1]]]
    assert learn.model_path("a") != learn.model_path("b") != learn.model_path(None)
    assert learn.feedback_scorer(store, fake_emb, chat=None, now=NOW).model.n_labels == 4


def test_a_vote_counts_fully_at_its_own_stage_and_less_at_others() -> None:
    assert learn.stage_weight("cnn", "cnn", 0.3) == 1.0
    assert learn.stage_weight("cnn", "nlp", 0.3) == 0.3
    assert learn.stage_weight("", "nlp", 0.3) == 1.0  # given before stages were recorded
    assert learn.stage_weight("cnn", None, 0.3) == 1.0  # no particular stage


def test_feedback_from_an_earlier_stage_steers_the_next_one_less(store: Store,
                                                                 fake_emb: Any) -> None:
    i = ids(store)
    for t in VISION[:2]:
        store.set_feedback("c1", i[t], "up", NOW, stage="cnn")
    for t in LANGUAGE[:2]:
        store.set_feedback("c1", i[t], "down", NOW, stage="cnn")
    X = fake_emb.embed([s.item.embed_text for s in store.items_since()])

    def scorer(stage: str, other: float) -> learn.FeedbackScorer | None:
        return learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage=stage,
                                     other_stages=other)

    at_cnn, at_nlp = scorer("cnn", 0.3), scorer("nlp", 0.3)
    assert at_cnn is not None and at_nlp is not None
    assert at_cnn.model.n_labels == 4 and at_nlp.model.n_labels == pytest.approx(1.2)
    assert np.abs(at_nlp(X)).max() < np.abs(at_cnn(X)).max()
    assert scorer("nlp", 0.0) is None  # other stages switched off: no feedback applies
    assert scorer("nlp", 1.0).model.n_labels == 4  # type: ignore[union-attr]
    # A vote given at the new stage counts fully there, and the old ones still a little.
    store.set_feedback("c1", i[LANGUAGE[2]], "up", NOW + timedelta(minutes=1), stage="nlp")
    now_nlp = scorer("nlp", 0.3)
    assert now_nlp is not None and now_nlp.model.n_labels == pytest.approx(2.2)


def test_the_digest_weighs_feedback_by_the_learners_current_stage(store: Store,
                                                                 fake_emb: Any) -> None:
    i = ids(store)
    store.set_feedback("c1", i[VISION[0]], "up", NOW, stage="cnn")
    store.set_feedback("c1", i[LANGUAGE[0]], "down", NOW, stage="cnn")
    rm = load_roadmap()

    def feedback_parts(stage: str, other: float) -> float:
        cfg = Config.model_validate({"learner": {"stage": stage},
                                     "ranking": {"feedback_other_stages": other}})
        d = make_digest(cfg, store, fake_emb, rm, now=NOW, chat="c1")
        return max(abs(e.parts["feedback"]) for e in d.items)

    assert feedback_parts("nlp", 0.0) == 0.0
    assert 0 < feedback_parts("nlp", 0.3) < feedback_parts("cnn", 0.3)


def test_digest_with_no_feedback_is_exactly_the_stage_ranking(store: Store,
                                                              fake_emb: Any) -> None:
    cfg, rm = Config(), load_roadmap()
    plain = build_digest(cfg, store, fake_emb, rm, now=NOW, stage_id="cnn", since=None)
    via_pipeline = make_digest(cfg, store, fake_emb, rm, now=NOW, stage_id="cnn")
    assert [(e.id, e.score) for e in plain.items] == [(e.id, e.score) for e in via_pipeline.items]
    assert all(e.parts["feedback"] == 0.0 for e in via_pipeline.items)


def test_digest_says_which_liked_item_an_entry_resembles(store: Store, fake_emb: Any) -> None:
    """An item close to the liked one (cosine 0.79 with the fake vectors) is said to be like
    it; the other vision items (0.13-0.5) are not: too far to name."""
    variant = "Image segmentation of street scenes"
    store.upsert_items([_item(variant, 99)], NOW)
    vote(store, VISION[0], "up", chat="c1")
    vote(store, LANGUAGE[0], "down", chat="c1")
    d = make_digest(Config(), store, fake_emb, load_roadmap(), now=NOW, stage_id="cnn",
                    chat="c1", limit=8)
    liked = [e for e in d.items if f"like “{VISION[0]}”" in e.why]
    assert [e.title for e in liked] == [variant] and liked[0].parts["feedback"] > 0


# --- the persisted model: whatever is (or cannot be) on disk, the digest goes on ---------------

def _vote_both_ways(store: Store) -> None:
    vote(store, VISION[0], "up")
    vote(store, LANGUAGE[0], "down")


def test_a_models_directory_that_cannot_be_written_does_not_stop_the_digest(
        store: Store, fake_emb: Any) -> None:
    """The saved model is a cache: `feedbot digest` used to die with FileExistsError (or
    PermissionError on a read-only directory) after training it."""
    _vote_both_ways(store)
    (feedbot_home() / "models").parent.mkdir(parents=True, exist_ok=True)
    (feedbot_home() / "models").write_text("not a directory")
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert scorer is not None and scorer.model.n_labels == 2
    d = make_digest(Config(), store, fake_emb, load_roadmap(), now=NOW, stage_id="cnn",
                    chat="c1")
    assert d.items and any(e.parts["feedback"] != 0 for e in d.items)


def test_two_digests_saving_the_model_at_once_both_succeed(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both writers used the same temporary file: the second moved it into place and the
    first one's rename failed with FileNotFoundError (seen with four processes saving)."""
    import threading

    import joblib

    _vote_both_ways(store)
    model = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW).model  # type: ignore
    path = learn.model_path("c1", stage=None)
    real_dump, other, started = joblib.dump, [], []

    def dump_while_another_saves(value: Any, target: Any, *a: Any, **k: Any) -> Any:
        out = real_dump(value, target, *a, **k)
        if not started:  # the other digest saves in full between our write and our rename
            started.append(1)
            t = threading.Thread(target=lambda: other.append(learn.save_model(path, model)))
            t.start()
            t.join()
        return out

    monkeypatch.setattr(joblib, "dump", dump_while_another_saves)
    assert learn.save_model(path, model) is True
    assert other == [True]
    assert learn.load_model(path, model.model_id, model.key) is not None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("content", [["a list"], None, {"version": learn.LEARN_VERSION},
                                     "with the right key but no weights",
                                     "with the right key and an intercept beyond any float"])
def test_a_model_file_feedbot_did_not_write_is_trained_again(
        store: Store, fake_emb: Any, content: Any) -> None:
    """The last case raised OverflowError out of `load_model`: every digest of the chat died."""
    import joblib

    _vote_both_ways(store)
    first = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert first is not None
    path = learn.model_path("c1")
    if content == "with the right key but no weights":
        content = {"version": learn.LEARN_VERSION, "model_id": fake_emb.model_id,
                   "key": first.model.key}
    elif isinstance(content, str):
        content = {"version": learn.LEARN_VERSION, "model_id": fake_emb.model_id,
                   "key": first.model.key, "coef": first.model.coef, "intercept": 10 ** 400,
                   "n_labels": 2.0, "liked": first.model.liked, "liked_titles": [VISION[0]]}
    joblib.dump(content, path)
    again = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert again is not None and np.array_equal(again.model.coef, first.model.coef)
    assert learn.load_model(path, fake_emb.model_id, first.model.key) is not None  # saved anew


def test_a_digest_for_another_stage_does_not_make_the_next_one_retrain(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same votes weigh differently at each stage; with one file per chat, every switch
    between `feedbot digest` and `feedbot digest --stage …` trained (and imported scikit-learn)
    again."""
    calls = []
    real_train = learn.train
    monkeypatch.setattr(learn, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    i = ids(store)
    store.set_feedback("c1", i[VISION[0]], "up", NOW, stage="cnn")
    store.set_feedback("c1", i[LANGUAGE[0]], "down", NOW, stage="cnn")
    for stage in ("cnn", "nlp", "cnn", "nlp", "cnn"):
        assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage=stage,
                                     other_stages=0.1) is not None
    assert len(calls) == 2


def _damage(store: Store, emb: Any, titles: list[str], value: float = np.nan) -> None:
    """Cached vectors of these items as a damaged database holds them: NaN (or zeros)."""
    by_title = {s.item.title: s for s in store.items_since()}
    bad = np.full(DIM, value, np.float32)
    store.put_vectors(emb.model_id, {by_title[t].content_hash: bad for t in titles})


@pytest.mark.parametrize("value", [np.nan, 0.0])
@pytest.mark.parametrize("voted", ["up and down", "up only"])
def test_a_damaged_vector_of_a_voted_item_is_embedded_again(
        store: Store, fake_emb: Any, voted: str, value: float) -> None:
    """A NaN row in the vector cache made LogisticRegression raise "Input X contains NaN":
    every digest of that chat died, and went on dying, since the votes did not change. A zero
    row was learnt from as if it were the item."""
    items = store.items_since()
    from feedbot.embed import embed_cached

    embed_cached(store, fake_emb, [s.item.embed_text for s in items],
                 [s.content_hash for s in items])
    vote(store, VISION[0], "up")
    if voted == "up and down":
        vote(store, LANGUAGE[0], "down")
    _damage(store, fake_emb, [VISION[0]], value)
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert scorer is not None and np.isfinite(scorer.model.coef).all()
    assert scorer.model.liked_titles == (VISION[0],)
    [h] = [s.content_hash for s in items if s.item.title == VISION[0]]
    repaired = store.get_vectors(fake_emb.model_id, [h])[h]
    assert np.isfinite(repaired).all() and np.linalg.norm(repaired) > 0.9
    assert np.allclose(scorer.model.liked[0], repaired)  # learnt from (and named by) the real one


def test_a_damaged_vector_among_the_unlabelled_items_is_no_example(store: Store,
                                                                   fake_emb: Any) -> None:
    """With only 👍, recent unlabelled items stand in for 👎; one NaN among them crashed the
    training like a voted one."""
    items = store.items_since()
    from feedbot.embed import embed_cached

    embed_cached(store, fake_emb, [s.item.embed_text for s in items],
                 [s.content_hash for s in items])
    vote(store, VISION[0], "up")
    _damage(store, fake_emb, LANGUAGE[:2])
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert scorer is not None and np.isfinite(scorer.model.coef).all()


def test_a_model_file_with_damaged_numbers_is_trained_again(store: Store, fake_emb: Any) -> None:
    """A flipped block in the saved model's weights still unpickles; its NaN weights made
    every feedback score, and so every score of the digest, NaN (its order arbitrary)."""
    _vote_both_ways(store)
    first = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert first is not None
    path = learn.model_path("c1")
    data = bytearray(path.read_bytes())
    at = data.find(first.model.coef.tobytes())
    assert at > 0
    data[at:at + 4] = np.array([np.nan], np.float32).tobytes()  # the first weight
    path.write_bytes(bytes(data))
    assert learn.load_model(path, fake_emb.model_id, first.model.key) is None
    again = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert again is not None and np.array_equal(again.model.coef, first.model.coef)
    assert np.isfinite(again(np.eye(DIM, dtype=np.float32))).all()


def test_a_vote_that_does_not_count_here_is_no_background_either(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `feedback_other_stages: 0` and only 👍 at this stage, the recent unlabelled items
    standing in for 👎 included the items the learner had 👍 at an earlier stage."""
    items = store.items_since()
    from feedbot.embed import embed_cached

    X = embed_cached(store, fake_emb, [s.item.embed_text for s in items],
                     [s.content_hash for s in items])
    i = ids(store)
    for t in VISION[:3]:
        store.set_feedback("c1", i[t], "up", NOW, stage="cnn")
    store.set_feedback("c1", i[LANGUAGE[0]], "up", NOW, stage="nlp")
    seen = []
    real_train = learn.train
    monkeypatch.setattr(learn, "train",
                        lambda *a, **k: seen.append(k["background"]) or real_train(*a, **k))
    assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="nlp",
                                 other_stages=0.0) is not None
    [background] = seen
    liked_before = [X[n] for n, s in enumerate(items) if s.item.title in VISION[:3]]
    assert len(background) == len(items) - 4
    assert not any(np.allclose(row, v) for row in background for v in liked_before)


# --- a learner with years of votes: the saved model's key without reading the items ----------

def _fixed_votes(store: Store) -> None:
    i = ids(store)
    for n, (title, value, stage) in enumerate([(VISION[0], "up", "cnn"), (VISION[1], "up", "nlp"),
                                               (LANGUAGE[0], "down", "cnn"),
                                               (LANGUAGE[1], "down", "")]):
        store.set_feedback("c1", i[title], value, NOW + timedelta(minutes=n), stage=stage)
    store.set_feedback("c1", "an-item-no-longer-stored", "up", NOW, stage="cnn")


def test_the_key_and_scores_of_fixed_votes_are_those_of_before(store: Store,
                                                               fake_emb: Any) -> None:
    """Pinned from the version that read every voted item to make the key: an upgrade neither
    trains every learner's model again nor changes what it scores (a guard: it passes on that
    version too)."""
    _fixed_votes(store)
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="cnn",
                                   other_stages=0.1)
    assert scorer is not None and scorer.model.key == "75b5d3519626f70900f729ddad45e3a2"
    assert scorer.model.liked_titles == (VISION[0], VISION[1])
    items = store.items_since()
    got = dict(zip([s.item.title for s in items],
                   scorer(fake_emb.embed([s.item.embed_text for s in items])), strict=True))
    before = {VISION[0]: 0.050836, VISION[1]: -0.006364, VISION[2]: 0.016118,
              VISION[3]: 0.014263, LANGUAGE[0]: -0.054502, LANGUAGE[1]: -0.036775,
              LANGUAGE[2]: -0.0256, LANGUAGE[3]: -0.014787}
    assert got == pytest.approx(before, abs=2e-6)


def test_a_saved_model_is_reused_without_reading_the_voted_items_or_their_vectors(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 10,000 votes, building every voted item to make the key took 1.2 s per digest."""
    calls: list[str] = []
    real_train = learn.train
    monkeypatch.setattr(learn, "train", lambda *a, **k: calls.append("train") or
                        real_train(*a, **k))
    for name in ("get_items", "get_vectors", "items_since"):
        real = getattr(Store, name)
        monkeypatch.setattr(Store, name, lambda self, *a, _r=real, _n=name, **k:
                            calls.append(_n) or _r(self, *a, **k))
    _fixed_votes(store)

    def score() -> list[str]:
        calls.clear()
        assert learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="cnn",
                                     other_stages=0.1) is not None
        return sorted(set(calls))

    assert "train" in score()
    assert score() == []  # the saved model: nothing but the votes and their content hashes
    i = ids(store)
    store.set_feedback("c1", i[LANGUAGE[2]], "down", NOW + timedelta(hours=1), stage="cnn")
    assert "train" in score()  # one more vote
    assert score() == []
    store.set_feedback("c1", i[LANGUAGE[2]], "up", NOW + timedelta(hours=2), stage="cnn")
    assert "train" in score()  # one vote changed
    edited = replace(_item(VISION[0], 0), summary="Now about something else entirely.")
    store.upsert_items([edited], NOW + timedelta(hours=3))
    assert "train" in score()  # a voted item's text changed: its content hash
    assert score() == []


def test_training_reads_whole_only_the_voted_items_it_must_embed(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_votes(store)
    items = store.items_since()
    embed_cached(store, fake_emb, [s.item.embed_text for s in items],
                 [s.content_hash for s in items])
    _damage(store, fake_emb, [VISION[1]])
    read: list[str] = []
    real = Store.get_items

    def get_items(self: Store, wanted: Any) -> Any:
        read.extend(wanted := list(wanted))
        return real(self, wanted)

    monkeypatch.setattr(Store, "get_items", get_items)
    scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="cnn",
                                   other_stages=0.1)
    assert scorer is not None and scorer.model.liked_titles == (VISION[0], VISION[1])
    assert read == [ids(store)[VISION[1]]]  # the one whose cached vector was damaged
    assert scorer.model.key == "75b5d3519626f70900f729ddad45e3a2"


# --- votes from other stages fade out; a planted model file is never unpickled --------------

def _embed_all(store: Store, emb: Any) -> np.ndarray:
    items = store.items_since()
    return embed_cached(store, emb, [s.item.embed_text for s in items],
                        [s.content_hash for s in items])


@pytest.mark.parametrize("case", ["a 👎 of another stage beside 👍 of this one",
                                  "👍 of another stage beside a 👎 of this one"])
def test_votes_of_other_stages_fade_out_smoothly(store: Store, fake_emb: Any,
                                                 case: str) -> None:
    """A class made only of votes from other stages stood alone against the other class: one
    👎 given at an earlier stage, weighing 0.0001, took the place of all the unlabelled items
    ("less like this than usual") and turned the model around; at 0 the usual items were back.
    A vote weighing little must change the scores little."""
    X = _embed_all(store, fake_emb)
    i = ids(store)
    if case.startswith("a 👎"):
        for t in LANGUAGE[:2]:
            store.set_feedback("c1", i[t], "up", NOW, stage="nlp")
        store.set_feedback("c1", i[VISION[0]], "down", NOW, stage="cnn")
    else:
        store.set_feedback("c1", i[LANGUAGE[0]], "down", NOW, stage="nlp")
        for t in VISION[:2]:
            store.set_feedback("c1", i[t], "up", NOW, stage="cnn")

    def scores(other: float) -> np.ndarray:
        scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW, stage="nlp",
                                       other_stages=other)
        assert scorer is not None
        return scorer(X)

    without = scores(0.0)
    assert np.abs(scores(1e-4) - without).max() < 0.01
    assert np.abs(scores(0.1) - without).max() < np.abs(scores(1.0) - without).max()
    assert np.all(np.abs(scores(0.1)) <= 1)


def test_ten_votes_of_a_tenth_are_one_whole_vote_and_take_no_background() -> None:
    """Votes of other stages weigh 0.1 by default: ten of them (0.9999999999999999 in floats)
    are one full vote, so they take no unlabelled items and their saved model's key is the
    key of any other full class (no "made up to one vote" mark, no retraining)."""
    assert learn._short_of_one_vote(sum([0.1] * 10)) == 0.0
    assert learn._short_of_one_vote(0.5) == 0.5 and learn._short_of_one_vote(0.0) == 1.0
    votes = {f"i{k}": "up" if k < 10 else "down" for k in range(20)}
    hashes = {i: f"h{i}" for i in votes}
    tenths = learn.feedback_key(votes, hashes, "m", dict.fromkeys(votes, 0.1))
    halves = learn.feedback_key({i: v for i, v in votes.items() if i in ("i0", "i10")},
                                hashes, "m", {"i0": 0.5, "i10": 0.5})
    unmarked = _key_without_mark(votes, hashes, "m", dict.fromkeys(votes, 0.1))
    assert tenths == unmarked
    assert halves != _key_without_mark({"i0": "up", "i10": "down"}, hashes, "m",
                                       {"i0": 0.5, "i10": 0.5})


def _key_without_mark(votes: dict[str, str], hashes: dict[str, str], model_id: str,
                      weights: dict[str, float]) -> str:
    """`feedback_key` as it is for classes of at least one full vote each."""
    import hashlib

    h = hashlib.sha256(f"v{learn.LEARN_VERSION}\n{model_id}\n".encode())
    for item in sorted(votes):
        h.update(f"{item}\t{votes[item]}\t{hashes.get(item, '')}\t{weights[item]:g}\n".encode())
    return h.hexdigest()[:32]


class _Planted:
    """What a planted pickle can do when loaded: here, create the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["a symbolic link to it", "writable by others",
                                 "owned by another user"])
def test_a_planted_model_file_is_never_unpickled(store: Store, fake_emb: Any, tmp_path: Path,
                                                 how: str) -> None:
    """joblib.load runs pickle: a model file someone else could write (one owned by another
    user, or writable by others, or a link to a file anywhere) ran their code in the digest
    and in `feedbot prune`. Such a file is now refused and the model trained again."""
    import os

    import joblib

    _vote_both_ways(store)
    first = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert first is not None
    path, marker = learn.model_path("c1"), tmp_path / "their code ran"
    m = first.model
    content = {"version": learn.LEARN_VERSION, "model_id": m.model_id, "key": m.key,
               "coef": m.coef, "intercept": m.intercept, "n_labels": m.n_labels,
               "liked": m.liked, "liked_titles": list(m.liked_titles),
               "scope": {"chat": "c1", "stage": None, "other_stages": 1.0},
               "theirs": _Planted(marker)}
    if how == "a symbolic link to it":
        elsewhere = tmp_path / "elsewhere.joblib"
        joblib.dump(content, elsewhere)
        path.unlink()
        path.symlink_to(elsewhere)
    else:
        joblib.dump(content, path)
        if how == "writable by others":
            path.chmod(0o666)
        elif os.geteuid() == 0:
            os.chown(path, 65534, 65534)
        else:
            pytest.skip("only root can give a file to another user")
    old = NOW.timestamp() - 30 * 86400
    os.utime(path, (old, old), follow_symlinks=False)
    assert [u.why for u in learn.unused_models(store, now=NOW.timestamp())] == \
        ["cannot be read"]  # and `feedbot prune` removes it
    assert not marker.exists()
    again = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert again is not None and np.array_equal(again.model.coef, m.coef)
    assert not marker.exists()
    assert not path.is_symlink() and path.stat().st_mode & 0o077 == 0  # saved anew, ours only
    assert learn.load_model(path, m.model_id, m.key) is not None


@pytest.mark.parametrize("where", ["voted", "unlabelled", "digest"])
def test_a_cached_vector_of_another_dimension_is_embedded_again(
        store: Store, fake_emb: Any, where: str) -> None:
    """A vector row whose `dim` was damaged (or written by a model of another size under the
    same key) made `np.stack` raise "all input arrays must have the same shape": every
    digest, the training and the background alike."""
    items = store.items_since()
    from feedbot.embed import embed_cached

    texts, hashes = [s.item.embed_text for s in items], [s.content_hash for s in items]
    embed_cached(store, fake_emb, texts, hashes)
    vote(store, VISION[0], "up")
    if where != "unlabelled":
        vote(store, LANGUAGE[0], "down")
    title = VISION[0] if where == "voted" else LANGUAGE[2]
    [h] = [s.content_hash for s in items if s.item.title == title]
    store.put_vectors(fake_emb.model_id, {h: np.full(DIM // 2, 0.1, np.float32)})
    if where == "digest":
        X = embed_cached(store, fake_emb, texts, hashes)
        assert X.shape == (len(items), DIM)
    else:
        scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
        assert scorer is not None and np.isfinite(scorer.model.coef).all()
    if where != "unlabelled":  # embedded again and stored (the background only leaves it out)
        assert store.get_vectors(fake_emb.model_id, [h])[h].shape == (DIM,)


# --- votes of one kind: the model follows the recent items it is weighed against ------------

def _trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many background rows each training of the 👍/👎 model was given (0: none)."""
    seen: list[int] = []
    real_train = learn.train

    def counting(*a: Any, **k: Any) -> learn.FeedbackModel:
        bg = k.get("background")
        seen.append(0 if bg is None else len(bg))
        return real_train(*a, **k)

    monkeypatch.setattr(learn, "train", counting)
    return seen


def _arrive(store: Store, emb: Any, title: str, n: int, at: datetime) -> None:
    """A new item, collected (and so embedded) at `at` and dated then."""
    it = replace(_item(title, n), published=at)
    store.upsert_items([it], at)
    _embed_all(store, emb)


def _why_unused(store: Store) -> list[str]:
    """What `feedbot prune` says of the saved models, all as if unused for 30 days."""
    import os

    old = NOW.timestamp() - 30 * 86400
    for path in (feedbot_home() / "models").glob("feedback-*.joblib"):
        os.utime(path, (old, old))
    return [u.why for u in learn.unused_models(store, now=NOW.timestamp())]


def test_a_model_of_likes_only_follows_a_new_days_items_and_is_reused_meanwhile(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With only 👍, the unlabelled items stand in for 👎; the key held only the votes, so a
    learner with three 👍 kept for weeks a model weighed against the items of the first day.
    Now a new day's items retrain it; nothing new, or more items of the same day, do not."""
    _embed_all(store, fake_emb)
    for t in VISION[:3]:
        vote(store, t, "up")
    trained = _trainings(monkeypatch)

    def score() -> learn.FeedbackScorer:
        scorer = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
        assert scorer is not None
        return scorer

    first = score()
    assert trained == [5]  # the items not voted on
    assert score().model.key == first.model.key and trained == [5]  # nothing new: reused
    assert _why_unused(store) == []  # and the prune agrees: a digest uses it
    _arrive(store, fake_emb, "Graph networks for molecules", 20, NOW - timedelta(hours=23))
    score()
    assert trained == [5]  # the same day's items: the same "usual", still reused
    assert _why_unused(store) == []
    _arrive(store, fake_emb, "Speech recognition with transducers", 21, NOW)  # the next day
    assert _why_unused(store) == [
        "newer items have come since it was trained against the recent ones"]
    later = score()
    assert trained == [5, 7] and later.model.key != first.model.key
    assert score().model.key == later.model.key and trained == [5, 7]  # reused again
    assert _why_unused(store) == []
    vote(store, VISION[3], "up")  # the votes changed: said so, as before
    assert _why_unused(store) == ["the votes have changed since it was trained"]
    score()
    assert trained == [5, 7, 6]
    import joblib  # one saved before models followed their items: trained again, and said so

    path = learn.model_path("c1")
    content = joblib.load(path)
    del content["scope"]["background"]
    votes, weights, hashes = learn._labels(store, "c1", None, 1.0)
    content["key"] = _key_without_mark(votes, hashes, fake_emb.model_id, weights)  # its key
    joblib.dump(content, path)
    assert _why_unused(store) == [
        "trained against the recent items by a feedbot that did not follow them"]
    score()
    assert trained == [5, 7, 6, 6]


def test_a_model_of_votes_of_both_kinds_ignores_new_items_as_before(
        store: Store, fake_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """It is trained with no unlabelled items: its key is the one of before (an upgrade does
    not retrain the saved models of such learners), and new items never retrain it (a guard:
    it passes on the code before too)."""
    _embed_all(store, fake_emb)
    _vote_both_ways(store)
    trained = _trainings(monkeypatch)
    first = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW)
    assert first is not None and trained == [0]
    votes, weights, hashes = learn._labels(store, "c1", None, 1.0)
    assert first.model.key == _key_without_mark(votes, hashes, fake_emb.model_id, weights)
    _arrive(store, fake_emb, "Speech recognition with transducers", 21, NOW + timedelta(days=3))
    again = learn.feedback_scorer(store, fake_emb, chat="c1", now=NOW + timedelta(days=3))
    assert again is not None and again.model.key == first.model.key and trained == [0]
    assert _why_unused(store) == []
