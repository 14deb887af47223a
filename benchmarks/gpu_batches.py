"""GPU embedding details beside `embed.py`: tokenising cost, a batch-size sweep, and the real
Embedder + Store path choosing its backend; run by hand on a machine with CUDA.

    python benchmarks/gpu_batches.py [--n 3352] [--model-ref PATH] [--device cuda]

Texts are the dev set's title+abstract texts, as `embed.py` loads them. The sweep calls
sentence-transformers' `encode` (which sorts by length) at each batch size, best of 3 passes;
ratios are against fp32 at batch 32 in the same run. `--device cpu` exists only
for a dry run of the script (its "bf16" rows then run without autocast, so they are fp32).
Prints markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from embed import DEV, load_texts  # noqa: E402

from feedbot import backends  # noqa: E402
from feedbot.embed import resolve_model  # noqa: E402

BATCHES = (32, 64, 128, 256, 512, 1024)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3352)
    p.add_argument("--dev", default=str(DEV))
    p.add_argument("--model-ref", default=None)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    model = args.model_ref or resolve_model()[1]
    import torch

    cuda = args.device.startswith("cuda")
    texts = load_texts(Path(args.dev), args.n)
    names = ("fp32", "fp16") if cuda else ("fp32", "bf16")
    print(f"{len(texts)} dev texts, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name(0) if cuda else 'CPU'}\n")

    print("| backend | batch | texts/s | × fp32 batch 32 | peak GPU MB |")
    print("|---|---:|---:|---:|---:|")
    base = None
    tokenising = 0.0
    for name in names:
        enc = backends.load_encoder(model, name, args.device)
        if not tokenising:  # the tokenizer is the same for every backend
            t0 = time.perf_counter()
            enc.model.tokenize(texts)
            tokenising = time.perf_counter() - t0
        for bs in BATCHES:
            enc.model.encode(texts[:bs], batch_size=bs, show_progress_bar=False)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                enc.model.encode(texts, batch_size=bs, convert_to_numpy=True,
                                 show_progress_bar=False)
                best = min(best, time.perf_counter() - t0)
            speed = len(texts) / best
            base = base or speed
            mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0
            print(f"| {name} | {bs} | {speed:.0f} | {speed / base:.2f} | {mem:.0f} |", flush=True)
        del enc
        if cuda:
            torch.cuda.empty_cache()

    print(f"\ntokenising alone: {tokenising:.2f} s, {len(texts) / tokenising:.0f} texts/s")

    # The real path: FEEDBOT_DEVICE unset, auto backend, vectors through the store.
    with tempfile.TemporaryDirectory() as home:
        os.environ["FEEDBOT_HOME"] = home
        os.environ.pop("FEEDBOT_DEVICE", None)
        from feedbot.embed import Embedder, embed_cached
        from feedbot.store import Store

        t0 = time.perf_counter()
        e = Embedder(model)
        backend = e.backend_name
        print(f"\nEmbedder: device {e.device}, backend {backend}, "
              f"choice and load {time.perf_counter() - t0:.1f} s")
        store = Store(Path(home) / "feedbot.sqlite")
        t0 = time.perf_counter()
        v1 = embed_cached(store, e, texts)
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        v2 = embed_cached(store, e, texts)
        t2 = time.perf_counter() - t0
        ref = backends.load_encoder(model, "fp32", "cpu").encode(texts[:500], 32)
        print(f"embed_cached, {len(texts)} new texts: {t1:.2f} s ({len(texts) / t1:.0f} texts/s);"
              f" again, cached: {t2:.2f} s; same vectors: {np.array_equal(v1, v2)}; top-10 "
              f"agreement with CPU fp32 on 500: {backends.topk_agreement(ref, v1[:500], 0):.4f}")


if __name__ == "__main__":
    main()
