"""Stage-profile methods measured to choose feedbot's default (`ranking.py --compare`).

Each method maps (pool vectors, stage vectors) to an (n, S) score matrix; the table gives mean
precision@10 and @25 over the labelled stages. Run it on split A (the half the choice was made
on) and look at split B to see whether the choice holds. Only measures; tunes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from feedbot.rank import StageVectors, stage_fit

Method = Callable[[np.ndarray, StageVectors], np.ndarray]


def _unit(M: np.ndarray) -> np.ndarray:
    return M / np.linalg.norm(M, axis=-1, keepdims=True)


def fits(X: np.ndarray, rows: Sequence[np.ndarray], how: str) -> np.ndarray:
    cols = []
    for r in rows:
        sims = X @ r.T
        centroid = X @ _unit(r.mean(axis=0))
        top3 = np.sort(sims, axis=1)[:, -3:].mean(axis=1)
        cols.append({"title": sims[:, 0], "centroid": centroid, "max": sims.max(axis=1),
                     "top3": top3, "mix": 0.5 * centroid + 0.5 * top3}[how])
    return np.stack(cols, axis=1)


def linear(F: np.ndarray, w: float) -> np.ndarray:
    """fit + w · (fit − best other fit)."""
    out = np.empty_like(F)
    for j in range(F.shape[1]):
        out[:, j] = F[:, j] + w * (F[:, j] - np.delete(F, j, axis=1).max(axis=1))
    return out


def hinge(F: np.ndarray, w: float) -> np.ndarray:
    """fit − w · max(0, best other fit − fit): feedbot's contrast."""
    out = np.empty_like(F)
    for j in range(F.shape[1]):
        out[:, j] = F[:, j] - w * np.maximum(0, np.delete(F, j, axis=1).max(axis=1) - F[:, j])
    return out


def centred(X: np.ndarray, sv: StageVectors, mu: np.ndarray) -> tuple[np.ndarray, list]:
    return _unit(X - mu), [_unit(r - mu) for r in sv.rows]


def stage_mean(sv: StageVectors) -> np.ndarray:
    return _unit(np.stack([r.mean(axis=0) for r in sv.rows])).mean(axis=0)


def softmax(F: np.ndarray, T: float) -> np.ndarray:
    e = np.exp((F - F.max(axis=1, keepdims=True)) / T)
    return e / e.sum(axis=1, keepdims=True)


def methods() -> dict[str, Method]:
    m: dict[str, Method] = {
        "title query (raw)": lambda X, sv: fits(X, sv.rows, "title"),
        "raw centroid": lambda X, sv: fits(X, sv.rows, "centroid"),
        "raw topic-max": lambda X, sv: fits(X, sv.rows, "max"),
        "raw mix": lambda X, sv: fits(X, sv.rows, "mix"),
        "raw mix + linear contrast 0.5 (previous default)":
            lambda X, sv: linear(fits(X, sv.rows, "mix"), 0.5),
        "raw mix, softmax over stages T=0.05":
            lambda X, sv: softmax(fits(X, sv.rows, "mix"), 0.05),
        "pool-centred mix + linear contrast 0.5":
            lambda X, sv: linear(fits(*centred(X, sv, X.mean(axis=0)), "mix"), 0.5),
    }
    for how in ("centroid", "top3", "mix"):
        for w in (0.0, 0.25, 0.5):
            m[f"stage-centred {how} + linear contrast {w:g}"] = _stage_centred(how, w)
    m["stage-centred mix + hinge contrast 0.5 (feedbot)"] = \
        lambda X, sv: hinge(stage_fit(X, sv), 0.5)
    return m


def _stage_centred(how: str, w: float) -> Method:
    def method(X: np.ndarray, sv: StageVectors) -> np.ndarray:
        return linear(fits(*centred(X, sv, stage_mean(sv)), how), w)

    return method


def compare_table(X: np.ndarray, rel: dict[str, np.ndarray], sv: StageVectors,
                  pools: Sequence[np.ndarray]) -> str:
    stages = list(rel)
    lines = ["| method | mean P@10 | mean P@25 | " + " | ".join(f"`{s}`" for s in stages) + " |",
             "|---" * (3 + len(stages)) + "|"]
    for name, fn in methods().items():
        p10 = np.zeros(len(stages))
        p25 = np.zeros(len(stages))
        for pool in pools:
            F = fn(X[pool], sv)
            for j, s in enumerate(stages):
                order = np.argsort(-F[:, sv.index(s)], kind="stable")
                p10[j] += rel[s][pool][order[:10]].mean() / len(pools)
                p25[j] += rel[s][pool][order[:25]].mean() / len(pools)
        lines.append(f"| {name} | {p10.mean():.3f} | {p25.mean():.3f} | "
                     + " | ".join(f"{v:.2f}" for v in p10) + " |")
    return "\n".join(lines)
