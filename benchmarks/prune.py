"""Retention benchmark: `feedbot prune` over a database that grew for two years.

    python benchmarks/prune.py [--items 100000] [--days 730]

Builds a store of N items spread evenly over D days (each first seen on its publication day,
600-character summaries, a GUID on every tenth), each with a float16 384-d vector under the real
model id, the roadmap's stage vectors cached, and 200 old items voted on or saved. Then runs the
real command in a fresh process, each time on a fresh copy of that database, while a second
connection writes a row every 20 ms (its longest wait is the longest the prune held the write
lock):

- `feedbot prune --dry-run` (the baseline: it only reads);
- `feedbot prune --no-vacuum` (what `feedbot run` does on most days);
- `feedbot prune` (VACUUM after it);
- `feedbot prune` again at once, on the database the previous row left (the cost of a prune
  with little to remove: it reads every item's and vector's key).

Prints a table: wall time (and its ratio to the dry run), items removed, file size before and
after, the other writer's longest wait.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

SOURCES = "learner: {stage: cnn}\n"
WORDS = ("convolution", "transformer", "gradient", "kernel", "graph", "bayesian")


def build(home: Path, n: int, days: int) -> float:
    """The store in `home`; returns the seconds it took."""
    from feedbot.embed import DEFAULT_MODEL
    from feedbot.items import Item, content_hash
    from feedbot.prune import protected_hashes
    from feedbot.roadmap import load_roadmap
    from feedbot.store import Store

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    voted: list[str] = []
    with Store.open(home) as store:
        done = 0
        for day in range(days, 0, -1):
            when = now - timedelta(days=day)
            k = round(n * (days + 1 - day) / days) - done
            batch = [Item(f"Paper {j}: a {WORDS[j % 6]} study", f"https://papers.example.org/{j}",
                          f"source {j % 300}", "paper", published=when - timedelta(hours=3),
                          summary=f"Summary {j}. " + "x" * 600, guid=f"g{j}" if j % 10 == 0 else "")
                     for j in range(done, done + k)]
            done += k
            store.upsert_items(batch, when)
            vecs = rng.standard_normal((len(batch), 384)).astype(np.float32)
            store.put_vectors(DEFAULT_MODEL, {content_hash(b.embed_text): v
                                              for b, v in zip(batch, vecs, strict=True)})
            if day > days // 2 + 35 and len(voted) < 200:
                voted += [b.id for b in batch[:2]]
        for i, item_id in enumerate(voted):
            store.set_feedback("42", item_id, "up" if i % 2 else "later", now)
        stages = protected_hashes(load_roadmap(), now)
        store.put_vectors(DEFAULT_MODEL, {h: rng.standard_normal(384).astype(np.float32)
                                          for h in stages})
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


def size(home: Path) -> int:
    return sum((home / f).stat().st_size for f in ("feedbot.db", "feedbot.db-wal")
               if (home / f).exists())


def run(home: Path, args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, the other writer's longest wait in seconds, the command's output)."""
    stop = threading.Event()
    waits: list[float] = []

    def writer() -> None:
        con = sqlite3.connect(home / "feedbot.db", timeout=60, isolation_level=None)
        while not stop.is_set():
            t = time.perf_counter()
            con.execute("INSERT INTO meta(key, value) VALUES ('bench', ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = excluded.value", (str(t),))
            waits.append(time.perf_counter() - t)
            time.sleep(0.02)
        con.close()

    th = threading.Thread(target=writer)
    th.start()
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "feedbot", "prune", *args], env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - started
    stop.set()
    th.join()
    if out.returncode:
        raise SystemExit(f"feedbot prune {' '.join(args)} failed:\n{out.stderr}")
    return wall, max(waits, default=0.0), (out.stdout + out.stderr).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=730)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="feedbot-prune-bench-"))
    try:
        pristine = work / "pristine"
        sources = work / "sources.yaml"
        sources.write_text(SOURCES)
        env = dict(os.environ, FEEDBOT_SOURCES=str(sources), FEEDBOT_EMBED_BACKEND="fp32",
                   HF_HUB_OFFLINE="1")
        os.environ.update(env, FEEDBOT_HOME=str(pristine))
        took = build(pristine, args.items, args.days)
        print(f"built {args.items:,} items over {args.days} days in {took:.0f} s: "
              f"{size(pristine) / 1e6:.1f} MB\n")
        rows = []
        home = work / "home"
        for label, cmd, fresh in (("`prune --dry-run` (baseline)", ["--dry-run"], True),
                                  ("`prune --no-vacuum`", ["--no-vacuum"], True),
                                  ("`prune`", [], True),
                                  ("`prune` again at once", [], False)):
            if fresh:
                shutil.rmtree(home, ignore_errors=True)
                shutil.copytree(pristine, home)
            before = size(home)
            wall, wait, said = run(home, cmd, dict(env, FEEDBOT_HOME=str(home)))
            m = re.search(r"(?:would remove|removed) ([\d,]+) items?", said)
            rows.append((label, wall, m.group(1) if m else "?", before, size(home), wait))
        base = rows[0][1]
        print("| run | wall s | × dry run | items removed | file MB before → after | "
              "other writer's longest wait, ms |")
        print("|---|---:|---:|---:|---|---:|")
        for label, wall, removed, before, after, wait in rows:
            print(f"| {label} | {wall:.2f} | {wall / base:.1f} | {removed} | "
                  f"{before / 1e6:.1f} → {after / 1e6:.1f} | {wait * 1000:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
