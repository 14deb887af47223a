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
  stand in for the other kind, weighted as one class: "more / less like this than usual". A
  kind given only at other stages (weighing less than one vote) is made up to one vote with
  them, so that a vote weighing little changes the scores little.
- The model is retrained only when the feedback changed (a hash of the rows, the items' texts
  and the embedding model id), or, for one trained with unlabelled items, when a new day's
  items have come (`background_mark`), and persisted with joblib under
  `$FEEDBOT_HOME/models/`, one file per chat and stage. A stored model made with another
  embedding model is never used; one that cannot be read is trained again, and one that
  cannot be written is only not kept. joblib runs pickle: only a file this user owns, no one
  else may write and that is no symbolic link is loaded (one planted there would run its
  code); any other is trained again. Telling whether the saved model fits reads only the
  votes and the voted items' content hashes (and, with votes of one kind, the newest stored
  item's date); the items and their vectors are read only to train. The daily prune removes
  the saved models no chat, stage or embedding model can use any more, once unused for a
  week (`unused_models`).

What it must not do: rank, render, or write to the store; it reads feedback and vectors, and
may embed a labelled item that has no vector yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .config import feedbot_home
from .embed import Embedder, embed_cached, odd_vectors
from .rank import Liked, damaged_rows
from .store import Store, VotedItem

log = logging.getLogger(__name__)

LEARN_VERSION = 2  # 2: labels weighted by the stage they were given at
PRIOR_LABELS = 10  # confidence = n / (n + PRIOR_LABELS)
C = 1.0  # inverse regularisation of the logistic regression
BACKGROUND_WINDOW = timedelta(days=60)
BACKGROUND_MAX = 300
BACKGROUND_REFRESH = timedelta(days=1)  # see `background_mark`
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
    label count behind the confidence. A class whose labels weigh less than one vote (votes of
    other stages only) is made up to one with the `background` rows: a 👎 given at another
    stage is then a small part of "less like this than usual", not the whole of it, and as its
    weight goes to 0 the model becomes the one without it. `titles` are the titles of the rows
    of X, for "like “…”" explanations.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.int64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    Xt, yt, wt = X, y, w
    if background is not None and len(background):
        for cls in (1, 0):
            short = _short_of_one_vote(float(w[y == cls].sum()))
            if short == 0.0:
                continue
            if short == 1.0:  # no label of this class: the background is the class
                bw = np.ones(len(background))
            else:  # votes of other stages only: the background makes up the rest of one vote
                bw = np.full(len(background), short / len(background))
            Xt = np.concatenate([Xt, background])
            yt = np.concatenate([yt, np.full(len(background), cls)])
            wt = np.concatenate([wt, bw])
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
    return {item: (v.value, v.stage) for item, v in _latest_votes(store, chat).items()}


def _latest_votes(store: Store, chat: str | None) -> dict[str, VotedItem]:
    """item id → its latest 👍/👎 (of `chat`, or of any chat for None), with its item's content
    hash; read-later bookmarks left out."""
    latest: dict[str, VotedItem] = {}
    for v in store.voted_items(chat):  # oldest first: across chats the latest vote wins
        if v.value in LABELS:
            latest[v.item_id] = v
    return latest


def stage_weight(vote_stage: str, stage: str | None, other_stages: float) -> float:
    """How much a vote given at `vote_stage` counts when ranking for `stage`.

    Fully at its own stage, for a ranking of no particular stage (None), and when the vote
    predates stages (''); `other_stages` elsewhere.
    """
    return 1.0 if stage is None or vote_stage in ("", stage) else other_stages


def _short_of_one_vote(class_weight: float) -> float:
    """How much background a class of labels weighing `class_weight` in all takes (see
    `train`): 1 for no label, the rest of one vote for labels of other stages only, else 0."""
    # (a tolerance: ten votes of weight 0.1 sum to 0.9999999999999999, one full vote)
    return 1.0 - class_weight if class_weight < 1.0 - 1e-9 else 0.0


def _class_weights(votes: dict[str, str], hashes: Mapping[str, str],
                   weights: dict[str, float] | None) -> dict[str, float]:
    """'up' and 'down' → what the votes of that kind on stored items weigh in all."""
    per_class = dict.fromkeys(LABELS, 0.0)
    for item in votes:
        if item in hashes and votes[item] in per_class:
            per_class[votes[item]] += 1.0 if weights is None else weights.get(item, 1.0)
    return per_class


def _takes_background(votes: dict[str, str], hashes: Mapping[str, str],
                     weights: dict[str, float] | None = None) -> bool:
    """Whether a model of these votes is trained with unlabelled items (see `train`): a kind
    of vote is missing, or weighs less than one vote."""
    return any(_short_of_one_vote(c) > 0 for c in _class_weights(votes, hashes, weights).values())


def background_mark(store: Store) -> str:
    """What a model trained with unlabelled items keys them by: the day (UTC) of the newest
    stored item's date, or 'none' for an empty store.

    The unlabelled items are the recent ones (`_background`): the model must follow them as
    the feeds move on, or three 👍 are weighed for weeks against the items of the first day.
    By the day, not by the items themselves: every collect brings a few items, and 300 items
    changed by a handful are the same "usual" (keyed by their ids, each digest after a collect
    would retrain); a day's items are a new part of them, and training once a day is cheap.
    By the newest item's date, not by the clock: a digest that finds nothing new reuses the
    model (a store whose feeds went quiet keeps its model), and `unused_models`, which runs
    on the system clock, tells the same as a digest on its own clock. One indexed row to read.
    """
    newest = store.items_since(None, limit=1)
    if not newest:
        return "none"
    return str(int(newest[0].when.timestamp() // BACKGROUND_REFRESH.total_seconds()))


def feedback_key(votes: dict[str, str], hashes: Mapping[str, str], model_id: str,
                 weights: dict[str, float] | None = None, background: str | None = None
                 ) -> str:
    """The key a saved model is found by: the votes, each with its item's content hash ('' for
    an item not stored) and weight, and the embedding model. Where a class of the stored
    items' votes weighs less than one vote but more than none (trained with background since
    `train` made it up to one vote), the key says so: a model saved before is trained again.
    `background`: the `background_mark` of a model that `_takes_background` (None for one that
    does not, whose key stays what it was before background was keyed: an upgrade does not
    retrain it)."""
    h = hashlib.sha256(f"v{LEARN_VERSION}\n{model_id}\n".encode())
    for item in sorted(votes):
        w = 1.0 if weights is None else weights.get(item, 1.0)
        h.update(f"{item}\t{votes[item]}\t{hashes.get(item, '')}\t{w:g}\n".encode())
    if any(0.0 < _short_of_one_vote(c) < 1.0
           for c in _class_weights(votes, hashes, weights).values()):
        h.update(b"made up to one vote with background\n")
    if background is not None:
        h.update(f"background of day {background}\n".encode())
    return h.hexdigest()[:32]


def _current_key(store: Store, votes: dict[str, str], weights: dict[str, float],
                 hashes: dict[str, str], model_id: str) -> tuple[str, str | None]:
    """The key of the model a digest would use now, and its `background_mark` (None for one
    that does not `_takes_background`): what `feedback_scorer` and `unused_models` go by."""
    mark = background_mark(store) if _takes_background(votes, hashes, weights) else None
    return feedback_key(votes, hashes, model_id, weights, mark), mark


def _labels(store: Store, chat: str | None, stage: str | None, other_stages: float
            ) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """What the key needs, without the items' text: the votes that count here (item → 'up' or
    'down', in `chat_votes`' order), the weight of every vote, and the content hashes of the
    voted items that are stored and count here."""
    weights: dict[str, float] = {}
    votes: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for item, v in _latest_votes(store, chat).items():
        weights[item] = stage_weight(v.stage, stage, other_stages)
        if weights[item] > 0:
            votes[item] = v.value
            if v.content_hash:
                hashes[item] = v.content_hash
    return votes, weights, hashes


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


def _lock_file(path: Path) -> Path:
    """Held shared while a process reads or replaces the model file (see `locks`)."""
    return path.with_name(path.name + ".lock")


class UntrustedModelFile(OSError):
    """A model file another user could have written: never unpickled (see `_read_model_file`)."""


def _read_model_file(path: Path) -> Any:
    """`joblib.load` of a saved model, which runs pickle: only of a file this user owns and no
    one else may write, opened without following a symbolic link, and checked as opened (so it
    cannot be swapped between the check and the load). Anything else raises
    `UntrustedModelFile`, with why; a digest then trains the model again and replaces the file.
    """
    import joblib

    if path.is_symlink():  # (O_NOFOLLOW below refuses one put there meanwhile)
        raise UntrustedModelFile(f"{path} is a symbolic link")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedModelFile(f"{path} is not a regular file")
        if hasattr(os, "geteuid"):  # POSIX; on Windows the directory's ACL decides
            if st.st_uid != os.geteuid():
                raise UntrustedModelFile(f"{path} belongs to another user (uid {st.st_uid})")
            if st.st_mode & 0o022:
                raise UntrustedModelFile(f"{path} may be written by other users "
                                         f"(mode {stat.S_IMODE(st.st_mode):o})")
        f = open(fd, "rb")  # noqa: SIM115 (closed below)
    except BaseException:
        os.close(fd)
        raise
    with f:
        return joblib.load(f)


def load_model(path: Path, model_id: str, key: str) -> FeedbackModel | None:
    """The persisted model when it fits this feedback and this embedding model, else None.

    Anything else found there (damaged, truncated, empty, written by another feedbot or not by
    feedbot at all, numbers that are NaN or infinite, a file another user could have written:
    see `_read_model_file`) is only a reason to train again, never an error.
    """
    from .locks import shared

    if not path.exists() and not path.is_symlink():
        return None
    try:
        with shared(_lock_file(path)):  # `remove_unused_models` leaves it alone meanwhile
            d: Any = _read_model_file(path)
            with contextlib.suppress(OSError):  # when it was last used: see unused_models
                os.utime(path)
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
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:  # 10**400: OverflowError
        ok, model = False, None
        log.debug("feedback model %s: %s", path, e)
    if not ok:
        log.warning("the saved feedback model %s is incomplete or damaged; training it again",
                    path)
        return None
    return model


def save_model(path: Path, m: FeedbackModel, scope: dict[str, Any] | None = None) -> bool:
    """Persist `m` atomically; False (and a warning) when it cannot be written. `scope`: the
    chat, stage and `other_stages` it was trained for, by which `unused_models` tells whether
    the votes have changed since, and the `background_mark` it was trained with (None for
    none), by which it tells newer items from changed votes.

    The model is only a cache of a few milliseconds of training: an unwritable models
    directory must not stop a digest. Each writer uses its own temporary file, so two digests
    saving at once (the bot's and `feedbot digest`) cannot move each other's file away.
    """
    import threading

    import joblib

    from .locks import shared

    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_BINARY", 0), 0o600)  # readable by this user only
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o600)  # a leftover of the same name keeps its mode
            joblib.dump({"version": LEARN_VERSION, "model_id": m.model_id, "key": m.key,
                         "coef": m.coef, "intercept": m.intercept, "n_labels": m.n_labels,
                         "liked": m.liked, "liked_titles": list(m.liked_titles),
                         "scope": scope}, f)
        with shared(_lock_file(path)):  # not while `remove_unused_models` removes it
            tmp.replace(path)
        return True
    except OSError as e:
        log.warning("the feedback model cannot be saved to %s (%s); it is trained again next "
                    "time", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False


def _background(store: Store, model_id: str, exclude: set[str],
                now: datetime | None, embedder: Embedder | None = None) -> np.ndarray:
    """Vectors of recent unlabelled items that are already embedded (nothing is embedded), or,
    with `embedder`, of those items embedded where they are not."""
    since = now - BACKGROUND_WINDOW if now is not None else None
    items = [s for s in store.items_since(since, limit=BACKGROUND_MAX + len(exclude))
             if s.id not in exclude][:BACKGROUND_MAX]
    if embedder is not None and items:
        embed_cached(store, embedder, [s.item.embed_text for s in items],
                     [s.content_hash for s in items])
    vecs = store.get_vectors(model_id, [s.content_hash for s in items])
    for k in odd_vectors(vecs, most=True):  # a damaged cached vector (NaN, zeros) is no example
        del vecs[k]
    if not vecs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(list(vecs.values())).astype(np.float32)


def _training_vectors(store: Store, embedder: Embedder, votes: dict[str, str],
                      hashes: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """The stored voted items' ids and their vectors: cached ones read by content hash; only
    the items with none, or a damaged one, are read whole, to embed their text (building
    10,000 items took longer than training on them). In the order the items were read whole
    before, so that a model trained again is exactly the same."""
    order = list(votes)  # as `Store.get_items` read them before: by id within each 500
    ids = [i for n in range(0, len(order), 500) for i in sorted(order[n:n + 500])
           if i in hashes]
    cached = store.get_vectors(embedder.model_id, [hashes[i] for i in ids])
    for k in odd_vectors(cached):
        del cached[k]
    redo = [i for i in ids if hashes[i] not in cached]
    if redo:  # `embed_cached` embeds them (again)
        items = [s for s in store.get_items(redo) if s.id in votes]
        X = embed_cached(store, embedder, [s.item.embed_text for s in items],
                         [s.content_hash for s in items])
        for s, x in zip(items, X, strict=True):
            if s.id in hashes:
                cached[hashes[s.id]] = x
    ids = [i for i in ids if hashes[i] in cached]  # one removed meanwhile
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    return ids, np.stack([cached[hashes[i]] for i in ids]).astype(np.float32)


def feedback_scorer(store: Store, embedder: Embedder, *, chat: str | None = None,
                    now: datetime | None = None, stage: str | None = None,
                    other_stages: float = 1.0) -> FeedbackScorer | None:
    """The 👍/👎 scorer for a chat (or every chat with None); None without any feedback.

    With `stage`, votes given at other stages count `other_stages` (see `stage_weight`).
    """
    votes, weights, hashes = _labels(store, chat, stage, other_stages)
    if not hashes:  # no vote on a stored item counts here
        return None
    model_id = embedder.model_id
    key, mark = _current_key(store, votes, weights, hashes, model_id)
    path = model_path(chat, stage=stage)
    model = load_model(path, model_id, key)
    if model is None:
        ids, X = _training_vectors(store, embedder, votes, hashes)
        ok = ~damaged_rows(X)  # still damaged: the embedder's own NaN
        ids, X = [i for i, k in zip(ids, ok, strict=True) if k], X[ok]
        if not ids:
            return None
        y = np.array([LABELS[votes[i]] for i in ids])
        w = np.array([weights[i] for i in ids])
        bg = None
        if any(_short_of_one_vote(float(w[y == cls].sum())) for cls in (0, 1)):
            bg = _background(store, model_id, set(weights), now)  # every vote, 0-weighted too
            if not len(bg) and len(set(y.tolist())) == 1:
                # None embedded with this model yet (one just chosen, a `digest --no-collect`
                # before anything embedded them): embedded now, or every vote went unheard.
                bg = _background(store, model_id, set(weights), now, embedder)
            if not len(bg) and len(set(y.tolist())) == 1:
                return None
        liked = store.item_titles(i for i in ids if votes[i] == "up")
        model = train(X, y, model_id=model_id, key=key,
                      titles=tuple(liked.get(i, "") for i in ids), background=bg, weights=w)
        save_model(path, model, scope={"chat": chat, "stage": stage,
                                       "other_stages": other_stages, "background": mark})
    return FeedbackScorer(model)


# ---------------------------------------------------------------------------------------------
# Saved models no digest can use any more (`feedbot prune`, daily in `feedbot run`)

MODEL_IDLE = timedelta(days=7)  # a model file unused this long may go, if no digest can use it


@dataclass(frozen=True)
class UnusedModel:
    """A saved model file (or a writer's leftover temporary file) that can go."""

    path: Path
    idle_days: float  # since it was last written or loaded
    why: str  # why no digest can use it

    def line(self) -> str:
        return f"{self.path.name}: {self.why}, unused for {self.idle_days:.0f} days"


def unused_models(store: Store, *, now: float, home: Path | None = None,
                  current: Callable[[str], bool] | None = None,
                  idle: timedelta = MODEL_IDLE) -> list[UnusedModel]:
    """The saved 👍/👎 models under `$FEEDBOT_HOME/models` that no chat, stage or embedding
    model can use any more, and that no process has loaded or written for `idle`.

    A digest loads the model of its chat and stage only when the key still fits (`load_model`)
    and touches it then, so a model in use is never idle. An idle one still goes only when it
    cannot be used: it cannot be read or is of another feedbot version; it was made with an
    embedding model that `current` says is not the current one; its chat has no votes that
    count any more, or they have changed since it was trained, or (for one trained against
    the recent items) a new day's items have come since (a digest would train it again);
    or it does not say which chat and stage it is for (written before models recorded that,
    such as the per-chat models named for no stage, which no digest loads any more).
    Temporary files a killed writer left behind go once as idle. Reads only the files, the
    votes and the newest item's date, and only the files `load_model` would read
    (`_read_model_file`; any other "cannot be read"); removes nothing (see
    `remove_unused_models`).
    """
    directory = (home or feedbot_home()) / "models"
    try:
        paths = sorted(directory.iterdir())
    except OSError:
        return []
    out: list[UnusedModel] = []
    keys: dict[tuple[Any, Any, Any, str], _Current | None] = {}
    for path in paths:
        name = path.name
        temp = name.startswith(".feedback-") and name.endswith(".tmp")
        if not (temp or (name.startswith("feedback-") and name.endswith(".joblib"))):
            continue
        try:
            idle_s = now - path.lstat().st_mtime  # a link: its own age
        except OSError:
            continue
        if idle_s < idle.total_seconds() or not (path.is_file() or path.is_symlink()):
            continue
        why = "a temporary file left by an interrupted save" if temp else ""
        if not temp:
            try:
                d: Any = _read_model_file(path)
            except Exception:  # damaged, or not feedbot's
                d = None
            why = _why_unusable(store, d, current, keys)
        if why:
            out.append(UnusedModel(path, idle_s / 86400, why))
    return out


class _Current(NamedTuple):
    """What a digest of one chat, stage and embedding model would go by now."""

    votes: dict[str, str]
    weights: dict[str, float]
    hashes: dict[str, str]
    key: str
    mark: str | None  # see `_current_key`


def _why_unusable(store: Store, d: Any, current: Callable[[str], bool] | None,
                  keys: dict[tuple[Any, Any, Any, str], _Current | None]) -> str:
    """Why no digest can use this saved model, or '' when one can."""
    if not isinstance(d, dict) or not isinstance(d.get("model_id"), str):
        return "cannot be read"
    if d.get("version") != LEARN_VERSION:
        return "of another feedbot version"
    if current is not None and not current(d["model_id"]):
        return f"of another embedding model ({d['model_id']})"
    scope = d.get("scope")
    if not isinstance(scope, dict) or not {"chat", "stage", "other_stages"} <= set(scope):
        return "does not say which chat and stage it is for"
    chat, stage, other = scope["chat"], scope["stage"], scope["other_stages"]
    memo = (chat, stage, other, d["model_id"])
    if memo not in keys:
        try:
            votes, weights, hashes = _labels(store, chat, stage, float(other))
        except (TypeError, ValueError):  # not what feedbot writes
            return "does not say which chat and stage it is for"
        keys[memo] = (_Current(votes, weights, hashes,
                               *_current_key(store, votes, weights, hashes, d["model_id"]))
                      if hashes else None)
    cur = keys[memo]
    if cur is None:
        return "its chat has no votes that count there any more"
    if cur.key == d.get("key"):
        return ""
    if cur.mark is not None:  # trained against the recent items: by their day, or before?
        then = scope.get("background")
        if "background" not in scope:
            return "trained against the recent items by a feedbot that did not follow them"
        if isinstance(then, str) and d.get("key") == feedback_key(
                cur.votes, cur.hashes, d["model_id"], cur.weights, then):
            return "newer items have come since it was trained against the recent ones"
    return "the votes have changed since it was trained"


def remove_unused_models(found: list[UnusedModel], *, idle: timedelta = MODEL_IDLE
                         ) -> Iterator[UnusedModel]:
    """Remove the models `unused_models` found, each unless a process holds it now (loading
    or replacing it: see `load_model`, `save_model`) or has used it since it was found;
    yields those removed. A file that cannot be removed is left for the next prune."""
    import time

    from .locks import try_exclusive

    for m in found:
        try:
            with try_exclusive(_lock_file(m.path)) as locked:
                if not locked:
                    log.debug("keeping %s: in use by another process", m.path)
                    continue
                if time.time() - m.path.lstat().st_mtime < idle.total_seconds():
                    continue  # loaded or written again since it was found
                m.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            log.debug("cannot remove the unused feedback model %s: %s", m.path, e)
            continue
        log.info("removed the unused feedback model %s (%s)", m.path, m.why)
        yield m
