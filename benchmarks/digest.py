"""Digest benchmark: a cached `feedbot digest --no-collect` over 1,000 and 100,000 stored items.

    python benchmarks/digest.py [--sizes 1000,100000] [--votes 10000] [--repeat 3]

Builds a store with N items whose vectors are already cached (random unit vectors under the
real model id; the stage vectors are embedded once with the real model, in a setup process),
every item published within the digest window, so all N are ranked. Then times the real
command in a fresh process: wall time, peak RSS (ru_maxrss of the child), whether torch was
imported, and the store's size. Baseline in the same run: the same digest with the vector cache
cleared for the stage texts forces the model to load — what every digest would cost without
the cache.

With `--votes N`: a learner with years of 👍/👎. N more items, published before the digest
window (so outside it, as a long-kept learner's voted items are) 100 minutes apart (10,000:
two years), with cached vectors, get one vote each, when published (60 % 👍, 40 % 👎, given
at stages spread over the roadmap, a third at the learner's), and three rows are timed: the
same store with no votes (baseline), the first digest after the votes (trains the 👍/👎 model)
and the next one (reuses the saved model). `--repeat K` times each row K times, alternating,
and prints the median.

With `--against DIR`: this checkout against the code in DIR (e.g. made with
`git worktree add /tmp/base REV`), on copies of one store built by DIR's code (this code
upgrades its copy if its schema is newer), `--repeat K` fresh-process digests each,
alternating. Every run starts outside the repository with PYTHONPATH set to one checkout and
checks which `feedbot` it imported: `python -m`/`-c` put the current directory first on
sys.path, so a comparison started in the repository runs this code twice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

PROBE = (  # `feedbot ARGS` in this interpreter, then what it imported and its peak memory
    "import sys, runpy\n"
    "sys.argv = ['feedbot', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('feedbot', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('TORCH_IMPORTED=' + str('torch' in sys.modules), file=sys.stderr)\n"
    "print('FEEDBOT_FROM=' + sys.modules['feedbot'].__file__, file=sys.stderr)\n"
    # VmHWM, not ru_maxrss: ru_maxrss survives fork+exec and would report the parent's peak.
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "print('MAXRSS_KB=' + hwm, file=sys.stderr)\n"
)
DIGEST = ("digest", "--no-collect", "--format", "json", "--since", "30d")


def build_store(home: Path, n: int, rng: np.random.Generator) -> None:
    from feedbot.embed import Embedder
    from feedbot.items import Item, content_hash
    from feedbot.store import Store

    emb = Embedder()
    store = Store.open(home)
    now = datetime.now(UTC)
    words = ["convolution", "transformer", "gradient", "kernel", "graph", "bayesian",
             "tokenizer", "attention", "matrix", "sampling", "retrieval", "GPU"]
    batch, vecs = [], {}
    for i in range(n):
        title = f"Item {i}: {words[i % 12]} and {words[(i * 7) % 12]} study {i}"
        it = Item(title, f"https://bench.example.org/{i}", f"source {i % 300}",
                  published=now - timedelta(minutes=i % 20000), summary=f"Summary {i}.")
        batch.append(it)
        v = rng.standard_normal(384).astype(np.float32)
        vecs[content_hash(it.embed_text)] = v / np.linalg.norm(v)
        if len(batch) == 5000:
            store.upsert_items(batch, now)
            store.put_vectors(emb.model_id, vecs)
            batch, vecs = [], {}
    if batch:
        store.upsert_items(batch, now)
        store.put_vectors(emb.model_id, vecs)
    store.close()


def add_votes(home: Path, n: int, rng: np.random.Generator) -> None:
    """N older voted items (outside the digest window) with vectors, and one vote on each."""
    from feedbot.embed import Embedder
    from feedbot.items import Item, content_hash
    from feedbot.roadmap import load_roadmap
    from feedbot.store import Store

    emb = Embedder()
    stages = [s.id for s in load_roadmap().stages]
    store = Store.open(home)
    now = datetime.now(UTC)
    old = now - timedelta(days=31)
    items, vecs = [], {}
    for i in range(n):
        it = Item(f"Voted {i}: a {stages[i % len(stages)]} paper on topic {i % 97}",
                  f"https://bench.example.org/voted/{i}", f"source {i % 300}",
                  published=old - timedelta(minutes=i * 100), summary=f"Voted summary {i}.")
        items.append(it)
        v = rng.standard_normal(384).astype(np.float32)
        vecs[content_hash(it.embed_text)] = v / np.linalg.norm(v)
    for i in range(0, n, 5000):
        store.upsert_items(items[i:i + 5000], now)
    store.put_vectors(emb.model_id, vecs)
    ids = store.find_by_urls(it.url for it in items)
    rows = []
    for i, it in enumerate(items):
        stage = "cnn" if rng.random() < 1 / 3 else stages[int(rng.integers(len(stages)))]
        rows.append(("12345", ids[it.url], "up" if rng.random() < 0.6 else "down",
                     (old - timedelta(minutes=i * 100)).timestamp(), stage))
    store.close()
    set_votes(home, rows)


def prime_stage_vectors(env: dict[str, str]) -> None:
    """Embed the stage texts once (the real model), as the first real digest would."""
    run_feedbot(env, *DIGEST)


def run_feedbot(env: dict[str, str], *argv: str, code: Path | None = None
                ) -> tuple[float, float, bool, str]:
    """`feedbot ARGV` in a fresh process: (wall s, peak RSS MB, torch imported, stdout).

    With `code`: that checkout's feedbot, started outside any checkout, and checked."""
    cwd = None
    if code is not None:
        env = dict(env, PYTHONPATH=str(code))
        cwd = tempfile.gettempdir()
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True,
                         text=True, check=True, cwd=cwd)
    wall = time.perf_counter() - t
    origin = out.stderr.split("FEEDBOT_FROM=")[1].split("\n")[0]
    if code is not None and not Path(origin).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"asked for the feedbot in {code}, ran {origin}")
    rss_kb = int(out.stderr.split("MAXRSS_KB=")[1].split()[0])
    return wall, rss_kb / 1024, "TORCH_IMPORTED=True" in out.stderr, out.stdout


def timed(env: dict[str, str]) -> tuple[float, float, bool, int]:
    wall, rss, torch, out = run_feedbot(env, *DIGEST)
    return wall, rss, torch, len(json.loads(out)["items"])


def drop_stage_vectors(home: Path) -> None:
    """Forget every vector that is not an item's: the stage texts must be embedded again."""
    from feedbot.store import Store

    store = Store.open(home)
    store.db.execute("DELETE FROM vectors WHERE content_hash NOT IN "
                     "(SELECT content_hash FROM items)")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--votes", type=int, default=0, help="time digests with N votes (and N "
                    "voted items) against the same store without votes")
    ap.add_argument("--repeat", type=int, default=1, help="median of K runs per row")
    ap.add_argument("--against", type=Path, metavar="DIR", help="compare with the feedbot "
                    "checkout in DIR (e.g. a `git worktree` of an earlier commit)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    if args.against:
        return against_table([int(s) for s in args.sizes.split(",")], args.against,
                             max(args.repeat, 3))
    if args.votes:
        return votes_table([int(s) for s in args.sizes.split(",")], args.votes, args.repeat, rng)
    print("| stored items | run | wall s | ratio vs baseline | peak RSS MB | torch imported "
          "| db MB |")
    print("|---:|---|---:|---:|---:|---|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        work = Path(tempfile.mkdtemp(prefix="feedbot-digest-bench-"))
        src = work / "sources.yaml"
        src.write_text("learner: {stage: cnn}\n")
        env = dict(os.environ, FEEDBOT_HOME=str(work / "home"), FEEDBOT_SOURCES=str(src),
                   HF_HUB_OFFLINE="1")
        os.environ.update(FEEDBOT_HOME=env["FEEDBOT_HOME"])
        build_store(work / "home", n, rng)
        db_mb = (work / "home" / "feedbot.db").stat().st_size / 2**20
        prime_stage_vectors(env)
        # Children's peak RSS is cumulative per parent; measure each run in its own child.
        wall, rss, torch, k = timed(env)
        drop_stage_vectors(work / "home")
        b_wall, b_rss, b_torch, _ = timed(env)
        print(f"| {n:,} | baseline: stage vectors not cached | {b_wall:.2f} | 1.0× | "
              f"{b_rss:.0f} | {b_torch} | {db_mb:.0f} |")
        print(f"| {n:,} | cached digest ({k} items shown) | {wall:.2f} | "
              f"{b_wall / wall:.1f}× | {rss:.0f} | {torch} | {db_mb:.0f} |", flush=True)
        shutil.rmtree(work, ignore_errors=True)


def against_table(sizes: list[int], other: Path, repeat: int) -> None:
    """This checkout against `other` on copies of one store: medians of alternating runs."""
    here = Path(__file__).resolve().parent
    print(f"| stored items | code | wall s, median of {repeat} (range) | ratio vs {other} "
          "| peak RSS MB | items shown |")
    print("|---:|---|---:|---:|---:|---|")
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix="feedbot-digest-bench-"))
        src = work / "sources.yaml"
        src.write_text("learner: {stage: cnn}\n")
        env = dict(os.environ, FEEDBOT_SOURCES=str(src), HF_HUB_OFFLINE="1")
        homes = {"other": work / "other", "this": work / "this"}
        build = (f"import sys; sys.path.insert(0, {str(here)!r}); from pathlib import Path; "
                 "import numpy as np, digest; "
                 f"digest.build_store(Path({str(homes['other'])!r}), {n}, "
                 "np.random.default_rng(0))")
        subprocess.run([sys.executable, "-c", build], check=True, cwd=tempfile.gettempdir(),
                       env=dict(env, FEEDBOT_HOME=str(homes["other"]),
                                PYTHONPATH=str(other)))
        shutil.copytree(homes["other"], homes["this"])
        codes = {"other": other, "this": Path(__file__).resolve().parents[1]}
        runs: dict[str, list[tuple[float, float]]] = {"other": [], "this": []}
        shown: dict[str, set[str]] = {"other": set(), "this": set()}
        for name in runs:  # embed the stage texts once (the real model), with each code
            run_feedbot(dict(env, FEEDBOT_HOME=str(homes[name])), *DIGEST, code=codes[name])
        for _ in range(repeat):
            for name in runs:
                wall, rss, _, out = run_feedbot(dict(env, FEEDBOT_HOME=str(homes[name])),
                                                *DIGEST, code=codes[name])
                runs[name].append((wall, rss))
                shown[name].add(" ".join(i["id"] for i in json.loads(out)["items"]))
        base = statistics.median(w for w, _ in runs["other"])
        for name in ("other", "this"):
            walls = [w for w, _ in runs[name]]
            wall = statistics.median(walls)
            same = "same" if shown[name] == shown["other"] and len(shown[name]) == 1 \
                else "DIFFERENT"
            print(f"| {n:,} | {codes[name]} | {wall:.2f} ({min(walls):.2f}–{max(walls):.2f}) "
                  f"| {wall / base:.2f}× | {statistics.median(r for _, r in runs[name]):.0f} "
                  f"| {same} |", flush=True)
        shutil.rmtree(work, ignore_errors=True)


def set_votes(home: Path, rows: list[Any]) -> None:
    """Replace every vote by `rows` (chat, item_id, value, at, stage)."""
    from feedbot.store import Store

    s = Store.open(home)
    with s.transaction():
        s.db.execute("DELETE FROM feedback")
        s.db.executemany("INSERT INTO feedback(chat, item_id, value, at, stage) "
                         "VALUES (?, ?, ?, ?, ?)", [tuple(r) for r in rows])
    s.close()


def votes_table(sizes: list[int], votes: int, repeat: int, rng: np.random.Generator) -> None:
    """Digests with no votes, then with `votes` votes: the first (trains), the next (reuses)."""
    from feedbot.store import Store

    print("| stored items | votes | run | wall s (median of "
          f"{repeat}) | ratio vs 0 votes | peak RSS MB |")
    print("|---:|---:|---|---:|---:|---:|")
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix="feedbot-digest-bench-"))
        src = work / "sources.yaml"
        src.write_text("learner: {stage: cnn}\n")
        home = work / "home"
        env = dict(os.environ, FEEDBOT_HOME=str(home), FEEDBOT_SOURCES=str(src),
                   HF_HUB_OFFLINE="1")
        os.environ.update(FEEDBOT_HOME=env["FEEDBOT_HOME"])
        build_store(home, n, rng)
        add_votes(home, votes, rng)
        prime_stage_vectors(env)
        store = Store.open(home)
        saved = store.db.execute("SELECT chat, item_id, value, at, stage FROM feedback"
                                 ).fetchall()
        store.close()

        rows: dict[str, list[tuple[float, float]]] = {"none": [], "train": [], "reuse": []}
        for _ in range(repeat):
            set_votes(home, [])
            wall, rss, _, _ = timed(env)
            rows["none"].append((wall, rss))
            set_votes(home, saved)
            shutil.rmtree(home / "models", ignore_errors=True)  # the first digest trains
            wall, rss, _, _ = timed(env)
            rows["train"].append((wall, rss))
            wall, rss, _, _ = timed(env)
            rows["reuse"].append((wall, rss))
        base = statistics.median(w for w, _ in rows["none"])
        for name, count, what in (("none", 0, "baseline: no votes"),
                                  ("train", votes, "first digest (trains the model)"),
                                  ("reuse", votes, "next digest (saved model reused)")):
            wall = statistics.median(w for w, _ in rows[name])
            rss = statistics.median(r for _, r in rows[name])
            print(f"| {n:,} | {count:,} | {what} | {wall:.2f} | {wall / base:.2f}× | "
                  f"{rss:.0f} |", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
