"""A digest over cached items must not import torch or sentence-transformers (issue 6): the
model is loaded only when a text has no vector yet."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from feedbot.digest import stage_vectors
from feedbot.embed import DEFAULT_MODEL, Embedder
from feedbot.items import Item, content_hash
from feedbot.roadmap import load_roadmap
from feedbot.store import Store

PROBE = """
import json, sys
from feedbot.cli import main
try:
    main(["digest", "--no-collect", "--format", "json"])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers", "onnxruntime",
                           "openvino", "sklearn") if m in sys.modules)
print(json.dumps({"heavy": heavy, "code": code}), file=sys.stderr)
"""


class _CacheOnly:
    """Stands in for the encoder while the cache is filled: it must never be asked."""

    backend = "fp32"
    device = "cpu"

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        v = rng.standard_normal((len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_cached_digest_imports_no_model_code(feedbot_env: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store = Store.open(feedbot_env)
    items = [Item(f"Convolutional networks, note {i}", f"https://e.org/{i}", "Blog",
                  published=now - timedelta(hours=i), summary="Image classification.")
             for i in range(20)]
    store.upsert_items(items, now)
    emb = Embedder(backend="fp32")
    emb._encoder = _CacheOnly()  # fills the cache under the real model id
    assert emb.model_id == DEFAULT_MODEL
    stage_vectors(store, emb, load_roadmap())
    from feedbot.embed import embed_cached

    embed_cached(store, emb, [i.embed_text for i in items], [content_hash(i.embed_text)
                                                             for i in items])
    store.close()
    sources = tmp_path / "sources.yaml"
    sources.write_text("learner: {stage: cnn}\nblogs:\n  - {name: Blog, url: 'https://e.org/f'}\n")
    env = dict(os.environ, FEEDBOT_SOURCES=str(sources), FEEDBOT_EMBED_BACKEND="fp32")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=120)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), out.stderr
    assert report["heavy"] == []
    digest = json.loads(out.stdout)
    assert len(digest["items"]) == 10 and digest["demo"] is False
