"""Which layers of the model can run in int8 and still rank like fp32? Run by hand.

    python benchmarks/int8_layers.py [--n 300] [--repeat 2] [--home DIR]

The `onnx-int8` backend quantises every weight matrix (onnxruntime `quantize_dynamic`, int8
weights per channel, activations per batch) and is ~2x faster than fp32 here, but its top-10
agreement with fp32 is ~0.93, below the 0.99 that `auto` requires. This benchmark asks whether a
subset of the layers can be quantised at >= 0.99: it quantises the fp32 export that feedbot makes
(`backends.export_onnx`) one group of matrices at a time (attention Q/K/V, attention output,
FFN in, FFN out; one transformer layer alone) and measures, in this process and this run:

- texts/s over whole title+abstract dev texts (best of `--repeat`, after a warm-up),
  and the ratio against the onnx-fp32 export and against sentence-transformers fp32 (batch 32),
  both measured in the same run;
- top-10 agreement with fp32 on the packaged probe set (the number `auto` decides by), and over
  the dev texts (every text ranking the others), and the lowest cosine between the two vectors
  of one text.

Prints a markdown table on stdout; progress on stderr. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embed import DEV, load_texts  # noqa: E402  (benchmarks/embed.py: the same dev texts)

from feedbot import backends  # noqa: E402
from feedbot.embed import resolve_model  # noqa: E402

# node-name patterns of the linear layers in the exported BERT-style graph
GROUPS = {
    "qkv": ("/attention/self/query/", "/attention/self/key/", "/attention/self/value/"),
    "attn-out": ("/attention/output/dense/",),
    "ffn-in": ("/intermediate/dense/",),
    "ffn-out": ("/output/dense/",),
}


def linear_nodes(model_path: Path) -> dict[str, list[str]]:
    """MatMul node names with a constant weight, by group (ffn-out excludes attention output)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    weights = {i.name for i in graph.initializer}
    found: dict[str, list[str]] = {g: [] for g in GROUPS}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        for group, patterns in GROUPS.items():
            if any(p in node.name for p in patterns) and not (
                    group == "ffn-out" and "/attention/" in node.name):
                found[group].append(node.name)
                break
    return found


def quantise(src: Path, dest: Path, nodes: list[str], reduce_range: bool = False) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(src), str(dest), per_channel=True, weight_type=QuantType.QInt8,
                         reduce_range=reduce_range, nodes_to_quantize=nodes,
                         extra_options={"MatMulConstBOnly": True,
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)
    return dest


def onnx_encoder(path: Path, directory: Path) -> backends.OnnxEncoder:
    meta = json.loads((directory / backends.ONNX_META).read_text())
    return backends.OnnxEncoder.from_parts(backends._ort_session(path),
                                           directory / "tokenizer.json", meta, "onnx-fp32")


def timed(encode: Any, texts: list[str], repeat: int) -> tuple[float, np.ndarray]:
    encode(texts[:8])
    best, vecs = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        vecs = encode(texts)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best, np.asarray(vecs, dtype=np.float32)


def main() -> None:
    args = parse_args()
    texts = load_texts(Path(args.dev), args.n)
    queries, docs = backends.load_probe()
    probe = queries + docs
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["FEEDBOT_HOME"] = args.home or str(tmp / "home")
        model_ref = resolve_model()[1]
        print("exporting the fp32 ONNX model ...", file=sys.stderr, flush=True)
        directory = backends.export_onnx(model_ref)
        fp32 = directory / backends.ONNX_FILES["onnx-fp32"]
        nodes = linear_nodes(fp32)
        every = [n for group in nodes.values() for n in group]
        variants: list[tuple[str, list[str], bool]] = [
            ("all linear layers (= onnx-int8)", every, False),
            ("all, reduce_range", every, True),
            *[(f"{g} only", nodes[g], False) for g in GROUPS],
            ("all but ffn-out", [n for n in every if n not in nodes["ffn-out"]], False),
            ("layer 0 only", [n for n in every if "/layer.0/" in n], False),
            ("layer 5 only", [n for n in every if "/layer.5/" in n], False),
        ]

        print("measuring sentence-transformers fp32 ...", file=sys.stderr, flush=True)
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model_ref, device="cpu")

        def st_encode(batch: list[str]) -> np.ndarray:
            return st.encode(batch, batch_size=32, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
        st_speed, _ = timed(st_encode, texts, args.repeat)
        ref_enc = onnx_encoder(fp32, directory)
        ref_speed, ref_dev = timed(ref_enc.encode, texts, args.repeat)
        ref_probe = ref_enc.encode(probe)
        rows = [("none: onnx-fp32 (baseline)", 0, ref_speed, 1.0, 1.0, 1.0)]
        for i, (label, chosen, reduce_range) in enumerate(variants):
            print(f"measuring {label} ...", file=sys.stderr, flush=True)
            path = quantise(fp32, tmp / f"v{i}.onnx", chosen, reduce_range)
            enc = onnx_encoder(path, directory)
            speed, vecs = timed(enc.encode, texts, args.repeat)
            rows.append((label, len(chosen), speed,
                         backends.topk_agreement(ref_probe, enc.encode(probe), len(queries)),
                         backends.topk_agreement(ref_dev, vecs, 0),
                         float((ref_dev * vecs).sum(axis=1).min())))

    print(f"{len(texts)} dev texts, best of {args.repeat}, {os.cpu_count()} cores; "
          f"sentence-transformers fp32 (batch 32): {st_speed:.1f} texts/s\n")
    print("| int8 matrices | count | texts/s | × onnx-fp32 | × st-fp32 | probe top-10 agreement "
          "| dev top-10 agreement | min cosine |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, count, speed, probe_agree, dev_agree, cos in rows:
        print(f"| {label} | {count} | {speed:.1f} | {speed / ref_speed:.2f} | "
              f"{speed / st_speed:.2f} | {probe_agree:.3f} | {dev_agree:.3f} | {cos:.4f} |")
    print(f"\n`auto` needs probe agreement >= {backends.MIN_AGREEMENT}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="number of dev texts")
    p.add_argument("--repeat", type=int, default=2, help="timed passes per variant (best kept)")
    p.add_argument("--dev", default=str(DEV), help="dev set JSONL (id,title,abstract,...)")
    p.add_argument("--home", help="FEEDBOT_HOME holding an ONNX export (default: a fresh one)")
    return p.parse_args()


if __name__ == "__main__":
    main()
