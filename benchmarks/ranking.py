"""Ranking benchmark: does feedbot put the right papers at the top of a stage's digest?

Run from the repository root (the dev set lives in ../shared/corpus):

    python benchmarks/ranking.py                      # pool of 1,500, seed 0, whole dev set
    python benchmarks/ranking.py --pool 1500 --seed 3
    python benchmarks/ranking.py --split B --pool 800 --pools 5    # the half not used to choose
    python benchmarks/ranking.py --split A --pool 800 --pools 20 --compare   # method selection

A pool of papers is drawn from `arxiv-dev.jsonl` with a fixed seed, every paper gets the same
publication time (recency plays no part), and each labelled stage is ranked from title +
abstract only; a paper is relevant when its arXiv categories match the stage (the table in
SOURCES.md). Rankers, each scored by precision@10 and nDCG@10 per stage:

- feedbot: the real path: `digest.stage_vectors` (the packaged roadmap, embedded through a
  Store) and `rank.rank` with the default `Ranking` weights, MMR off (λ = 1) and no per-source
  cap (all papers come from one source here);
- feedbot + feedback: the same, plus `learn.feedback_scorer` trained on 10 👍 (papers of the
  stage) and 10 👎 (papers of other labelled stages) drawn outside the pool, stored as real
  feedback rows in a temporary store;
- TF-IDF: cosine between the pool's TF-IDF vectors and the stage's texts joined into one query;
- MiniLM title: cosine to the embedded stage title alone (the plain query);
- random: the expectation over 200 random orders.

Then, with feedback, a stage change: every vote was given at the previous labelled stage of the
roadmap (10 👍 on its papers, 10 👎 on the other stages' papers), weighted for the current stage
as `ranking.feedback_other_stages` says (1: votes remember no stage, as before; the default;
0: ignored; `--other-stages` adds more). Then intra-list diversity (mean pairwise cosine
distance of the top 10) with MMR at several λ, and the time to rank 10,000 cached items
against two baselines. `--compare` prints the stage profile methods that were measured to
choose the default (see benchmarks/README.md). `--ceiling` trains a logistic regression and a
kNN on every dev paper outside the pool, labelled by its categories (about 100 times the
simulation's 20 votes), and adds each to feedbot's score: how far feedback on this embedding
and these labels can go.

`--misses` lists, per stage, the papers feedbot most often puts in the top 10 without the
stage's categories, and the stage each fits best: what precision@10 loses, and to what.

`--days N` simulates votes as a learner gives them: on what the digest showed. Each day a
batch of new papers from outside the pool arrives; feedbot ranks it with the votes so far, the
learner votes on the 10 it shows (👍 on the stage's papers, 👎 on the rest), the model retrains
through the real learn path, and the pool is ranked again. Those 👎 fall on the papers the
stage score mistakes for the stage's, unlike the issue's simulation, whose 👎 are drawn at
random from other stages.

Embeddings are cached in benchmarks/.cache/dev.db (gitignored): the dev set is embedded once
per embedding model. Nothing here tunes anything; it only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feedbot.config import Ranking  # noqa: E402
from feedbot.digest import stage_vectors  # noqa: E402
from feedbot.embed import Embedder, embed_cached  # noqa: E402
from feedbot.items import Item, content_hash  # noqa: E402
from feedbot.rank import Candidate, StageVectors, rank, stage_fit  # noqa: E402
from feedbot.roadmap import Roadmap, load_roadmap  # noqa: E402
from feedbot.store import Store  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
DEV = CORPUS / "papers" / "arxiv-dev.jsonl"
CACHE = Path(__file__).resolve().parent / ".cache"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAY_BATCH = 150  # new papers a simulated day brings (`--days`)
SPLIT_SEED = 12345  # halves A (used to choose methods and defaults) and B (held out)
K = 10


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    abstract: str
    categories: frozenset[str]
    authors: tuple[str, ...]

    @property
    def item(self) -> Item:
        return Item(title=self.title, url=f"https://arxiv.org/abs/{self.id}", source="arxiv-dev",
                    kind="paper", authors=self.authors, published=NOW, summary=self.abstract,
                    arxiv_id=self.id)


# --- data -----------------------------------------------------------------------------------

def load_dev(path: Path = DEV) -> list[Paper]:
    papers = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            papers.append(Paper(d["id"], " ".join(d["title"].split()),
                                " ".join(d["abstract"].split()), frozenset(d["categories"]),
                                tuple(d.get("authors", ()))))
    return papers


def load_labels(path: Path = CORPUS / "SOURCES.md") -> dict[str, frozenset[str]]:
    """Stage → arXiv categories, from the table under 'Labels for the ranking benchmark'."""
    text = path.read_text(encoding="utf-8").split("## Labels for the ranking benchmark", 1)[1]
    out = {}
    for m in re.finditer(r"^\|\s*`([\w-]+)`\s*\|([^|]+)\|", text, re.M):
        out[m.group(1)] = frozenset(re.findall(r"[a-z-]+\.[A-Za-z]+", m.group(2)))
    if not out:
        raise SystemExit(f"no labels found in {path}")
    return out


def relevance(papers: Sequence[Paper], labels: dict[str, frozenset[str]]) -> dict[str, np.ndarray]:
    return {s: np.array([bool(p.categories & cats) for p in papers]) for s, cats in labels.items()}


def split_indices(n: int, split: str) -> np.ndarray:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    halves = {"A": perm[: n // 2], "B": perm[n // 2:], "all": perm}
    return np.sort(halves[split])


def draw_pool(base: np.ndarray, size: int, seed: int) -> np.ndarray:
    size = min(size, len(base))
    return np.sort(np.random.default_rng(seed).choice(base, size, replace=False))


def embed_dev(store: Store, emb: Embedder, papers: Sequence[Paper]) -> np.ndarray:
    """Vectors of the dev set, embedded once per model and cached in the store."""
    texts = [p.item.embed_text for p in papers]
    missing = len(texts) - len(store.get_vectors(emb.model_id, [content_hash(t) for t in texts]))
    if missing:
        print(f"embedding {missing} papers (cached in {CACHE})…", file=sys.stderr)
    return embed_cached(store, emb, texts)


# --- metrics --------------------------------------------------------------------------------

def precision(rel: np.ndarray, order: Sequence[int], k: int = K) -> float:
    return float(rel[list(order[:k])].mean()) if len(order) else 0.0


def ndcg(rel: np.ndarray, order: Sequence[int], k: int = K) -> float:
    gains = rel[list(order[:k])].astype(float)
    dcg = float((gains / np.log2(np.arange(2, len(gains) + 2))).sum())
    ideal = int(min(k, rel.sum()))
    idcg = float((1 / np.log2(np.arange(2, ideal + 2))).sum())
    return dcg / idcg if idcg else 0.0


def diversity(X: np.ndarray, order: Sequence[int]) -> float:
    """Intra-list diversity: mean pairwise cosine distance of the listed items."""
    V = X[list(order)]
    n = len(V)
    if n < 2:
        return 0.0
    sims = V @ V.T
    return float(1 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


# --- rankers: each returns the top-K positions in the pool for one stage --------------------

def bench_weights(**changes: float) -> Ranking:
    return Ranking().model_copy(update={"mmr": 1.0, "per_source_cap": 10_000, **changes})


def candidates(papers: Sequence[Paper], pool: np.ndarray) -> list[Candidate]:
    """As the digest builds them: one source, the same age, title and abstract for `level`."""
    return [Candidate(source="arXiv", age_days=0.0, title=papers[i].title,
                      summary=papers[i].abstract, group=f"arxiv:{papers[i].id}") for i in pool]


def feedbot_order(Xp: np.ndarray, cands: list[Candidate], sv: StageVectors, stage: str,
                  weights: Ranking, feedback: np.ndarray | None = None) -> list[int]:
    return [s.index for s in rank(Xp, cands, sv, stage, weights, feedback=feedback, limit=K)]


def tfidf_orders(texts: Sequence[str], queries: dict[str, str]) -> dict[str, list[int]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    D = vec.fit_transform(texts)
    Q = vec.transform(list(queries.values()))
    sims = (D @ Q.T).toarray()
    return {s: list(np.argsort(-sims[:, j], kind="stable")[:K]) for j, s in enumerate(queries)}


def random_scores(rel: np.ndarray, runs: int = 200, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(rel))[:K].tolist() for _ in range(runs)]
    return (float(np.mean([precision(rel, o) for o in orders])),
            float(np.mean([ndcg(rel, o) for o in orders])))


# --- simulated feedback through the real learn path -----------------------------------------

def feedback_scores(papers: Sequence[Paper], X: np.ndarray, pool: np.ndarray, base: np.ndarray,
                    rel: dict[str, np.ndarray], emb: Embedder, seed: int, n: int = 10,
                    given_at: dict[str, str] | None = None,
                    other_stages: float = 1.0) -> dict[str, np.ndarray]:
    """Per stage: scores of the pool from a model trained on n 👍 and n 👎 outside the pool.

    The votes for stage s are given at stage `given_at[s]` (default s itself): 👍 on papers of
    that stage, 👎 on papers of the other labelled stages; the scorer ranks for s and weighs
    votes of other stages `other_stages`, as the digest does with `ranking.feedback_other_stages`.
    """
    from feedbot import learn

    outside = np.setdiff1d(base, pool)
    labelled = np.any(np.stack(list(rel.values())), axis=0)
    rng = np.random.default_rng(seed + 7919)
    out: dict[str, np.ndarray] = {}
    with feedback_store(papers, X, np.concatenate([pool, outside]), emb.model_id) as store:
        for s in rel:
            at = (given_at or {}).get(s, s)
            r = rel[at]
            ups = rng.permutation(outside[r[outside]])[:n]
            downs = rng.permutation(outside[~r[outside] & labelled[outside]])[:n]
            for i, value in [(i, "up") for i in ups] + [(i, "down") for i in downs]:
                store.set_feedback(f"bench-{s}", f"arxiv:{papers[i].id}", value, NOW, stage=at)
            scorer = learn.feedback_scorer(store, emb, chat=f"bench-{s}", now=NOW, stage=s,
                                           other_stages=other_stages)
            out[s] = scorer(X[pool]) if scorer is not None else np.zeros(len(pool))
    return out


@contextmanager
def feedback_store(papers: Sequence[Paper], X: np.ndarray, idx: np.ndarray,
                   model_id: str) -> Iterator[Store]:
    """A store holding the papers `idx` with their vectors, in a temporary FEEDBOT_HOME (where
    the feedback models are saved), both gone afterwards."""
    with tempfile.TemporaryDirectory() as home:
        old_home = os.environ.get("FEEDBOT_HOME")
        os.environ["FEEDBOT_HOME"] = home
        store = Store(Path(home) / "bench.db")
        try:
            _fill_store(store, papers, X, idx, model_id)
            yield store
        finally:
            store.close()
            if old_home is None:
                os.environ.pop("FEEDBOT_HOME", None)
            else:
                os.environ["FEEDBOT_HOME"] = old_home


def shown_feedback_runs(st: Setup, pools: list[np.ndarray], base: np.ndarray,
                        seeds: list[int], days: int, batch: int = DAY_BATCH
                        ) -> list[dict[str, list[tuple[float, int, int]]]]:
    """Per pool: stage → [(P@10 of the pool, 👍 so far, 👎 so far)] after 0, 1, …, `days`
    days of votes on the digest's 10 items of the day (see the module docstring)."""
    from feedbot import learn

    runs = []
    for pool, seed in zip(pools, seeds, strict=True):
        outside = np.setdiff1d(base, pool)
        cands_pool = candidates(st.papers, pool)
        res: dict[str, list[tuple[float, int, int]]] = {}
        with feedback_store(st.papers, st.X, np.concatenate([pool, outside]),
                            st.emb.model_id) as store:
            for s, r in st.rel.items():
                rng = np.random.default_rng(seed + 104729)
                stream = rng.permutation(outside)[:days * batch]
                chat, ups, downs = f"bench-{s}", 0, 0
                scorer = None
                for day in range(days + 1):
                    fb = scorer(st.X[pool]) if scorer is not None else None
                    order = feedbot_order(st.X[pool], cands_pool, st.sv, s, bench_weights(), fb)
                    res.setdefault(s, []).append((precision(r[pool], order), ups, downs))
                    if day == days:
                        break
                    today = stream[day * batch:(day + 1) * batch]
                    fb_today = scorer(st.X[today]) if scorer is not None else None
                    shown = feedbot_order(st.X[today], candidates(st.papers, today), st.sv, s,
                                          bench_weights(), fb_today)
                    for i in today[shown]:
                        value = "up" if r[i] else "down"
                        ups, downs = ups + (value == "up"), downs + (value == "down")
                        store.set_feedback(chat, f"arxiv:{st.papers[i].id}", value,
                                           NOW + timedelta(days=day), stage=s)
                    scorer = learn.feedback_scorer(store, st.emb, chat=chat,
                                                   now=NOW + timedelta(days=day), stage=s)
        runs.append(res)
    return runs


def shown_feedback_table(runs: list[dict[str, list[tuple[float, int, int]]]]) -> str:
    stages = list(runs[0])
    days = len(runs[0][stages[0]])
    lines = ["| days of votes | votes (👍 / 👎, mean per stage) | "
             + " | ".join(f"`{s}`" for s in stages) + " | **mean** |",
             "|---" * (3 + len(stages)) + "|"]
    for d in range(days):
        per = [np.mean([run[s][d][0] for run in runs]) for s in stages]
        ups = np.mean([run[s][d][1] for run in runs for s in stages])
        downs = np.mean([run[s][d][2] for run in runs for s in stages])
        lines.append(f"| {d} | {ups:.1f} / {downs:.1f} | "
                     + " | ".join(f"{v:.2f}" for v in per) + f" | **{np.mean(per):.2f}** |")
    return "\n".join(lines)


def _fill_store(store: Store, papers: Sequence[Paper], X: np.ndarray, idx: np.ndarray,
                model_id: str) -> None:
    items = [papers[i].item for i in idx]
    store.upsert_items(items, NOW)
    store.put_vectors(model_id, {content_hash(it.embed_text): X[i]
                                 for it, i in zip(items, idx, strict=True)})


# --- timing ---------------------------------------------------------------------------------

def timing(X: np.ndarray, sv: StageVectors, stage: str, n: int = 10_000) -> list[tuple[str, float]]:
    """Seconds to rank n cached items: feedbot's rank(), a plain cosine query, a Python loop."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(X), n), rng.integers(0, len(X), n)
    V = X[a] + 0.7 * X[b]  # distinct, realistic vectors: blends of two dev papers
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    cands = [Candidate(source=f"feed{i % 20}", age_days=float(i % 14), title=f"Paper {i}",
                       summary="We propose a method.") for i in range(n)]
    weights = Ranking()
    q = sv.rows[sv.index(stage)][0]
    out = [("feedbot rank() (all parts, MMR, caps, duplicates)",
            _best_of(lambda: rank(V, cands, sv, stage, weights, limit=K))),
           ("plain cosine query (X @ q, top 10)",
            _best_of(lambda: np.argpartition(-(V @ q), K)[:K]))]
    loop_n = 2_000  # the loop is slow: time a fifth of the items and scale
    out.append(("Python loop over items (same stage fit), scaled from 2,000",
                _best_of(lambda: _loop_scorer(V[:loop_n], sv), runs=1) * n / loop_n))
    return out


def _loop_scorer(V: np.ndarray, sv: StageVectors) -> list[float]:
    out = []
    for v in V:
        fits = []
        for rows in sv.rows:
            sims = sorted((float(np.dot(v, r)) for r in rows), reverse=True)
            centroid = rows.mean(axis=0)
            fits.append(0.5 * float(np.dot(v, centroid / np.linalg.norm(centroid)))
                        + 0.5 * sum(sims[:3]) / 3)
        out.append(fits[0] - max(fits[1:]))
    return out


def _best_of(fn: Callable[[], object], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# --- the run --------------------------------------------------------------------------------

@dataclass
class Setup:
    papers: list[Paper]
    X: np.ndarray
    rel: dict[str, np.ndarray]
    roadmap: Roadmap
    sv: StageVectors
    emb: Embedder
    stage_store: Store


def setup(backend: str = "fp32", dev: Path = DEV) -> Setup:
    if not dev.exists():
        raise SystemExit(f"dev set not found: {dev}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    papers = load_dev(dev)
    CACHE.mkdir(exist_ok=True)
    store = Store(CACHE / "dev.db")
    emb = Embedder(backend=backend)
    X = embed_dev(store, emb, papers)
    roadmap = load_roadmap()
    sv = stage_vectors(store, emb, roadmap)
    return Setup(papers, X, relevance(papers, load_labels()), roadmap, sv, emb, store)


def evaluate_pool(st: Setup, pool: np.ndarray, base: np.ndarray, seed: int,
                  with_feedback: bool = True) -> dict[str, dict[str, tuple[float, float]]]:
    """method → stage → (precision@10, nDCG@10) for one pool."""
    Xp = st.X[pool]
    rel = {s: r[pool] for s, r in st.rel.items()}
    res: dict[str, dict[str, tuple[float, float]]] = {}

    def put(method: str, stage: str, order: Sequence[int]) -> None:
        res.setdefault(method, {})[stage] = (precision(rel[stage], order), ndcg(rel[stage], order))

    fb = feedback_scores(st.papers, st.X, pool, base, st.rel, st.emb, seed) if with_feedback \
        else {}
    texts = [st.papers[i].item.embed_text for i in pool]
    queries = {s: " ".join(st.roadmap.get(s).texts().values()) for s in rel}
    tfidf = tfidf_orders(texts, queries)
    titles = embed_cached(st.stage_store, st.emb, [st.roadmap.get(s).title for s in rel])
    cands = candidates(st.papers, pool)
    for j, s in enumerate(rel):
        put("feedbot", s, feedbot_order(Xp, cands, st.sv, s, bench_weights()))
        if s in fb:
            put("feedbot + feedback", s,
                feedbot_order(Xp, cands, st.sv, s, bench_weights(), fb[s]))
        put("TF-IDF", s, tfidf[s])
        put("MiniLM title", s, list(np.argsort(-(Xp @ titles[j]), kind="stable")[:K]))
        res.setdefault("random", {})[s] = random_scores(rel[s], seed=seed)
    return res


def previous_stages(st: Setup) -> dict[str, str]:
    """Each labelled stage → the labelled stage before it on the roadmap (the first → the last)."""
    order = [s for s in st.roadmap.ids if s in st.rel]
    return {s: order[i - 1] for i, s in enumerate(order)}


def stage_change_table(st: Setup, pools: list[np.ndarray], base: np.ndarray,
                       seeds: list[int], weights: Sequence[float] = ()) -> str:
    """Mean P@10 when all the feedback was given at the previous stage, by its weight there."""
    given_at = previous_stages(st)
    default = Ranking().feedback_other_stages
    rows: list[tuple[str, float | None]] = [("no feedback (stage only)", None)]
    for w in sorted({1.0, default, 0.0, *weights}, reverse=True):
        rows.append((f"weight {w:g}" + (": no memory of stages" if w == 1 else "")
                     + (" (default)" if w == default else "") + (": ignored" if w == 0 else ""),
                     w))
    lines = ["| votes from the previous stage count | mean P@10 | mean nDCG@10 |", "|---|---|---|"]
    for label, weight in rows:
        p, g = [], []
        for pool, seed in zip(pools, seeds, strict=True):
            fb = {} if weight is None else feedback_scores(
                st.papers, st.X, pool, base, st.rel, st.emb, seed, given_at=given_at,
                other_stages=weight)
            cands = candidates(st.papers, pool)
            for s, r in st.rel.items():
                order = feedbot_order(st.X[pool], cands, st.sv, s, bench_weights(), fb.get(s))
                p.append(precision(r[pool], order))
                g.append(ndcg(r[pool], order))
        lines.append(f"| {label} | {np.mean(p):.3f} | {np.mean(g):.3f} |")
    return "\n".join(lines)


CEILING_C = 10.0  # inverse regularisation of the ceiling's logistic regression
CEILING_K = 30  # neighbours of the ceiling's kNN
CEILING_WEIGHT = 0.5  # weight of a ceiling model's score (2p - 1) added to feedbot's


def ceiling_scores(st: Setup, pool: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per stage, P(relevant) for the pool from models trained on every dev paper outside the
    pool, labelled by its categories (1,850–2,550 labels instead of the simulation's 20): how
    far this embedding can go when feedback is plentiful. Keys: 'LR', 'kNN'."""
    from sklearn.linear_model import LogisticRegression

    outside = np.setdiff1d(np.arange(len(st.papers)), pool)
    Xo, Xp = st.X[outside], st.X[pool]
    sims = Xp @ Xo.T
    nn = np.argpartition(-sims, CEILING_K, axis=1)[:, :CEILING_K]
    out: dict[str, dict[str, np.ndarray]] = {"LR": {}, "kNN": {}}
    for s, r in st.rel.items():
        y = r[outside]
        clf = LogisticRegression(C=CEILING_C, max_iter=2000, class_weight="balanced").fit(Xo, y)
        out["LR"][s] = clf.predict_proba(Xp)[:, 1]
        out["kNN"][s] = y[nn].mean(axis=1)
    return out


def ceiling_runs(st: Setup, pools: list[np.ndarray]
                 ) -> list[dict[str, dict[str, tuple[float, float]]]]:
    """method → stage → (P@10, nDCG@10) per pool for the ceiling models, alone and added to
    feedbot's stage score, beside feedbot stage-only."""
    runs = []
    for pool in pools:
        Xp = st.X[pool]
        rel = {s: r[pool] for s, r in st.rel.items()}
        cands = candidates(st.papers, pool)
        scores = ceiling_scores(st, pool)
        res: dict[str, dict[str, tuple[float, float]]] = {}
        for s in st.rel:
            orders = {"feedbot (stage only)": feedbot_order(Xp, cands, st.sv, s, bench_weights())}
            for name, p in ((k, v[s]) for k, v in scores.items()):
                orders[f"{name} alone"] = list(np.argsort(-p, kind="stable")[:K])
                orders[f"feedbot + {name}"] = feedbot_order(
                    Xp, cands, st.sv, s, bench_weights(feedback=CEILING_WEIGHT), 2 * p - 1)
            for m, order in orders.items():
                res.setdefault(m, {})[s] = (precision(rel[s], order), ndcg(rel[s], order))
        runs.append(res)
    return runs


def misses(st: Setup, pools: list[np.ndarray], top: int = 8) -> str:
    """Per stage, the papers feedbot (stage only) most often puts in the top 10 without the
    stage's categories, with the stage each fits best: what the precision@10 loses to."""
    from collections import Counter

    lines = []
    for s in st.rel:
        wrong: Counter[int] = Counter()
        for pool in pools:
            order = feedbot_order(st.X[pool], candidates(st.papers, pool), st.sv, s,
                                  bench_weights())
            wrong.update(int(pool[i]) for i in order if not st.rel[s][pool[i]])
        n = sum(wrong.values())
        lines.append(f"- `{s}`: {n} of {K * len(pools)} top-{K} places go to papers without "
                     f"its categories, {len(wrong)} different papers" + (":" if n else ""))
        if wrong:
            fit = stage_fit(st.X[list(wrong)], st.sv)
            best = dict(zip(wrong, fit.argmax(axis=1), strict=True))
            for i, c in wrong.most_common(top):
                p = st.papers[i]
                lines.append(f"  - {c}× {p.title[:90]} [{', '.join(sorted(p.categories))}; "
                             f"fits `{st.sv.ids[best[i]]}` best]")
    return "\n".join(lines)


def average(runs: list[dict[str, dict[str, tuple[float, float]]]]
            ) -> dict[str, dict[str, tuple[float, float]]]:
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in runs[0]:
        for stage in runs[0][method]:
            vals = np.array([r[method][stage] for r in runs])
            out.setdefault(method, {})[stage] = (float(vals[:, 0].mean()), float(vals[:, 1].mean()))
    return out


def quality_table(res: dict[str, dict[str, tuple[float, float]]], metric: int) -> str:
    """One markdown table: stages × methods, for precision@10 (metric 0) or nDCG@10 (1)."""
    methods = list(res)
    stages = list(res[methods[0]])
    lines = ["| stage | " + " | ".join(methods) + " |", "|---" * (1 + len(methods)) + "|"]
    for s in [*stages, "mean"]:
        cells = []
        for m in methods:
            vals = [v[metric] for v in res[m].values()] if s == "mean" else [res[m][s][metric]]
            cells.append(f"{np.mean(vals):.2f}" if metric == 0 else f"{np.mean(vals):.3f}")
        name = f"**{s}**" if s == "mean" else f"`{s}`"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diversity_table(st: Setup, pools: list[np.ndarray],
                    lambdas: Sequence[float] = (1.0, 0.85, 0.7, 0.5)) -> str:
    default = Ranking().mmr
    lines = ["| MMR λ | mean P@10 | mean nDCG@10 | intra-list diversity of top 10 |",
             "|---|---|---|---|"]
    for lam in dict.fromkeys([*lambdas, default]):
        p, g, d = [], [], []
        for pool in pools:
            Xp = st.X[pool]
            cands = candidates(st.papers, pool)
            for s, r in st.rel.items():
                order = feedbot_order(Xp, cands, st.sv, s, bench_weights(mmr=lam))
                p.append(precision(r[pool], order))
                g.append(ndcg(r[pool], order))
                d.append(diversity(Xp, order))
        name = f"{lam:g}" + (" (off)" if lam == 1.0 else "") + (" (default)" if lam == default
                                                                   else "")
        lines.append(f"| {name} | {np.mean(p):.3f} | {np.mean(g):.3f} | {np.mean(d):.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=1500, help="papers per pool (default 1500)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first pool (default 0)")
    ap.add_argument("--pools", type=int, default=1, help="average over this many seeded pools")
    ap.add_argument("--split", choices=("all", "A", "B"), default="all",
                    help="draw pools from the whole dev set or one half (A chose the method)")
    ap.add_argument("--compare", action="store_true",
                    help="also print the stage-profile methods measured to choose the default")
    ap.add_argument("--no-feedback", action="store_true", help="skip the feedback simulation")
    ap.add_argument("--no-timing", action="store_true", help="skip the 10,000-item timing")
    ap.add_argument("--backend", default="fp32",
                    help="embedding backend (default fp32; each backend is embedded once)")
    ap.add_argument("--other-stages", type=lambda v: [float(x) for x in v.split(",")],
                    default=[], help="more weights of votes from another stage to measure, "
                    "e.g. 0.1,0.5 (1, 0 and the default are always measured)")
    ap.add_argument("--ceiling", action="store_true",
                    help="also train on every labelled paper outside the pool (logistic "
                    "regression, kNN) to see how far the embedding goes with ample feedback")
    ap.add_argument("--days", type=int, default=0,
                    help="also simulate this many days of votes on what the digest showed")
    ap.add_argument("--misses", action="store_true",
                    help="also list, per stage, the papers feedbot most often puts in the top "
                    "10 without the stage's categories")
    ap.add_argument("--dev", type=Path, default=DEV,
                    help="labelled papers, one JSON object per line with id, title, abstract "
                    "and categories (default: the corpus's arxiv-dev.jsonl); the same method "
                    "on papers it was not chosen on")
    args = ap.parse_args(argv)

    st = setup(args.backend, args.dev)
    base = split_indices(len(st.papers), args.split)
    seeds = list(range(args.seed, args.seed + args.pools))
    pools = [draw_pool(base, args.pool, sd) for sd in seeds]
    print(f"## Ranking benchmark: split {args.split} ({len(base)} papers), pool {len(pools[0])}, "
          f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; model "
          f"{st.emb.model_id}\n")
    runs = [evaluate_pool(st, pool, base, sd, not args.no_feedback)
            for pool, sd in zip(pools, seeds, strict=True)]
    res = average(runs)
    print("### precision@10\n")
    print(quality_table(res, 0), "\n")
    print("### nDCG@10\n")
    print(quality_table(res, 1), "\n")
    print("### Diversity (feedbot, stage only)\n")
    print(diversity_table(st, pools), "\n")
    if not args.no_feedback:
        print("### Feedback given at the previous stage\n")
        print(stage_change_table(st, pools, base, seeds, args.other_stages), "\n")
    if args.ceiling:
        n_train = len(st.papers) - len(pools[0])
        print(f"### Ceiling: models trained on the {n_train} labelled dev papers outside each pool "
              f"(LR C = {CEILING_C:g}, kNN k = {CEILING_K}, added with weight "
              f"{CEILING_WEIGHT:g}); precision@10\n")
        print(quality_table(average(ceiling_runs(st, pools)), 0), "\n")
    if args.days:
        print(f"### Votes on what the digest showed: each day {DAY_BATCH} new papers from "
              "outside the pool, 👍/👎 on the 10 shown; precision@10 of the pool\n")
        print(shown_feedback_table(shown_feedback_runs(st, pools, base, seeds, args.days)),
              "\n")
    if args.misses:
        print("### Top-10 places given to papers without the stage's categories (stage only)\n")
        print(misses(st, pools), "\n")
    if args.compare:
        from compare_methods import compare_table

        print("### Stage-profile methods (selection)\n")
        print(compare_table(st.X, st.rel, st.sv, pools), "\n")
    if not args.no_timing:
        print("### Time to rank 10,000 cached items (best of 5)\n")
        print("| scorer | seconds |\n|---|---|")
        for name, secs in timing(st.X, st.sv, next(iter(st.rel))):
            print(f"| {name} | {secs:.3f} |")


if __name__ == "__main__":
    main()
