"""The ranker: a pure function of items, their vectors, the stage profiles, weights and `now`.

No clock, no database, no model in here: everything arrives as arguments, so it is tested with
hand-built vectors. All scoring is vectorised numpy over the candidate matrix.

Score parts (weights in `config.Ranking`, overridable under `ranking:` in sources.yaml):
- similarity: how well the item fits the current stage (its summary, title and topics);
- contrast: how much better it fits this stage than the best other stage;
- recency: exp(-age / half-life) bonus;
- source: log of the per-source weight from sources.yaml;
- feedback: the learner's 👍/👎 model, when there is one;
- level: in foundation stages, a bonus for tutorials, surveys and lectures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import Ranking, parse_duration


@dataclass(frozen=True)
class StageVectors:
    """Embedded stage descriptions: for each stage, one row per labelled text."""

    ids: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]  # per stage, e.g. ("title", "summary", "topic:...")
    rows: tuple[np.ndarray, ...]  # per stage, (k, d) unit vectors
    levels: tuple[str, ...] = ()

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


@dataclass
class Scored:
    index: int  # position in the input
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    why: str = ""
    also: list[int] = field(default_factory=list)  # near-duplicates collapsed into this one


_TUTORIAL = re.compile(
    r"\b(tutorial|survey|review|introduction|intro to|primer|lecture|course|explained|"
    r"beginner|guide|overview|from scratch|hands-on|walkthrough|textbook|lessons?)\b", re.I)


def topic_label(label: str) -> str:
    return label.split(":", 1)[1] if ":" in label else label


def stage_fit(X: np.ndarray, sv: StageVectors) -> tuple[np.ndarray, np.ndarray]:
    """Fit of every item to every stage, and the best-matching text of each stage.

    fit[i, s] = mean of (similarity to the stage centroid, mean of the top-3 topic similarities).
    Returns (fit (n, S), best_row (n, S) index into that stage's labels).
    """
    n, S = X.shape[0], len(sv.ids)
    fit = np.empty((n, S), dtype=np.float32)
    best = np.empty((n, S), dtype=np.int64)
    for s, rows in enumerate(sv.rows):
        sims = X @ rows.T  # (n, k)
        centroid = rows.mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        k = min(3, rows.shape[0])
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        fit[:, s] = 0.5 * (X @ centroid) + 0.5 * top.mean(axis=1)
        best[:, s] = sims.argmax(axis=1)
    return fit, best


def rank(
    X: np.ndarray,
    candidates: Sequence[Candidate],
    sv: StageVectors,
    stage_id: str,
    weights: Ranking,
    *,
    source_weights: dict[str, float] | None = None,
    feedback: np.ndarray | None = None,
    limit: int = 10,
) -> list[Scored]:
    """Score every candidate for `stage_id` and pick the top `limit`, diverse and capped per source.

    X: (n, d) unit vectors of the candidates, in the same order as `candidates`.
    feedback: optional (n,) scores in [-1, 1] from the learner's 👍/👎 model.
    """
    n = len(candidates)
    if n == 0:
        return []
    s = sv.index(stage_id)
    fit, best = stage_fit(X, sv)
    own = fit[:, s]
    others = np.delete(fit, s, axis=1)
    contrast = own - (others.max(axis=1) if others.shape[1] else 0.0)
    half_life = parse_duration(weights.recency_half_life) / 86400.0
    age = np.array([max(0.0, c.age_days) for c in candidates], dtype=np.float32)
    recency = np.exp(-age * math.log(2) / max(half_life, 1e-6))
    sw = source_weights or {}
    source = np.array([math.log(max(sw.get(c.source, 1.0), 1e-3)) for c in candidates],
                      dtype=np.float32)
    early = bool(sv.levels) and sv.levels[s] == "foundation"
    level = np.array([1.0 if early and _TUTORIAL.search(c.title) else 0.0 for c in candidates],
                     dtype=np.float32)
    fb = feedback if feedback is not None else np.zeros(n, dtype=np.float32)
    total = (weights.similarity * own + weights.contrast * contrast + weights.recency * recency
             + weights.source * source + weights.feedback * fb + weights.level * level)
    order = select(X, total, candidates, limit, weights.mmr, weights.per_source_cap)
    out = []
    for i in order:
        parts = {"similarity": float(own[i]), "contrast": float(contrast[i]),
                 "recency": float(recency[i]), "source": float(source[i]),
                 "feedback": float(fb[i]), "level": float(level[i])}
        label = sv.labels[s][int(best[i, s])]
        out.append(Scored(int(i), float(total[i]), parts, explain(label, candidates[i], parts)))
    return out


def select(X: np.ndarray, score: np.ndarray, candidates: Sequence[Candidate], limit: int,
           mmr: float, per_source_cap: int, pool: int = 200) -> list[int]:
    """Greedy maximal marginal relevance over the top `pool`, at most `per_source_cap` a source."""
    top = np.argsort(-score, kind="stable")[:pool]
    chosen: list[int] = []
    per_source: dict[str, int] = {}
    remaining = list(top)
    while remaining and len(chosen) < limit:
        if chosen and mmr < 1.0:
            sim = X[remaining] @ X[chosen].T
            value = mmr * score[remaining] - (1 - mmr) * sim.max(axis=1)
        else:
            value = score[remaining]
        for j in np.argsort(-value, kind="stable"):
            i = remaining[int(j)]
            src = candidates[i].source
            if per_source.get(src, 0) < per_source_cap:
                chosen.append(i)
                per_source[src] = per_source.get(src, 0) + 1
                remaining.remove(i)
                break
        else:
            break
    return chosen


def explain(label: str, cand: Candidate, parts: dict[str, float]) -> str:
    if label == "title":
        why = "on the stage's theme"
    elif label == "summary":
        why = "fits what this stage studies"
    elif label.startswith("resource:"):
        why = f"close to the stage resource “{topic_label(label)}”"
    else:
        why = f"matches “{topic_label(label)}”"
    if parts.get("level", 0) > 0:
        why += "; an introduction or survey"
    if parts.get("feedback", 0) > 0.2:
        why += "; like items you liked"
    if cand.shared_by:
        why += f"; shared by {', '.join(cand.shared_by[:2])}"
    return why
