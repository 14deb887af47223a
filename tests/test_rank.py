"""The pure ranker, with hand-built vectors: stage fit and contrast, each score part, MMR,
the per-source cap, near-duplicate collapse and the words of `why`."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from feedbot import rank as rank_module
from feedbot.config import Ranking
from feedbot.rank import (
    Candidate,
    Candidates,
    Liked,
    StageVectors,
    level_signal,
    rank,
    select,
    stage_centre,
    stage_fit,
    stage_scores,
)

D = 24


def u(*pairs: tuple[int, float]) -> np.ndarray:
    """A unit vector from (axis, weight) pairs."""
    v = np.zeros(D, dtype=np.float32)
    for i, w in pairs:
        v[i] += w
    return v / np.linalg.norm(v)


def mix(a: float, i: int = 0, j: int = 1) -> np.ndarray:
    return u((i, a), (j, math.sqrt(1 - a * a)))


@pytest.fixture
def sv() -> StageVectors:
    """Four stages on axes 0-3; `cnn` has a second text, a topic, leaning towards axis 4."""
    return StageVectors(
        ids=("cnn", "nlp", "gpus", "math"),
        labels=(("title", "topic:convolution and pooling"), ("title",), ("title",), ("title",)),
        rows=(np.stack([u((0, 1)), u((0, 0.9), (4, 0.44))]), u((1, 1))[None],
              u((2, 1))[None], u((3, 1))[None]),
        levels=("core", "core", "applied", "foundation"),
    )


def plain(**changes: object) -> Ranking:
    """Weights with only the stage fit on, no diversity and no cap, changed as given."""
    base = {"contrast": 0.0, "recency": 0.0, "source": 0.0, "feedback": 0.0, "level": 0.0,
            "mmr": 1.0, "per_source_cap": 100, "duplicate": 1.01}
    return Ranking().model_copy(update=base | changes)


def cands(n: int, **kw: object) -> list[Candidate]:
    return [Candidate(**({"source": f"s{i}", "age_days": 0.0} | kw)) for i in range(n)]


def order(scored: list) -> list[int]:
    return [s.index for s in scored]


# --- stage fit and contrast -----------------------------------------------------------------

def test_an_item_fits_the_stage_whose_texts_it_is_closest_to(sv: StageVectors) -> None:
    X = np.stack([u((0, 1)), u((1, 1)), u((2, 1)), u((3, 1))])
    fit = stage_fit(X, sv)
    assert fit.argmax(axis=1).tolist() == [0, 1, 2, 3]


def test_the_matched_text_is_the_closest_topic(sv: StageVectors) -> None:
    x = u((0, 0.6), (4, 0.8))
    assert rank_module._label(x, sv, 0, rank_module._centred(sv)) == \
        "topic:convolution and pooling"


def test_contrast_is_how_much_better_another_stage_fits(sv: StageVectors) -> None:
    nlp_with_convs, pure_cnn = mix(0.7), u((0, 0.5), (5, 0.866))
    X = np.stack([nlp_with_convs, pure_cnn])
    fit = stage_fit(X, sv)
    assert fit[0].argmax() == 1  # the NLP paper that mentions convolutions belongs to nlp
    sim, contrast = stage_scores(X, sv, "cnn")
    assert contrast[0] == pytest.approx(-(fit[0, 1] - fit[0, 0]), abs=1e-6) and contrast[0] < 0
    assert contrast[1] == 0.0 and not np.signbit(contrast[1])  # nothing fits it better (and
    # a 0 that --explain would print as -0.000 is not one)
    assert stage_scores(X, sv, "nlp")[1][0] == 0.0
    assert sim[0] > sim[1]  # by similarity alone it would lead the cnn digest…
    assert order(rank(X, cands(2), sv, "cnn", plain(contrast=0.0))) == [0, 1]
    # …the contrast puts it where it fits best: below the CNN paper for cnn, first for nlp
    assert order(rank(X, cands(2), sv, "cnn", plain(contrast=2.0))) == [1, 0]
    assert order(rank(X, cands(2), sv, "nlp", plain(contrast=2.0)))[0] == 0


def test_centring_removes_what_all_stages_share(sv: StageVectors) -> None:
    shared = u((0, 1), (1, 1), (2, 1), (3, 1))  # as close to every stage: fits none of them
    specific = mix(0.45, 0, 6)  # only a little cnn, but nothing else
    fit = stage_fit(np.stack([shared, specific]), sv)
    assert fit[1, 0] > 0.3 > 0.05 > fit[0].max()  # the shared item fits no stage


def test_two_stage_roadmaps_are_not_centred() -> None:
    sv2 = StageVectors(ids=("a", "b"), labels=(("title",), ("title",)),
                       rows=(u((0, 1))[None], u((1, 1))[None]))
    fit = stage_fit(u((0, 1))[None], sv2)
    assert fit[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("sizes", [(1, 2), (1, 2, 3, 7), (5, 4, 6, 3, 9)])
def test_stage_fit_is_the_mean_of_centroid_and_top_3_for_stages_of_any_size(
        sizes: tuple[int, ...]) -> None:
    """The padded one-block computation against the definition, stage by stage, with stages
    of 1 and 2 texts (top-3 is then their mean), uncentred (2 stages) and centred, across
    chunk boundaries."""
    rng = np.random.default_rng(len(sizes))

    def units(n: int) -> np.ndarray:
        M = rng.standard_normal((n, 16)).astype(np.float32)
        return M / np.linalg.norm(M, axis=1, keepdims=True)

    sv = StageVectors(ids=tuple(f"s{i}" for i in range(len(sizes))),
                      labels=tuple(tuple(f"t{j}" for j in range(k)) for k in sizes),
                      rows=tuple(units(k) for k in sizes))
    X = units(rank_module.FIT_CHUNK + 5)
    fit = stage_fit(X, sv)
    centre = stage_centre(sv)
    Y = X if centre is None else (X - centre) / np.linalg.norm(X - centre, axis=1,
                                                                  keepdims=True)
    for s, rows in enumerate(sv.rows):
        R = rows if centre is None else (rows - centre) / np.linalg.norm(
            rows - centre, axis=1, keepdims=True)
        sims = Y @ R.T
        c = R.mean(axis=0)
        top = np.sort(sims, axis=1)[:, -min(3, len(R)):].mean(axis=1)
        want = 0.5 * (Y @ (c / np.linalg.norm(c))) + 0.5 * top
        assert np.allclose(fit[:, s], want, atol=1e-5)
        # the text named (`_label`, item by item) is the closest in the same centred space
        centred = rank_module._centred(sv)
        for i in range(0, len(X), 211):
            assert rank_module._label(X[i], sv, s, centred) == sv.labels[s][sims[i].argmax()]


def test_a_damaged_row_fits_no_stage_it_is_nan_not_a_number() -> None:
    """A NaN in an item's vector gives NaN fits (which the digest treats as damaged), not a
    fit built from the padding's zeros."""
    sv = StageVectors(ids=("a", "b", "c"), labels=(("t",), ("t", "u"), ("t", "u", "v")),
                      rows=(u((0, 1))[None], np.stack([u((1, 1)), u((2, 1))]),
                            np.stack([u((3, 1)), u((4, 1)), u((5, 1))])))
    X = np.stack([u((0, 1)), np.full(D, np.nan, np.float32)])
    fit = stage_fit(X, sv)
    assert np.isfinite(fit[0]).all() and np.isnan(fit[1]).all()


@pytest.mark.parametrize("stage", ["cnn", "math"])
@pytest.mark.parametrize("changes", [{}, {"level": 0.5}, {"contrast": 0.0},
                                     {"contrast": 3.0, "recency": 1.0}, {"similarity": 0.0},
                                     {"per_source_cap": 10**6, "mmr": 1.0},
                                     {"per_source_cap": 10**6, "mmr": 1.0, "level": 0.5}])
def test_fitting_only_the_contenders_gives_the_same_digest(
        monkeypatch: pytest.MonkeyPatch, stage: str, changes: dict[str, float]) -> None:
    """Over many candidates only those that can reach the selection pool are fitted to every
    stage. The digest (order, scores, parts, explanations, collapsed duplicates) is the one of
    fitting them all, whatever the weights, the level factor, feedback and source weights.
    With no cap and no MMR the whole pool is listed, so it must be the same pool."""
    rng = np.random.default_rng(len(changes) + len(stage))
    dim, n = 12, 3000

    def units(k: int) -> np.ndarray:
        M = rng.standard_normal((k, dim)).astype(np.float32)
        return M / np.linalg.norm(M, axis=1, keepdims=True)

    sv = StageVectors(ids=("cnn", "nlp", "gpus", "math"),
                      labels=tuple(tuple(f"topic:t{j}" for j in range(k)) for k in (4, 2, 5, 1)),
                      rows=tuple(units(k) for k in (4, 2, 5, 1)),
                      levels=("core", "core", "applied", "foundation"))
    X = units(n)
    X[7] = X[3]  # a duplicate
    titles = ["A tutorial on x" if i % 9 == 0 else "We outperform SOTA" if i % 5 == 0
              else f"paper {i}" for i in range(n)]
    cs = Candidates([f"s{i % 40}" for i in range(n)], rng.uniform(0, 20, n), titles,
                    [("Ada",) if i % 11 == 0 else () for i in range(n)],
                    ["" for _ in range(n)], ["" for _ in range(n)])
    weights = Ranking().model_copy(update=changes)
    kw = {"source_weights": {"s1": 3.0, "s2": 0.2},
          "feedback": rng.uniform(-1, 1, n).astype(np.float32),
          "limit": rank_module.SELECT_POOL if "mmr" in changes else 15}
    pruned = rank(X, cs, sv, stage, weights, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(rank_module, "PRUNE_MIN", n + 1)
    full = rank(X, cs, sv, stage, weights, **kw)  # type: ignore[arg-type]
    assert [(p.index, p.also, p.why) for p in pruned] == [(f.index, f.also, f.why) for f in full]
    assert _digest(pruned) == _digest(full)  # scores and parts too, to the bit


def test_the_pool_cut_counts_the_contrast_of_the_best_fitting_items(
        monkeypatch: pytest.MonkeyPatch, sv: StageVectors) -> None:
    """The items that fit the stage best by similarity alone are NLP papers mentioning
    convolutions: their contrast drops them below plainer CNN papers. A cut taken from their
    similarity would prune the CNN papers that really make the pool."""
    rng = np.random.default_rng(1)

    def noisy(base: np.ndarray, k: int, noise: float) -> np.ndarray:
        M = base + noise * rng.standard_normal((k, D)).astype(np.float32)
        M[:, :4] = base[:4] + noise * 0.1 * rng.standard_normal((k, 4)).astype(np.float32)
        return M / np.linalg.norm(M, axis=1, keepdims=True)

    X = np.concatenate([noisy(mix(0.6), 400, 0.05), noisy(u((0, 0.45), (6, 0.9)), 2000, 0.3),
                        noisy(u((7, 1)), 4000, 1.0)]).astype(np.float32)
    cs = [Candidate(source=f"s{i}", age_days=0.0) for i in range(len(X))]
    weights = plain(contrast=2.0)
    pruned = rank(X, cs, sv, "cnn", weights, limit=rank_module.SELECT_POOL)
    monkeypatch.setattr(rank_module, "PRUNE_MIN", len(X) + 1)
    full = rank(X, cs, sv, "cnn", weights, limit=rank_module.SELECT_POOL)
    assert [p.index for p in pruned] == [f.index for f in full]
    assert sum(1 for f in full if f.index < 400) < 100 < len(full)  # the NLP papers sink


def test_only_the_contenders_are_fitted_to_every_stage(monkeypatch: pytest.MonkeyPatch,
                                                       sv: StageVectors) -> None:
    """The point of the pruning: with a clear recency spread, most of 5,000 items are never
    fitted to every stage."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, D)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    fitted: list[int] = []
    real = rank_module._fit

    def counting(X: np.ndarray, rows: list[np.ndarray], *args: object, **kw: object
                 ) -> tuple[np.ndarray, np.ndarray]:
        if len(rows) == len(sv.rows):  # fitted to every stage (not the one-stage bound)
            at = kw.get("at")
            fitted.append(len(X) if at is None else len(at))  # type: ignore[arg-type]
        return real(X, rows, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rank_module, "_fit", counting)
    cs = [Candidate(source=f"s{i}", age_days=i / 100) for i in range(5000)]
    out = rank(X, cs, sv, "cnn", Ranking(recency=1.0))
    assert len(out) == 10
    assert 0 < sum(fitted) < 2500, fitted


# --- the pruning against fitting every item, over random inputs made to find its edges ---

MODEL_DIM = 384  # all-MiniLM-L6-v2: BLAS takes other paths for these products than at D = 24


def _digest(out: list) -> list[tuple]:
    """Everything rank() returns, for exact comparison."""
    return [(s.index, s.score, s.parts, s.why, s.also) for s in out]


def _pruned_and_full(monkeypatch: pytest.MonkeyPatch, X: np.ndarray, cs: object,
                     sv: StageVectors, stage: str, weights: Ranking, **kw: object
                     ) -> tuple[list, list]:
    pruned = rank(X, cs, sv, stage, weights, **kw)  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        m.setattr(rank_module, "PRUNE_MIN", 10**9)
        full = rank(X, cs, sv, stage, weights, **kw)  # type: ignore[arg-type]
    return pruned, full


def _adversarial(seed: int) -> tuple[np.ndarray, Candidates, StageVectors, str, Ranking,
                                     dict[str, object]]:
    """Candidates around the stage texts (tight clusters and spread), many exact and near
    duplicates, a few damaged rows, ties in time and source, every weight from 0 to 1,000,
    and selection settings at their edges."""
    rng = np.random.default_rng(seed)
    pick = lambda *options: options[int(rng.integers(len(options)))]  # noqa: E731

    def units(k: int) -> np.ndarray:
        M = rng.standard_normal((k, MODEL_DIM)).astype(np.float32)
        return M / np.linalg.norm(M, axis=1, keepdims=True)

    S = pick(1, 2, 3, 4, 6)
    sizes = [1] * S if rng.random() < 0.3 else [int(rng.integers(1, 7)) for _ in range(S)]
    sv = StageVectors(tuple(f"st{i}" for i in range(S)),
                      tuple(tuple(pick("title", "summary", "topic:a", "resource:b")
                                  for _ in range(k)) for k in sizes),
                      tuple(units(k) for k in sizes),
                      tuple(pick("foundation", "core", "applied") for _ in range(S))
                      if rng.random() < 0.8 else ())
    P = rank_module.PRUNE_MIN
    n = pick(P - 1, P, P + 1, P + 7, 1500, 3000)
    texts = np.concatenate(sv.rows)
    X = texts[rng.integers(len(texts), size=n)] + rng.choice(
        [0.05, 0.3, 1.0, 3.0], size=n)[:, None] * rng.standard_normal((n, MODEL_DIM))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    k = int(rng.integers(n // 3))
    X[rng.integers(n, size=k)] = X[rng.integers(n, size=k)]  # exact duplicates
    k = int(rng.integers(n // 5))
    near = X[rng.integers(n, size=k)] + 1e-4 * units(k)
    X[rng.integers(n, size=k)] = near / np.linalg.norm(near, axis=1, keepdims=True)
    for i in rng.integers(n, size=pick(0, 0, 1, 5)):
        X[i] = pick(np.nan, 0.0, np.inf)
    sources = [f"s{i}" for i in rng.integers(pick(1, 3, 40, n), size=n)]
    ages = pick(np.zeros(n), rng.integers(0, 5, n).astype(float), rng.uniform(-1, 30, n))

    def column(*options: object) -> list:
        return [options[i] for i in rng.integers(len(options), size=n)]

    cs = Candidates(sources, ages, column("A tutorial on x", "We outperform SOTA", "paper", ""),
                    column(("Ada",), *[()] * 9), column("", "", "", "g1", "g2"),
                    column("", "This survey covers x.", "A state of the art x."))

    def weight() -> float:
        return float(pick(0.0, 0.0, 0.05, 0.5, 1.0, 10.0, 1000.0))

    weights = Ranking().model_copy(update={
        "similarity": weight(), "contrast": weight(), "recency": weight(), "source": weight(),
        "feedback": weight(), "level": weight(), "recency_half_life": pick("1d", "3d", "30d"),
        "mmr": pick(1.0, 1.0, 0.85, 0.3, 0.0), "per_source_cap": pick(1, 2, 3, 100),
        "duplicate": pick(1.01, 0.999, 0.9)})
    feedback = pick(None, None, rng.uniform(-1, 1, n).astype(np.float32),
                    rng.choice([-1.0, 0.0, 0.5, 1.0], size=n).astype(np.float32))
    kw = {"source_weights": pick(None, {"s0": 3.0, "s1": 0.0, "s2": 0.5}),
          "feedback": feedback,
          "liked": pick(None, Liked(X[:3].copy(), ("a", "b", "c"))),
          "limit": pick(1, 10, rank_module.SELECT_POOL + 50, n + 5)}
    return X, cs, sv, f"st{int(rng.integers(S))}", weights, kw


def test_pruning_gives_exactly_the_digest_of_fitting_every_item(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Differential test: over seeded adversarial inputs (`_adversarial`) at the model's
    dimension, rank() with the pruning returns what it returns with every item fitted to every
    stage: the same entries in the same order, the same scores and parts to the bit, the same
    explanations and collapsed duplicates. The pruned fits used to be computed in one product
    of the contenders alone, whose BLAS kernel sums in another order than the product of all
    items: scores and parts differed in their last bits in 14 of the 22 seeds that pruned
    (the order too where scores nearly tie: `test_near_ties_keep_their_order_when_pruned`)."""
    real = rank_module._contenders
    pruning: list[bool] = []

    def spy(*args: object, **kw: object) -> object:
        out = real(*args, **kw)  # type: ignore[arg-type]
        pruning.append(out is not None)
        return out

    monkeypatch.setattr(rank_module, "_contenders", spy)
    differ = []
    for seed in range(48):
        X, cs, sv, stage, weights, kw = _adversarial(seed)
        pruned, full = _pruned_and_full(monkeypatch, X, cs, sv, stage, weights, **kw)
        if _digest(pruned) != _digest(full):
            differ.append(seed)
    assert differ == []
    assert sum(pruning) >= 15, pruning  # the inputs do reach the pruning


def _units(rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """k random unit vectors of the model's dimension, from `rng`."""
    def units(k: int) -> np.ndarray:
        M = rng.standard_normal((k, MODEL_DIM)).astype(np.float32)
        return M / np.linalg.norm(M, axis=1, keepdims=True)
    return units


def test_near_ties_keep_their_order_when_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    """300 near-copies of one story (the same text, a little noise) among 3,000 others: their
    scores differ in the last bits only, so the order among them is decided by those bits.
    Pruned, the digest listed other copies, in another order."""
    rng = np.random.default_rng(0)

    units = _units(rng)
    sv = StageVectors(("a", "b", "c", "e"), (("title",),) * 4, tuple(units(1) for _ in range(4)))
    story = sv.rows[0][0] + 0.5 * units(1)[0]
    X = np.concatenate([story + 1e-7 * rng.standard_normal((300, MODEL_DIM)), units(3000)])
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    cs = [Candidate(f"s{i}", 0.0) for i in range(len(X))]
    weights = plain(contrast=0.5)
    pruned, full = _pruned_and_full(monkeypatch, X, cs, sv, "a", weights, limit=200)
    assert [p.index for p in pruned] == [f.index for f in full]
    assert _digest(pruned) == _digest(full)


def test_the_pruning_bound_holds_for_a_large_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """A similarity weight of 100,000 (valid in sources.yaml then; the bound must hold for any
    weight `rank()` is given, and sources.yaml now takes up to 1,000) makes a last-bit difference
    between the one-stage fit of the bound and the full fit worth 0.01, ten times the fixed
    slack of 0.001 the bound had: items of the pool were pruned, and the digest of 200 missed
    some of them (before the fits had the same bits, about 20). The slack now grows with the
    weighted parts."""
    rng = np.random.default_rng(9)

    units = _units(rng)
    sv = StageVectors(("a", "b", "c", "e"), (("title",),) * 4, tuple(units(1) for _ in range(4)))
    story = sv.rows[0][0] + 0.5 * units(1)[0]
    copies = story + 1e-6 * rng.standard_normal((600, MODEL_DIM)).astype(np.float32)
    X = np.concatenate([copies, units(1400)])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cs = [Candidate(f"s{i}", 0.0) for i in range(len(X))]
    weights = plain(similarity=1e5, per_source_cap=10**6)
    pruned, full = _pruned_and_full(monkeypatch, X, cs, sv, "a", weights,
                                    limit=rank_module.SELECT_POOL)
    assert sorted(p.index for p in pruned) == sorted(f.index for f in full)
    assert _digest(pruned) == _digest(full)


@pytest.mark.parametrize("changes", [{"contrast": 1e39}, {"similarity": 1e39},
                                     {"level": 1e39}, {"similarity": 3e38, "recency": 3e38}])
def test_a_weight_past_float32_prunes_nothing(monkeypatch: pytest.MonkeyPatch,
                                              changes: dict[str, float]) -> None:
    """Weights are Python floats (sources.yaml takes 1e39); float32 scores overflow to inf,
    and inf · 0 is NaN. A NaN cut pruned every item, and the pruned digest was another one
    than the full: with no bound to trust, nothing is pruned."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, MODEL_DIM)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sv = StageVectors(("a", "b", "c", "e"), (("title", "summary"),) * 4,
                      tuple(X[2 * i:2 * i + 2] for i in range(4)), ("foundation",) * 4)
    cs = [Candidate(f"s{i % 30}", float(i % 10), "A tutorial" if i % 7 == 0 else "x")
          for i in range(len(X))]
    weights = Ranking().model_copy(update=changes)
    with np.errstate(all="ignore"):
        pruned, full = _pruned_and_full(monkeypatch, X, cs, sv, "a", weights, limit=20,
                                        feedback=rng.uniform(-1, 1, len(X)))
    assert _digest(pruned) == _digest(full)


@pytest.mark.parametrize("changes", [{"contrast": -1.0}, {"similarity": -1.0},
                                     {"recency": -1.0, "level": -2.0}, {"feedback": -1.0}])
def test_negative_weights_do_not_break_the_pruning(monkeypatch: pytest.MonkeyPatch,
                                                   changes: dict[str, float]) -> None:
    """sources.yaml refuses negative weights, but the bound does not need them to be
    positive: only a negative contrast weight voids it, and then nothing is pruned."""
    X, cs, sv, stage, _, kw = _adversarial(3)
    weights = Ranking().model_copy(update=changes)
    pruned, full = _pruned_and_full(monkeypatch, X, cs, sv, stage, weights, **kw)
    assert _digest(pruned) == _digest(full)


# --- the other parts ------------------------------------------------------------------------

def test_recency_favours_new_items_with_the_documented_half_life(sv: StageVectors) -> None:
    X = np.stack([u((0, 1))] * 2)
    cs = [Candidate("a", age_days=3.0), Candidate("b", age_days=0.0)]
    out = rank(X, cs, sv, "cnn", plain(recency=0.2, recency_half_life="3d"))
    assert order(out) == [1, 0]
    assert out[0].parts["recency"] == pytest.approx(1.0)
    assert out[1].parts["recency"] == pytest.approx(0.5, abs=1e-6)
    assert out[0].score - out[1].score == pytest.approx(0.2 * 0.5, abs=1e-6)


def test_source_weight_is_added_on_a_log_scale(sv: StageVectors) -> None:
    X = np.stack([u((0, 1))] * 2)
    cs = [Candidate("plain", 0.0), Candidate("favourite", 0.0)]
    out = rank(X, cs, sv, "cnn", plain(source=0.1),
               source_weights={"favourite": 2.0})
    assert order(out) == [1, 0]
    assert out[0].parts["source"] == pytest.approx(math.log(2.0))
    assert out[1].parts["source"] == 0.0


def test_feedback_shifts_scores_by_its_weight(sv: StageVectors) -> None:
    X = np.stack([u((0, 1)), u((0, 0.95), (7, 0.31))])
    base = rank(X, cands(2), sv, "cnn", plain())
    assert order(base) == [0, 1]
    fb = np.array([-0.5, 0.5], dtype=np.float32)
    out = rank(X, cands(2), sv, "cnn", plain(feedback=0.5), feedback=fb)
    assert order(out) == [1, 0]
    by_index = {s.index: s for s in out}
    base_by = {s.index: s for s in base}
    assert by_index[1].score - base_by[1].score == pytest.approx(0.25, abs=1e-6)
    assert by_index[0].parts["feedback"] == pytest.approx(-0.5)


def test_no_feedback_means_exactly_the_stage_score(sv: StageVectors) -> None:
    X = np.stack([u((0, 1)), u((0, 0.8), (1, 0.6))])
    w = Ranking()
    a = rank(X, cands(2), sv, "cnn", w)
    b = rank(X, cands(2), sv, "cnn", w, feedback=np.zeros(2, dtype=np.float32))
    assert [(s.index, s.score) for s in a] == [(s.index, s.score) for s in b]


@pytest.mark.parametrize(("title", "summary", "level"), [
    ("Transformer-based EEG Decoding: A Survey", "", 1.0),
    ("A Comprehensive Survey on LiDAR Super-Resolution", "", 1.0),
    ("Integrating Bayesian methods with model predictive control: a review", "", 1.0),
    ("Survey of Swarm Intelligence Approaches", "", 1.0),
    ("Lectures on AI for Mathematics", "", 1.0),
    ("Natural Language Processing: A Comprehensive Practical Guide", "", 1.0),
    ("Adaptation of Large Language Models", "This tutorial covers adapters and LoRA.", 0.5),
    # research titles that only use the words
    ("How to Train Your Metamorphic Deep Neural Network", "", 0.0),
    ("Turkish Models Trained from Scratch for the Legal Domain", "", 0.0),
    ("Do Electric Vehicles Induce Motion Sickness? A Survey Study in China", "", 0.0),
    ("Misinformed Peer Review Detection with Large Language Models", "", 0.0),
    ("Fine-Tuning a Language Model for Systematic Review Screening", "", 0.0),
    ("Contrastive Cross-Course Knowledge Tracing", "", 0.0),
    ("Confidence Discrepancy Can Guide Federated Learning", "", 0.0),
    ("Grading the Grader: Lessons from an Agentic System", "", 0.0),
    ("Quantization without training", "We retrain the network from scratch.", 0.0),
    ("Robust estimators", "We review prior work and propose a method.", 0.0),
    ("Can a Language Model Guide Robot Navigation?", "", 0.0),
    ("A Benchmark for Code Review", "", 0.0),
    ("A Review-Aware Recommender System", "", 0.0),
    ("A Large-Scale Survey Dataset of Developer Opinions", "", 0.0),
    ("Introduction of Sparse Gates into Mixture-of-Experts", "", 0.0),
    ("Peer review of papers with language models", "", 0.0),
    ("Estimators", "In this paper we review the limitations of estimators.", 0.0),
    ("Estimators", "We release this code review benchmark.", 0.0),
    ("Estimators", "We run a large-scale survey of 500 practitioners.", 0.0),
    ("Estimators", "This systematic review covers forty studies.", 0.5),
    ("Deep learning: introduction to the field", "", 1.0),
])
def test_the_level_hint_is_for_items_that_introduce_or_survey(title: str, summary: str,
                                                              level: float) -> None:
    """A review of digests found "an introduction or survey" on research papers four times
    in ten: "how to", "from scratch", "course", "lessons", a bare "guide", "survey" or
    "review" (a survey study, peer review, systematic review screening) all matched."""
    assert level_signal([Candidate("s", 0.0, title=title, summary=summary)]).tolist() == [level]


def test_level_prefers_tutorials_in_early_stages_and_can_be_turned_off(sv: StageVectors) -> None:
    X = np.stack([u((3, 1))] * 2)
    cs = [Candidate("a", 0.0, title="Sharp bounds for a narrow estimator",
                    summary="We achieve state-of-the-art rates."),
          Candidate("b", 0.0, title="A gentle introduction to estimators")]
    assert level_signal(cs).tolist() == [-0.5, 1.0]
    assert level_signal([Candidate("c", 0.0, title="Estimators",
                                   summary="This survey covers estimators."),
                         Candidate("d", 0.0, title="Estimators",
                                   summary="We show how to guide an estimator.")]).tolist() \
        == [0.5, 0.0]
    out = rank(X, cs, sv, "math", plain(level=0.1))  # a foundation stage
    assert order(out) == [1, 0]
    assert out[0].parts["level"] == 1.0 and "introduction or survey" in out[0].why
    off = rank(X, cs, sv, "math", plain(level=0.0))
    assert all(s.parts["level"] == 0.0 for s in off)
    applied = rank(X, cs, sv, "gpus", plain(level=0.1))
    assert all(s.parts["level"] == 0.0 for s in applied)
    core = rank(X, cs, sv, "cnn", plain(level=0.1))
    assert max(s.parts["level"] for s in core) == 0.5  # core stages: half the bonus


# --- selection: MMR, per-source cap, duplicates ---------------------------------------------

def _clustered() -> np.ndarray:
    """Five very similar strong cnn items (cos ≈ 0.97) and five distinct, a bit weaker."""
    same = [u((0, 1), (5, 0.4), (6 + i, 0.2)) for i in range(5)]
    other = [u((0, 1), (12 + 2 * i, 0.5), (13 + 2 * i, 0.3)) for i in range(5)]
    return np.stack(same + other)


def _ild(X: np.ndarray, idx: list[int]) -> float:
    V = X[idx]
    s = V @ V.T
    n = len(idx)
    return float(1 - (s.sum() - np.trace(s)) / (n * (n - 1)))


def test_mmr_raises_diversity(sv: StageVectors) -> None:
    X = _clustered()
    top = order(rank(X, cands(10), sv, "cnn", plain(mmr=1.0), limit=4))
    diverse = order(rank(X, cands(10), sv, "cnn", plain(mmr=0.5), limit=4))
    assert set(top) <= set(range(5))  # relevance alone: all from the cluster
    assert any(i >= 5 for i in diverse)
    assert _ild(X, diverse) > _ild(X, top)
    assert diverse[0] == top[0]  # the best item still leads


def test_every_score_has_the_parts_the_digest_weighs(sv: StageVectors) -> None:
    """`PARTS` names the digest's `weights` even when no item is ranked: it must be the parts
    a score is made of."""
    out = rank(_clustered(), cands(10), sv, "cnn", plain(), limit=3)
    assert all(tuple(s.parts) == rank_module.PARTS for s in out)


def test_the_chosen_items_are_listed_by_score(sv: StageVectors) -> None:
    """MMR chooses the items; the digest lists them by score. In MMR's pick order a diverse
    item with a lower score came before closer ones with higher scores, so the JSON's
    `score` went up and down in a digest said to be ranked."""
    X = _clustered()
    out = rank(X, cands(10), sv, "cnn", plain(mmr=0.5), limit=8)
    assert sorted(order(out)) == [0, 1, 2, 5, 6, 7, 8, 9]  # MMR took the other cluster first
    scores = [s.score for s in out]
    assert scores == sorted(scores, reverse=True)


def test_per_source_cap_holds(sv: StageVectors) -> None:
    X = _clustered()
    cs = [Candidate("prolific" if i < 8 else f"other{i}", 0.0) for i in range(10)]
    out = rank(X, cs, sv, "cnn", plain(per_source_cap=3), limit=6)
    sources = [cs[s.index].source for s in out]
    assert sources[:5].count("prolific") == 3  # capped while other sources have items
    assert len(out) == 6  # then the digest is filled rather than left short
    assert sources[5] == "prolific"


def test_a_single_source_still_fills_the_digest(sv: StageVectors) -> None:
    X = _clustered()
    cs = [Candidate("only feed", 0.0) for _ in range(10)]
    assert len(rank(X, cs, sv, "cnn", plain(per_source_cap=3), limit=7)) == 7


def test_near_duplicates_collapse_into_one_entry(sv: StageVectors) -> None:
    paper = u((0, 1), (4, 0.2))
    blog = u((0, 1), (4, 0.2), (9, 0.1))  # the same story, cosine > 0.99
    X = np.stack([paper, blog, u((0, 0.7), (6, 0.7))])
    cs = [Candidate("arxiv", 0.0), Candidate("blog", 0.0), Candidate("x", 0.0)]
    out = rank(X, cs, sv, "cnn", plain(duplicate=0.95))
    assert order(out) == [0, 2] or order(out) == [1, 2]
    assert sorted([out[0].index, *out[0].also]) == [0, 1]


def test_the_why_of_a_collapsed_entry_names_who_shared_its_duplicates(sv: StageVectors) -> None:
    """The paper and a post sharing the same story collapse into the paper's entry; the person
    who shared the post was in the entry's sources but not in its "why"."""
    paper = u((0, 1), (4, 0.2))
    blog = u((0, 1), (4, 0.2), (9, 0.1))  # the same story, cosine > 0.99
    X = np.stack([paper, blog])
    cs = [Candidate("arxiv", 0.0, shared_by=("Ada Lovelace",)),  # newer: the entry
          Candidate("blog", 9.0, shared_by=("Grace Hopper", "Ada Lovelace"))]
    (entry,) = rank(X, cs, sv, "cnn", plain(duplicate=0.95, recency=0.5))
    assert (entry.index, entry.also) == (0, [1])
    assert entry.why.endswith("; shared by Ada Lovelace, Grace Hopper")


def test_items_of_one_group_collapse_even_when_their_texts_differ(sv: StageVectors) -> None:
    X = np.stack([u((0, 1)), u((0, 0.6), (5, 0.8)), u((0, 0.7), (6, 0.7))])
    cs = [Candidate("arxiv", 0.0, group="arxiv:2401.00001"),
          Candidate("blog", 0.0, group="arxiv:2401.00001"), Candidate("x", 0.0)]
    out = rank(X, cs, sv, "cnn", plain())
    assert [(s.index, s.also) for s in out] == [(0, [1]), (2, [])]


def test_select_returns_each_item_once() -> None:
    X = _clustered()
    cs = cands(10)
    picked = select(X, np.linspace(1, 0, 10), cs, 10, 0.7, 2, duplicate=0.85)
    seen = [i for i, also in picked for i in [i, *also]]
    assert len(seen) == len(set(seen)) == 10


# --- explanations and purity ----------------------------------------------------------------

def test_why_names_the_topic_the_liked_item_and_the_sharer(sv: StageVectors) -> None:
    X = np.stack([u((0, 0.6), (4, 0.8))])
    cs = [Candidate("x", 0.0, title="Pooling revisited", shared_by=("Ada Lovelace",))]
    liked = Liked(np.stack([u((0, 0.5), (4, 0.86))]), ("My favourite pooling paper",))
    out = rank(X, cs, sv, "cnn", plain(feedback=0.5), feedback=np.array([0.4]), liked=liked)
    why = out[0].why
    assert "matches “convolution and pooling”" in why
    assert "like “My favourite pooling paper”" in why
    assert "shared by Ada Lovelace" in why
    # `ranking: {feedback: 0}`: the part counts for nothing, so no "like …" is said
    off = rank(X, cs, sv, "cnn", plain(feedback=0.0), feedback=np.array([0.4]),
               liked=liked)[0].why
    assert "like" not in off and "shared by Ada Lovelace" in off
    off = rank(X, cs, sv, "cnn", plain(feedback=0.0), feedback=np.array([0.4]))[0].why
    assert "like" not in off  # was "like items you liked"


def _two_stages_and_a_topic() -> StageVectors:
    """cnn (title + topic) and nlp (title + topic) on separate axes, two more stages."""
    return StageVectors(
        ids=("cnn", "nlp", "gpus", "math"),
        labels=(("title", "topic:convolution and pooling"), ("title", "topic:machine translation"),
                ("title",), ("title",)),
        rows=(np.stack([u((0, 1)), u((0, 0.9), (4, 0.44))]),
              np.stack([u((1, 1)), u((1, 0.9), (8, 0.44))]), u((2, 1))[None], u((3, 1))[None]),
        titles=("Convolutional networks", "Natural language processing", "GPUs", "Maths"))


def test_why_names_the_stage_that_fits_better_and_its_topic() -> None:
    """An NLP paper that turns up in the cnn digest is explained by the nlp topic it matches,
    not by the cnn text that happens to be nearest."""
    sv = _two_stages_and_a_topic()
    translation_with_convs = u((0, 0.5), (4, 0.2), (1, 0.6), (8, 0.6))
    fit = stage_fit(translation_with_convs[None], sv)
    assert fit[0].argmax() == 1
    why = rank(translation_with_convs[None], cands(1), sv, "cnn", plain())[0].why
    assert why.startswith("closer to the stage “Natural language processing”: "
                          "matches “machine translation”")
    assert "convolution" not in why
    assert rank(translation_with_convs[None], cands(1), sv, "nlp", plain())[0].why \
        .startswith("matches “machine translation”")
    untitled = StageVectors(sv.ids, sv.labels, sv.rows)  # stages without titles: the id
    assert rank(translation_with_convs[None], cands(1), untitled, "cnn", plain())[0].why \
        .startswith("closer to the stage “nlp”")


def test_closer_to_another_stage_is_said_only_when_it_clearly_fits_better() -> None:
    """An item that another stage fitted better by a hair (0.001) was explained by that stage
    ("closer to the stage NLP: …"), dropping the topic of this stage that it matched about as
    well: in a review of real digests this stage's own topic was often the better account."""
    sv = _two_stages_and_a_topic()
    cnn, nlp = sv.index("cnn"), sv.index("nlp")
    for a, clearly in ((0.5, True), (0.69, False)):  # the cnn share of the item
        x = u((0, a), (4, 0.5 * a), (1, 0.7), (8, 0.35))
        fit = stage_fit(x[None], sv)
        margin = float(fit[0, nlp] - fit[0, cnn])
        assert margin > 0  # nlp fits better either way ...
        assert (margin > rank_module.ELSEWHERE_MARGIN) is clearly  # ... clearly or not
        why = rank(x[None], cands(1), sv, "cnn", plain())[0].why
        assert why.startswith("closer to the stage") is clearly, (margin, why)
        if not clearly:
            assert why.startswith("matches “convolution and pooling”")


def test_a_topic_about_as_close_as_the_stage_title_is_named() -> None:
    """"fits what this stage studies" / "on the stage's theme" said less than the topic the
    item matched nearly as well (a CUDA paper was "on the stage's theme", not "CUDA …")."""
    sv = _two_stages_and_a_topic()
    titled = u((0, 1), (4, 0.2))  # nearer the cnn title than its topic, but not by much
    centre, rows = rank_module._centred(sv)
    v = titled - centre
    sims = rows[0] @ (v / np.linalg.norm(v))
    assert sims[0] > sims[1] > sims[0] - rank_module.TOPIC_MARGIN
    assert rank(titled[None], cands(1), sv, "cnn", plain())[0].why \
        .startswith("matches “convolution and pooling”")
    plain_title = u((0, 1), (4, -0.3))  # the title by far: named as the title
    assert rank(plain_title[None], cands(1), sv, "cnn", plain())[0].why \
        .startswith("on the stage's theme")


def test_a_liked_item_is_named_only_when_it_is_really_alike(sv: StageVectors) -> None:
    """At a cosine of 0.4 one liked CNN paper was "like" a quarter of a store of ML papers;
    generic ML abstracts are that close to each other."""
    x = u((0, 1))
    for cosine, named in ((0.45, False), (0.7, True)):
        liked = Liked(np.stack([mix(cosine, 0, 5)]), ("A liked paper",))
        why = rank(x[None], cands(1), sv, "cnn", plain(feedback=0.5), feedback=np.array([0.4]),
                   liked=liked)[0].why
        assert ("like “A liked paper”" in why) is named, (cosine, why)


def test_an_item_pushed_down_by_feedback_is_not_said_to_be_liked(sv: StageVectors) -> None:
    X = np.stack([u((0, 1))])
    liked = Liked(X.copy(), ("Liked one",))
    out = rank(X, cands(1), sv, "cnn", plain(), feedback=np.array([-0.3]), liked=liked)
    assert "like “" not in out[0].why


def test_rank_is_pure_and_handles_no_candidates(sv: StageVectors) -> None:
    X = _clustered()
    before = X.copy()
    a = rank(X, cands(10), sv, "cnn", Ranking())
    b = rank(X, cands(10), sv, "cnn", Ranking())
    assert [(s.index, s.score, s.why) for s in a] == [(s.index, s.score, s.why) for s in b]
    assert np.array_equal(X, before)
    assert rank(np.zeros((0, D), np.float32), [], sv, "cnn", Ranking()) == []


def test_parts_add_up_to_the_score(sv: StageVectors) -> None:
    X = _clustered()
    w = Ranking()
    cs = [Candidate(f"s{i}", float(i), title="A survey" if i == 3 else "") for i in range(10)]
    fb = np.linspace(-0.5, 0.5, 10).astype(np.float32)
    for s in rank(X, cs, sv, "cnn", w, feedback=fb, source_weights={"s1": 3.0}):
        total = sum(getattr(w, k) * v for k, v in s.parts.items())
        assert s.score == pytest.approx(total, abs=1e-5)
        assert set(s.parts) == {"similarity", "contrast", "recency", "source", "feedback",
                                "level"}


def test_level_is_computed_only_where_it_can_matter_without_changing_the_result(
        sv: StageVectors, monkeypatch: pytest.MonkeyPatch) -> None:
    import feedbot.rank as rank_mod

    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, D)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cs = [Candidate(f"s{i}", 0.0, title="A tutorial" if i % 7 == 0 else "A result",
                    summary="" if i % 5 else "We beat the state of the art.") for i in range(600)]
    w = plain(level=0.3)  # a large level weight: it reorders many items
    lazy = [(s.index, s.score) for s in rank(X, cs, sv, "math", w, limit=30)]
    monkeypatch.setattr(rank_mod, "SELECT_POOL", 10_000)
    full = [(s.index, s.score) for s in rank(X, cs, sv, "math", w, limit=30)]
    assert lazy == full


def test_columns_and_objects_rank_the_same(sv: StageVectors) -> None:
    from feedbot.rank import Candidates

    X = _clustered()
    cs = [Candidate(f"s{i % 3}", float(i), f"title {i}", ("Ada",) if i == 2 else (),
                    "arxiv:1" if i in (4, 5) else "", "a tutorial" if i == 1 else "")
          for i in range(len(X))]
    a = rank(X, cs, sv, "cnn", Ranking(), limit=5)
    b = rank(X, Candidates.of(cs), sv, "cnn", Ranking(), limit=5)
    assert [(s.index, s.score, s.why, s.also) for s in a] == \
        [(s.index, s.score, s.why, s.also) for s in b]
    assert Candidates.of(cs)[2] == cs[2]


def test_with_only_dislikes_nothing_is_said_to_be_like_items_you_liked(sv: StageVectors) -> None:
    """With only 👎, the model ranks "unlike what you disliked" high; every entry used to say
    "like items you liked" though nothing was liked."""
    X = np.stack([u((0, 1))])
    nothing_liked = Liked(np.zeros((0, D), np.float32), ())
    out = rank(X, cands(1), sv, "cnn", plain(feedback=0.5), feedback=np.array([0.5]),
               liked=nothing_liked)
    assert "liked" not in out[0].why
    some_liked = Liked(np.stack([u((5, 1))]), ("Far away",))  # liked, but not like this one
    out = rank(X, cands(1), sv, "cnn", plain(feedback=0.5), feedback=np.array([0.5]),
               liked=some_liked)
    assert "like items you liked" in out[0].why


def test_a_liked_item_is_not_said_to_be_like_itself(sv: StageVectors) -> None:
    """`feedbot digest` shows items one has voted on again; a liked one was explained as
    'like “<its own title>”'."""
    mine, near = u((0, 1)), u((0, 0.9), (4, 0.44))
    X = np.stack([mine, near])
    liked = Liked(np.stack([mine, u((0, 0.95), (4, 0.31))]), ("Mine", "Another liked one"))
    out = rank(X, cands(2), sv, "cnn", plain(feedback=0.5), feedback=np.array([0.5, 0.5]),
               liked=liked)
    why = {s.index: s.why for s in out}
    assert "you liked it" in why[0] and "“Mine”" not in why[0]
    assert "like “Another liked one”" in why[1]


@pytest.mark.parametrize("damage", [np.nan, np.inf, 0.0])
def test_an_item_with_a_damaged_vector_is_left_out(sv: StageVectors, damage: float) -> None:
    """A NaN row made a NaN score that was picked (and printed as NaN, invalid JSON); a zero
    row, re-centred, fitted the stage better than any real item and ranked first."""
    good = [u((0, 1)), u((0, 1), (5, 0.1)), u((1, 1)), u((0, 0.7), (6, 0.7))]
    X = np.stack([np.full(D, damage, np.float32), *good])
    cs = [Candidate(f"s{i}", 0.0, group="arxiv:1" if i in (2, 4) else "") for i in range(5)]
    fb = np.linspace(-0.5, 0.5, 5).astype(np.float32)
    out = rank(X, cs, sv, "cnn", Ranking(), feedback=fb, limit=10)
    assert [s.index for s in out if s.index == 0 or 0 in s.also] == []
    assert all(math.isfinite(s.score) for s in out)
    # the others are ranked as without the damaged one, under their own positions
    alone = rank(X[1:], cs[1:], sv, "cnn", Ranking(), feedback=fb[1:], limit=10)
    assert [(s.index, s.also, s.score, s.why) for s in out] == \
        [(s.index + 1, [a + 1 for a in s.also], s.score, s.why) for s in alone]
    assert any(s.also for s in out)  # the positions of collapsed items are mapped back too
