"""Embedding a backlog: `embed.embed_cached` in chunks of EMBED_CHUNK against all at once; run
by hand.

    python benchmarks/embed_backlog.py [--n 3000] [--home DIR]

A backlog is what a new FEEDBOT_MODEL or a first collection leaves: every stored item without a
vector. The texts are the first N papers of the dev set (`../shared/corpus/papers/
arxiv-dev.jsonl`) as feedbot embeds them (`items.embed_text`). The baseline is one chunk as big
as the backlog (what feedbot did before it stored as it went), measured in the same run. Each
row runs in its own subprocess, so its peak RSS is its own; "growth" is the peak over the RSS
once the model is loaded. The backend is the home's measured choice (`--home`, else a fresh
one, measured first and not timed). Prints a markdown table; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEV = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "papers" / "arxiv-dev.jsonl"

CHILD = """
import json, resource, sys, time
from feedbot import embed
from feedbot.items import embed_text
from feedbot.store import Store
n, chunk, dev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
texts = []
with open(dev, encoding="utf-8") as f:
    for line in f:
        d = json.loads(line)
        texts.append(embed_text(d["title"], d.get("abstract", "")))
        if len(texts) >= n:
            break
embed.EMBED_CHUNK = chunk
e = embed.Embedder()
e.encoder  # loaded (and, on a fresh home, measured) before the clock starts
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cuda = "torch" in sys.modules and sys.modules["torch"].cuda.is_available()
if cuda:  # on a GPU the backlog's memory is the device's: its peak over what the model holds
    torch = sys.modules["torch"]
    torch.cuda.synchronize()
    gpu_loaded = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
embed.embed_cached(Store(":memory:"), e, texts)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {"backend": e.backend_name, "seconds": seconds, "loaded_mb": loaded / 1024,
       "peak_mb": peak / 1024}
if cuda:
    out["gpu_growth_mb"] = (torch.cuda.max_memory_allocated() - gpu_loaded) / 2**20
print(json.dumps(out))
"""


def run(n: int, chunk: int, home: str) -> dict[str, float | str]:
    env = {**os.environ, "FEEDBOT_HOME": home}
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(chunk), str(DEV)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--home", default="")
    args = ap.parse_args()
    from feedbot.embed import EMBED_CHUNK

    home = args.home or tempfile.mkdtemp(prefix="feedbot-backlog-")
    print("measuring the backends (a fresh home) ...", file=sys.stderr)
    run(10, EMBED_CHUNK, home)
    base = run(args.n, args.n, home)
    mine = run(args.n, EMBED_CHUNK, home)
    print(f"{args.n:,} texts, backend {mine['backend']}\n")
    gpu = "gpu_growth_mb" in mine
    print("| embed_cached | seconds | peak RSS growth (MB) | ratio (time) | ratio (growth) |"
          + (" peak GPU memory growth (MB) | ratio (GPU) |" if gpu else ""))
    print("|---|---|---|---|---|" + ("---|---|" if gpu else ""))
    for label, r in (("all at once (baseline)", base), (f"chunks of {EMBED_CHUNK:,}", mine)):
        growth = float(r["peak_mb"]) - float(r["loaded_mb"])
        bgrowth = float(base["peak_mb"]) - float(base["loaded_mb"])
        row = (f"| {label} | {float(r['seconds']):.1f} | {growth:.0f} | "
               f"{float(r['seconds']) / float(base['seconds']):.2f} | "
               f"{growth / bgrowth if bgrowth else float('nan'):.2f} |")
        if gpu:
            g, bg = float(r["gpu_growth_mb"]), float(base["gpu_growth_mb"])
            row += f" {g:.0f} | {g / bg if bg else float('nan'):.2f} |"
        print(row)


if __name__ == "__main__":
    main()
