"""Embedding backends: the code that turns texts into vectors on this machine's hardware.

Backends of one sentence-transformers model (`BACKENDS`):
- `fp32`: plain sentence-transformers; the reference every other backend is checked against.
- `bf16`: the same model under torch autocast to bfloat16. Fast only on CPUs with native bf16
  matrix units (avx512_bf16 / AMX) or on GPUs; slower elsewhere, so `auto` offers it only there.
- `fp16`: half precision with large batches; CUDA only.
- `onnx-fp32` / `onnx-int8`: the transformer exported once with `torch.onnx.export` into
  `$FEEDBOT_HOME/models/<model>/`, int8 by onnxruntime's dynamic quantisation (per channel), run
  by onnxruntime with the model's own tokenizer (copied next to the ONNX file) and the pooling
  that the model's sentence-transformers modules (modules.json, 1_Pooling/config.json) specify.
  After the export they need neither torch nor sentence-transformers. The directory's name
  carries a hash of the model's files, so a model upgraded or edited in place is exported
  afresh; writing an export removes the older exports of the same model that no process uses
  (`prune_stale_exports`).
- `openvino-bf16`: the same ONNX export compiled by OpenVINO for the CPU with bf16 inference
  precision. OpenVINO fuses attention, GELU and layer norms around its bf16 matrix kernels,
  where torch autocast runs them one by one; on a CPU with avx512_bf16 it is about 1.5x faster
  than the `bf16` backend. Like `bf16`, `auto` offers it only on CPUs with native bf16.

`auto` (see `choose_backend`) times every backend offered on this machine on the probe set that
ships in `feedbot/data/probe.txt`, keeps those whose top-10 neighbour sets agree with fp32
(`topk_agreement` >= `MIN_AGREEMENT`) and takes the fastest; the choice is cached in
`$FEEDBOT_HOME/embed-backends.json` per model and machine, so it is measured once.

Must not: import torch, sentence-transformers or onnxruntime at module import time or to read a
cached choice (a digest over cached vectors must stay torch-free); know anything of the store or
of items; write stdout (measurements go to the log and to stderr); leave a half-written model in
the cache (exports are written to a temporary name and renamed).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("fp32", "bf16", "fp16", "onnx-fp32", "onnx-int8", "openvino-bf16")
MIN_AGREEMENT = 0.99  # top-10 agreement with fp32 that a backend needs to be chosen by `auto`
TOP_K = 10
MIN_TIMED_S = 1.0  # each backend's timing on the probe set covers at least this long
CHOICE_VERSION = 2  # bump when the way of choosing changes (a new probe set re-measures anyway)
CHOICE_FILE = "embed-backends.json"
PROBE_FILE = Path(__file__).parent / "data" / "probe.txt"
CPU_TOKEN_BUDGET = {"torch": 2048, "onnx": 1024}  # padded tokens per forward pass on a CPU
GPU_MIN_BATCH = 256
ONNX_META = "feedbot-onnx.json"
ONNX_FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model-int8.onnx"}
OPENVINO_PAD = 32  # openvino-bf16 pads batches to a multiple of this many tokens
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class BackendUnavailable(RuntimeError):
    """A known backend that cannot run here (no GPU, no onnxruntime, unsupported model)."""


class DeviceUnavailable(BackendUnavailable):
    """A device asked for by name (cuda, cuda:N, mps) that this machine or torch build lacks."""


class Encoder(Protocol):
    backend: str  # one of BACKENDS
    device: str  # "cpu", "cuda", "mps"

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, in input order."""
        ...


# ---------------------------------------------------------------------------------------------
# batching shared by all backends


def plan_batches(lengths: Sequence[int], max_batch: int, token_budget: int) -> list[np.ndarray]:
    """Index batches, longest texts first, so that little padding is computed.

    A batch holds at most `max_batch` texts and, padded to its longest text, at most
    `token_budget` tokens (but always at least one text). Callers put results back by index,
    so the output order is the input order.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch, token_budget // longest))
        batches.append(order[start:start + size])
        start += size
    return batches


def _normalise(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------------------------------
# sentence-transformers backends


def _load_sentence_transformer(model_ref: str, device: str, **model_kwargs: Any) -> Any:
    """The model `model_ref` as sentence-transformers loads it. A hub name whose files are all in
    the Hugging Face cache is loaded from there by path: by name, the hub asks the network
    first, unless HF_HUB_OFFLINE was set before it was imported, and with no network it retried
    each file for minutes (4 min for all-MiniLM) before it used the cached copy."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when the hub is imported
    if not Path(model_ref).exists():
        model_ref = str(complete_hub_snapshot(model_ref) or model_ref)
    from sentence_transformers import SentenceTransformer

    threads = thread_budget()
    if threads is not None and device == "cpu":  # torch keeps to the affinity, not to a quota
        import torch

        torch.set_num_threads(min(threads, torch.get_num_threads()))
    if Path(model_ref).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformer(model_ref, device=device, model_kwargs=model_kwargs or None)


# ---------------------------------------------------------------------------------------------
# a model's files, on disk or in the Hugging Face cache (read without torch or the network)

MODEL_MARKERS = ("modules.json", "config.json")
# Weights and tokenizer files by name (sharded weights come with an index file; SentencePiece
# and tiktoken tokenizers are single model files of various names).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "whitespacetokenizer_config.json")
TOKENIZER_SUFFIXES = (".model", ".spm", ".tiktoken")


def model_files_problem(path: Path) -> str | None:
    """Why the model directory `path` cannot be used as it is, or None. Looks at names only.

    Without its tokenizer files (tokenizer.json, vocab.txt...) a model still loads: transformers
    builds a tokenizer of the special tokens alone, every word becomes [UNK], and every text gets
    nearly the same vector, so a digest ranked noise and said nothing. Without its weights it
    fails deep in transformers; said here, `feedbot doctor` finds both without loading torch.
    """
    if not path.is_dir():
        return "not a directory (a model is a directory with config.json or modules.json)"
    if not any((path / f).is_file() for f in MODEL_MARKERS):
        return ("not a model directory: it has neither modules.json (sentence-transformers) "
                "nor config.json (transformers)")
    modules = _modules(path)
    for module in modules:  # Pooling's config, a Dense layer's weights... (Normalize has none)
        if module["path"] and not module["type"].endswith("Normalize") \
                and not (path / module["path"]).is_dir():
            return (f"the model at {path} has no {module['path']}/ folder (its modules.json "
                    "lists it); install it again, or choose another")
    # The weights and tokenizer that read the text are the first module's: a Transformer's, or
    # a StaticEmbedding's (static-retrieval-mrl-en-v1 keeps both in 0_StaticEmbedding/).
    folders = [path] + [path / m["path"] for i, m in enumerate(modules)
                        if m["path"] and (i == 0 or m["type"].endswith("Transformer"))]
    names = {f.name for folder in folders if folder.is_dir()
             for f in folder.iterdir() if f.is_file()}
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        return (f"the model at {path} has no weights (model.safetensors or pytorch_model.bin); "
                "install it again, or choose another")
    if not any(n in TOKENIZER_FILES or n.endswith(TOKENIZER_SUFFIXES) for n in names):
        return (f"the model at {path} has no tokenizer files (tokenizer.json or vocab.txt, or a "
                "SentencePiece .model file): it would read every word as unknown and rank "
                "noise; install it again, or choose another")
    return None


def _modules(path: Path) -> list[dict[str, str]]:
    """The modules a sentence-transformers model lists in modules.json (type and folder); none
    for a plain transformers model. Older models keep the Transformer in `0_Transformer/`."""
    try:
        listed = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [{"type": m["type"], "path": m["path"]} for m in listed if isinstance(m, dict)
            and isinstance(m.get("type"), str) and isinstance(m.get("path"), str)] \
        if isinstance(listed, list) else []


def _snapshot_names(ref: str) -> list[str]:
    """The hub repositories `ref` may be cached as: a bare name is loaded by sentence-transformers
    from its own organisation (`all-MiniLM-L12-v2` → `sentence-transformers/...`) first."""
    if ref.startswith(("/", "~", ".")) or ref.count("/") > 1 or "\\" in ref:
        return []
    return [ref] if "/" in ref else [f"sentence-transformers/{ref}", ref]


def hub_snapshot(ref: str) -> Path | None:
    """The folder of the Hugging Face cache's copy of the hub model `ref` (its `main` revision,
    which sentence-transformers loads), or None; whether it is whole, `model_files_problem`
    says. Touches no network, imports no torch.

    Found by its modules.json or config.json, not by `snapshot_download(local_files_only=True)`:
    that takes a snapshot for incomplete when any file of the repository's listing is missing,
    and sentence-transformers downloads only the files it loads (not a repository's onnx/ or
    openvino/ folders, nor pytorch_model.bin beside model.safetensors).
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when the hub is imported
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cache_dir = os.environ.get("SENTENCE_TRANSFORMERS_HOME") or None  # as sentence-transformers
    for name in _snapshot_names(ref):
        for marker in MODEL_MARKERS:
            try:
                found = try_to_load_from_cache(name, marker, cache_dir=cache_dir)
            except ValueError:  # not a valid repository name (HFValidationError)
                break
            if isinstance(found, str):
                return Path(found).parent
    return None


def complete_hub_snapshot(ref: str) -> Path | None:
    """`hub_snapshot(ref)` when it holds a usable model (`model_files_problem`), else None."""
    path = hub_snapshot(ref)
    return path if path is not None and model_files_problem(path) is None else None


class SentenceTransformerEncoder:
    """Plain sentence-transformers in fp32: the reference every other backend is checked against.

    `encode` batches by a token budget on CPU (measured: 4-8 whole abstracts per forward pass are
    faster than 32) and by at least `GPU_MIN_BATCH` texts on a GPU.
    """

    backend = "fp32"

    def __init__(self, model_ref: str, device: str, model: Any = None) -> None:
        self.device = device
        self.model = model if model is not None else _load_sentence_transformer(model_ref, device)

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        yield

    def _token_lengths(self, texts: list[str]) -> list[int]:
        tok = self.model.tokenizer
        if not callable(tok):  # a StaticEmbedding's `tokenizers.Tokenizer`, a WordEmbeddings'
            # WhitespaceTokenizer: no transformer reads the tokens, the words are the cost
            return [len(t.split()) for t in texts]
        ids = tok(texts, truncation=True, max_length=self.model.max_seq_length)["input_ids"]
        return [len(x) for x in ids]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        texts = list(texts)
        dim = self.model.get_embedding_dimension()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        if self.device == "cpu":
            batches = plan_batches(self._token_lengths(texts), batch_size,
                                   CPU_TOKEN_BUDGET["torch"])
        else:  # one call: sentence-transformers sorts by length and batches on the GPU itself
            batches = [np.arange(len(texts))]
            batch_size = max(batch_size, GPU_MIN_BATCH)
        with self._precision():
            for idx in batches:
                vecs = self.model.encode([texts[i] for i in idx], batch_size=batch_size,
                                         convert_to_numpy=True, show_progress_bar=False)
                out[idx] = np.asarray(vecs, dtype=np.float32)
        return _normalise(out)


class BF16Encoder(SentenceTransformerEncoder):
    """sentence-transformers under torch autocast to bfloat16 (weights stay fp32)."""

    backend = "bf16"

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        import torch

        device_type = "cuda" if self.device.startswith("cuda") else self.device
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield


class FP16Encoder(SentenceTransformerEncoder):
    """sentence-transformers with fp16 weights on a CUDA GPU, in large batches."""

    backend = "fp16"

    def __init__(self, model_ref: str, device: str, model: Any = None) -> None:
        if not device.startswith("cuda"):
            raise BackendUnavailable(f"the fp16 backend needs a CUDA GPU (device is {device!r})")
        super().__init__(model_ref, device, model)
        self.model.half()


# ---------------------------------------------------------------------------------------------
# ONNX export (once per model, atomic) and the onnxruntime backends


def onnx_dir(model_ref: str) -> Path:
    """`$FEEDBOT_HOME/models/<safe model name>-<hash>/`; the hash covers the model's files."""
    return models_dir() / f"{_slug(model_ref)}-{model_digest(model_ref)}"


def models_dir() -> Path:
    """`$FEEDBOT_HOME/models`, where the ONNX exports are."""
    from .config import feedbot_home

    return feedbot_home() / "models"


def _slug(model_ref: str) -> str:
    name = "-".join(Path(model_ref).parts[-2:]) if Path(model_ref).exists() else model_ref
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-60:].strip("_.") or "model"


def _model_source(model_ref: str) -> str:
    """Where the model comes from, as recorded in its export's metadata: the resolved path of
    a local model, else the name."""
    path = Path(model_ref)
    return str(path.resolve()) if path.exists() else model_ref


def model_digest(model_ref: str) -> str:
    """A short hash of `_model_signature`: it changes when a local model's files do."""
    return hashlib.sha256(_model_signature(model_ref).encode()).hexdigest()[:10]


def _model_signature(model_ref: str) -> str:
    """The reference, plus name/size/mtime of a local model's files: a changed model re-exports.
    Hidden files and folders are not the model's (`.git`, which a `git pull` that changes
    nothing still touches; `.cache`): they would throw every cached vector away."""
    path = Path(model_ref)
    if not path.is_dir():
        return model_ref
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    stats = [f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return "\n".join([str(path.resolve()), *stats])


def _atomic_write_bytes(dest: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _atomic_target(dest: Path) -> Iterator[Path]:
    """A temporary path next to `dest`; renamed onto `dest` only if the block completes."""
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_temps(directory: Path, older_than_s: float = 3600) -> None:
    """Temporary files and directories (`*.tmp`) that an interrupted export left behind."""
    now = time.time()
    for tmp in directory.glob("*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > older_than_s:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink()


def _lock_file(directory: Path) -> Path:
    return directory.parent / f"{directory.name}.lock"


@contextlib.contextmanager
def _export_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on `<directory>.lock` next to `directory` in the models dir, so that
    one process at a time exports or quantises a model (the others wait, then find it done).

    Without fcntl (Windows) it does nothing: exports still never leave a half-written file,
    but two processes may do the same work at once.
    """
    from .locks import exclusive

    directory.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(_lock_file(directory)):
        yield


@contextlib.contextmanager
def _use_lock(directory: Path) -> Iterator[None]:
    """A shared lock on the same file, held while a process reads the export (`_open_export`):
    readers do not wait for one another, and `prune_stale_exports` leaves the export alone
    meanwhile. Once loaded, nothing is read from the directory again."""
    from .locks import shared

    with shared(_lock_file(directory)):
        yield


def _onnx_meta(st: Any) -> dict[str, Any]:
    """What the ONNX runtime path must reproduce of the sentence-transformers pipeline."""
    kinds = [type(m).__name__ for m in st]
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
        raise BackendUnavailable(f"the ONNX backends support Transformer+Pooling(+Normalize) "
                                 f"models only, not {kinds}")
    pooling = st[1].get_config_dict().get("pooling_mode", "mean")
    if pooling not in ("mean", "cls", "max", "mean_sqrt_len_tokens"):
        raise BackendUnavailable(f"the ONNX backends do not support pooling {pooling!r}")
    return {"pooling": pooling, "max_seq_length": int(st.max_seq_length),
            "do_lower_case": bool(getattr(st[0], "do_lower_case", False)),
            "pad_id": int(st.tokenizer.pad_token_id or 0),
            "dim": int(st.get_embedding_dimension())}


def _hidden_state_module(model: Any, names: list[str]) -> Any:
    """The transformer as a module of positional `names` inputs returning its last hidden state."""
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(names, tensors, strict=True))).last_hidden_state

    return HiddenStates().eval()


_EXAMPLE = ["An example with padding.", "A longer example sentence, so that the batch is padded "
            "and the exported graph keeps its attention mask."]
_CHECK = ["Check", "a second, somewhat longer check of the exported graph", "and a third one here"]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _export_fp32(st: Any, dest: Path) -> None:
    """torch.onnx.export (TorchScript exporter: needs no onnxscript) with dynamic batch/length.

    The example batch is padded: traced from an unpadded one, the graph could drop the mask.
    """
    import torch

    inputs = st.tokenizer(_EXAMPLE, padding=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in inputs]
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; checked below instead
        torch.onnx.export(_hidden_state_module(st[0].auto_model, names),
                          tuple(inputs[n] for n in names), str(dest), dynamo=False,
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17)


def _quantise_int8(src: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # quantize_dynamic logs a pre-processing hint on root
    try:
        quantize_dynamic(str(src), str(dest), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def export_onnx(model_ref: str) -> Path:
    """Export `model_ref` to ONNX fp32 and int8 under `onnx_dir`, doing only what is missing.

    Every file is written under a temporary name and renamed into place, the model files last,
    so an interrupted export leaves no file that `OnnxEncoder` would load. Processes that
    export the same model at once take turns (`_export_lock`); each checks again, once it has
    the lock, what is still missing, so the model is exported once.
    """
    directory = onnx_dir(model_ref)
    if _missing_exports(directory) == (False, False):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with _export_lock(directory):
        # Again: a process that took it for stale (see prune_stale_exports) may have removed it.
        directory.mkdir(parents=True, exist_ok=True)
        need_fp32, need_int8 = _missing_exports(directory)
        _remove_stale_temps(directory)  # what a killed export left; none is running now
        if need_fp32:
            _export_fp32_dir(model_ref, directory)
        if need_int8:
            _quantise_int8_dir(directory)
    if need_fp32 or need_int8:
        try:
            prune_stale_exports(model_ref)
        except Exception as exc:  # noqa: BLE001 - tidying up; never worth failing the export
            log.debug("cannot prune stale ONNX exports of %s: %s", model_ref, exc)
    return directory


def onnx_export_complete(model_ref: str) -> bool:
    """Whether both ONNX models of `model_ref` are exported (then the model is not needed)."""
    return _missing_exports(onnx_dir(model_ref)) == (False, False)


def _missing_exports(directory: Path) -> tuple[bool, bool]:
    """(fp32 export incomplete, int8 model missing); every file in place means it is whole."""
    fp32 = directory / ONNX_FILES["onnx-fp32"]
    need_fp32 = not all(p.exists() for p in (directory / ONNX_META, directory / "tokenizer.json",
                                             fp32))
    return need_fp32, need_fp32 or not (directory / ONNX_FILES["onnx-int8"]).exists()


def _quantise_int8_dir(directory: Path) -> None:
    """The int8 model from the fp32 one, made in a private temporary directory.

    onnxruntime's quantiser writes a temporary file of a fixed name (`model-inferred.onnx`)
    next to its input: it gets a private link to (or copy of) the fp32 model to work on, and
    the finished int8 model is renamed into place.
    """
    with tempfile.TemporaryDirectory(dir=directory, prefix="quantise-", suffix=".tmp") as tmp:
        src = Path(tmp) / ONNX_FILES["onnx-fp32"]
        try:
            os.link(directory / ONNX_FILES["onnx-fp32"], src)
        except OSError:  # no hard links on this file system
            shutil.copyfile(directory / ONNX_FILES["onnx-fp32"], src)
        out = Path(tmp) / ONNX_FILES["onnx-int8"]
        _quantise_int8(src, out)
        os.replace(out, directory / ONNX_FILES["onnx-int8"])


def _export_fp32_dir(model_ref: str, directory: Path) -> None:
    """Tokenizer, pooling metadata and the fp32 graph (checked against torch) into `directory`."""
    log.info("exporting %s to ONNX in %s", model_ref, directory)
    (directory / ONNX_FILES["onnx-int8"]).unlink(missing_ok=True)  # it derives from the fp32 one
    st = _load_sentence_transformer(model_ref, "cpu", attn_implementation="eager")
    meta = {**_onnx_meta(st), "source": _model_source(model_ref)}
    with tempfile.TemporaryDirectory(dir=directory, suffix=".tmp") as tmp:
        st.tokenizer.save_pretrained(tmp)
        if not (Path(tmp) / "tokenizer.json").exists():
            raise BackendUnavailable("the ONNX backends need a fast tokenizer (tokenizer.json)")
        tokenizer_json = (Path(tmp) / "tokenizer.json").read_bytes()
    _atomic_write_bytes(directory / "tokenizer.json", tokenizer_json)
    _atomic_write_bytes(directory / ONNX_META, json.dumps(meta, indent=1).encode())
    with _atomic_target(directory / ONNX_FILES["onnx-fp32"]) as tmp_path:
        _export_fp32(st, tmp_path)
        _check_export(st, tmp_path, meta)


def _check_export(st: Any, path: Path, meta: dict[str, Any]) -> None:
    """The exported graph must reproduce sentence-transformers on a batch of another shape."""
    want = st.encode(_CHECK, convert_to_numpy=True, normalize_embeddings=True)
    session = _ort_session(path)
    got = OnnxEncoder.from_parts(session, path.parent / "tokenizer.json", meta, "onnx-fp32")
    cos = (got.encode(_CHECK) * want).sum(axis=1)
    if float(cos.min()) < 0.999:
        raise RuntimeError(f"the ONNX export disagrees with torch (cosine {cos.min():.4f})")


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.inter_op_num_threads = 1
    threads = thread_budget()
    if threads is not None:
        # onnxruntime's default is one thread per physical core of the whole machine, each pinned
        # to its core: that leaves taskset's CPUs (the process ran on all of them) and fails with
        # EINVAL inside a container's cpuset. Threads counted explicitly are not pinned, so they
        # keep the process's CPUs.
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_POOLERS = {
    "mean": lambda h, m: (h * m).sum(1) / np.maximum(m.sum(1), 1e-9),
    "mean_sqrt_len_tokens": lambda h, m: (h * m).sum(1) / np.sqrt(np.maximum(m.sum(1), 1e-9)),
    "max": lambda h, m: np.where(m > 0, h, -1e9).max(1),
    "cls": lambda h, m: h[:, 0],
}


_META_KEYS = {"pooling": str, "max_seq_length": int, "do_lower_case": bool, "pad_id": int,
              "dim": int}


def _read_meta(path: Path) -> dict[str, Any]:
    meta = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t)
                                         for k, t in _META_KEYS.items()) \
            or meta["pooling"] not in _POOLERS:
        raise ValueError(f"not feedbot's ONNX metadata: {str(meta)[:80]}")
    return meta


def _load_tokenizer(path: Path, meta: dict[str, Any]) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=meta["max_seq_length"])
    return tokenizer


def _open_export(model_ref: str, model_file: str,
                 open_model: Callable[[Path], Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(the opened model file, the tokenizer, the metadata) of the model's ONNX export.

    feedbot renames each file into place whole, but a file can still be damaged afterwards (a
    power cut before the data reached the disk leaves it empty; a sync tool, a user, a failing
    disk): the first part that does not load is removed, if no other process has replaced it
    meanwhile, and exported again, once. BackendUnavailable (the file is fine; this machine
    cannot run it) is not damage.
    """
    for attempt in (1, 2):
        directory = export_onnx(model_ref)
        part, seen = directory / ONNX_META, None
        try:
            with _use_lock(directory):  # read whole here: nothing is read lazily afterwards
                with contextlib.suppress(OSError):
                    os.utime(directory)  # last used: see prune_stale_exports
                seen = part.stat()
                meta = _read_meta(part)
                part, seen = directory / "tokenizer.json", None
                seen = part.stat()
                tokenizer = _load_tokenizer(part, meta)
                part, seen = directory / model_file, None
                seen = part.stat()
                return open_model(part), tokenizer, meta
        except (BackendUnavailable, MemoryError):
            raise
        except Exception as exc:
            if attempt == 2:
                raise
            why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            log.warning("cannot load %s (%s); exporting it again", part, why)
            if seen is not None:  # (a file gone since the export: exported again anyway)
                with _export_lock(directory), contextlib.suppress(OSError):
                    if os.path.samestat(part.stat(), seen):
                        part.unlink()
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# stale exports: older exports of the same model, left by upgrades and edits of the model

STALE_AFTER_S = 24 * 3600  # an export unused for this long may be removed, if no process uses it


@dataclass
class ExportInfo:
    """One export directory under `models_dir()`, as `feedbot doctor` shows it."""

    path: Path
    size: int  # bytes
    current: bool  # the export of the model as it is now
    stale: bool  # an older export of the same model: `prune_stale_exports` removes it
    idle_s: float  # seconds since it was last written or loaded


def _is_export(path: Path) -> bool:
    """A directory that feedbot exported to (its metadata file inside), not a link."""
    return path.is_dir() and not path.is_symlink() and (path / ONNX_META).is_file()


def _export_source(path: Path) -> str | None:
    """The model source recorded in an export's metadata (None: an export made before
    feedbot recorded it, or unreadable metadata)."""
    try:
        meta = json.loads((path / ONNX_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, str) else None


def _is_stale(path: Path, model_ref: str, current: Path) -> bool:
    """Whether `path` is an older export of `model_ref`: named like its current export, with
    another hash, and exported from the same place (the same directory or name), from a place
    that is gone (an uninstalled copy of the model, which nothing can load again), or by a
    feedbot that did not record the place."""
    if path.name == current.name or not _is_export(path):
        return False
    if not re.fullmatch(re.escape(_slug(model_ref)) + r"-[0-9a-f]{10}", path.name):
        return False
    source = _export_source(path)
    if source is None or source == _model_source(model_ref):
        return True
    return os.path.isabs(source) and not os.path.exists(source)


def _idle_s(path: Path, now: float) -> float:
    """Seconds since the directory or any entry in it was modified (a load touches it)."""
    times = [path.stat().st_mtime]
    for entry in path.iterdir():
        with contextlib.suppress(OSError):
            times.append(entry.stat().st_mtime)
    return now - max(times)


def _dir_size(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        with contextlib.suppress(OSError):
            if entry.is_file() and not entry.is_symlink():
                total += entry.stat().st_size
    return total


def list_exports(model_ref: str) -> list[ExportInfo]:
    """Every export directory under `models_dir()` (any model), the current one first, then
    by name. Reads only the file system; never imports the model code."""
    current, now = onnx_dir(model_ref), time.time()
    found = []
    with contextlib.suppress(OSError):
        for path in sorted(models_dir().iterdir()):
            with contextlib.suppress(OSError):
                if _is_export(path):
                    found.append(ExportInfo(path, _dir_size(path), path.name == current.name,
                                            _is_stale(path, model_ref, current),
                                            _idle_s(path, now)))
    return sorted(found, key=lambda e: not e.current)


def prune_stale_exports(model_ref: str, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the older exports of `model_ref` (`_is_stale`) that no process uses; called when
    a new export has been written. Returns those removed.

    An export is used while a process exports to it (`_export_lock`) or loads it (`_use_lock`,
    held until onnxruntime and OpenVINO have read the model file and the tokenizer its file;
    nothing is read from the directory afterwards): one whose lock is held is kept. So is one
    written or loaded less than `older_than_s` ago: a feedbot from before this lock existed
    (still running since the upgrade), or a system without flock, loads it unlocked. A removal
    that fails is logged at debug level and tried again after the next export.
    """
    from .locks import try_exclusive

    current, removed, now = onnx_dir(model_ref), [], time.time()
    try:
        paths = sorted(models_dir().iterdir())
    except OSError:
        return []
    for path in paths:
        try:
            if not _is_stale(path, model_ref, current):
                continue
            idle = _idle_s(path, now)
            if idle < older_than_s:
                log.debug("keeping %s: used %.0f s ago", path, idle)
                continue
            with try_exclusive(_lock_file(path)) as locked:
                if not locked:
                    log.debug("keeping %s: in use by another process", path)
                    continue
                if not _is_export(path):  # another process removed it meanwhile
                    continue
                size = _dir_size(path)
                _remove_export(path)
            removed.append(path)
            log.info("removed %s, an older ONNX export of %s (%.0f MB)", path, model_ref,
                     size / 1e6)
        except OSError as exc:
            log.debug("cannot remove the stale ONNX export %s: %s", path, exc)
    return removed


def _remove_export(path: Path) -> None:
    """Every entry, the metadata file last: a removal that fails half-way leaves a directory
    that is still recognisably an export (removed next time), which a process that wants it
    would complete again (`export_onnx` exports what is missing)."""
    for entry in sorted(path.iterdir(), key=lambda p: p.name == ONNX_META):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    path.rmdir()


class OnnxEncoder:
    """onnxruntime on CPU over an exported model; tokenizer via the `tokenizers` library."""

    device = "cpu"
    pad_multiple = 1  # batches are padded to the longest text only

    def __init__(self, model_ref: str, backend: str = "onnx-int8") -> None:
        if backend not in ONNX_FILES:
            raise ValueError(f"not an ONNX backend: {backend!r}")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable("the ONNX backends need onnxruntime: "
                                     "pip install onnxruntime onnx") from exc
        session, tokenizer, meta = _open_export(model_ref, ONNX_FILES[backend], _ort_session)
        self._setup(session, [i.name for i in session.get_inputs()], tokenizer, meta, backend)

    @classmethod
    def from_parts(cls, session: Any, tokenizer_json: Path, meta: dict[str, Any],
                   backend: str) -> OnnxEncoder:
        self = cls.__new__(cls)
        self._setup(session, [i.name for i in session.get_inputs()], tokenizer_json, meta,
                    backend)
        return self

    def _setup(self, session: Any, inputs: list[str], tokenizer: Path | Any,
               meta: dict[str, Any], backend: str) -> None:
        self.backend = backend
        self.session = session
        self.inputs = inputs  # the graph's input names, in the order it takes them
        self.meta = meta
        self.tokenizer = (_load_tokenizer(tokenizer, meta) if isinstance(tokenizer, Path)
                          else tokenizer)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        texts = [t.lower() for t in texts] if self.meta["do_lower_case"] else list(texts)
        out = np.zeros((len(texts), self.meta["dim"]), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        lengths = [len(e.ids) for e in encodings]
        for idx in plan_batches(lengths, batch_size, CPU_TOKEN_BUDGET["onnx"]):
            feeds = self._feeds([encodings[i] for i in idx])
            hidden = self._forward({k: feeds[k] for k in self.inputs})
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            out[idx] = _POOLERS[self.meta["pooling"]](hidden, mask)
        return _normalise(out)

    def _forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The transformer's last hidden state for one padded batch."""
        return self.session.run(None, feeds)[0]

    def _feeds(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        """One padded batch, `pad_multiple` tokens wide at a time (never past max_seq_length
        unless a text already is)."""
        width = max(len(e.ids) for e in encodings)
        if self.pad_multiple > 1:
            width = min(-(-width // self.pad_multiple) * self.pad_multiple,
                        max(width, self.meta["max_seq_length"]))
        ids = np.full((len(encodings), width), self.meta["pad_id"], dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class OpenVinoEncoder(OnnxEncoder):
    """OpenVINO on CPU over the ONNX export, in bf16 inference precision; no torch at run time.

    Tokenisation, batching and pooling are `OnnxEncoder`'s; only the forward pass differs.
    Compiling the graph takes about 0.5 s, so nothing is cached on disk. Batches are padded to
    a multiple of OPENVINO_PAD tokens: OpenVINO prepares its kernels for every new input shape,
    and with a few dozen widths instead of hundreds a first pass over new texts ran 10 % faster
    (measured: 52.7 → 58.2 texts/s), with runs far less uneven.
    """

    pad_multiple = OPENVINO_PAD

    def __init__(self, model_ref: str, backend: str = "openvino-bf16") -> None:
        if backend != "openvino-bf16":
            raise ValueError(f"not an OpenVINO backend: {backend!r}")
        try:
            import openvino
        except ImportError as exc:
            raise BackendUnavailable("the openvino-bf16 backend needs openvino: "
                                     "pip install openvino") from exc
        core = openvino.Core()

        def compile_bf16(path: Path) -> Any:
            model = core.read_model(str(path))  # fails on a damaged file: exported again
            try:
                config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16",
                                          "PERFORMANCE_HINT": "LATENCY"}
                threads = thread_budget()
                if threads is not None:  # OpenVINO keeps to the affinity, not to a quota
                    config["INFERENCE_NUM_THREADS"] = threads
                return core.compile_model(model, "CPU", config)
            except RuntimeError as exc:  # e.g. a CPU or build without bf16 support
                why = str(exc).splitlines()[0] if str(exc) else exc
                raise BackendUnavailable(f"OpenVINO cannot compile the model in bf16 here: "
                                         f"{why}") from exc

        compiled, tokenizer, meta = _open_export(model_ref, ONNX_FILES["onnx-fp32"],
                                                 compile_bf16)
        self._setup(None, [i.get_any_name() for i in compiled.inputs], tokenizer, meta, backend)
        self._output = compiled.output(0)
        self._request = compiled.create_infer_request()

    def _forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._request.infer(feeds)[self._output], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# devices, machines and the choice cache


def resolve_device(device: str = "auto") -> str:
    """`auto` → cuda, then mps, then cpu; a GPU asked for by name must be there.

    Raises DeviceUnavailable for `cuda`, `cuda:N` or `mps` where torch cannot use it (rather
    than torch's own error, an AssertionError or worse, on the first tensor moved there).
    """
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    problem = _device_problem(torch, device)
    if problem:
        raise DeviceUnavailable(problem)
    return device


def _device_problem(torch: Any, device: str) -> str | None:
    """Why torch cannot use `device` here, or None."""
    version = getattr(torch, "__version__", "?")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            built = getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None)
            why = "finds no CUDA GPU" if built else "was built without CUDA"
            return f"no CUDA device here (torch {version} {why})"
        index = device.partition(":")[2]
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            return (f"no CUDA device {index} here (torch sees {count}: cuda:0"
                    + (f" to cuda:{count - 1}" if count > 1 else "") + ")")
        return None
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            built = mps is not None and mps.is_built()
            why = "cannot use it on this machine" if built else "was built without MPS"
            return f"no MPS device here (torch {version} {why})"
        return None
    return None


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def cpu_has_native_bf16() -> bool:
    return bool(cpu_flags() & set(_BF16_FLAGS))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_fingerprint() -> dict[str, Any]:
    """What the speed of the backends depends on; read without importing torch. A process limited
    to some of the CPUs is another machine (`usable_cores`, absent when it may use them all, so
    an unrestricted process keeps the key it always had)."""
    cores = thread_budget()
    return {**_hardware_and_versions(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            **({} if cores is None else {"usable_cores": cores})}


_SYS_CPU = Path("/sys/devices/system/cpu")
_CGROUP_FS = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def thread_budget() -> int | None:
    """How many threads the embedding libraries should run when this process may not use the
    whole machine; None when it may. Two limits: the CPUs of its affinity (taskset, a cpuset:
    `restricted_cores`) and its cgroup's CPU quota (`docker --cpus 2`, a Kubernetes CPU limit:
    `cpu_quota`, rounded up). torch, OpenVINO and onnxruntime size their pools by the cores they
    see and ignore the quota, and more threads than the quota pays for wait out each period
    throttled: with 1 CPU of quota on this 2-core machine, matching the threads to it made
    openvino-bf16 15 % faster, and on a host with many cores the waste is many times that."""
    cores = restricted_cores()
    quota = cpu_quota()
    if quota is None:
        return cores
    try:
        allowed = cores if cores is not None else _physical_cores(
            frozenset(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    paid = max(1, math.ceil(quota - 1e-9))
    return paid if paid < allowed else cores


def cpu_quota() -> float | None:
    """CPUs' worth of time per period that this process's cgroups allow (the tightest along its
    path, cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`), or None when there is no quota or no
    cgroup to read. A container sees its own cgroup as the root of /sys/fs/cgroup, which the
    walk up the path reaches too."""
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    found: list[float] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: one unified hierarchy
            found += _quotas(_CGROUP_FS, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in (_CGROUP_FS / controllers, _CGROUP_FS / "cpu"):
                if mount.is_dir():
                    found += _quotas(mount, path, _v1_quota)
                    break
    return min(found) if found else None


def _quotas(root: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas set in the cgroup at `path` under `root` and in each of its ancestors."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    quotas = []
    for depth in range(len(parts), -1, -1):
        quota = read(root.joinpath(*parts[:depth]))
        if quota is not None:
            quotas.append(quota)
    return quotas


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period) if int(period) > 0 else None
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def restricted_cores() -> int | None:
    """The physical cores this process may run on when its CPU affinity (taskset, a container's
    cpuset) leaves out some of the machine's CPUs; None when it may use every CPU (or this system
    cannot say). torch and OpenVINO size their thread pools by the affinity themselves;
    onnxruntime does not (`_ort_session`)."""
    try:
        allowed = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None
    if not allowed or len(allowed) >= (os.cpu_count() or 0):
        return None
    return _physical_cores(allowed)


@functools.cache
def _physical_cores(cpus: frozenset[int]) -> int:
    """How many physical cores these logical CPUs are: hyperthread siblings count once, and a
    CPU whose topology cannot be read counts as a core of its own."""
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = _SYS_CPU / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


@functools.cache
def _hardware_and_versions() -> dict[str, Any]:
    """The parts that cannot change while a process runs, read once: `Embedder.model_id` asks
    for the choice key on every lookup, and reading /proc/cpuinfo and package metadata each
    time cost 16 ms per lookup."""
    cpu = ""
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else ""
    gpus = Path("/proc/driver/nvidia/gpus")
    flags = sorted(cpu_flags() & {*_BF16_FLAGS, "avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                  "amx_int8", "asimd", "sve"})
    return {"system": platform.system(), "machine": platform.machine(),
            "cpu": cpu or platform.processor(), "cores": os.cpu_count(), "cpu_flags": flags,
            "nvidia_gpus": sorted(p.name for p in gpus.iterdir()) if gpus.is_dir() else [],
            "torch": _version("torch"), "onnxruntime": _version("onnxruntime"),
            "openvino": _version("openvino"),
            "sentence_transformers": _version("sentence-transformers"),
            "choice_version": CHOICE_VERSION,
            "probe": hashlib.sha256(PROBE_FILE.read_bytes()).hexdigest()[:12]}


def choice_key(model_ref: str, device: str = "auto") -> str:
    """Cache key of a choice: the model, the requested device and a hash of the machine."""
    machine = json.dumps(machine_fingerprint(), sort_keys=True)
    return f"{model_ref}|{device}|{hashlib.sha256(machine.encode()).hexdigest()[:16]}"


def choice_file() -> Path:
    from .config import feedbot_home

    return feedbot_home() / CHOICE_FILE


def _read_choices() -> dict[str, Any]:
    try:
        data = json.loads(choice_file().read_text())
    except (OSError, ValueError):
        data = None
    choices = data if isinstance(data, dict) else {}
    return {**choices, **_UNSAVED.get(str(choice_file()), {})}


# Choices that could not be written (a read-only or full FEEDBOT_HOME), by choice file: kept for
# this process, so that it measures once; another process measures again.
_UNSAVED: dict[str, dict[str, Any]] = {}


def cached_choice(model_ref: str, device: str = "auto") -> dict[str, Any] | None:
    """The cached `auto` choice for this model and machine, or None. Never imports torch.

    A device asked for by name (`FEEDBOT_DEVICE=cpu`) takes the choice `auto` made for that
    same device: it measured the same backends on it."""
    choices = _read_choices()
    entry = choices.get(choice_key(model_ref, device))
    if not _usable(entry) and device != "auto":
        entry = choices.get(choice_key(model_ref, "auto"))
        if not (isinstance(entry, dict) and entry.get("device") == device):
            entry = None
    return entry if _usable(entry) else None


def _usable(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("backend") in BACKENDS


# Parts of the machine fingerprint that say which processors a process may use, not how they
# compute: a backend's agreement with fp32, measured on the same hardware and libraries, holds
# whatever they are.
_SCHEDULING_KEYS = ("cuda_visible_devices", "usable_cores")


def measurements(model_ref: str, device: str = "auto") -> dict[str, Any]:
    """Each backend's measurement (`texts_per_s`, `agreement` with fp32) for this model: those of
    the cached choice, else of the latest choice made on this machine under another
    CUDA_VISIBLE_DEVICES or CPU affinity. Never imports torch.

    Whether a backend's vectors share the cache with fp32's (`Embedder.model_id`) depends on
    its agreement alone; read from the cached choice only, a changed CUDA_VISIBLE_DEVICES (a new
    choice key) gave a forced backend's vectors a new key, and every item was embedded again.
    """
    entry = cached_choice(model_ref, device)
    if entry is None:
        here = _numerics(machine_fingerprint())
        found = [e for key, e in _read_choices().items()
                 if _usable(e) and isinstance(e.get("machine"), dict)
                 and key.rsplit("|", 2)[:2] == [model_ref, device]
                 and _numerics(e["machine"]) == here]
        entry = max(found, key=lambda e: str(e.get("chosen_at", "")), default=None)
    measured = entry.get("measured") if entry is not None else None
    return measured if isinstance(measured, dict) else {}


def _numerics(machine: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in machine.items() if k not in _SCHEDULING_KEYS}


@contextlib.contextmanager
def _choice_lock() -> Iterator[None]:
    """One process at a time measures and writes choices: two measuring at once would share
    the CPU and time each other's work (on 2 cores each ran at half speed), and each would
    write the file as it read it, dropping the other's new entry."""
    from .locks import exclusive

    path = choice_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(path.name + ".lock")):
        yield


def _store_choice(key: str, entry: dict[str, Any]) -> None:
    path = choice_file()
    choices = _read_choices()
    choices[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(path, json.dumps(choices, indent=1, sort_keys=True).encode())
    except OSError as exc:
        _UNSAVED.setdefault(str(path), {})[key] = entry
        log.warning("cannot save the embedding backend choice in %s (%s): it is used now and "
                    "measured again next time", path, exc.strerror or exc)
    else:
        _UNSAVED.get(str(path), {}).pop(key, None)


# ---------------------------------------------------------------------------------------------
# measuring and choosing


def load_probe() -> tuple[list[str], list[str]]:
    """(queries, documents) of the packaged probe set."""
    queries, docs = [], []
    for line in PROBE_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("Q "):
            queries.append(line[2:])
        elif line.startswith("D "):
            docs.append(line[2:])
    return queries, docs


def topk_agreement(ref: np.ndarray, got: np.ndarray, n_queries: int, k: int = TOP_K) -> float:
    """How well `got` keeps the rankings of `ref` (rows: `n_queries` queries, then documents).

    Every row, queries and documents alike, ranks the documents by cosine (a document never ranks
    itself); the agreement is the mean, over rows, of |top-k(ref) ∩ top-k(got)| / k. 1.0 means
    every neighbour set is unchanged. Using the documents as queries too makes the estimate far
    less grainy than the few queries alone (213 rows instead of 13).
    """
    k = min(k, len(ref) - n_queries - 1)
    if k < 1:
        return 1.0
    tops = []
    for vecs in (ref, got):
        scores = vecs @ vecs[n_queries:].T
        rows = np.arange(n_queries, len(vecs))
        scores[rows, rows - n_queries] = -np.inf
        tops.append(np.argsort(-scores, axis=1, kind="stable")[:, :k])
    overlaps = [len(set(a) & set(b)) for a, b in zip(tops[0], tops[1], strict=True)]
    return float(np.mean(overlaps)) / k


@dataclass
class Measurement:
    backend: str
    texts_per_s: float
    agreement: float


def candidates(device: str) -> list[str]:
    """The backends `auto` tries on `device`, fp32 (the reference) first."""
    if device.startswith("cuda"):
        return ["fp32", "fp16"]
    if device != "cpu":
        return ["fp32"]
    native_bf16 = cpu_has_native_bf16()
    found = ["fp32"] + (["bf16"] if native_bf16 else [])
    if _version("onnxruntime") is not None:
        found += ["onnx-fp32", "onnx-int8"]
        if native_bf16 and _version("openvino") is not None:
            found.append("openvino-bf16")
    return found


def _load_candidates(model_ref: str, device: str, names: Sequence[str]) -> dict[str, Encoder]:
    """The encoders that load here (the first, fp32, must); torch backends share one model."""
    encoders: dict[str, Encoder] = {}
    st_model = None
    for name in names:
        try:
            encoders[name] = _make_encoder(model_ref, name, device, st_model)
        except Exception as exc:  # a candidate that fails is skipped; the reference may not
            if not encoders:
                raise
            _report(f"  {name}: unavailable ({exc})")
            continue
        st_model = getattr(encoders[name], "model", st_model) if name == "fp32" else st_model
    return encoders


def _timed(encoder: Encoder, texts: list[str], batch_size: int,
           min_s: float = MIN_TIMED_S, max_passes: int = 20) -> tuple[float, np.ndarray]:
    """Texts/s of the best pass. Passes repeat until they add up to `min_s`: on a CPU one pass
    over the probe set takes seconds, on a GPU well under 0.1 s, where a single pass is noise."""
    best, spent, passes = float("inf"), 0.0, 0
    while passes == 0 or (spent < min_s and passes < max_passes):
        t0 = time.perf_counter()
        vecs = encoder.encode(texts, batch_size)
        elapsed = time.perf_counter() - t0
        best, spent, passes = min(best, elapsed), spent + elapsed, passes + 1
    return len(texts) / max(best, 1e-9), vecs


def measure(model_ref: str, device: str, backends: Sequence[str],
            batch_size: int = 32) -> list[Measurement]:
    """Time each backend on the probe set and compare its rankings with the first (fp32).

    The contenders (agreeing, and within 1.5x of the fastest) are timed a second time, after
    all others, and keep their better time: one pass alone is at the mercy of other processes.
    """
    queries, docs = load_probe()
    texts = queries + docs
    encoders = _load_candidates(model_ref, device, backends)
    results, ref = {}, None
    for name, encoder in encoders.items():
        # Warm-up. On a GPU (CUDA or MPS), the whole probe set: each new batch shape loads and
        # tunes kernels on first use; on an H200 a warm-up of 8 texts left fp16 timed at a
        # tenth of its speed. A CPU pass takes seconds, so 8 texts do there.
        encoder.encode(texts[:8] if encoder.device == "cpu" else texts, batch_size)
        speed, vecs = _timed(encoder, texts, batch_size)
        ref = vecs if ref is None else ref
        results[name] = Measurement(name, speed, topk_agreement(ref, vecs, len(queries)))
    good = [m for m in results.values() if m.agreement >= MIN_AGREEMENT]
    fastest = max(m.texts_per_s for m in good)
    for m in good:
        if m.texts_per_s * 1.5 >= fastest:
            m.texts_per_s = max(m.texts_per_s, _timed(encoders[m.backend], texts, batch_size)[0])
    for m in results.values():
        _report(f"  {m.backend}: {m.texts_per_s:.1f} texts/s, top-{TOP_K} agreement with fp32 "
                f"{m.agreement:.3f}")
    del encoders
    gc.collect()
    return list(results.values())


def choose_backend(model_ref: str, device: str = "auto", *, remeasure: bool = False) -> str:
    """The fastest backend agreeing with fp32 on this machine; measured once, then cached.

    Processes take turns (`_choice_lock`): one that waited finds the choice made."""
    key = choice_key(model_ref, device)
    entry = None if remeasure else cached_choice(model_ref, device)
    if entry is not None and not _exports_writable_again(entry):
        return entry["backend"]
    with _choice_lock():
        entry = None if remeasure else cached_choice(model_ref, device)
        if entry is not None and not _exports_writable_again(entry):
            return entry["backend"]
        return _measure_and_store(key, model_ref, device)


def _exports_writable_again(entry: dict[str, Any]) -> bool:
    """Whether `entry` was measured without the ONNX backends because the models directory could
    not be written then (read-only, a file in its place), and it can be now: measured again."""
    return bool(entry.get("exports_unwritable")) and _exports_writable()


def _exports_writable() -> bool:
    """Whether an export can be written under `models_dir()` now: a file is made (and removed)
    in it, or in the nearest folder above it that exists; as root, permissions say nothing."""
    folder = models_dir()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:  # read-only, full, or not a directory (a file where models/ should be)
        return False
    return True


def _measure_and_store(key: str, model_ref: str, device: str) -> str:
    resolved = resolve_device(device)
    _report(f"feedbot: choosing an embedding backend for {model_ref} on {resolved} "
            "(once per FEEDBOT_HOME, machine and model)")
    results = measure(model_ref, resolved, candidates(resolved))
    good = [m for m in results if m.agreement >= MIN_AGREEMENT]  # fp32 always is
    best = max(good, key=lambda m: m.texts_per_s)
    _report(f"feedbot: embedding backend {best.backend} "
            f"({best.texts_per_s / results[0].texts_per_s:.2f}x fp32)")
    entry = {"backend": best.backend, "device": resolved, "model": model_ref,
             "chosen_at": datetime.now(UTC).isoformat(timespec="seconds"),
             "machine": machine_fingerprint(),
             "measured": {m.backend: {"texts_per_s": round(m.texts_per_s, 2),
                                      "agreement": round(m.agreement, 4)}
                          for m in results}}
    # The backends that run from an export, left out because it could not be written: this
    # choice holds until the models directory can be written, then it is measured again (it
    # was kept for good, and the ONNX backends never tried again).
    left_out = [b for b in candidates(resolved) if b not in entry["measured"]
                and (b in ONNX_FILES or b == "openvino-bf16")]
    if left_out and not _exports_writable():
        entry["exports_unwritable"] = left_out
        _report(f"feedbot: {', '.join(left_out)} left out: {models_dir()} cannot be written; "
                "measured again once it can")
    _store_choice(key, entry)
    return best.backend


def _report(message: str) -> None:
    """Say `message` on stderr once: through the log where its INFO lines reach stderr
    (`feedbot run`, `-v`), else printed (a CLI command, whose log shows warnings only).
    Both, as before, put every measurement line twice in `feedbot run`'s log."""
    log.info("%s", message)
    if not _info_reaches_stderr():
        print(message, file=sys.stderr)


def _info_reaches_stderr() -> bool:
    """Whether an INFO line of this module's logger is written to stderr by some handler."""
    if not log.isEnabledFor(logging.INFO):
        return False
    logger: logging.Logger | None = log
    while logger is not None:
        for h in logger.handlers:
            if (isinstance(h, logging.StreamHandler) and h.level <= logging.INFO
                    and getattr(h, "stream", None) is sys.stderr):
                return True
        logger = logger.parent if logger.propagate else None
    return False


def _unknown(backend: str) -> ValueError:
    return ValueError(f"unknown embedding backend {backend!r}; choose from auto, "
                      + ", ".join(BACKENDS))


def _make_encoder(model_ref: str, backend: str, device: str, st_model: Any = None) -> Encoder:
    if backend in ONNX_FILES:
        return OnnxEncoder(model_ref, backend)
    if backend == "openvino-bf16":
        return OpenVinoEncoder(model_ref, backend)
    classes = {"fp32": SentenceTransformerEncoder, "bf16": BF16Encoder, "fp16": FP16Encoder}
    if backend not in classes:
        raise _unknown(backend)
    device = resolve_device(device)
    if backend == "fp16" and not device.startswith("cuda"):
        raise BackendUnavailable(f"the fp16 backend needs a CUDA GPU (device is {device!r})")
    if st_model is not None and backend == "fp16":
        st_model = None  # .half() would change the shared fp32 model
    return classes[backend](model_ref, device, st_model)


def load_encoder(model_ref: str, backend: str = "auto", device: str = "auto") -> Encoder:
    """An encoder for `backend` (`auto`: the cached or freshly measured choice).

    Under `auto`, a chosen backend that no longer loads (its export cannot be written on a full
    disk, OpenVINO refuses the model...) gives way to fp32, with a warning: fp32 is the
    reference, its vectors share the cache with every backend `auto` may choose.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise _unknown(backend)
    if (backend in ONNX_FILES or backend == "openvino-bf16") \
            and device.startswith(("cuda", "mps")):
        raise BackendUnavailable(f"the {backend} backend runs on the CPU only, and the device "
                                 f"asked for is {device}")
    if backend == "auto":
        backend = choose_backend(model_ref, device)
        device = (cached_choice(model_ref, device) or {}).get("device", device)
        if backend != "fp32":
            try:
                return _make_encoder(model_ref, backend, device)
            except DeviceUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - reported, and fp32 does the work
                why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                log.warning("embedding backend %s unavailable (%s); using fp32", backend, why)
                backend = "fp32"
    return _make_encoder(model_ref, backend, device)


def describe(model_ref: str, device: str = "auto") -> dict[str, Any]:
    """What `feedbot doctor` shows about embedding on this machine; never imports torch."""
    entry = cached_choice(model_ref, device)
    return {"model": model_ref, "device_requested": device,
            "device": entry["device"] if entry else None,
            "backend": entry["backend"] if entry else None,
            "measured": entry["measured"] if entry else None,
            "cpu_native_bf16": cpu_has_native_bf16(), "machine": machine_fingerprint(),
            "choice_file": str(choice_file()), "onnx_dir": str(onnx_dir(model_ref))}
