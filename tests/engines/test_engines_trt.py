"""TensorRT engine.

Two kinds of test:
* ``real_trt``: where `import tensorrt` works and a CUDA GPU answers (a Jetson, NVIDIA's
  container), TensorRT engines are built from the project's pose models and compared with
  onnxruntime, and the engine cache key / cache hit are checked. Elsewhere they skip and say why.
* everywhere: the engine's own logic runs against stand-ins for `tensorrt` and cuda-python
  (tests/engines/fake_tensorrt_rig.py), and the no-TensorRT / no-GPU errors are checked.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from dancewire.errors import DancewireError, DeviceError
from edge.engines import open_engine
from edge.engines import trt as trt_mod
from edge.engines.ort import OrtEngine

sys.path.insert(0, str(Path(__file__).parent))
import fake_tensorrt_rig as fakes  # noqa: E402
from tiny_onnx_rig import affine_model  # noqa: E402


def _real_trt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed here (it comes with JetPack or NVIDIA's index; see docs)"
    try:
        trt_mod.import_tensorrt()
        trt_mod.gpu_info()
    except DeviceError as exc:
        return f"TensorRT present but unusable here: {exc}"
    return None


_REASON = _real_trt_reason()
real_trt = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


# ----------------------------------------------------------------------------- everywhere

def test_no_tensorrt_is_a_clear_device_error(tmp_path, monkeypatch):
    model = affine_model(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", None)   # import fails like a missing package
    with pytest.raises(DeviceError, match="TensorRT is not available.*onnxruntime"):
        open_engine(model, "tensorrt")


def test_no_gpu_is_a_clear_device_error(tmp_path, monkeypatch):
    model = affine_model(tmp_path / "m.onnx")
    fakes.install(monkeypatch, fakes.FakeCudart(error=fakes.cudaError_t.cudaErrorInsufficientDriver))
    with pytest.raises(DeviceError, match="no usable CUDA GPU.*cudaErrorInsufficientDriver"):
        trt_mod.TrtEngine(model, cache_root=tmp_path)
    fakes.install(monkeypatch, fakes.FakeCudart(device_count=0))
    with pytest.raises(DeviceError, match="not found"):
        trt_mod.TrtEngine(model, cache_root=tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="precision"):
        trt_mod.TrtEngine(tmp_path / "x.onnx", precision="int4")
    with pytest.raises(DancewireError, match="not found"):
        trt_mod.TrtEngine(tmp_path / "x.onnx")


def test_cache_key_changes_with_every_field():
    base = dict(onnx_sha256="a" * 64, gpu_name="Orin", compute_capability=(8, 7),
                trt_version="10.3.0", precision="fp16", max_batch=8)
    key = trt_mod.engine_key(trt_mod.engine_key_fields(**base))
    assert key == trt_mod.engine_key(trt_mod.engine_key_fields(**base))
    for field, other in [("onnx_sha256", "b" * 64), ("gpu_name", "RTX 4090"), ("compute_capability", (8, 9)),
                         ("trt_version", "10.4.0"), ("precision", "int8"), ("max_batch", 4),
                         ("opt_batch", 8), ("workspace_mib", 256)]:
        assert trt_mod.engine_key(trt_mod.engine_key_fields(**{**base, field: other})) != key, field
    path = trt_mod.engine_cache_path("/m/pose_landmark.onnx", trt_mod.engine_key_fields(**base), Path("/c"))
    assert path.parent == Path("/c/engines") and path.name.startswith("pose_landmark-fp16-b8-")


def test_engine_logic_with_stand_ins(tmp_path, monkeypatch):
    fake_trt, cudart = fakes.install(monkeypatch)
    model = affine_model(tmp_path / "dyn.onnx")
    ref = OrtEngine(model)
    eng = trt_mod.TrtEngine(model, precision="fp16", max_batch=4, cache_root=tmp_path)
    assert not eng.cache_hit and fake_trt.builds == 1 and fake_trt.phases == ["Building engine"]
    cfg = fake_trt.configs[0]
    assert fake_trt.BuilderFlag.FP16 in cfg.flags and fake_trt.BuilderFlag.INT8 not in cfg.flags
    assert cfg.profiles[0].shapes["x"] == ((1, 3), (4, 3), (4, 3))
    assert cfg.pool[fake_trt.MemoryPoolType.WORKSPACE] == trt_mod.DEFAULT_WORKSPACE_MIB << 20
    assert eng.cache_path.is_file() and eng.cache_path.with_suffix(".json").is_file()
    assert eng.key_fields["gpu"] == "Fake GPU" and eng.key_fields["compute_capability"] == "8.7"
    assert eng.max_batch == 4 and eng.inputs[0].shape == (None, 3) and [o.name for o in eng.outputs] == ["y", "s"]

    x = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    out = eng.run({"x": x})
    for k, v in ref.run({"x": x}).items():
        np.testing.assert_allclose(out[k], v, rtol=1e-6)
    first = out["y"].copy()
    eng.run({"x": x + 1})
    np.testing.assert_array_equal(out["y"], first)    # results are copies, not the reused buffer

    big = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="max_batch"):
        eng.run({"x": big})
    with pytest.raises(ValueError, match="shape"):
        eng.run({"x": np.zeros((2, 5), np.float32)})
    np.testing.assert_allclose(eng.run_batched("x", big)["y"], big * 2 + 1, rtol=1e-6)
    eng.close()
    assert not cudart.allocs and not cudart.host_allocs and not cudart.streams   # all freed

    again = trt_mod.TrtEngine(model, precision="fp16", max_batch=4, cache_root=tmp_path)
    assert again.cache_hit and fake_trt.builds == 1 and again.cache_path == eng.cache_path
    np.testing.assert_allclose(again.run({"x": x})["y"], x * 2 + 1, rtol=1e-6)
    other = trt_mod.TrtEngine(model, precision="fp32", max_batch=4, cache_root=tmp_path)
    assert not other.cache_hit and fake_trt.builds == 2 and other.cache_path != eng.cache_path

    eng.cache_path.write_bytes(b"not a plan")     # a corrupt cache entry is rebuilt, not fatal
    fixed = trt_mod.TrtEngine(model, precision="fp16", max_batch=4, cache_root=tmp_path)
    assert not fixed.cache_hit and fake_trt.builds == 3
    np.testing.assert_allclose(fixed.run({"x": x})["y"], x * 2 + 1, rtol=1e-6)


def test_fixed_batch_model_with_stand_ins(tmp_path, monkeypatch):
    fake_trt, _ = fakes.install(monkeypatch)
    model = affine_model(tmp_path / "fixed.onnx", batch=1)
    eng = trt_mod.TrtEngine(model, max_batch=8, cache_root=tmp_path)
    assert eng.max_batch == 1 and not fake_trt.configs[0].profiles
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(eng.run_batched("x", x)["y"], x * 2 + 1)


def test_an_engine_cache_that_cannot_be_written_keeps_the_built_engine(tmp_path, monkeypatch):
    """A full cache disk made the constructor raise OSError after a good build (minutes on a Jetson),
    and left a temporary file behind."""
    import builtins

    fake_trt, _ = fakes.install(monkeypatch)
    model = affine_model(tmp_path / "m.onnx", batch=None)
    real_open = builtins.open

    def full_disk(path, mode="r", *a, **kw):
        fh = real_open(path, mode, *a, **kw)
        if "w" in mode and str(path).endswith(".tmp"):
            fh.close()
            raise OSError(28, "No space left on device")
        return fh

    monkeypatch.setattr(builtins, "open", full_disk)
    eng = trt_mod.TrtEngine(model, precision="fp16", max_batch=4, cache_root=tmp_path / "cache")
    monkeypatch.setattr(builtins, "open", real_open)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(eng.run({"x": x})["y"], x * 2 + 1, rtol=1e-6)
    assert not [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]     # no half files, no plan
    eng.close()


def test_int8_calibration_cache_and_engine_key(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path / "home"))
    fake_trt, _ = fakes.install(monkeypatch)
    model = affine_model(tmp_path / "dyn.onnx")
    with pytest.raises(DancewireError, match="calibrate int8"):
        trt_mod.TrtEngine(model, precision="int8", cache_root=tmp_path)
    calib_file = trt_mod.int8_cache_path(model)
    assert calib_file.parent == tmp_path / "home" / "calibration" / "int8"

    class Calib:                                   # what calibrate/int8.py hands over, minimally
        cache_file = calib_file

        def get_batch_size(self):
            return 2

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            calib_file.parent.mkdir(parents=True, exist_ok=True)
            calib_file.write_bytes(bytes(cache))

    first = trt_mod.TrtEngine(model, precision="int8", max_batch=4, calibrator=(c := Calib()),
                              cache_root=tmp_path)
    cfg = fake_trt.configs[-1]
    assert {fake_trt.BuilderFlag.INT8, fake_trt.BuilderFlag.FP16} <= cfg.flags
    assert cfg.int8_calibrator is c
    assert cfg.calibration_profile.shapes["x"] == ((2, 3),) * 3     # calibration at the calibrator's batch
    assert calib_file.is_file()
    assert first.key_fields["int8_calibration_sha256"] == trt_mod.file_sha256(calib_file)
    # the pipeline opens the cached INT8 engine without any calibrator
    again = trt_mod.TrtEngine(model, precision="int8", max_batch=4, cache_root=tmp_path)
    assert again.cache_hit and again.cache_path == first.cache_path and fake_trt.builds == 1
    # a new calibration means a new engine, rebuilt from the calibration cache alone
    calib_file.write_bytes(b"TRT-fake-calibration recalibrated")
    third = trt_mod.TrtEngine(model, precision="int8", max_batch=4, cache_root=tmp_path)
    assert not third.cache_hit and fake_trt.builds == 2 and third.cache_path != first.cache_path
    assert fake_trt.configs[-1].int8_calibrator.read_calibration_cache() == calib_file.read_bytes()


# ----------------------------------------------------------------------------- real TensorRT

def _pose_models() -> dict[str, Path]:
    try:
        from edge.models.registry import model_path
    except ImportError as exc:
        pytest.skip(f"model registry not available: {exc}")
    paths = {}
    for name in ("pose_detector", "pose_landmarks"):
        try:
            paths[name] = Path(model_path(name))
        except DancewireError as exc:
            pytest.skip(f"pose model {name!r} not built: {exc}")
    return paths


def _pose_inputs(engine, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in engine.inputs:
        shape = tuple(batch if d is None else d for d in spec.shape)
        feeds[spec.name] = rng.uniform(-1, 1, size=shape).astype(spec.dtype)
    return feeds


@real_trt
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision,atol_rel", [("fp32", 1e-3), ("fp16", 3e-2)])
def test_trt_matches_onnxruntime_on_pose_models(tmp_path, precision, atol_rel):
    for name, path in _pose_models().items():
        ort_eng = OrtEngine(path)
        with trt_mod.TrtEngine(path, precision=precision, max_batch=4, cache_root=tmp_path) as eng:
            batch = min(2, eng.max_batch)
            feeds = _pose_inputs(ort_eng, batch)
            want = ort_eng.run_batched(ort_eng.inputs[0].name, feeds[ort_eng.inputs[0].name]) \
                if len(feeds) == 1 else ort_eng.run(feeds)
            got = eng.run_batched(eng.inputs[0].name, feeds[eng.inputs[0].name]) if len(feeds) == 1 else eng.run(feeds)
            assert set(got) == set(want)
            for k in want:
                scale = max(1.0, float(np.abs(want[k]).max()))
                err = float(np.abs(got[k].astype(np.float64) - want[k]).max())
                assert err <= atol_rel * scale, f"{name}/{k}: max abs diff {err} (scale {scale})"


@real_trt
@pytest.mark.gpu
@pytest.mark.slow
def test_trt_cache_key_and_cache_hit(tmp_path):
    path = _pose_models()["pose_landmarks"]
    first = trt_mod.TrtEngine(path, precision="fp16", max_batch=4, cache_root=tmp_path)
    assert not first.cache_hit and first.cache_path.is_file()
    fields = first.key_fields
    assert fields["onnx_sha256"] == trt_mod.file_sha256(path)
    import tensorrt
    assert fields["tensorrt"] == tensorrt.__version__ and fields["precision"] == "fp16"
    assert fields["gpu"] == trt_mod.gpu_info().name
    out1 = first.run(_pose_inputs(first, 1))
    first.close()
    second = trt_mod.TrtEngine(path, precision="fp16", max_batch=4, cache_root=tmp_path)
    assert second.cache_hit and second.cache_path == first.cache_path
    out2 = second.run(_pose_inputs(second, 1))
    for k in out1:
        np.testing.assert_allclose(out1[k], out2[k], rtol=1e-3, atol=1e-3)
    second.close()


def test_pipeline_opens_the_pose_models_at_the_configured_precision(tmp_path, monkeypatch):
    """`engine.precision` reaches both pose engines (TensorRT stand-ins here)."""
    from edge.models.registry import model_path
    from edge.pipeline import EdgeGraph
    from edge.settings import load_edge_settings

    try:
        model_path("pose_detector")
    except DancewireError as exc:
        pytest.skip(f"pose models not built: {exc}")
    fake_trt, _ = fakes.install(monkeypatch)
    monkeypatch.setattr(trt_mod, "cache_dir", lambda: tmp_path)
    settings = load_edge_settings(None, ["engine.backend=tensorrt", "engine.precision=fp32"])
    graph = EdgeGraph.build(settings, audio=False, encoder=False)
    try:
        for eng in (graph.pose.detector_engine, graph.pose.landmarks_engine):
            assert eng.backend == "tensorrt" and eng.precision == "fp32"
        assert len(fake_trt.configs) == 2
        assert all(fake_trt.BuilderFlag.FP16 not in c.flags for c in fake_trt.configs)
    finally:
        graph.close()


def _encoder_inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n normalised windows of smooth random-walk motion (a third of them 50 samples long)."""
    from edge.motion.normalize import normalize
    rng = np.random.default_rng(seed)
    kp = np.cumsum(rng.normal(0, 3, (n, 60, 17, 3)), axis=1).astype(np.float32) + 500
    kp[..., 2] = 1.0
    mask = np.ones((n, 60), bool)
    mask[::3, 50:] = False                     # some short windows
    return normalize(kp, mask, "ban"), mask


def test_edge_backend_flag_puts_the_motion_encoder_on_tensorrt(tmp_path, monkeypatch):
    """`edge run|analyze --backend tensorrt` reaches the encoder too (it used to stay on ONNX Runtime):
    built at motion.precision for batches up to motion.batch, and a batch larger than that is
    chunked, giving the ONNX Runtime embeddings (TensorRT stand-ins here)."""
    import argparse

    from edge.motion.encoder import MotionEncoder
    from edge.pipeline import EdgeGraph
    from edge.pipeline_cli import load_settings

    fake_trt, _ = fakes.install(monkeypatch)
    monkeypatch.setattr(trt_mod, "cache_dir", lambda: tmp_path)
    args = argparse.Namespace(config=None, overrides=["motion.batch=16"], backend="tensorrt", threads=None)
    settings = load_settings(args)
    assert settings.engine.backend == settings.motion.backend == "tensorrt"
    graph = EdgeGraph.build(settings, video=False, audio=False)
    try:
        enc = graph.motion.encoder
        assert enc.engine.backend == "tensorrt" and enc.engine.precision == "fp16"
        assert enc.engine.max_batch == 16
        (config,) = fake_trt.configs
        assert fake_trt.BuilderFlag.FP16 in config.flags
        assert {s[2][0] for s in config.profiles[0].shapes.values()} == {16}
        feats, mask = _encoder_inputs(40)
        got = enc.encode_features(feats, mask)
        want = MotionEncoder().encode_features(feats, mask)
        assert got.shape == (40, enc.dim)
        np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        graph.close()


def test_motion_encoder_refuses_an_int8_engine():
    from edge.settings import load_edge_settings

    with pytest.raises(DancewireError, match="motion settings: precision 'int8'.*no INT8 calibration"):
        load_edge_settings(None, ["motion.precision=int8"])


@real_trt
@pytest.mark.gpu
@pytest.mark.slow
def test_trt_motion_encoder_matches_onnxruntime(tmp_path, monkeypatch):
    """The shipped motion encoder as a real TensorRT FP16 engine: its embeddings keep the
    ONNX Runtime ones' direction (cosine), batch larger than the profile included."""
    from edge.motion.encoder import MotionEncoder
    from edge.motion.settings import MotionSettings

    monkeypatch.setattr(trt_mod, "cache_dir", lambda: tmp_path)
    feats, mask = _encoder_inputs(70)
    want = MotionEncoder().encode_features(feats, mask)
    enc = MotionEncoder(backend="tensorrt", settings=MotionSettings(batch=32))
    try:
        got = enc.encode_features(feats, mask)
    finally:
        enc.close()
    cos = np.sum(got * want, axis=1)
    assert cos.min() > 0.999, f"TensorRT FP16 embeddings drift from ONNX Runtime: min cosine {cos.min():.5f}"


def test_fp32_engines_are_full_fp32_and_the_opt_batch_is_part_of_the_key(tmp_path, monkeypatch):
    """TensorRT allows TF32 by default (inputs rounded to 10-bit mantissas on Ampere and later): an
    "fp32" engine clears the flag. An engine with another opt batch is another plan, not a cache hit."""
    fake_trt, _ = fakes.install(monkeypatch)
    model = affine_model(tmp_path / "dyn.onnx")
    trt_mod.TrtEngine(model, precision="fp32", max_batch=8, cache_root=tmp_path)
    assert fake_trt.BuilderFlag.TF32 not in fake_trt.configs[-1].flags
    trt_mod.TrtEngine(model, precision="fp16", max_batch=8, cache_root=tmp_path)
    assert fake_trt.BuilderFlag.TF32 in fake_trt.configs[-1].flags          # left as TensorRT has it
    again = trt_mod.TrtEngine(model, precision="fp16", max_batch=8, opt_batch=8, cache_root=tmp_path)
    assert not again.cache_hit and fake_trt.configs[-1].profiles[0].shapes["x"][1] == (8, 3)
