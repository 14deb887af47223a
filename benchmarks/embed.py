"""Embedding throughput per backend on whole arXiv title+abstract texts; run by hand.

    python benchmarks/embed.py [--n 300] [--repeat 2]
        [--backends fp32,bf16,onnx-fp32,onnx-int8,openvino-bf16]

Texts are the first N papers of the dev set (`../shared/corpus/papers/arxiv-dev.jsonl`), each as
feedbot embeds it (`items.embed_text`: title, then the abstract). The baseline is plain
sentence-transformers fp32 with batch size 32, as feedbot embedded before it had backends; every
ratio is against the baseline measured in the same run. Each backend runs in its own subprocess,
so peak RSS is that backend's own; texts/s is the best of `--repeat` passes after a warm-up.
Agreement is `backends.topk_agreement` against the baseline's vectors, every text ranking the
others. The `auto` choice is measured first, in a fresh FEEDBOT_HOME unless `--home` is given
(that also exports the ONNX models, so the ONNX rows load an existing export without torch).

Prints a markdown table on stdout; progress goes to stderr. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feedbot import backends  # noqa: E402
from feedbot.embed import resolve_model  # noqa: E402
from feedbot.items import embed_text  # noqa: E402

DEV = ROOT.parent / "shared" / "corpus" / "papers" / "arxiv-dev.jsonl"
BASELINE = "st-fp32"


def load_texts(path: Path, n: int) -> list[str]:
    texts = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(embed_text(row["title"], row["abstract"]))
            if len(texts) == n:
                break
    return texts


def worker(args: argparse.Namespace) -> None:
    """One backend in this process: load, warm up, time, save vectors, print a JSON line."""
    texts = json.loads(Path(args.texts).read_text())
    t0 = time.perf_counter()
    if args.worker == BASELINE:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(args.model_ref, device="cpu")

        def encode(batch: list[str]) -> np.ndarray:
            return model.encode(batch, batch_size=args.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        name = BASELINE
    else:
        encoder = backends.load_encoder(args.model_ref, args.worker, args.device)

        def encode(batch: list[str]) -> np.ndarray:
            return encoder.encode(batch, batch_size=args.batch_size)
        name = encoder.backend
    load_s = time.perf_counter() - t0
    encode(texts[:8])
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        vecs = encode(texts)
        best = min(best, time.perf_counter() - t0)
    np.save(args.out, np.asarray(vecs, dtype=np.float32))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"backend": name, "texts_per_s": len(texts) / best, "load_s": load_s,
                      "peak_rss_mb": rss_mb, "torch_imported": "torch" in sys.modules}))


def run_worker(which: str, args: argparse.Namespace, texts_file: Path, tmp: Path,
               env: dict[str, str]) -> dict:
    out = tmp / f"{which}.npy"
    cmd = [sys.executable, __file__, "--worker", which, "--texts", str(texts_file),
           "--out", str(out), "--model-ref", args.model_ref, "--device", args.device,
           "--batch-size", str(args.batch_size), "--repeat", str(args.repeat)]
    print(f"measuring {which} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        return {"backend": which, "error": f"exit {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["vectors"] = np.load(out)
    return result


def choose(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, float]:
    code = ("import sys; from feedbot import backends; "
            "print(backends.choose_backend(sys.argv[1], sys.argv[2]))")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, args.model_ref, args.device], env=env,
                          cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return proc.stdout.strip().splitlines()[-1], time.perf_counter() - t0


def cpus() -> str:
    """The CPUs this run may use: under taskset or a cpuset, fewer than the machine has."""
    total = os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    shown = f"{total} CPUs" if allowed == total else f"{allowed} of {total} CPUs (affinity)"
    quota = backends.cpu_quota()
    return shown if quota is None else f"{shown}, a CPU quota of {quota:g}"


def table(rows: list[dict], auto: str) -> str:
    base = next(r for r in rows if r["backend"] == BASELINE)
    lines = ["| backend | texts/s | × baseline | top-10 agreement | peak RSS (MB) | torch loaded |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | failed ({r['error']}) | | | | |")
            continue
        agreement = backends.topk_agreement(base["vectors"], r["vectors"], 0)
        label = r["label"] + (" ← auto" if r["backend"] == auto and r["label"] != "auto" else "")
        lines.append(f"| {label} | {r['texts_per_s']:.1f} | "
                     f"{r['texts_per_s'] / base['texts_per_s']:.2f} | {agreement:.4f} | "
                     f"{r['peak_rss_mb']:.0f} | {'yes' if r['torch_imported'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    texts = load_texts(Path(args.dev), args.n)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "FEEDBOT_HOME": args.home or str(tmp / "home"),
               "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        texts_file = tmp / "texts.json"
        texts_file.write_text(json.dumps(texts))
        auto, choose_s = choose(args, env)
        rows = []
        for which in [BASELINE, *args.backends.split(","), "auto"]:
            row = run_worker(which, args, texts_file, tmp, env)
            row["label"] = which if which != BASELINE else f"{BASELINE} (baseline, batch 32)"
            rows.append(row)
    print(f"{len(texts)} dev texts (title + abstract, max_seq_length 256), "
          f"batch size {args.batch_size}, best of {args.repeat}, {cpus()}\n")
    print(table(rows, auto))
    print(f"\nauto choice: {auto} (measuring it took {choose_s:.1f} s in a fresh process)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="number of dev texts")
    p.add_argument("--backends", default="fp32,bf16,onnx-fp32,onnx-int8,openvino-bf16")
    p.add_argument("--repeat", type=int, default=2, help="timed passes per backend (best kept)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--dev", default=str(DEV), help="dev set JSONL (id,title,abstract,...)")
    p.add_argument("--home", help="FEEDBOT_HOME to use (default: a fresh temporary one)")
    p.add_argument("--model-ref", default=None, help="model name or path (default: FEEDBOT_MODEL"
                   " or the packaged all-MiniLM-L6-v2)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model_ref is None:
        args.model_ref = resolve_model()[1]
    return args


if __name__ == "__main__":
    main()
