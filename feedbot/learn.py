"""Learning from the learner's 👍/👎: a small linear model on item vectors, per chat or learner.

What it is for: `feedback_scorer` turns the feedback rows in the store into a function that
scores candidate items in [-1, 1], which the ranker adds to the stage score (weight
`ranking.feedback`). As arxiv-sanity-lite trains an SVM per tag, we train a logistic regression
on the embeddings of 👍 (positive) against 👎 (negative) items. 'later' is not a label.

- With no 👍/👎 there is no scorer (`None`): the digest is ranked by the stage score alone.
- Per stage: a vote remembers the roadmap stage it was given at. Votes from other stages count
  with weight `ranking.feedback_other_stages` (default 0.1), so the 👍 given to CNN papers while
  learning CNNs do not keep filling the NLP digest; a 👎 on noise still counts a little
  everywhere. Votes recorded before stages were kept count fully at every stage.
- Scores are multiplied by a confidence n / (n + PRIOR_LABELS) for n labels (n weighted by
  stage), so one 👍 moves a ranking only a little and twenty move it a lot.
- With labels of only one kind, recent unlabelled items from the store (already embedded)
  stand in for the other kind, weighted as one class: "more / less like this than usual".
- The model is retrained only when the feedback changed (a hash of the rows, the items' texts
  and the embedding model id) and persisted with joblib under `$FEEDBOT_HOME/models/`, one file
  per chat and stage. A stored model made with another embedding model is never used; one that
  cannot be read is trained again, and one that cannot be written is only not kept.

What it must not do: rank, render, or write to the store; it reads feedback and vectors, and
may embed a labelled item that has no vector yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from .config import feedbot_home
from .embed import Embedder, embed_cached
from .rank import Liked, damaged_rows
from .store import Store, StoredItem

log = logging.getLogger(__name__)

LEARN_VERSION = 2  # 2: labels weighted by the stage they were given at
PRIOR_LABELS = 10  # confidence = n / (n + PRIOR_LABELS)
C = 1.0  # inverse regularisation of the logistic regression
BACKGROUND_WINDOW = timedelta(days=60)
BACKGROUND_MAX = 300
LABELS = {"up": 1, "down": 0}


@dataclass(frozen=True)
class FeedbackModel:
    """A trained 👍/👎 model: logistic regression weights plus what explanations need."""

    model_id: str  # the embedding model whose vectors it was trained on
    key: str  # hash of the feedback it was trained on
    coef: np.ndarray  # (d,)
    intercept: float
    n_labels: float  # labels, each weighted by its stage (1 at the current stage)
    liked: np.ndarray  # (m, d) vectors of the 👍 items
    liked_titles: tuple[str, ...]

    @property
    def confidence(self) -> float:
        return confidence(self.n_labels)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """confidence · (2·P(👍) − 1) for each row of X: in [-1, 1], 0 means no opinion."""
        z = np.clip(X @ self.coef + self.intercept, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        return (self.confidence * (2.0 * p - 1.0)).astype(np.float32)


def confidence(n_labels: float) -> float:
    return n_labels / (n_labels + PRIOR_LABELS) if n_labels > 0 else 0.0


def train(X: np.ndarray, y: np.ndarray, *, model_id: str, key: str = "",
          titles: tuple[str, ...] = (), background: np.ndarray | None = None,
          weights: np.ndarray | None = None) -> FeedbackModel:
    """Fit 👍 (y=1) against 👎 (y=0); `background` rows join the missing class if one is.

    Both classes weigh the same in total (a class of 1 is not drowned by a class of 30).
    `weights` (one per row of X, default 1) scale each label within its class and make up the
    label count behind the confidence. `titles` are the titles of the rows of X, for "like “…”"
    explanations.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.int64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    Xt, yt, wt = X, y, w
    if background is not None and len(background) and len(set(y.tolist())) == 1:
        Xt = np.concatenate([X, background])
        yt = np.concatenate([y, np.full(len(background), 1 - y[0])])
        wt = np.concatenate([w, np.ones(len(background))])
    sample = np.ones(len(yt), dtype=np.float64)
    for cls in (0, 1):
        mask = yt == cls
        if mask.any():
            sample[mask] = wt[mask] * len(yt) / (2.0 * wt[mask].sum())
    if len(set(yt.tolist())) < 2:
        raise ValueError("need both 👍 and 👎 (or background items) to train")
    clf = LogisticRegression(C=C, max_iter=1000).fit(Xt, yt, sample_weight=sample)
    up = y == 1
    return FeedbackModel(
        model_id=model_id, key=key, coef=clf.coef_[0].astype(np.float32),
        intercept=float(clf.intercept_[0]), n_labels=float(w.sum()),
        liked=X[up].astype(np.float32),
        liked_titles=tuple(t for t, u in zip(titles, up, strict=False) if u),
    )


class FeedbackScorer:
    """What `pipeline.make_digest` passes to the digest: `(X, stored_items) -> scores`."""

    def __init__(self, model: FeedbackModel) -> None:
        self.model = model

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.model.scores(X)

    @property
    def liked(self) -> Liked:
        return Liked(self.model.liked, self.model.liked_titles)


def chat_votes(store: Store, chat: str | None) -> dict[str, tuple[str, str]]:
    """item id → ('up' or 'down', stage given at) for a chat (every chat for None; across
    chats the latest vote wins). Read-later bookmarks are not labels and are kept apart."""
    out: dict[str, tuple[str, str]] = {}
    for v in store.feedback(chat):  # oldest first
        if v.value in LABELS:
            out[v.item_id] = (v.value, v.stage)
    return out


def stage_weight(vote_stage: str, stage: str | None, other_stages: float) -> float:
    """How much a vote given at `vote_stage` counts when ranking for `stage`.

    Fully at its own stage, for a ranking of no particular stage (None), and when the vote
    predates stages (''); `other_stages` elsewhere.
    """
    return 1.0 if stage is None or vote_stage in ("", stage) else other_stages


def feedback_key(votes: dict[str, str], items: list[StoredItem], model_id: str,
                 weights: dict[str, float] | None = None) -> str:
    h = hashlib.sha256(f"v{LEARN_VERSION}\n{model_id}\n".encode())
    hashes = {s.id: s.content_hash for s in items}
    for item in sorted(votes):
        w = 1.0 if weights is None else weights.get(item, 1.0)
        h.update(f"{item}\t{votes[item]}\t{hashes.get(item, '')}\t{w:g}\n".encode())
    return h.hexdigest()[:32]


def model_path(chat: str | None, home: Path | None = None, stage: str | None = None) -> Path:
    """Where the model for a chat (None: every chat) ranking for `stage` is kept.

    One file per stage: the same votes weigh differently at each stage, so a digest for
    another stage (`feedbot digest --stage nlp`) must not overwrite, and make the next
    ordinary digest retrain, the model of the learner's own stage.
    """
    name = "all" if chat is None else re.sub(r"[^A-Za-z0-9_-]+", "_", chat)[:40]
    digest = hashlib.sha256(str(chat).encode()).hexdigest()[:8]
    if stage is not None:
        name += "-" + re.sub(r"[^A-Za-z0-9_-]+", "_", stage)[:40]
        digest = hashlib.sha256(f"{chat}\n{stage}".encode()).hexdigest()[:8]
    return (home or feedbot_home()) / "models" / f"feedback-{name}-{digest}.joblib"


def load_model(path: Path, model_id: str, key: str) -> FeedbackModel | None:
    """The persisted model when it fits this feedback and this embedding model, else None.

    Anything else found there (damaged, truncated, empty, written by another feedbot or not by
    feedbot at all, numbers that are NaN or infinite) is only a reason to train again, never
    an error.
    """
    import joblib

    try:
        d: Any = joblib.load(path)
    except FileNotFoundError:
        return None
    except Exception as e:  # a corrupt or foreign file: retrain
        log.warning("the saved feedback model %s cannot be read (%s: %s); training it again",
                    path, type(e).__name__, e)
        return None
    if not isinstance(d, dict):
        log.warning("the saved feedback model %s is not one feedbot wrote (%s); training it "
                    "again", path, type(d).__name__)
        return None
    if d.get("version") != LEARN_VERSION or d.get("model_id") != model_id:
        log.info("ignoring feedback model %s: made by another feedbot version or with another "
                 "embedding model", path)
        return None
    if d.get("key") != key:
        return None
    try:
        coef = np.asarray(d["coef"], dtype=np.float32)
        liked = np.asarray(d["liked"], dtype=np.float32)
        titles = tuple(str(t) for t in d["liked_titles"])
        model = FeedbackModel(str(d["model_id"]), str(d["key"]), coef, float(d["intercept"]),
                              float(d["n_labels"]), liked, titles)
        ok = coef.ndim == 1 and liked.ndim == 2 and len(liked) == len(titles) and \
            (not len(liked) or liked.shape[1] == coef.shape[0]) and \
            bool(np.isfinite(coef).all()) and math.isfinite(model.intercept) and \
            math.isfinite(model.n_labels) and model.n_labels >= 0 and \
            bool(np.isfinite(liked).all())
    except (KeyError, TypeError, ValueError) as e:
        ok, model = False, None
        log.debug("feedback model %s: %s", path, e)
    if not ok:
        log.warning("the saved feedback model %s is incomplete or damaged; training it again",
                    path)
        return None
    return model


def save_model(path: Path, m: FeedbackModel) -> bool:
    """Persist `m` atomically; False (and a warning) when it cannot be written.

    The model is only a cache of a few milliseconds of training: an unwritable models
    directory must not stop a digest. Each writer uses its own temporary file, so two digests
    saving at once (the bot's and `feedbot digest`) cannot move each other's file away.
    """
    import os
    import threading

    import joblib

    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            joblib.dump({"version": LEARN_VERSION, "model_id": m.model_id, "key": m.key,
                         "coef": m.coef, "intercept": m.intercept, "n_labels": m.n_labels,
                         "liked": m.liked, "liked_titles": list(m.liked_titles)}, f)
        tmp.replace(path)
        return True
    except OSError as e:
        log.warning("the feedback model cannot be saved to %s (%s); it is trained again next "
                    "time", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False


def _background(store: Store, model_id: str, exclude: set[str],
                now: datetime | None) -> np.ndarray:
    """Vectors of recent unlabelled items that are already embedded (nothing is embedded)."""
    since = now - BACKGROUND_WINDOW if now is not None else None
    items = [s for s in store.items_since(since, limit=BACKGROUND_MAX + len(exclude))
             if s.id not in exclude][:BACKGROUND_MAX]
    vecs = store.get_vectors(model_id, [s.content_hash for s in items])
    if not vecs:
        return np.zeros((0, 0), dtype=np.float32)
    X = np.stack(list(vecs.values())).astype(np.float32)
    return X[~damaged_rows(X)]  # a damaged cached vector (NaN, zeros) is no example


def _labelled_vectors(store: Store, embedder: Embedder, items: list[StoredItem]) -> np.ndarray:
    """Vectors of the voted items; a damaged cached one (NaN, zeros) is embedded again. One
    still damaged after that is left to the caller to drop (sklearn refuses NaN)."""
    from .digest import embed_anew

    X = embed_cached(store, embedder, [s.item.embed_text for s in items],
                     [s.content_hash for s in items])
    bad = np.flatnonzero(damaged_rows(X))
    if len(bad):
        log.warning("%d cached vector(s) of voted items were damaged; embedding them again",
                    len(bad))
        X[bad] = embed_anew(store, embedder, [items[i].item.embed_text for i in bad],
                            [items[i].content_hash for i in bad])
    return X


def feedback_scorer(store: Store, embedder: Embedder, *, chat: str | None = None,
                    now: datetime | None = None, stage: str | None = None,
                    other_stages: float = 1.0) -> FeedbackScorer | None:
    """The 👍/👎 scorer for a chat (or every chat with None); None without any feedback.

    With `stage`, votes given at other stages count `other_stages` (see `stage_weight`).
    """
    weights, votes = {}, {}
    for item, (value, vote_stage) in chat_votes(store, chat).items():
        weights[item] = stage_weight(vote_stage, stage, other_stages)
        if weights[item] > 0:
            votes[item] = value
    items = [s for s in store.get_items(votes) if s.id in votes]
    if not items:
        return None
    model_id = embedder.model_id
    key = feedback_key(votes, items, model_id, weights)
    path = model_path(chat, stage=stage)
    model = load_model(path, model_id, key)
    if model is None:
        X = _labelled_vectors(store, embedder, items)
        ok = ~damaged_rows(X)  # still damaged: the embedder's own NaN
        items, X = [s for s, k in zip(items, ok, strict=True) if k], X[ok]
        if not items:
            return None
        y = np.array([LABELS[votes[s.id]] for s in items])
        bg = None
        if len(set(y.tolist())) == 1:
            bg = _background(store, model_id, set(weights), now)  # every vote, 0-weighted too
            if not len(bg):
                return None
        model = train(X, y, model_id=model_id, key=key,
                      titles=tuple(s.item.title for s in items), background=bg,
                      weights=np.array([weights[s.id] for s in items]))
        save_model(path, model)
    return FeedbackScorer(model)
