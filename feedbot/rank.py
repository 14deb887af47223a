"""The ranker: a pure function of items, their vectors, the stage profiles, weights and `now`.

What it is for: turn candidate vectors into a short, diverse, explained list for one roadmap
stage. What it must not do: read the clock, the database or a model. Everything arrives as
arguments (item ages are already computed), so it is tested with hand-built vectors, and all
scoring is vectorised numpy over the candidate matrix: no per-item Python except building
small per-candidate arrays (ages, source weights, level hints).

How a stage is represented (chosen by measurement, see benchmarks/README.md): each stage's
texts (title, summary, topics, resources) are unit vectors. Before comparing, every vector is
re-centred on the mean of the stage centroids, i.e. on what *all* stages share ("this is about
machine learning"), so a similarity measures the direction that makes this stage different from
the others. The fit of an item to a stage is then the mean of its similarity to the stage
centroid and of its three best similarities to the stage's texts.

Score parts (weights in `config.Ranking`, overridable under `ranking:` in sources.yaml):
- similarity: how well the item fits the current stage (above);
- contrast: minus how much better the item fits its best *other* stage (0 when this stage fits
  it best), so an NLP paper that mentions convolutions ranks in `nlp`, not in `cnn`;
- recency: exp(-age · ln 2 / half-life), 1 for a new item;
- source: log of the per-source weight from sources.yaml (0 for weight 1);
- feedback: the learner's 👍/👎 model (`feedbot.learn`), in [-1, 1], already scaled by how
  much feedback there is;
- level: in early stages, +1 for tutorials, surveys and lectures, -0.5 for narrow
  state-of-the-art claims (scaled by the stage level: foundation 1, core 0.5, applied 0).

Selection: maximal marginal relevance over the best `SELECT_POOL` candidates (the classic
form: the score, which is mostly a cosine, against the cosine to what is already chosen), at
most `per_source_cap` items per source, and near-duplicates (same `group`, or cosine ≥
`duplicate`) collapsed into the entry chosen first, which lists them in `Scored.also`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .config import Ranking, parse_duration

LEVEL_FACTOR = {"foundation": 1.0, "core": 0.5, "applied": 0.0}
SELECT_POOL = 200  # MMR and the caps look at this many best-scored candidates
# cosine to a liked item before "like “…”" is worth saying: at 0.4 one liked CNN paper was
# "like" a quarter of a store of ML papers (generic ML abstracts sit at 0.4-0.5 of each other)
LIKED_MIN_SIMILARITY = 0.55
# How much better another stage must fit an item before its why says "closer to" that stage
# rather than naming this stage's topic (fits within this are noise: the better topic was
# often this stage's own).
ELSEWHERE_MARGIN = 0.03
# A topic or resource this close to the stage's best-matching text is named instead of its
# title or summary ("fits what this stage studies" says less than "matches “CUDA …”").
TOPIC_MARGIN = 0.03
SAME_TEXT = 0.999  # cosine at which a liked item is the candidate itself, not a look-alike
LIKED_ITSELF = "\0itself"  # `_nearest_liked`'s answer for an item the learner liked


@dataclass(frozen=True)
class StageVectors:
    """Embedded stage descriptions: for each stage, one row per labelled text."""

    ids: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]  # per stage, e.g. ("title", "summary", "topic:...")
    rows: tuple[np.ndarray, ...]  # per stage, (k, d) unit vectors
    levels: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()  # per stage, for explanations (the id where empty)

    def name(self, i: int) -> str:
        return self.titles[i] if self.titles else self.ids[i]

    def index(self, stage_id: str) -> int:
        return self.ids.index(stage_id)


@dataclass(frozen=True)
class Candidate:
    """What the ranker needs to know about an item besides its vector."""

    source: str
    age_days: float
    title: str = ""
    shared_by: tuple[str, ...] = ()
    group: str = ""  # items with the same non-empty group are one story (collapsed)
    summary: str = ""  # only read for the level signal


@dataclass(frozen=True)
class Candidates:
    """The same facts as a list of `Candidate`s, column-wise: what a digest over 100,000 items
    passes, so no per-item object is made for items that are never looked at one by one."""

    sources: Sequence[str]
    age_days: np.ndarray  # float
    titles: Sequence[str]
    shared_by: Sequence[tuple[str, ...]]
    groups: Sequence[str]
    summaries: Sequence[str]

    @classmethod
    def of(cls, items: Sequence[Candidate] | Candidates) -> Candidates:
        if isinstance(items, Candidates):
            return items
        return cls([c.source for c in items],
                   np.fromiter((c.age_days for c in items), np.float64, len(items)),
                   [c.title for c in items], [c.shared_by for c in items],
                   [c.group for c in items], [c.summary for c in items])

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Candidate:
        return Candidate(self.sources[i], float(self.age_days[i]), self.titles[i],
                         self.shared_by[i], self.groups[i], self.summaries[i])

    def take(self, rows: np.ndarray) -> Candidates:
        """The candidates at positions `rows`, in that order."""
        r = [int(i) for i in rows]
        return Candidates([self.sources[i] for i in r], self.age_days[r],
                          [self.titles[i] for i in r], [self.shared_by[i] for i in r],
                          [self.groups[i] for i in r], [self.summaries[i] for i in r])


@dataclass(frozen=True)
class Liked:
    """Items the learner liked (👍), for "like “…”" explanations."""

    vectors: np.ndarray  # (m, d) unit vectors
    titles: tuple[str, ...]


@dataclass
class Scored:
    index: int  # position in the input
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    why: str = ""
    also: list[int] = field(default_factory=list)  # near-duplicates collapsed into this one


# Titles and summaries that introduce or survey a subject. Bare "survey", "review" and "guide"
# are objects and verbs as often ("a survey study", "code review", "can guide"), "how to" and
# "from scratch" start research titles ("How to train …", "trained from scratch"), so each
# needs the form that names the item itself: "a survey of", "X: a review", "guide to". A
# kind word after an article ends the title or comes before "of", "on", "for", "and" or a
# mark: "A Review-Aware Recommender", "A Survey Dataset", "a Language Model Guide Robots" are
# research.
_KIND = r"(?:survey|review|overview|introduction|guide|tutorial|primer)"
_ENDS = r"(?![\w-])(?=\s*(?:$|[:;,.?!()]|(?:of|on|to|for|and|across|with|from)\b))"
_TUTORIAL = re.compile(  # in a title
    r"\btutorials?\b|\bprimer\b|\blecture notes\b|\blectures on\b|\bnotes on\b|\bintro to\b|"
    r"\bexplained\b|\bexplainer\b|\bfor beginners\b|\bbeginner'?s\b|\bhands-on\b|"
    r"\bwalkthrough\b|\btextbook\b|\bcrash course\b|\bguide to\b|"
    r"(?:^|[:\u2013\u2014]\s*)(?:(?:survey|review) (?:of|on)|overview of|introduction to)\b|"
    rf"\b(?:a|an)\s+(?:[\w-]+\s+){{0,2}}?{_KIND}{_ENDS}", re.I)
_TUTORIAL_TEXT = re.compile(  # in a summary, where "guide" or "how to" mean little
    r"\btutorials?\b|\bprimer\b|\blecture notes\b|\btextbook\b|\bfor beginners\b|"
    r"\bintroduction to\b|\bwe survey\b|\bthis paper surveys\b|\bthis article reviews\b|"
    r"\bthis (?:(?:comprehensive|systematic|brief|short|structured) )?"
    r"(?:survey|review|tutorial|overview|primer)(?![\w-])", re.I)
# `store._CLAIMS` brings the whole summary of an item only where its LIKE patterns find one
# of these words: keep the two together.
_SOTA = re.compile(r"\b(state[- ]of[- ]the[- ]art|sota|outperforms?|new record)\b", re.I)


def topic_label(label: str) -> str:
    return label.split(":", 1)[1] if ":" in label else label


def _unit_rows(M: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(M, axis=-1, keepdims=True)
    return M / np.where(norms > 0, norms, 1.0)


def damaged_rows(X: np.ndarray) -> np.ndarray:
    """Rows of X that are no embedding: a NaN or an infinity in them, or all zeros (a damaged
    cached vector). Such a row fits no stage, or, re-centred, every stage at once."""
    sq = np.einsum("ij,ij->i", X, X) if X.ndim == 2 else np.zeros(len(X))
    return ~(np.isfinite(sq) & (sq > 1e-6))


def stage_centre(sv: StageVectors) -> np.ndarray | None:
    """Mean of the stage centroids: what all stages share. None with fewer than 3 stages."""
    if len(sv.rows) < 3:
        return None
    centroids = _unit_rows(np.stack([rows.mean(axis=0) for rows in sv.rows]))
    return centroids.mean(axis=0)


FIT_CHUNK = 8192  # rows of X scored at a time
# Rows per matrix product. BLAS sums a dot product in an order that depends on the shape of the
# product (OpenBLAS: another kernel for a small product, gemv for one row or one column) and
# on the row's place in it, so the same vector can get another fit in the last bit when it is
# scored among other rows. Every row `i` of the candidates is therefore scored at place
# `i % FIT_BLOCK` of a product of exactly FIT_BLOCK rows, whatever else is scored with it: the
# contenders fitted alone get the bits of the fit of all items, and the digest of the pruned
# ranking is the one of the full ranking, not one that differs where two scores nearly tie.
FIT_BLOCK = 32  # FIT_CHUNK is a multiple of it


def stage_fit(X: np.ndarray, sv: StageVectors) -> np.ndarray:
    """Fit of every item to every stage, (n, S).

    In the stage-centred space: fit[i, s] = mean of (similarity to the stage centroid, mean of
    the top-3 similarities to the stage's texts). Which text an entry names is `_label`'s.
    """
    centre, rows = _centred(sv)
    return _fit(X, rows, centre)


def _centred(sv: StageVectors) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """The stages' centre (`stage_centre`) and each stage's texts re-centred on it."""
    centre = stage_centre(sv)
    return centre, [_unit_rows(r - centre) if centre is not None else r for r in sv.rows]


def _slots(at: np.ndarray) -> np.ndarray:
    """Where each row goes among blocks of FIT_BLOCK rows: row at[i] at place at[i] % FIT_BLOCK
    of a block (`_fit`), the blocks filled in order, each place used once per block."""
    place = at % FIT_BLOCK
    order = np.argsort(place, kind="stable")
    sorted_place = place[order]
    block = np.empty(len(at), dtype=np.intp)  # how many earlier rows share the place
    block[order] = np.arange(len(at)) - np.searchsorted(sorted_place, sorted_place)
    return block * FIT_BLOCK + place


def _fit(X: np.ndarray, rows: Sequence[np.ndarray], centre: np.ndarray | None,
         at: np.ndarray | None = None, canonical: bool = True) -> np.ndarray:
    """`stage_fit` for the stages whose (centred) texts are `rows`.

    Every stage's texts sit in one padded block (stage × widest stage), the padding at -inf,
    so the top 3 of all stages come from one partition per chunk rather than one per stage
    (100,000 items: 0.44 s → 0.36 s on 2 cores, with an argmax per chunk since dropped).

    at: fit only these rows of X, in this order (default: all). Row i is scored at place
    i % FIT_BLOCK of a FIT_BLOCK-row product (see FIT_BLOCK), so its fit has the same bits
    whichever rows are fitted with it. canonical=False: every row in order, one product per
    chunk, a little faster, for `stage_own`'s bound, where the last bit does not matter.
    """
    n, S, d = X.shape[0], len(rows), X.shape[1]
    sizes = np.array([r.shape[0] for r in rows])
    k = np.minimum(3, sizes).astype(np.float32)  # a stage of 1 or 2 texts: their mean
    width = max(3, int(sizes.max()))
    blocks = np.zeros((S, width, d), dtype=np.float32)
    pad = np.full((S, width), -np.inf, dtype=np.float32)
    for s, r in enumerate(rows):
        blocks[s, :len(r)] = r
        pad[s, :len(r)] = 0.0
    texts = np.ascontiguousarray(blocks.reshape(S * width, d).T)
    centroids = np.ascontiguousarray(
        np.stack([_unit_rows(r.mean(axis=0)) for r in rows]).astype(np.float32).T)
    shift = centre.astype(np.float32) if centre is not None else None

    def block_fit(Xc: np.ndarray, block: int) -> np.ndarray:
        """The fit of Xc's rows (re-centred already; normalised here, in place), one product
        per `block` rows."""
        if shift is not None:
            norms = np.sqrt(np.einsum("ij,ij->i", Xc, Xc))
            Xc /= np.where(norms > 0, norms, 1.0)[:, None]
        Xb = Xc.reshape(-1, block, d)  # one product per block: see FIT_BLOCK
        sims = np.matmul(Xb, texts).reshape(-1, S, width)  # one product for every stage
        sims += pad
        top = np.partition(sims, width - 3, axis=2)[:, :, width - 3:]
        top_sum = np.where(top == -np.inf, 0.0, top).sum(axis=2)  # NaN stays NaN
        cos = np.matmul(Xb, centroids).reshape(-1, S)
        return 0.5 * cos + 0.5 * top_sum / k

    if not canonical:  # rows in order, one product per chunk
        fit = np.empty((n, S), dtype=np.float32)
        for a in range(0, n, FIT_CHUNK):  # in chunks: bounded memory, cache-friendly
            Xc = X[a:a + FIT_CHUNK].astype(np.float32)  # a copy: normalised in place
            if shift is not None:
                Xc -= shift
            fit[a:a + len(Xc)] = block_fit(Xc, len(Xc))
        return fit
    at = np.arange(n) if at is None else np.asarray(at)
    n = len(at)
    fit = np.empty((n, S), dtype=np.float32)
    slots = _slots(at)
    held = np.full(-(-(int(slots.max(initial=-1)) + 1) // FIT_BLOCK) * FIT_BLOCK, -1,
                   dtype=np.intp)
    held[slots] = np.arange(n)  # which of `at` each slot holds (-1: none, filled with row 0)
    for a in range(0, len(held), FIT_CHUNK):  # in chunks: bounded memory, cache-friendly
        src = held[a:a + FIT_CHUNK]
        real = np.flatnonzero(src >= 0)
        # a row's product is not changed by the others in its block
        Xc = X[np.where(src >= 0, at[src], 0)].astype(np.float32, copy=False)
        if shift is not None:
            Xc -= shift
        fit[src[real]] = block_fit(Xc, FIT_BLOCK)[real]
    return fit


PRUNE_MIN = 4 * SELECT_POOL  # fewer candidates than this: fit every one to every stage


def _weighted(weights: Ranking, parts: dict[str, np.ndarray]) -> np.ndarray:
    """The score without the level part: the parts times their weights, in the order given
    (one order for every item and every caller, so the same item gets the same bits)."""
    return sum(getattr(weights, k) * v for k, v in parts.items())  # type: ignore[return-value]


def _contenders(X: np.ndarray, sv: StageVectors, s: int, upper: np.ndarray,
                simple: dict[str, np.ndarray], weights: Ranking, margin: float
                ) -> np.ndarray | None:
    """`stage_fit` of the rows that can still reach the selection pool, NaN for the others;
    None where that would be most rows (then fit them all).

    `upper` is every item's score without its contrast. The contrast is never positive and its
    weight never negative, so `upper` bounds the score from above, and it needs only the fit
    to this stage (one stage's texts, not all of them). The exact scores of the best
    `SELECT_POOL` by `upper` give a lower bound L of the pool's cut; an item whose `upper` is
    below L - `margin` (what the level part can still add) - slack can be neither in the pool
    nor among the items `_level_part` looks at. Only the others are fitted to every stage: at
    100,000 items a few thousand, where fitting all took 0.5 s of a 2 s digest. Only for more
    than `SELECT_POOL` items and a contrast weight that is not negative.

    The slack covers float32 rounding: `upper` sums its parts in another order than the score,
    from a fit to one stage that may differ from the full fit in the last bit, so it is
    relative to the size of the weighted parts (a weight of 100,000 makes that bit 0.01). The
    fits themselves have the bits of `stage_fit(X, sv)` (see FIT_BLOCK), so L is the exact
    score of 200 items and the digest is the one of fitting every item.
    """
    n = len(X)
    top = np.argpartition(-upper, SELECT_POOL)[:SELECT_POOL]
    centre, texts = _centred(sv)
    top_fit = _fit(X, texts, centre, at=top)
    own, contrast = _own_and_contrast(top_fit, s)
    exact = _weighted(weights, {"similarity": own, "contrast": contrast,
                                **{k: v[top] for k, v in simple.items()}})
    if not (np.isfinite(upper).all() and np.isfinite(exact).all()):
        return None  # a weight past float32 (3.4e38: inf, and inf · 0 = NaN): no bound holds
    size = abs(weights.similarity) + 2 * abs(weights.contrast) + margin + sum(
        abs(getattr(weights, k)) * float(np.abs(v).max()) for k, v in simple.items())
    slack = 1e-3 + 1e-4 * size  # float32 rounding of a 384-term dot product: < 3e-5 of it
    rows = np.flatnonzero(upper >= float(exact.min()) - margin - slack)
    if len(rows) > n // 2:
        return None
    fit = np.full((n, len(texts)), np.nan, dtype=np.float32)
    fit[top] = top_fit  # the same bits as fitted with the others
    rest = rows[~np.isin(rows, top)]
    fit[rest] = _fit(X, texts, centre, at=rest)
    return fit


def stage_own(X: np.ndarray, sv: StageVectors, s: int) -> np.ndarray:
    """Every item's fit to stage s alone (`stage_fit(X, sv)[:, s]` up to float rounding)."""
    centre, rows = _centred(sv)
    return _fit(X, [rows[s]], centre, canonical=False)[:, 0]  # for a bound: bits may vary


def stage_scores(X: np.ndarray, sv: StageVectors, stage_id: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, contrast) of every item for one stage.

    contrast = -max(0, best other stage's fit - this stage's fit): zero when this stage fits
    the item best, negative by how much another stage fits it better.
    """
    return _own_and_contrast(stage_fit(X, sv), sv.index(stage_id))


def _own_and_contrast(fit: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    own = fit[:, s]
    others = np.delete(fit, s, axis=1)
    # min(0, own - best other), not -max(0, …): a 0 that prints as -0.000 in --explain
    contrast = np.minimum(0.0, own - others.max(axis=1)) if others.shape[1] else 0.0 * own
    return own, contrast.astype(np.float32)


def _fits_better(X: np.ndarray, fit: np.ndarray, sv: StageVectors, s: int, i: int,
                 centred: tuple[np.ndarray | None, list[np.ndarray]]) -> tuple[str, str] | None:
    """(name, label to name) of the stage that fits item i clearly better than stage s (by
    more than ELSEWHERE_MARGIN), if one does."""
    others = fit[i].copy()
    others[s] = -np.inf
    o = int(others.argmax())
    if not others[o] > fit[i, s] + ELSEWHERE_MARGIN:
        return None
    return sv.name(o), _label(X[i], sv, o, centred)


def _label(x: np.ndarray, sv: StageVectors, s: int,
           centred: tuple[np.ndarray | None, list[np.ndarray]]) -> str:
    """The text of stage s to name for item vector x: the best-matching one in the
    stage-centred space (`centred`: `_centred(sv)`, as `stage_fit` finds it), but a topic or
    resource rather than the stage's title or summary when it is within TOPIC_MARGIN of it."""
    centre, rows = centred
    v = x.astype(np.float32) - (centre if centre is not None else 0.0)
    sims = rows[s] @ (v / (np.linalg.norm(v) or 1.0))
    labels = sv.labels[s]
    b = int(sims.argmax())
    if labels[b] in ("title", "summary"):
        named = [j for j, lab in enumerate(labels) if lab not in ("title", "summary")]
        if named:
            t = max(named, key=lambda j: sims[j])
            if sims[t] >= sims[b] - TOPIC_MARGIN:
                return labels[t]
    return labels[b]


def level_signal(candidates: Sequence[Candidate]) -> np.ndarray:
    """+1 for tutorials/surveys/lectures (title), +0.5 (summary), -0.5 for SOTA claims."""
    out = np.zeros(len(candidates), dtype=np.float32)
    for i, c in enumerate(candidates):
        head = c.summary[:400]
        if _TUTORIAL.search(c.title):
            out[i] = 1.0
        elif _TUTORIAL_TEXT.search(head):
            out[i] = 0.5
        elif _SOTA.search(c.summary) or _SOTA.search(c.title):
            out[i] = -0.5
    return out


# The parts of every score, in the order `rank` gives them (`Scored.parts`, the digest's
# `weights`); each is weighted by the `config.Ranking` field of its name.
PARTS = ("similarity", "contrast", "recency", "source", "feedback", "level")


def _simple_parts(candidates: Candidates, weights: Ranking,
                  source_weights: dict[str, float] | None) -> dict[str, np.ndarray]:
    half_life = parse_duration(weights.recency_half_life) / 86400.0
    age = np.maximum(candidates.age_days, 0.0).astype(np.float32)
    sw = source_weights or {}
    logs = {s: math.log(max(sw.get(s, 1.0), 1e-3)) for s in set(candidates.sources)}
    source = np.fromiter((logs[s] for s in candidates.sources), np.float32, len(candidates))
    return {"recency": np.exp(-age * math.log(2) / max(half_life, 1e-6)), "source": source}


def _level_part(candidates: Candidates, base: np.ndarray, factor: float,
                weight: float, pool: int) -> np.ndarray:
    """The level signal × the stage's factor, computed only where it can change the outcome.

    Only the best `pool` items are ever selected, and the level part moves a score by at most
    1.5 · |weight| · factor, so items further than that below the pool's cut keep 0 here.
    """
    out = np.zeros(len(candidates), dtype=np.float32)
    if not factor or not weight:
        return out
    idx = np.arange(len(candidates))
    if len(candidates) > pool:
        cut = np.partition(base, len(base) - pool)[len(base) - pool]
        idx = np.flatnonzero(base >= cut - 1.5 * abs(weight) * factor)
    out[idx] = level_signal([candidates[int(i)] for i in idx]) * factor
    return out


def rank(
    X: np.ndarray,
    candidates: Sequence[Candidate] | Candidates,
    sv: StageVectors,
    stage_id: str,
    weights: Ranking,
    *,
    source_weights: dict[str, float] | None = None,
    feedback: np.ndarray | None = None,
    liked: Liked | None = None,
    limit: int = 10,
) -> list[Scored]:
    """Score every candidate for `stage_id` and pick the top `limit`, diverse and capped per source.

    X: (n, d) unit vectors of the candidates, in the same order as `candidates`. A damaged
    row (NaN, infinite or zero: see `damaged_rows`) leaves its item out of the ranking.
    feedback: optional (n,) scores in [-1, 1] from the learner's 👍/👎 model.
    liked: the learner's liked items, to say which one an item resembles.
    """
    n = len(candidates)
    if n == 0:
        return []
    candidates = Candidates.of(candidates)
    bad = damaged_rows(X)
    if bad.any():  # nothing says what such an item is about: rank the others
        keep = np.flatnonzero(~bad)
        out = rank(X[keep], candidates.take(keep), sv, stage_id, weights,
                   source_weights=source_weights, liked=liked, limit=limit,
                   feedback=None if feedback is None else np.asarray(feedback)[keep])
        for sc in out:
            sc.index, sc.also = int(keep[sc.index]), [int(keep[a]) for a in sc.also]
        return out
    s = sv.index(stage_id)
    factor = LEVEL_FACTOR.get(sv.levels[s], 0.0) if sv.levels else 0.0
    simple = {**_simple_parts(candidates, weights, source_weights),
              "feedback": (np.asarray(feedback, dtype=np.float32) if feedback is not None
                           else np.zeros(n, dtype=np.float32))}
    pruned = None
    if n >= PRUNE_MIN and weights.contrast >= 0:  # else the bound below does not hold
        upper = _weighted(weights, {"similarity": stage_own(X, sv, s), **simple})
        # only the contenders are fitted to every stage; the rest stay NaN, scored -inf
        pruned = _contenders(X, sv, s, upper, simple, weights,
                             1.5 * abs(weights.level) * factor)
    fit = stage_fit(X, sv) if pruned is None else pruned
    own, contrast = _own_and_contrast(fit, s)
    parts = {"similarity": own, "contrast": contrast, **simple}
    total = _weighted(weights, parts)
    if pruned is not None:
        total = np.where(np.isnan(own), -np.inf, total).astype(np.float32)
    parts["level"] = _level_part(candidates, total, factor, weights.level, SELECT_POOL)
    total = total + weights.level * parts["level"]
    picked = select(X, total, candidates, limit, weights.mmr, weights.per_source_cap,
                    weights.duplicate, SELECT_POOL)
    likes = _nearest_liked(X, [i for i, _ in picked], liked)
    no_likes = liked is not None and not len(liked.titles)  # only 👎: nothing was liked
    centred = _centred(sv)  # the stages' texts as `stage_fit` compares them, for the whys
    out = []
    for i, also in picked:
        p = {k: float(v[i]) for k, v in parts.items()}
        # "like …" only where the feedback part counts (`ranking: {feedback: 0}` turns it off)
        like = likes.get(i) if p["feedback"] > 0 and weights.feedback > 0 else None
        cand = candidates[i]
        sharers = tuple(dict.fromkeys(n for k in (i, *also) for n in candidates.shared_by[k]))
        if sharers != tuple(cand.shared_by):  # a collapsed duplicate was shared: say by whom
            cand = replace(cand, shared_by=sharers)
        why = explain(_label(X[i], sv, s, centred), cand, p, like,
                      _fits_better(X, fit, sv, s, i, centred) if p["contrast"] < 0 else None,
                      liked_any=not no_likes and weights.feedback > 0)
        out.append(Scored(int(i), float(total[i]), p, why, also))
    return out


def _nearest_liked(X: np.ndarray, chosen: list[int], liked: Liked | None) -> dict[int, str]:
    """Title of the most similar liked item for each chosen item, when similar enough.

    A chosen item that is itself a liked one (the same vector: the item, or the same text
    under another link) gets `LIKED_ITSELF`; another liked item is named only if it is not
    that one.
    """
    if liked is None or not chosen or not len(liked.titles):
        return {}
    sims = X[chosen] @ liked.vectors.T
    itself = (sims >= SAME_TEXT).any(axis=1)
    sims = np.where(sims >= SAME_TEXT, -np.inf, sims)
    j = sims.argmax(axis=1)
    out = {i: liked.titles[int(j[r])] for r, i in enumerate(chosen)
           if sims[r, j[r]] >= LIKED_MIN_SIMILARITY}
    out.update((i, LIKED_ITSELF) for r, i in enumerate(chosen) if itself[r])
    return out


_NUMBERS = re.compile(r"\d+")


def same_numbers(a: str, b: str) -> bool:
    """Whether two titles hold the same numbers, in any order. Two items whose vectors are
    close but whose titles differ in a number are two items of a series ("Lecture 5" and
    "Lecture 6", "v0.4.30" and "v0.4.31", "Issue 250" and "Issue 251"), not one told twice."""
    return sorted(_NUMBERS.findall(a)) == sorted(_NUMBERS.findall(b))


def select(X: np.ndarray, score: np.ndarray, candidates: Sequence[Candidate] | Candidates,
           limit: int,
           mmr: float, per_source_cap: int, duplicate: float = 1.01,
           pool: int = SELECT_POOL) -> list[tuple[int, list[int]]]:
    """Greedy MMR over the top `pool`, at most `per_source_cap` a source, duplicates collapsed.

    Returns (index, indices collapsed into it) in digest order: by score, so the digest reads
    as ranked (MMR decides which items, not their order). MMR value of a candidate:
    mmr · score − (1 − mmr) · max cosine to the items already chosen. The cap keeps one
    prolific source from filling the digest; when the capped sources are all there is (a
    single feed, the demo set), the digest is filled from them rather than left short, and
    those come after the others.
    """
    top = np.argsort(-score, kind="stable")[:pool]
    alive = np.zeros(len(score), dtype=bool)
    alive[top] = True
    cands = Candidates.of(candidates)
    groups = np.array(cands.groups, dtype=object)
    per_source: dict[str, int] = {}
    chosen: list[tuple[int, list[int]]] = []
    held = np.zeros(len(score), dtype=bool)  # skipped only because their source was full
    cap = per_source_cap
    filling = 0  # how many were chosen before the cap was lifted
    while len(chosen) < limit and (alive.any() or held.any()):
        i = _next_pick(X, score, alive, held, [c for c, _ in chosen], mmr, cands,
                       per_source, cap)
        if i is None:
            alive, held, cap = held, np.zeros_like(held), len(score)
            filling = filling or len(chosen)
            continue
        alive[i] = False
        per_source[cands.sources[i]] = per_source.get(cands.sources[i], 0) + 1
        dup = X @ X[i] >= duplicate
        for j in np.flatnonzero(dup):  # a few: items of a series are no duplicates
            dup[j] = same_numbers(cands.titles[i], cands.titles[int(j)])
        if groups[i]:
            dup |= groups == groups[i]
        dup[i] = False
        dup[[c for c, _ in chosen]] = False
        dup[[a for _, also in chosen for a in also]] = False
        also = [int(j) for j in np.flatnonzero(dup)]
        alive[also] = False
        held[also] = False
        chosen.append((int(i), also))
    filling = filling or len(chosen)
    return (sorted(chosen[:filling], key=lambda c: -score[c[0]])
            + sorted(chosen[filling:], key=lambda c: -score[c[0]]))


def _next_pick(X: np.ndarray, score: np.ndarray, alive: np.ndarray, held: np.ndarray,
               chosen: list[int], mmr: float, candidates: Candidates,
               per_source: dict[str, int], cap: int) -> int | None:
    idx = np.flatnonzero(alive)
    value = score[idx]
    if chosen and mmr < 1.0:
        value = mmr * value - (1 - mmr) * (X[idx] @ X[chosen].T).max(axis=1)
    for j in np.argsort(-value, kind="stable"):
        i = int(idx[j])
        if per_source.get(candidates.sources[i], 0) < cap:
            return i
        alive[i] = False  # its source is full: held back unless nothing else is left
        held[i] = True
    return None


def explain(label: str, cand: Candidate, parts: dict[str, float], like: str | None = None,
            elsewhere: tuple[str, str] | None = None, liked_any: bool = True) -> str:
    """Why an item is in the digest, in words: matched text, liked item, level, sharer.

    `elsewhere`: (stage name, matched label) of another stage that fits the item better; the
    item is then explained by that stage's text, since the nearest text of this one would name
    a topic it is not about (an SVD lecture "matching" support vector machines).
    `liked_any`: False when the learner liked nothing (only 👎): a high feedback score then
    means "unlike what you disliked", and "like items you liked" would be untrue.
    """
    if elsewhere is not None:
        name, label = elsewhere
        why = f"closer to the stage “{name}”"
        if label.startswith("topic:"):
            why += f": matches “{topic_label(label)}”"
        elif label.startswith("resource:"):
            why += f": close to “{topic_label(label)}”"
    elif label == "title":
        why = "on the stage's theme"
    elif label == "summary":
        why = "fits what this stage studies"
    elif label.startswith("resource:"):
        why = f"close to the stage resource “{topic_label(label)}”"
    else:
        why = f"matches “{topic_label(label)}”"
    if like == LIKED_ITSELF:
        why += "; you liked it"
    elif like:
        why += f"; like “{like}”"
    elif parts.get("feedback", 0) > 0.2 and liked_any:
        why += "; like items you liked"
    if parts.get("level", 0) > 0:
        why += "; an introduction or survey"
    if cand.shared_by:
        why += f"; shared by {', '.join(cand.shared_by[:2])}"
    return why
