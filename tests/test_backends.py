"""Embedding backends: every backend available here agrees with fp32, `auto` is measured once and
cached, unknown backends are refused, and an interrupted ONNX export is never used.

Loads the real packaged all-MiniLM-L6-v2 (shared with the session's `real_embedder`); exports it to
ONNX once per module into a module-scoped FEEDBOT_HOME.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feedbot import backends

pytestmark = pytest.mark.model

TEXTS = [
    "Convolutional networks for image classification on small datasets",
    "",
    "A tutorial on backpropagation. " * 80,  # longer than max_seq_length: truncated like ST
    "Locality sensitive hashing finds near duplicates in massive document collections.",
    "Kaggle tips: target encoding, adversarial validation and ensembling gradient boosted trees",
    "word2vec",
    "We study mixed precision training on GPUs and how loss scaling avoids fp16 underflow. " * 3,
]
MIN_COSINE = {"fp32": 0.9999, "onnx-fp32": 0.9999, "bf16": 0.999, "fp16": 0.999,
              "onnx-int8": 0.98, "openvino-bf16": 0.999}


@pytest.fixture(scope="module")
def model_ref(real_embedder) -> str:  # type: ignore[no-untyped-def]
    return real_embedder.model_ref


@pytest.fixture(scope="module")
def reference(real_embedder) -> np.ndarray:  # type: ignore[no-untyped-def]
    """fp32 vectors straight from sentence-transformers, one batch, no backend code."""
    st = real_embedder.encoder.model
    return np.asarray(st.encode(TEXTS, batch_size=32, normalize_embeddings=True))


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory: pytest.TempPathFactory, model_ref: str) -> Path:
    """A FEEDBOT_HOME holding the ONNX export of the model, made once for this module."""
    home = tmp_path_factory.mktemp("onnx-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEEDBOT_HOME", str(home))
        backends.export_onnx(model_ref)
    return home


def available() -> list[str]:
    names = ["fp32", "bf16"]  # bf16 runs on any CPU; auto offers it only where it is fast
    if backends._version("onnxruntime"):
        names += ["onnx-fp32", "onnx-int8"]
        if backends._version("openvino"):  # bf16 where the CPU has it, else OpenVINO's fp32
            names.append("openvino-bf16")
    return names


@pytest.mark.parametrize("backend", available())
def test_backend_agrees_with_fp32(backend: str, model_ref: str, reference: np.ndarray,
                                  real_embedder, onnx_home: Path,  # type: ignore[no-untyped-def]
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBOT_HOME", str(onnx_home))
    st = real_embedder.encoder.model
    encoder = backends._make_encoder(model_ref, backend, "cpu", st)
    assert encoder.backend == backend
    vecs = encoder.encode(TEXTS, batch_size=3)  # small batches: order must survive the batching
    assert vecs.shape == reference.shape and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    cosines = _cosines(vecs, reference, backend)
    assert cosines.min() >= MIN_COSINE[backend], cosines
    assert encoder.encode([], batch_size=3).shape == (0, reference.shape[1])


def _cosines(vecs: np.ndarray, reference: np.ndarray, backend: str) -> np.ndarray:
    cosines = (vecs * reference).sum(axis=1)
    if backend == "onnx-int8":  # the empty text is just [CLS] [SEP]: int8 noise is largest there
        cosines = np.delete(cosines, TEXTS.index(""))
    return cosines


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_offers_the_bf16_backends_only_on_cpus_with_native_bf16(
        native_bf16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(backends, "_version", lambda package: "1.0")  # every package installed
    found = backends.candidates("cpu")
    assert found[0] == "fp32" and {"onnx-fp32", "onnx-int8"} <= set(found)
    assert ({"bf16", "openvino-bf16"} <= set(found)) is native_bf16
    assert not {"bf16", "openvino-bf16"} & set(found) or native_bf16
    monkeypatch.setattr(backends, "_version",
                        lambda package: None if package == "openvino" else "1.0")
    assert "openvino-bf16" not in backends.candidates("cpu")
    assert backends.candidates("cuda:0") == ["fp32", "fp16"]


class _ClockedEncoder:
    """Stands in for a GPU backend: each pass costs `warm` seconds of a fake clock, or `cold`
    the first time it sees a batch of that many texts (kernels loaded and tuned on first use)."""

    def __init__(self, backend: str, device: str, clock: list[float], warm: float,
                 cold: float | None = None) -> None:
        self.backend, self.device, self.clock = backend, device, clock
        self.warm, self.cold = warm, cold if cold is not None else warm
        self.calls: list[int] = []

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.clock[0] += self.warm if len(texts) in self.calls else self.cold
        self.calls.append(len(texts))
        rng = np.random.default_rng(0)  # the same vectors from every backend: full agreement
        return backends._normalise(rng.normal(size=(len(texts), 8)).astype(np.float32))


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [0.0]
    monkeypatch.setattr(backends, "time", type("FakeTime", (), {
        "perf_counter": staticmethod(lambda: clock[0])}))
    return clock


@pytest.mark.parametrize(("step", "passes"), [(3.0, 1), (0.3, 4), (0.05, 20), (0.001, 20)])
def test_fast_backends_are_timed_over_several_passes(fake_clock: list[float], step: float,
                                                     passes: int) -> None:
    encoder = _ClockedEncoder("fp16", "cuda", fake_clock, warm=step)
    speed, vecs = backends._timed(encoder, ["t"] * 10, 32)
    assert len(encoder.calls) == passes and vecs.shape == (10, 8)
    assert speed == pytest.approx(10 / step)


def test_gpu_backend_cold_on_new_shapes_is_warmed_on_the_whole_probe(
        fake_clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    """On an H200, `auto` chose fp32 over fp16 (1.55x faster) because fp16 was timed on its
    first pass over the probe's batch shape, ten times slower than the next."""
    monkeypatch.setattr(backends, "load_probe", lambda: (["q"] * 3, ["d"] * 24))
    encoders = {"fp32": _ClockedEncoder("fp32", "cuda", fake_clock, warm=0.07),
                "fp16": _ClockedEncoder("fp16", "cuda", fake_clock, warm=0.045, cold=0.7)}
    monkeypatch.setattr(backends, "_load_candidates", lambda *a: dict(encoders))
    results = {m.backend: m for m in backends.measure("model", "cuda", ["fp32", "fp16"])}
    assert encoders["fp16"].calls[0] == 27  # warmed on the whole probe set
    assert results["fp16"].texts_per_s == pytest.approx(27 / 0.045)
    assert results["fp16"].texts_per_s > results["fp32"].texts_per_s
    assert results["fp16"].agreement == 1.0

    cpu = _ClockedEncoder("fp32", "cpu", fake_clock, warm=3.0)
    monkeypatch.setattr(backends, "_load_candidates", lambda *a: {"fp32": cpu})
    backends.measure("model", "cpu", ["fp32"])
    assert cpu.calls[0] == 8  # a CPU pass takes seconds: a short warm-up, one timed pass


def test_plan_batches_keeps_every_index_once_within_the_budget() -> None:
    lengths = [5, 300, 40, 256, 7, 7, 120]
    batches = backends.plan_batches(lengths, max_batch=4, token_budget=512)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert flat[0] == 1  # longest first
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 512


def test_topk_agreement() -> None:
    rng = np.random.default_rng(0)
    vecs = backends._normalise(rng.normal(size=(60, 16)))
    assert backends.topk_agreement(vecs, vecs, n_queries=5) == 1.0
    noisy = backends._normalise(vecs + rng.normal(scale=0.3, size=vecs.shape))
    assert 0.0 < backends.topk_agreement(vecs, noisy, n_queries=5) < 1.0


def test_unknown_backend_is_a_clear_error(model_ref: str) -> None:
    with pytest.raises(ValueError, match=r"unknown embedding backend 'int3'.*onnx-int8"):
        backends.load_encoder(model_ref, "int3", "cpu")
    with pytest.raises(backends.BackendUnavailable, match="CUDA"):
        backends.load_encoder(model_ref, "fp16", "cpu")


def test_auto_is_measured_once_then_read_from_the_cache(
        model_ref: str, monkeypatch: pytest.MonkeyPatch, feedbot_env: Path) -> None:
    queries, docs = backends.load_probe()
    assert len(queries) >= 10 and len(docs) >= 150
    monkeypatch.setattr(backends, "load_probe", lambda: (queries[:3], docs[:24]))
    monkeypatch.setattr(backends, "candidates", lambda device: ["fp32", "bf16"])
    calls = []
    real_measure = backends.measure
    monkeypatch.setattr(backends, "measure",
                        lambda *a, **k: calls.append(a) or real_measure(*a, **k))

    chosen = backends.choose_backend(model_ref, "cpu")
    assert chosen in ("fp32", "bf16") and len(calls) == 1
    entry = json.loads((feedbot_env / backends.CHOICE_FILE).read_text())
    (saved,) = entry.values()
    assert saved["backend"] == chosen and set(saved["measured"]) == {"fp32", "bf16"}
    assert backends.choose_backend(model_ref, "cpu") == chosen and len(calls) == 1
    assert backends.describe(model_ref, "cpu")["backend"] == chosen

    other = {**backends.machine_fingerprint(), "torch": "0.0"}
    monkeypatch.setattr(backends, "machine_fingerprint", lambda: other)
    assert backends.cached_choice(model_ref, "cpu") is None  # another machine measures again


def test_a_device_named_takes_the_choice_auto_made_for_it(model_ref: str,
                                                         feedbot_env: Path) -> None:
    """`FEEDBOT_DEVICE=cpu` on a machine where `auto` had chosen for the CPU measured every
    backend again (25 s): the choice was keyed by the setting, not the device."""
    feedbot_env.mkdir(parents=True, exist_ok=True)
    path = feedbot_env / backends.CHOICE_FILE
    auto = {"backend": "onnx-fp32", "device": "cpu", "measured": {}}
    path.write_text(json.dumps({backends.choice_key(model_ref, "auto"): auto}))
    assert backends.cached_choice(model_ref, "cpu") == auto
    assert backends.cached_choice(model_ref, "cuda") is None  # measured on another device
    path.write_text(json.dumps({backends.choice_key(model_ref, "auto"): {**auto,
                                                                        "device": "cuda"}}))
    assert backends.cached_choice(model_ref, "cpu") is None


def test_cached_auto_choice_never_imports_torch(model_ref: str, feedbot_env: Path) -> None:
    key = backends.choice_key(model_ref, "auto")
    feedbot_env.mkdir(parents=True, exist_ok=True)
    (feedbot_env / backends.CHOICE_FILE).write_text(json.dumps(
        {key: {"backend": "onnx-int8", "device": "cpu", "measured": {}}}))
    code = ("import sys; from feedbot.embed import Embedder; e = Embedder(); "
            "print(e.model_id, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBOT_")}
    env["FEEDBOT_HOME"] = str(feedbot_env)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out[0].endswith("#onnx-int8") and out[1] == "False"


def _copy_fp32_export(onnx_home: Path, model_ref: str) -> Path:
    """A private copy of the module's export, without the int8 model."""
    src = onnx_home / "models" / backends.onnx_dir(model_ref).name
    dest = backends.onnx_dir(model_ref)  # under the test's own FEEDBOT_HOME
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model-int8.onnx"))
    return dest


def test_an_interrupted_export_is_never_used(model_ref: str, onnx_home: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _copy_fp32_export(onnx_home, model_ref)

    class Killed(BaseException):
        pass

    def dies_half_way(src: Path, dest: Path) -> None:
        dest.write_bytes(b"\x08\x07half an onnx file")
        raise Killed

    real_quantise = backends._quantise_int8
    monkeypatch.setattr(backends, "_quantise_int8", dies_half_way)
    with pytest.raises(Killed):
        backends.OnnxEncoder(model_ref, "onnx-int8")
    assert not (directory / "model-int8.onnx").exists()
    assert not list(directory.glob("*.tmp"))

    (directory / "model-int8.onnx.999.1.tmp").write_bytes(b"left by a SIGKILL")
    monkeypatch.setattr(backends, "_quantise_int8", real_quantise)
    vecs = backends.OnnxEncoder(model_ref, "onnx-int8").encode(TEXTS[:2])
    assert vecs.shape == (2, 384)


def test_a_damaged_model_file_is_exported_again(model_ref: str, onnx_home: Path,
                                                reference: np.ndarray) -> None:
    directory = _copy_fp32_export(onnx_home, model_ref)
    (directory / "model-int8.onnx").write_bytes(b"not a model")
    vecs = backends.OnnxEncoder(model_ref, "onnx-int8").encode(TEXTS)
    assert _cosines(vecs, reference, "onnx-int8").min() >= MIN_COSINE["onnx-int8"]


def _write_choice(home: Path, model_ref: str, backend: str, measured: dict[str, float]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    key = backends.choice_key(model_ref, "auto")
    (home / backends.CHOICE_FILE).write_text(json.dumps({key: {
        "backend": backend, "device": "cpu",
        "measured": {b: {"agreement": a, "texts_per_s": 1.0} for b, a in measured.items()}}}))


def test_backends_measured_to_agree_share_the_vector_cache(model_ref: str,
                                                           feedbot_env: Path) -> None:
    from feedbot.embed import DEFAULT_MODEL, Embedder

    _write_choice(feedbot_env, model_ref, "bf16", {"fp32": 1.0, "bf16": 0.996,
                                                   "onnx-int8": 0.93})
    assert Embedder().model_id == DEFAULT_MODEL  # bf16 agreed: the same vector space
    _write_choice(feedbot_env, model_ref, "onnx-int8", {"fp32": 1.0, "onnx-int8": 0.93})
    assert Embedder().model_id == DEFAULT_MODEL + "#onnx-int8"  # disagrees: its own space
    assert Embedder(backend="bf16").model_id == DEFAULT_MODEL + "#bf16"  # forced, not measured
    _write_choice(feedbot_env, model_ref, "onnx-fp32", {"fp32": 1.0, "onnx-fp32": None})
    assert Embedder().model_id == DEFAULT_MODEL + "#onnx-fp32"  # hand-edited: not a TypeError


def test_a_local_model_replaced_in_place_gets_its_own_vector_space(model_ref: str,
                                                                   tmp_path: Path) -> None:
    """A model fine-tuned or copied over the one in FEEDBOT_MODEL's directory kept the old
    cache key: its vectors were ranked with the old model's (cosine 0.44 between the cached
    vector of a text and the new model's)."""
    from feedbot.embed import Embedder

    local = tmp_path / "my-model"
    for f in Path(model_ref).rglob("*"):  # links, not a 90 MB copy
        if f.is_file():
            (local / f.relative_to(model_ref)).parent.mkdir(parents=True, exist_ok=True)
            (local / f.relative_to(model_ref)).symlink_to(f)
    before = Embedder(model=str(local), backend="fp32").model_id
    assert before.startswith(f"path:{local.resolve()}")
    assert Embedder(model=str(local), backend="fp32").model_id == before  # stable
    pooling = local / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.unlink()
    pooling.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False,
                                   "pooling_mode_cls_token": True}))
    after = Embedder(model=str(local), backend="fp32").model_id
    assert after != before and after.startswith(f"path:{local.resolve()}")


def test_a_few_texts_are_embedded_without_torch(model_ref: str, onnx_home: Path,
                                               reference: np.ndarray, feedbot_env: Path) -> None:
    _copy_fp32_export(onnx_home, model_ref)
    _write_choice(feedbot_env, model_ref, "bf16", {"fp32": 1.0, "bf16": 0.996,
                                                   "onnx-fp32": 1.0})
    code = ("import json, sys; from feedbot.embed import Embedder; e = Embedder(); "
            f"v = e.embed({TEXTS!r}); "
            "print(json.dumps([v.tolist(), 'torch' in sys.modules, e.loaded]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBOT_")}
    env["FEEDBOT_HOME"] = str(feedbot_env)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    vecs, torch_imported, main_loaded = json.loads(out)
    assert torch_imported is False and main_loaded is False  # ONNX did it; bf16 never loaded
    cos = (np.asarray(vecs) * reference).sum(axis=1)
    assert cos.min() >= MIN_COSINE["onnx-fp32"]


def test_concurrent_exports_take_turns(feedbot_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports of one model at once (two `feedbot digest`s in a fresh FEEDBOT_HOME) broke
    each other: onnxruntime's quantiser writes `model-inferred.onnx`, a fixed name, next to
    its input. Here the heavy steps are slow stand-ins that use fixed-name temporary files
    the same way: the export lock must make the two take turns, and the second must find the
    work done."""
    busy: list[str] = []
    runs = {"fp32": 0, "int8": 0}
    overlaps: list[str] = []

    def slow_step(step: str, scratch: Path, write: list[Path]) -> None:
        if busy:
            overlaps.append(f"{step} while {busy}")
        busy.append(step)
        runs[step] += 1
        scratch.write_bytes(step.encode())  # like model-inferred.onnx: a shared name
        time.sleep(0.3)
        content = scratch.read_bytes()  # FileNotFoundError / wrong content when raced
        scratch.unlink()
        for p in write:
            p.write_bytes(content)
        busy.remove(step)

    def fake_export(model_ref: str, directory: Path) -> None:
        slow_step("fp32", directory / "export-scratch", [directory / backends.ONNX_META,
                                                         directory / "tokenizer.json",
                                                         directory / "model.onnx"])

    def fake_quantise(src: Path, dest: Path) -> None:
        assert src.read_bytes() == b"fp32"
        slow_step("int8", src.with_name("model-inferred.onnx"), [dest])

    monkeypatch.setattr(backends, "_export_fp32_dir", fake_export)
    monkeypatch.setattr(backends, "_quantise_int8", fake_quantise)
    results: list[Path] = []
    errors: list[BaseException] = []

    def export() -> None:
        try:
            results.append(backends.export_onnx("some/model"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=export) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not overlaps
    assert runs == {"fp32": 1, "int8": 1}  # the second found both files done
    directory = backends.onnx_dir("some/model")
    assert results == [directory, directory]
    assert (directory / "model.onnx").read_bytes() == b"fp32"
    assert (directory / "model-int8.onnx").read_bytes() == b"int8"
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [backends.ONNX_META, "tokenizer.json", "model.onnx", "model-int8.onnx"])


def test_two_processes_quantise_one_model_at_once(model_ref: str, onnx_home: Path,
                                                  reference: np.ndarray,
                                                  feedbot_env: Path) -> None:
    """The real quantiser, in two processes at once: both succeed, and the int8 model loads."""
    directory = _copy_fp32_export(onnx_home, model_ref)
    code = ("import sys; from feedbot import backends; "
            "print(backends.export_onnx(sys.argv[1]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBOT_")}
    env["FEEDBOT_HOME"] = str(feedbot_env)
    procs = [subprocess.Popen([sys.executable, "-c", code, model_ref], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parents[1]) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == str(directory)
    assert not list(directory.glob("*.tmp")) and not list(directory.glob("*inferred*"))
    vecs = backends.OnnxEncoder(model_ref, "onnx-int8").encode(TEXTS)
    assert _cosines(vecs, reference, "onnx-int8").min() >= MIN_COSINE["onnx-int8"]


def test_a_named_gpu_that_is_not_here_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(backends.DeviceUnavailable,
                       match=r"^no CUDA device here \(torch .* was built without CUDA\)$"):
        backends.resolve_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(backends.DeviceUnavailable, match=r"torch .* finds no CUDA GPU"):
        backends.resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert backends.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(backends.DeviceUnavailable,
                       match=r"no CUDA device 2 here \(torch sees 2: cuda:0 to cuda:1\)"):
        backends.resolve_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(backends.DeviceUnavailable, match="^no MPS device here"):
        backends.resolve_device("mps")
    assert backends.resolve_device("cpu") == "cpu"


def test_a_model_in_the_hub_cache_loads_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                model_ref: str, reference: np.ndarray) -> None:
    """A hub name that is not packaged but already downloaded needs no network."""
    from feedbot.embed import Embedder, model_problem

    repo = tmp_path / "st-cache" / "models--someone--minilm-copy"
    shutil.copytree(model_ref, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "st-cache"))
    monkeypatch.setenv("FEEDBOT_MODEL", "someone/minilm-copy")
    assert model_problem("someone/minilm-copy") is None
    assert model_problem(model_ref) is None  # a path
    assert "not on this machine" in (model_problem("someone/elsewhere") or "")
    vecs = Embedder(backend="fp32", device="cpu").embed(TEXTS)
    cosines = np.delete((vecs * reference).sum(axis=1), 2)  # 2 is truncated (may differ: ST)
    assert cosines.min() >= MIN_COSINE["fp32"]


def test_an_unloadable_model_is_found_only_when_something_needs_embedding(
        monkeypatch: pytest.MonkeyPatch, model_ref: str, onnx_home: Path,
        feedbot_env: Path) -> None:
    """Constructing the embedder, or reading a cached choice, asks neither the hub nor torch;
    and a complete ONNX export runs without the model it came from."""
    from feedbot import embed

    asked: list[str] = []
    monkeypatch.setattr(embed, "model_problem", lambda ref: asked.append(ref) or "gone")
    monkeypatch.setenv("FEEDBOT_MODEL", "someone/not-here")
    e = embed.Embedder()
    _write_choice(feedbot_env, "someone/not-here", "onnx-int8", {"onnx-int8": 0.93})
    assert e.model_id == "someone/not-here#onnx-int8" and asked == []
    with pytest.raises(embed.EmbedSettingError, match="^FEEDBOT_MODEL=someone/not-here: gone$"):
        embed.Embedder(backend="fp32").encoder  # noqa: B018

    monkeypatch.setenv("FEEDBOT_HOME", str(onnx_home))
    monkeypatch.setattr(embed, "model_problem", lambda ref: "gone")
    encoder = embed.Embedder(model=model_ref, backend="onnx-fp32").encoder
    assert encoder.backend == "onnx-fp32"  # the export sufficed: no check, no error


def test_a_backend_that_cannot_run_here_is_a_setting_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FEEDBOT_EMBED_BACKEND=fp16 on a machine without CUDA was a traceback."""
    from feedbot.embed import Embedder, EmbedSettingError

    monkeypatch.setenv("FEEDBOT_EMBED_BACKEND", "fp16")
    with pytest.raises(EmbedSettingError,
                       match=r"^FEEDBOT_EMBED_BACKEND=fp16: the fp16 backend needs a CUDA GPU"):
        Embedder(device="cpu").encoder  # noqa: B018


def test_a_directory_that_holds_no_model_is_a_setting_error(tmp_path: Path) -> None:
    """FEEDBOT_MODEL=~/papers (a directory, not a model) was a transformers traceback."""
    from feedbot.embed import Embedder, EmbedSettingError

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(EmbedSettingError, match="not a model directory"):
        Embedder(model=str(tmp_path), backend="fp32").encoder  # noqa: B018
    with pytest.raises(EmbedSettingError, match="not a directory"):
        Embedder(model=str(tmp_path / "notes.txt"), backend="fp32").encoder  # noqa: B018


def test_a_model_directory_with_damaged_files_is_a_setting_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights missing or cut short (or 1_Pooling/ gone): a traceback from deep in
    transformers or safetensors, and `search` said "search again for more"."""
    from feedbot import backends
    from feedbot.embed import Embedder, EmbedSettingError

    for name in ("config.json", "modules.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("[]")  # all there by name: damaged inside

    class SafetensorError(Exception):  # safetensors' own error is a bare Exception
        pass

    def damaged(ref: str, backend: str, device: str) -> Any:
        raise SafetensorError("Error while deserializing header: MetadataIncompleteBuffer")

    monkeypatch.setattr(backends, "load_encoder", damaged)
    with pytest.raises(EmbedSettingError, match=r"the model at .* cannot be loaded \("
                                                r"SafetensorError: Error while deserializing"):
        Embedder(model=str(tmp_path), backend="fp32").encoder  # noqa: B018

    def no_torch(ref: str, backend: str, device: str) -> Any:
        raise ModuleNotFoundError("No module named 'torch'")

    monkeypatch.setattr(backends, "load_encoder", no_torch)  # not the model's: as it was
    with pytest.raises(ModuleNotFoundError):
        Embedder(model=str(tmp_path), backend="fp32").encoder  # noqa: B018


def test_damaged_export_files_are_exported_again(model_ref: str, onnx_home: Path,
                                                 reference: np.ndarray) -> None:
    """An empty tokenizer.json or metadata file (a power cut after the rename), or a damaged
    model.onnx under OpenVINO, failed every run, since only onnxruntime's model file was ever
    exported again."""
    directory = _copy_fp32_export(onnx_home, model_ref)
    (directory / backends.ONNX_META).write_bytes(b"")
    (directory / "tokenizer.json").write_bytes(b"")
    vecs = backends.OnnxEncoder(model_ref, "onnx-fp32").encode(TEXTS)
    assert _cosines(vecs, reference, "onnx-fp32").min() >= MIN_COSINE["onnx-fp32"]
    if backends._version("openvino"):
        (directory / "model.onnx").write_bytes(b"\x08\x07not a model")
        vecs = backends.OpenVinoEncoder(model_ref).encode(TEXTS)
        assert _cosines(vecs, reference, "openvino-bf16").min() >= MIN_COSINE["openvino-bf16"]
    assert not list(directory.glob("*.tmp"))


def test_auto_falls_back_to_fp32_when_its_choice_cannot_load(
        model_ref: str, real_embedder, feedbot_env: Path,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The choice, onnx-fp32, measured when the disk had room; its export since deleted to free
    space cannot be written again: every digest failed with 'No space left on device'."""
    import errno

    from feedbot.embed import DEFAULT_MODEL, Embedder

    def disk_full(model_ref: str, directory: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(backends, "_export_fp32_dir", disk_full)
    monkeypatch.setattr(backends, "_load_sentence_transformer",
                        lambda *a, **k: real_embedder.encoder.model)
    _write_choice(feedbot_env, model_ref, "onnx-fp32", {"fp32": 1.0, "onnx-fp32": 1.0})
    emb = Embedder()
    assert emb.model_id == DEFAULT_MODEL
    vecs = emb.embed(TEXTS)
    assert emb.backend_name == "fp32" and emb.model_id == DEFAULT_MODEL  # the same vectors
    assert vecs.shape == (len(TEXTS), 384)
    assert "embedding backend onnx-fp32 unavailable" in caplog.text
    assert "No space left on device" in caplog.text


def _fake_measurements(calls: list[str]):  # type: ignore[no-untyped-def]
    def measure(model_ref: str, device: str, names: list[str],
                batch_size: int = 32) -> list[backends.Measurement]:
        calls.append(model_ref)
        time.sleep(0.3)  # long enough for the other thread to arrive meanwhile
        return [backends.Measurement("fp32", 10.0, 1.0),
                backends.Measurement("onnx-fp32", 20.0, 1.0)]
    return measure


def test_processes_choosing_at_once_measure_once(feedbot_env: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A `feedbot digest` started while `feedbot run` measured `auto` measured too: both at
    half speed on a 2-core machine, and the last to write could drop the other's entry."""
    calls: list[str] = []
    monkeypatch.setattr(backends, "measure", _fake_measurements(calls))
    chosen: list[str] = []
    threads = [threading.Thread(target=lambda m=m: chosen.append(
        backends.choose_backend(m, "cpu"))) for m in ("model/a", "model/a", "model/b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(calls) == ["model/a", "model/b"] and chosen == ["onnx-fp32"] * 3
    assert sorted(e["model"] for e in json.loads(
        (feedbot_env / backends.CHOICE_FILE).read_text()).values()) == ["model/a", "model/b"]
    assert sorted(p.name for p in feedbot_env.iterdir()) == [backends.CHOICE_FILE]  # no lock


def test_a_choice_that_cannot_be_saved_is_used_and_kept_for_the_process(
        feedbot_env: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A full (or read-only) FEEDBOT_HOME: the measurement's 25 s ended in a traceback."""
    import errno

    calls: list[str] = []
    monkeypatch.setattr(backends, "measure", _fake_measurements(calls))

    def disk_full(dest: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(backends, "_atomic_write_bytes", disk_full)
    monkeypatch.setattr(backends, "_UNSAVED", {}, raising=False)
    assert backends.choose_backend("model/a", "cpu") == "onnx-fp32"
    assert backends.choose_backend("model/a", "cpu") == "onnx-fp32" and calls == ["model/a"]
    assert "cannot save the embedding backend choice" in caplog.text
    assert not (feedbot_env / backends.CHOICE_FILE).exists()


# --- stale exports: an upgraded or edited model leaves its older exports behind --------------

_FAKE_META = {"pooling": "mean", "max_seq_length": 16, "do_lower_case": False, "pad_id": 0,
              "dim": 4}


def _local_model(tmp_path: Path, name: str = "mymodel") -> str:
    """A local model directory (a path: its export's name carries a hash of its files)."""
    model = tmp_path / "models-src" / name / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    return str(model)


def _fake_export(name: str, source: str | None, idle_s: float = 2 * 86400) -> Path:
    """An export directory, as feedbot writes it, last written or used `idle_s` ago."""
    directory = backends.models_dir() / name
    directory.mkdir(parents=True)
    meta = {**_FAKE_META, **({"source": source} if source is not None else {})}
    (directory / backends.ONNX_META).write_text(json.dumps(meta))
    for file in ("tokenizer.json", "model.onnx", "model-int8.onnx"):
        (directory / file).write_bytes(b"x" * 100)
    _idle(directory, idle_s)
    return directory


def _idle(directory: Path, idle_s: float) -> None:
    when = time.time() - idle_s
    for p in [*directory.iterdir(), directory]:
        os.utime(p, (when, when))


def _fake_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the export (tens of seconds) and the quantisation."""
    def export(model_ref: str, directory: Path) -> None:
        (directory / backends.ONNX_META).write_text(json.dumps(
            {**_FAKE_META, "source": backends._model_source(model_ref)}))
        (directory / "tokenizer.json").write_text("{}")
        (directory / "model.onnx").write_bytes(b"fp32")

    monkeypatch.setattr(backends, "_export_fp32_dir", export)
    monkeypatch.setattr(backends, "_quantise_int8", lambda src, dest: dest.write_bytes(b"int8"))


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_new_export_removes_the_older_exports_of_the_same_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each upgrade of the packaged model (or edit of a local one) changes the hash in the
    export's name: the old 113 MB exports stayed for ever."""
    _fake_steps(monkeypatch)
    model = _local_model(tmp_path)
    slug = backends.onnx_dir(model).name.rsplit("-", 1)[0]
    same = _fake_export(f"{slug}-0000000001", str(Path(model).resolve()))
    legacy = _fake_export(f"{slug}-0000000002", None)  # from a feedbot that recorded no source
    gone = _fake_export(f"{slug}-0000000003", str(tmp_path / "an-uninstalled-copy" / "model"))
    assert backends.export_onnx(model) == backends.onnx_dir(model)
    assert not same.exists() and not legacy.exists() and not gone.exists()
    current = backends.onnx_dir(model)
    assert _names(backends.models_dir()) == [current.name]  # and no lock file left
    assert json.loads((current / backends.ONNX_META).read_text())["source"] == \
        str(Path(model).resolve())
    old = _fake_export(f"{slug}-0000000004", str(Path(model).resolve()))
    assert backends.export_onnx(model) == current  # nothing written: nothing pruned
    assert old.exists()


def test_exports_of_other_models_and_other_directories_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_steps(monkeypatch)
    model = _local_model(tmp_path)
    slug = backends.onnx_dir(model).name.rsplit("-", 1)[0]
    other_model = _fake_export("someone_other-model-0000000001", "someone/other-model")
    # The same model installed elsewhere too (another virtual environment): its own export.
    elsewhere = _local_model(tmp_path / "venv2")
    other_copy = _fake_export(f"{slug}-0000000002", str(Path(elsewhere).resolve()))
    not_ours = backends.models_dir() / f"{slug}-0000000003"  # no feedbot metadata inside
    not_ours.mkdir()
    (not_ours / "model.onnx").write_bytes(b"someone else's")
    _idle(not_ours, 3 * 86400)
    odd_name = _fake_export(f"{slug}-backup", str(Path(model).resolve()))
    linked = backends.models_dir() / f"{slug}-0000000004"
    linked.symlink_to(_fake_export("elsewhere", str(Path(model).resolve())))
    a_file = backends.models_dir() / f"{slug}-0000000005"
    a_file.write_text("a file")
    backends.export_onnx(model)
    for kept in (other_model, other_copy, not_ours, odd_name, linked, a_file):
        assert kept.exists(), kept
    assert (not_ours / "model.onnx").read_bytes() == b"someone else's"


def test_a_stale_export_in_use_or_used_recently_is_kept(tmp_path: Path) -> None:
    """Another process may still use the old export: one exporting it holds its lock, one
    loading it holds it shared; a feedbot from before the upgrade loads it unlocked, so one
    used within a day is kept too."""
    from feedbot.locks import exclusive, shared

    model = _local_model(tmp_path)
    slug = backends.onnx_dir(model).name.rsplit("-", 1)[0]
    source = str(Path(model).resolve())
    recent = _fake_export(f"{slug}-0000000001", source, idle_s=3600)
    exporting = _fake_export(f"{slug}-0000000002", source)
    loading = _fake_export(f"{slug}-0000000003", source)
    with exclusive(backends._lock_file(exporting)), shared(backends._lock_file(loading)), \
            shared(backends._lock_file(loading)):  # two loading at once
        assert backends.prune_stale_exports(model) == []
    assert recent.exists() and exporting.exists() and loading.exists()
    assert sorted(backends.prune_stale_exports(model)) == [exporting, loading]  # now unused
    assert recent.exists()
    assert _names(backends.models_dir()) == [recent.name]  # the lock files went with them


@pytest.mark.real_clock  # file times against the clock: see tests/clock_ahead.py
def test_loading_an_export_marks_it_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_open_export` holds the shared lock while it reads, and touches the directory."""
    _fake_steps(monkeypatch)
    model = _local_model(tmp_path)
    directory = backends.export_onnx(model)
    _idle(directory, 3 * 86400)
    seen: list[bool] = []

    def open_model(path: Path) -> str:
        from feedbot.locks import try_exclusive

        with try_exclusive(backends._lock_file(directory)) as free:
            seen.append(free)
        return "model"

    monkeypatch.setattr(backends, "_load_tokenizer", lambda path, meta: "tokenizer")
    assert backends._open_export(model, "model.onnx", open_model)[0] == "model"
    assert seen == [False]  # a pruner would have kept it
    assert time.time() - directory.stat().st_mtime < 3600
    assert not backends._lock_file(directory).exists()


def test_an_export_removed_while_waiting_for_its_lock_is_written_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that took the export for stale removed it while this one waited to export."""
    _fake_steps(monkeypatch)
    model = _local_model(tmp_path)
    real_lock = backends._export_lock

    @contextlib.contextmanager
    def pruned_meanwhile(directory: Path):  # type: ignore[no-untyped-def]
        shutil.rmtree(directory, ignore_errors=True)
        with real_lock(directory):
            yield

    monkeypatch.setattr(backends, "_export_lock", pruned_meanwhile)
    directory = backends.export_onnx(model)
    assert backends._missing_exports(directory) == (False, False)


def test_a_failed_removal_is_a_debug_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    _fake_steps(monkeypatch)
    model = _local_model(tmp_path)
    slug = backends.onnx_dir(model).name.rsplit("-", 1)[0]
    stale = _fake_export(f"{slug}-0000000001", str(Path(model).resolve()))

    def refused(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(backends, "_remove_export", refused)
    with caplog.at_level(logging.DEBUG, logger="feedbot.backends"):
        assert backends.export_onnx(model) == backends.onnx_dir(model)
    assert stale.exists()
    assert [r.levelno for r in caplog.records if "cannot remove" in r.message] == [logging.DEBUG]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    monkeypatch.setattr(backends, "prune_stale_exports", lambda m: 1 / 0)  # any error at all
    shutil.rmtree(backends.onnx_dir(model))
    with caplog.at_level(logging.DEBUG, logger="feedbot.backends"):
        assert backends.export_onnx(model) == backends.onnx_dir(model)
    assert "cannot prune stale ONNX exports" in caplog.text


def test_a_half_removed_export_stays_recognisable(tmp_path: Path) -> None:
    """The metadata file goes last: a removal that stops half-way is tried again later."""
    stale = _fake_export("x-0000000001", "x")
    order: list[str] = []
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        order.append(self.name)
        real_unlink(self, missing_ok=missing_ok)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "unlink", unlink)
        backends._remove_export(stale)
    assert order[-1] == backends.ONNX_META and not stale.exists()


def test_the_real_export_path_removes_older_exports(model_ref: str, onnx_home: Path) -> None:
    """Through the real quantiser, as an upgrade finds it: older exports of the packaged model
    made before feedbot recorded their source (this machine held three), one used an hour ago."""
    current = _copy_fp32_export(onnx_home, model_ref)
    assert json.loads((current / backends.ONNX_META).read_text())["source"] == \
        str(Path(model_ref).resolve())
    slug = current.name.rsplit("-", 1)[0]
    old = _fake_export(f"{slug}-0123456789", None)
    recent = _fake_export(f"{slug}-9876543210", None, idle_s=3600)
    other = _fake_export("someone_other-model-0123456789", None)
    vecs = backends.OnnxEncoder(model_ref, "onnx-int8").encode(TEXTS[:2])  # quantises: prunes
    assert vecs.shape == (2, 384)
    assert not old.exists() and recent.exists() and other.exists()
    assert _names(backends.models_dir()) == sorted([current.name, recent.name, other.name])


_THREAD_CPUS = """
import glob, os, sys
os.sched_setaffinity(0, {0})  # as `taskset -c 0` or a container's cpuset would
from feedbot import backends
encoder = backends.OnnxEncoder(sys.argv[1], sys.argv[2])
encoder.encode(["Convolutional networks for image classification"] * 64, batch_size=32)
print(encoder.session.get_session_options().intra_op_num_threads)
for status in glob.glob("/proc/self/task/*/status"):
    for line in open(status):
        if line.startswith("Cpus_allowed_list:"):
            print(line.split(":", 1)[1].strip())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs Linux CPU affinity and at least two CPUs")
@pytest.mark.parametrize("backend", ["onnx-fp32", "onnx-int8"])
def test_onnxruntime_threads_keep_to_the_cpus_the_process_may_use(
        backend: str, model_ref: str, onnx_home: Path) -> None:
    """Left to itself, onnxruntime starts a thread per core of the whole machine and pins each
    to its core, out of a process that taskset or a cpuset limits to CPU 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBOT_")}
    env["FEEDBOT_HOME"] = str(onnx_home)
    out = subprocess.run([sys.executable, "-c", _THREAD_CPUS, model_ref, backend], env=env,
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    threads, allowed = int(out[0]), out[1:]
    # Every thread the process has keeps to CPU 0. How many there are depends on the machine:
    # with one intra-op thread onnxruntime may start no pool at all, so only the main thread's
    # list is certain to be there.
    assert allowed and set(allowed) == {"0"}, allowed
    assert threads == 1  # an explicit count, which onnxruntime does not pin (0 means "all cores")


def _fake_topology(root: Path, cpus: dict[int, tuple[int, int]]) -> None:
    for cpu, (package, core) in cpus.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")


def test_restricted_cores_counts_the_allowed_physical_cores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 packages × 2 cores × 2 hyperthreads: CPUs 0–3 on package 0, 4–7 on package 1
    _fake_topology(tmp_path, {cpu: (cpu // 4, (cpu % 4) // 2) for cpu in range(8)})
    monkeypatch.setattr(backends, "_SYS_CPU", tmp_path)
    monkeypatch.setattr(backends, "cpu_quota", lambda: None)  # whatever this machine's cgroup says
    backends._physical_cores.cache_clear()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    fingerprint = {**backends._hardware_and_versions(), "cuda_visible_devices": None}
    cases = {frozenset(range(8)): None, frozenset({0, 1}): 1, frozenset({0, 2}): 2,
             frozenset({1, 5}): 2, frozenset({0, 1, 2, 3, 4}): 3, frozenset({9}): 1}
    for allowed, want in cases.items():
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, allowed=allowed: set(allowed))
        assert backends.restricted_cores() == want, allowed
        got = backends.machine_fingerprint()
        if want is None:  # a process that may use every CPU keeps the key it always had
            assert "usable_cores" not in got and got.keys() == fingerprint.keys()
        else:
            assert got["usable_cores"] == want
    backends._physical_cores.cache_clear()


def _cgroup_files(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    return root, tmp_path / "proc-cgroup"


@pytest.mark.parametrize(("proc", "files", "quota"), [
    # cgroup v2, the container's own cgroup as the root of /sys/fs/cgroup (docker --cpus 2)
    ("0::/\n", {"cpu.max": "200000 100000\n"}, 2.0),
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    # v2 on a host: the tightest along the path counts (a limit on the parent slice)
    ("0::/user.slice/feedbot.service\n",
     {"user.slice/feedbot.service/cpu.max": "max 100000\n",
      "user.slice/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"}, 1.5),
    # cgroup v1, with the controllers mounted together
    ("12:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n",
     {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
     0.5),
    ("1:cpu:/fbtest\n", {"cpu/fbtest/cpu.cfs_quota_us": "-1\n",
                         "cpu/fbtest/cpu.cfs_period_us": "100000\n"}, None),
    ("1:cpu:/\n", {}, None),  # nothing to read
    ("0::/\n", {"cpu.max": "garbage\n"}, None),
])
def test_cpu_quota_reads_cgroup_v1_and_v2(proc: str, files: dict[str, str], quota: float | None,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, proc_file = _cgroup_files(tmp_path, proc, files)
    monkeypatch.setattr(backends, "_CGROUP_FS", root)
    monkeypatch.setattr(backends, "_PROC_CGROUP", proc_file)
    assert backends.cpu_quota() == quota


@pytest.mark.parametrize(("quota", "allowed", "want"), [
    (None, None, None),  # the whole machine
    (2.0, None, 2), (0.5, None, 1), (1.5, None, 2),  # a quota rounds up
    (8.0, None, None),  # a quota above the cores limits nothing
    (8.0, 3, 3), (1.0, 3, 1),  # affinity and quota: the tighter
])
def test_thread_budget_is_the_tighter_of_affinity_and_quota(
        quota: float | None, allowed: int | None, want: int | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "cpu_quota", lambda: quota)
    monkeypatch.setattr(backends, "restricted_cores", lambda: allowed)
    monkeypatch.setattr(backends, "_physical_cores", lambda cpus: 4)  # a 4-core machine
    assert backends.thread_budget() == want
    fingerprint = backends.machine_fingerprint()
    assert fingerprint.get("usable_cores") == want


def _can_make_cgroup() -> bool:
    cpu = Path("/sys/fs/cgroup/cpu")
    return (cpu / "cpu.cfs_quota_us").exists() and os.access(cpu, os.W_OK) \
        and (os.cpu_count() or 1) >= 2


@pytest.mark.skipif(not _can_make_cgroup(), reason="needs a writable cgroup v1 cpu controller")
def test_in_a_cgroup_with_one_cpu_of_quota_every_library_runs_one_thread(
        model_ref: str, onnx_home: Path, tmp_path: Path) -> None:
    """A real cgroup, as `docker --cpus 1` makes one: onnxruntime and OpenVINO are given one
    thread, and the choice is keyed by it."""
    group = Path("/sys/fs/cgroup/cpu") / f"feedbot-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a cgroup here: {e}")
    try:
        def join() -> None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

        try:  # a container may let us make the group but not set its quota or join it
            (group / "cpu.cfs_quota_us").write_text("100000")  # one period's worth: 1 CPU
            subprocess.run(["true"], check=True, preexec_fn=join)
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot use a cgroup here: {e}")
        code = ("import sys; from feedbot import backends; "
                "e = backends.OnnxEncoder(sys.argv[1], 'onnx-fp32'); "
                "print(backends.thread_budget(), "
                "e.session.get_session_options().intra_op_num_threads, "
                "backends.machine_fingerprint()['usable_cores'])")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBOT_")}
        env["FEEDBOT_HOME"] = str(onnx_home)
        out = subprocess.run(
            [sys.executable, "-c", code, model_ref], env=env, capture_output=True, text=True,
            check=True, cwd=Path(__file__).resolve().parents[1], preexec_fn=join)
        assert out.stdout.split() == ["1", "1", "1"]
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()


def _linked_model(model_ref: str, local: Path) -> Path:
    for f in Path(model_ref).rglob("*"):  # links, not a 90 MB copy
        if f.is_file():
            (local / f.relative_to(model_ref)).parent.mkdir(parents=True, exist_ok=True)
            (local / f.relative_to(model_ref)).symlink_to(f)
    return local


def _replace_pooling(local: Path) -> None:
    pooling = local / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.unlink()
    pooling.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False,
                                   "pooling_mode_cls_token": True}))


def test_hidden_files_beside_a_local_model_are_not_the_model(model_ref: str, tmp_path: Path
                                                             ) -> None:
    """A `git pull` that changed nothing touched `.git/FETCH_HEAD`: a new cache key, every
    vector embedded again and a new 113 MB export."""
    from feedbot.embed import Embedder

    local = _linked_model(model_ref, tmp_path / "my-model")
    before = Embedder(model=str(local), backend="fp32").model_id
    (local / ".git").mkdir()
    (local / ".git" / "FETCH_HEAD").write_text("abc\n")
    (local / ".gitattributes").write_text("*.bin filter=lfs\n")
    assert Embedder(model=str(local), backend="fp32").model_id == before
    _replace_pooling(local)
    assert Embedder(model=str(local), backend="fp32").model_id != before


def test_a_loaded_model_keeps_the_key_of_the_files_it_was_loaded_from(
        model_ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`feedbot run` read the key first (a digest of cached vectors loads no model) and loaded
    the model later, from files replaced meanwhile: the new model's vectors went under the old
    key, beside the old model's (another dimension: every digest a ValueError)."""
    from feedbot import embed
    from feedbot.store import Store

    local = _linked_model(model_ref, tmp_path / "my-model")
    loaded: list[str] = []

    class Fake:
        backend, device = "fp32", "cpu"

        def __init__(self, dim: int) -> None:
            self.dim = dim

        def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
            return np.ones((len(texts), self.dim), dtype=np.float32) / np.sqrt(self.dim)

    dims = iter([8, 4])
    monkeypatch.setattr(backends, "load_encoder",
                        lambda ref, b, d: loaded.append(ref) or Fake(next(dims)))
    store = Store(":memory:")
    e = embed.Embedder(model=str(local), backend="fp32")
    old = e.model_id
    _replace_pooling(local)  # replaced before the model is loaded: the files' key now
    assert e.model_id != old
    new = e.model_id
    assert embed.embed_cached(store, e, ["a", "b"]).shape == (2, 8) and loaded
    _replace_pooling(local)  # replaced after: this process still embeds with what it loaded
    assert e.model_id == new
    assert set(store.get_vectors(new, [embed.content_hash("a")])) == {embed.content_hash("a")}
    assert embed.embed_cached(store, e, ["c"]).shape == (1, 8)
    assert embed.Embedder(model=str(local), backend="fp32").model_id not in (old, new)


def test_the_key_read_before_a_load_is_checked_after_it(
        model_ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`embed_cached` read the key, then the model loaded from files changed in between:
    the new model's vectors were stored under the key read first."""
    from feedbot import embed
    from feedbot.store import Store

    local = _linked_model(model_ref, tmp_path / "my-model")

    class Fake:
        backend, device = "fp32", "cpu"

        def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
            return np.ones((len(texts), 4), dtype=np.float32) / 2

    monkeypatch.setattr(backends, "load_encoder", lambda ref, b, d: Fake())
    store = Store(":memory:")
    e = embed.Embedder(model=str(local), backend="fp32")
    first = e.model_id
    read = store.get_vectors
    replaced: list[bool] = []

    def read_then_replace(model: str, hashes: Any) -> Any:
        out = read(model, hashes)
        if not replaced:  # after the key was read, before the model loads
            replaced.append(True)
            _replace_pooling(local)
        return out

    monkeypatch.setattr(store, "get_vectors", read_then_replace)
    h = embed.content_hash("a")
    assert embed.embed_cached(store, e, ["a"]).shape == (1, 4)
    assert e.model_id != first
    assert read(first, [h]) == {} and set(read(e.model_id, [h])) == {h}


def test_an_export_backend_asked_for_a_gpu_says_it_runs_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FEEDBOT_DEVICE=cuda with FEEDBOT_EMBED_BACKEND=onnx-int8 ran on the CPU, silently;
    `doctor` showed no problem."""
    from feedbot.embed import Embedder, EmbedSettingError

    for backend in ("onnx-int8", "onnx-fp32", "openvino-bf16"):
        with pytest.raises(EmbedSettingError, match=f"the {backend} backend runs on the CPU "
                                                    "only, and the device asked for is cuda"):
            Embedder(device="cuda", backend=backend).encoder  # noqa: B018


def test_a_missing_packaged_model_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken install (the model package without its model) was a RuntimeError traceback."""
    from feedbot import embed

    monkeypatch.setattr(embed, "packaged_model_path", lambda: None)
    monkeypatch.delenv("FEEDBOT_MODEL", raising=False)
    with pytest.raises(embed.EmbedSettingError, match="the packaged model is missing"):
        embed.Embedder()


def test_a_backlog_is_stored_as_it_is_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 items (a new model, a first collection) were embedded whole before any was
    stored: a Ctrl-C or a stop after minutes kept nothing, and the next command began again."""
    from feedbot import embed
    from feedbot.store import Store

    from .support import fake_embedder

    monkeypatch.setattr(embed, "EMBED_CHUNK", 3)
    store = Store(":memory:")
    e = fake_embedder()
    calls: list[int] = []
    real = e.embed

    def stopped_at_the_third(texts: list[str]) -> Any:
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts)

    monkeypatch.setattr(e, "embed", stopped_at_the_third)
    texts = [f"text {n}" for n in range(8)]
    with pytest.raises(KeyboardInterrupt):
        embed.embed_cached(store, e, texts)
    assert calls == [3, 3, 2] and store.vector_count(e.model_id) == 6
    calls.clear()
    monkeypatch.setattr(e, "embed", real)
    assert embed.embed_cached(store, e, texts).shape == (8, 64)
    assert store.vector_count(e.model_id) == 8


@pytest.mark.parametrize("logged", [True, False], ids=["run", "cli"])
def test_a_measurement_line_is_said_once_on_stderr(logged: bool,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`feedbot run` logs INFO to stderr: its log had every measurement line twice (logged and
    printed). A CLI command logs warnings only: there the line is printed."""
    import logging
    import sys

    from feedbot import backends

    root, feedbot_log = logging.getLogger(), logging.getLogger("feedbot")
    handler = logging.StreamHandler(sys.stderr)  # what basicConfig gives `feedbot run`
    level = feedbot_log.level
    root.addHandler(handler)
    feedbot_log.setLevel(logging.INFO if logged else logging.WARNING)
    try:
        backends._report("feedbot: embedding backend fp32 (1.00x fp32)")
    finally:
        root.removeHandler(handler)
        feedbot_log.setLevel(level)
    assert capsys.readouterr().err.count("embedding backend fp32 (1.00x fp32)") == 1
