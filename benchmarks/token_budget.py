"""CPU token budget per forward pass: fp32 and bf16 at several budgets against the plain call.

    python benchmarks/token_budget.py [--n 300] [--rounds 3] [--budgets 2048,4096,8192,16384]

feedbot's sentence-transformers backends batch by padded tokens on a CPU
(`backends.CPU_TOKEN_BUDGET["torch"]`, chosen on a 2-core machine). This measures, in one process
and alternating round by round, plain sentence-transformers `encode(batch_size=32)` (the
baseline) and feedbot's fp32 and bf16 encoders at each budget, over the first N dev texts
(title + abstract), and prints the median texts/s of the rounds, the ratio to the baseline and
every round's figure. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feedbot import backends  # noqa: E402
from feedbot.embed import resolve_model  # noqa: E402
from feedbot.items import embed_text  # noqa: E402

DEV = ROOT.parent / "shared" / "corpus" / "papers" / "arxiv-dev.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="number of dev texts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budgets", default="2048,4096,8192,16384")
    p.add_argument("--dev", default=str(DEV))
    p.add_argument("--model-ref", default=None, help="model name or path (default: packaged)")
    args = p.parse_args()

    texts: list[str] = []
    with open(args.dev, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(embed_text(row["title"], row["abstract"]))
            if len(texts) == args.n:
                break
    import torch
    from sentence_transformers import SentenceTransformer

    _, model_ref = resolve_model(args.model_ref)
    model = SentenceTransformer(model_ref, device="cpu")
    model.encode(texts[:16], batch_size=32)  # warm-up
    print(f"{len(texts)} dev texts, {torch.get_num_threads()} torch threads, "
          f"{args.rounds} alternating rounds", file=sys.stderr)

    runs: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        fn()
        runs.setdefault(name, []).append(len(texts) / (time.perf_counter() - t0))

    budgets = [int(b) for b in args.budgets.split(",")]
    saved = backends.CPU_TOKEN_BUDGET["torch"]
    for r in range(args.rounds):
        timed("sentence-transformers fp32, batch 32 (baseline)",
              lambda: model.encode(texts, batch_size=32, show_progress_bar=False))
        for budget in budgets:
            backends.CPU_TOKEN_BUDGET["torch"] = budget
            mark = " (feedbot's)" if budget == saved else ""
            timed(f"fp32, budget {budget}{mark}",
                  lambda: backends.SentenceTransformerEncoder("", "cpu", model=model).encode(texts))
            timed(f"bf16, budget {budget}{mark}",
                  lambda: backends.BF16Encoder("", "cpu", model=model).encode(texts))
        print(f"round {r + 1} done", file=sys.stderr)
    backends.CPU_TOKEN_BUDGET["torch"] = saved

    base = statistics.median(next(iter(runs.values())))
    print("| run | median texts/s | × baseline | rounds |")
    print("|---|---:|---:|---|")
    for name, values in runs.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {med / base:.2f} | "
              f"{', '.join(f'{v:.0f}' for v in values)} |")


if __name__ == "__main__":
    main()
