"""Search benchmark: how well `feedbot search` finds a paper again, and what it costs.

    python benchmarks/search.py                      # quality (a) and latency (b)
    python benchmarks/search.py --no-latency         # quality only (about a minute)
    python benchmarks/search.py --no-quality --size 100000

(a) Quality, on the dev set (../shared/corpus/papers/arxiv-dev.jsonl, 3,352 papers, embedded
once and cached in benchmarks/.cache/dev.db by benchmarks/ranking.py's helpers). 300 papers
drawn with a fixed seed are looked for with two partial queries each:
  - "title": the title without its first word (no paraphrase: the words are the paper's own);
  - "author": the first author's surname and one word of the title (a word of 4+ letters
    that is not a stop word, drawn with the same seed).
Every paper is in one temporary store (published at the same time, one source), and the query
is run through `feedbot.search.search`, the CLI's and the bot's code path (the query vectors
are embedded once, in a batch, with the same model). Reported: MRR@10 (1/rank of the paper
when in the first 10, else 0) and hit@10, for cosine only (lexical weight 0) and for the blend
at each weight of the sweep; the weight in `search.LEXICAL_WEIGHT` is the one printed in bold.

(b) Latency: a store of N items (default 100,000) with realistic text (the dev papers'
titles and abstracts, each used N/3,352 times, titles numbered) and cached vectors (the
paper's vector plus noise, cosine about 0.8 to its copies: no two are one story), every item
in the window. In a fresh process each: `feedbot search` (two queries: words, a name) and the
baseline `feedbot digest --no-collect` over the same store in the same run: wall time, peak
RSS (VmHWM), whether torch was imported. The ONNX export is made and `auto`'s choice written
as a measured machine records it (fp32, with onnx-fp32 agreeing): a query is then embedded by
the light ONNX encoder. One more search runs with the export removed, where the query needs
the torch model. Each run is repeated (`--repeat`, 3 interleaved rounds) and its median wall
time reported; ratios are against the digest's median in the same run.

Results (2-core shared machine, all-MiniLM-L6-v2; the figures in feedbot/search.py at
`LEXICAL_WEIGHT` and in the session report): a title without its first word is found at once
with cosine alone (MRR@10 0.966) and the blend (0.998); a surname and a title word is found by
the blend (0.833 at 0.5) where cosine alone fails (0.043). At 100,000 items a search takes
about as long as a cached digest (both load the same candidate matrix), without torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from digest import run_feedbot  # noqa: E402
from ranking import CACHE, NOW, Paper, embed_dev, load_dev  # noqa: E402

from feedbot import search as search_mod  # noqa: E402
from feedbot.config import load_config  # noqa: E402
from feedbot.embed import Embedder  # noqa: E402
from feedbot.items import content_hash  # noqa: E402
from feedbot.roadmap import load_roadmap  # noqa: E402
from feedbot.store import Store  # noqa: E402

QUERIES = 300
SEED = 0
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
K = 10


# --- (a) quality ------------------------------------------------------------------------------

class Precomputed:
    """An embedder for `search` whose query vectors were embedded beforehand, in one batch."""

    def __init__(self, model_id: str, vectors: dict[str, np.ndarray]) -> None:
        self.model_id = model_id
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def make_queries(papers: Sequence[Paper], rng: np.random.Generator
                 ) -> list[tuple[int, str, str]]:
    """(paper index, title query, author query) for QUERIES papers that have both."""
    out = []
    for i in rng.permutation(len(papers)):
        p = papers[int(i)]
        words = p.title.split()
        content = [w for w in re.findall(r"[A-Za-z][\w-]{3,}", p.title)
                   if w.lower() not in search_mod._STOP]
        if len(words) < 3 or not p.authors or not content:
            continue
        surname = p.authors[0].split()[-1]
        out.append((int(i), " ".join(words[1:]),
                    f"{surname} {content[int(rng.integers(len(content)))]}"))
        if len(out) == QUERIES:
            break
    return out


def dev_store(home: Path, papers: Sequence[Paper], X: np.ndarray, model_id: str) -> Store:
    store = Store(home / "feedbot.db")
    store.upsert_items([p.item for p in papers], NOW)
    store.put_vectors(model_id, {content_hash(p.item.embed_text): X[n]
                                 for n, p in enumerate(papers)})
    return store


def quality(weights: Sequence[float]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    papers = load_dev()
    CACHE.mkdir(exist_ok=True)
    cache = Store(CACHE / "dev.db")
    emb = Embedder(backend="fp32")
    X = embed_dev(cache, emb, papers)
    queries = make_queries(papers, np.random.default_rng(SEED))
    texts = sorted({q for _, a, b in queries for q in (a, b)})
    t = time.perf_counter()
    Q = emb.embed(texts)
    print(f"embedded {len(texts)} queries in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    pre = Precomputed(emb.model_id, dict(zip(texts, Q, strict=True)))
    work = Path(tempfile.mkdtemp(prefix="feedbot-search-bench-"))
    try:
        src = work / "sources.yaml"
        src.write_text("learner: {stage: nlp}\n")
        os.environ["FEEDBOT_HOME"] = str(work / "home")
        store = dev_store(work / "home", papers, X, emb.model_id)
        cfg, roadmap = load_config(src), load_roadmap()
        ids = {p.item.id: n for n, p in enumerate(papers)}
        now = NOW + timedelta(days=1)
        rows = []
        floor = search_mod.MIN_SCORE
        for w, cut in [(0.0, False), *((w, True) for w in weights)]:
            search_mod.MIN_SCORE = floor if cut else -np.inf
            for kind, col in (("title", 1), ("author", 2)):
                rr, hit, empty = [], 0, 0
                for q in queries:
                    found = search_mod.search(cfg, store, pre, roadmap, q[col],  # type: ignore[arg-type]
                                              now=now, limit=K, lexical_weight=w)
                    ranks = [r for r, e in enumerate(found.items, 1) if ids.get(e.id) == q[0]]
                    rr.append(1 / ranks[0] if ranks else 0.0)
                    hit += bool(ranks)
                    empty += not found.items
                rows.append((w, cut, kind, float(np.mean(rr)), hit / len(queries), empty))
            print(f"weight {w} done", file=sys.stderr, flush=True)
        search_mod.MIN_SCORE = floor
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = {kind: m for w, cut, kind, m, _, _ in rows if w == 0.0 and cut}
    print(f"\n(a) {len(queries)} dev papers looked for by partial queries: MRR@10, hit@10, "
          f"ratio against cosine only; score floor {floor} (search.MIN_SCORE) unless said\n")
    print("| query | lexical weight | MRR@10 | × cosine only | hit@10 | no result |")
    print("|---|---:|---:|---:|---:|---:|")
    for w, cut, kind, m, h, e in sorted(rows, key=lambda r: (r[2] != "title", r[0], r[1])):
        bold = "**" if w == search_mod.LEXICAL_WEIGHT else ""
        label = ("0 (cosine only)" if w == 0 else f"{bold}{w:g}{bold}") + \
            ("" if cut else ", no floor")
        ratio = m / base[kind] if base[kind] else float("nan")
        print(f"| {kind} | {label} | {m:.3f} | {ratio:.2f}× | {h:.2f} | {e} |")


# --- (b) latency ------------------------------------------------------------------------------



def build_store(home: Path, n: int, papers: Sequence[Paper], X: np.ndarray, model_id: str,
                rng: np.random.Generator) -> None:
    from dataclasses import replace

    store = Store(home / "feedbot.db")
    now = datetime.now(UTC)  # the commands read the real clock
    batch, vecs = [], {}
    for i in range(n):
        k = i % len(papers)
        p = papers[k]
        it = replace(p.item, title=f"{p.title} ({i})", arxiv_id="",
                     url=f"https://bench.example.org/{i}", source=f"source {i % 300}",
                     published=now - timedelta(minutes=i % 20000))
        batch.append(it)
        v = X[k] + rng.standard_normal(X.shape[1]).astype(np.float32) * 0.75 / np.sqrt(X.shape[1])
        vecs[content_hash(it.embed_text)] = v / np.linalg.norm(v)
        if len(batch) == 5000:
            store.upsert_items(batch, now)
            store.put_vectors(model_id, vecs)
            batch, vecs = [], {}
    if batch:
        store.upsert_items(batch, now)
        store.put_vectors(model_id, vecs)
    store.close()


def write_choice(home: Path, model_ref: str) -> None:
    """`auto`'s choice as a machine that measured onnx-fp32 to agree with fp32 records it."""
    from feedbot import backends

    home.mkdir(parents=True, exist_ok=True)
    (home / backends.CHOICE_FILE).write_text(json.dumps({backends.choice_key(model_ref): {
        "backend": "fp32", "device": "cpu", "measured": {
            "fp32": {"agreement": 1.0, "texts_per_s": 1.0},
            "onnx-fp32": {"agreement": 1.0, "texts_per_s": 1.0}}}}))


def latency(n: int, repeat: int = 3) -> None:
    from feedbot import backends
    from feedbot.embed import resolve_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    papers = load_dev()
    cache = Store(CACHE / "dev.db")
    emb = Embedder(backend="fp32")
    X = embed_dev(cache, emb, papers)
    model_ref = resolve_model()[1]
    work = Path(tempfile.mkdtemp(prefix="feedbot-search-bench-"))
    try:
        home = work / "home"
        src = work / "sources.yaml"
        src.write_text("learner: {stage: nlp}\n")
        env = dict(os.environ, FEEDBOT_HOME=str(home), FEEDBOT_SOURCES=str(src),
                   HF_HUB_OFFLINE="1")
        env.pop("FEEDBOT_EMBED_BACKEND", None)
        os.environ["FEEDBOT_HOME"] = str(home)
        build_store(home, n, papers, X, emb.model_id, np.random.default_rng(0))
        write_choice(home, model_ref)
        backends.export_onnx(model_ref)
        db_mb = (home / "feedbot.db").stat().st_size / 2**20
        digest = ("digest", "--no-collect", "--format", "json", "--since", "30d")
        run_feedbot(env, *digest)  # embeds the stage texts once, as the first real digest does
        runs = [("baseline: feedbot digest --no-collect", digest),
                ("search “sparse attention for long documents”",
                 ("search", "sparse", "attention", "for", "long", "documents", "--format",
                  "json")),
                ("search “LeCun” (a name)", ("search", "LeCun", "--format", "json"))]
        print(f"\n(b) {n:,} stored items, all in the window; database {db_mb:.0f} MB; each run "
              "in a fresh process\n")
        print(f"| run | wall s, median of {repeat} (range) | × digest | peak RSS MB | torch "
              "imported | results |")
        print("|---|---:|---:|---:|---|---:|")
        # Interleaved rounds, the median of each: on a shared 2-core machine one run alone
        # varies by ±30 %.
        results: dict[str, list[tuple[float, float, bool, str]]] = {}
        for _ in range(repeat):
            for label, argv in runs:
                results.setdefault(label, []).append(run_feedbot(env, *argv))
        base = float(np.median([r[0] for r in results[runs[0][0]]]))
        for label, _ in runs:
            walls = [r[0] for r in results[label]]
            wall, (_, rss, torch, out) = float(np.median(walls)), results[label][-1]
            print(f"| {label} | {wall:.2f} ({min(walls):.2f}–{max(walls):.2f}) | "
                  f"{wall / base:.2f}× | {rss:.0f} | {torch} | "
                  f"{len(json.loads(out)['items'])} |", flush=True)
        shutil.rmtree(backends.onnx_dir(model_ref))
        wall, rss, torch, out = run_feedbot(env, *runs[1][1])
        print(f"| search, words, without an ONNX export (query on the torch model), one run | "
              f"{wall:.2f} | {wall / base:.2f}× | {rss:.0f} | {torch} | "
              f"{len(json.loads(out)['items'])} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000, help="stored items for (b)")
    ap.add_argument("--weights", default=",".join(map(str, WEIGHTS)),
                    help="lexical weights compared in (a)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the runs in (b)")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args()
    if not args.no_quality:
        quality([float(w) for w in args.weights.split(",")])
    if not args.no_latency:
        latency(args.size, args.repeat)


if __name__ == "__main__":
    main()
