"""INT8 calibration: recorded frames, the models' own preprocessing, the calibrator, the comparison.

TensorRT itself is not installable here; where `import tensorrt` works the full command is
run for real (test_int8_with_real_tensorrt). Everywhere else the calibration flow runs
against the stand-ins of tests/engines/fake_tensorrt_rig.py, whose "engines" execute the
ONNX files with onnxruntime: that checks the data path (frames -> preprocessing ->
calibrator -> device memory), the cache handling and the comparison, not TensorRT's numerics.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibrate import int8
from dancewire.cli import main as cli_main
from dancewire.errors import BadInputError, DancewireError
from edge.engines.ort import OrtEngine
from edge.vision.blazepose_detector import BlazePoseDetector
from edge.vision.blazepose_landmarks import BlazePoseLandmarks
from edge.vision.estimator import MultiPoseEstimator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engines"))
import fake_tensorrt_rig as fakes  # noqa: E402


@pytest.fixture(scope="module")
def pose_models():
    from edge.models.registry import model_path
    try:
        return {n: model_path(n) for n in int8.MODELS}
    except DancewireError as exc:
        pytest.skip(f"pose models not built ({exc})")


@pytest.fixture(scope="module")
def clip(shared_data):
    return shared_data / "video" / "qengineering_Dance.mp4"


class Recording:
    """An Engine wrapper that keeps every input batch and can perturb the outputs."""

    def __init__(self, engine, perturb=None):
        self.engine, self.perturb, self.seen = engine, perturb, []
        self.inputs, self.outputs, self.backend = engine.inputs, engine.outputs, "test"

    @property
    def max_batch(self):
        return self.engine.max_batch

    def run_batched(self, name, batch):
        self.seen.append(batch.copy())
        out = self.engine.run_batched(name, batch)
        return self.perturb(out) if self.perturb else out


def test_recorded_frames_from_folder_and_video(tmp_path, clip):
    for i in range(7):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), np.full((40, 50, 3), i * 30, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    frames = int8.RecordedFrames(tmp_path, max_frames=4)
    got = list(frames)
    assert len(got) == len(frames) == 4 and got[0].shape == (40, 50, 3)
    assert [int(g[0, 0, 0]) for g in got] == [0, 60, 120, 180]       # spread evenly, in order
    assert [int(g[0, 0, 0]) for g in frames] == [0, 60, 120, 180]   # re-iterable
    video = list(int8.RecordedFrames(clip, max_frames=10))
    assert len(video) == 10 and video[0].shape == (496, 514, 3)
    with pytest.raises(BadInputError):
        list(int8.RecordedFrames(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no images"):
        list(int8.RecordedFrames(empty))


def test_calibration_inputs_are_the_models_own_preprocessing(pose_models, clip):
    frames = int8.RecordedFrames(clip, max_frames=6)
    det_rec = Recording(OrtEngine(pose_models["pose_detector"]))
    det = BlazePoseDetector(det_rec)
    for image in frames:
        det(image)
    fed = np.stack(list(int8.detector_inputs(frames, det)))
    live = np.concatenate(det_rec.seen)
    assert fed.shape == live.shape == (6, 3, 224, 224)
    np.testing.assert_array_equal(fed, live)          # bit-identical to what the detector runs

    lm_rec = Recording(OrtEngine(pose_models["pose_landmarks"]))
    lm = BlazePoseLandmarks(lm_rec)
    est = MultiPoseEstimator(BlazePoseDetector(OrtEngine(pose_models["pose_detector"])), lm)
    rois = int8.live_rois(frames, est)
    assert sum(map(len, rois)) >= 6                   # one dancer, found in every frame
    live = np.concatenate(lm_rec.seen)
    crops = np.stack(list(int8.landmark_inputs(frames, rois, lm)))
    np.testing.assert_array_equal(crops, live)        # the crops the live loop cut (none dropped on this clip)
    assert crops.shape[1:] == (3, 256, 256) and 0.0 <= crops.min() and crops.max() <= 1.0
    batches = list(int8.batched(iter(crops), 4))
    assert [b.shape[0] for b in batches] == [4] * (len(crops) // 4)


def test_comparison_metrics(pose_models, clip):
    frames = int8.RecordedFrames(clip, max_frames=5)
    det_a = BlazePoseDetector(OrtEngine(pose_models["pose_detector"]))
    same = int8.compare_detectors(frames, det_a, BlazePoseDetector(OrtEngine(pose_models["pose_detector"])))
    assert same["frames"] == 5 and same["count_agreement"] == 1.0 and same["recall"] == 1.0
    assert same["score_abs_diff_max"] == 0.0 and same["box_iou_min"] == pytest.approx(1.0)

    def nudge_scores(out):
        return {**out, "scores": out["scores"] + 0.3}
    shifted = int8.compare_detectors(frames, det_a, BlazePoseDetector(
        Recording(OrtEngine(pose_models["pose_detector"]), nudge_scores)))
    assert shifted["score_abs_diff_mean"] > 0.001 and shifted["matched"] >= 5

    lm_a = BlazePoseLandmarks(OrtEngine(pose_models["pose_landmarks"]))
    rois = int8.live_rois(frames, MultiPoseEstimator(det_a, lm_a))

    def nudge_landmarks(out):
        lm = out["landmarks"].reshape(len(out["landmarks"]), 39, 5).copy()
        lm[..., 0] += 3.0                              # 3 + 4 crop pixels = 5 crop pixels off
        lm[..., 1] += 4.0
        return {**out, "landmarks": lm.reshape(len(lm), -1)}
    lm_b = BlazePoseLandmarks(Recording(OrtEngine(pose_models["pose_landmarks"]), nudge_landmarks))
    res = int8.compare_landmarks(frames, rois, lm_a, lm_b)
    sizes = np.array([r.size for fr in rois for r in fr])
    assert res["crops"] == len(sizes)
    assert res["body33_px_mean"] == pytest.approx(5.0 * sizes.mean() / 256, rel=1e-6)
    assert res["rel_to_roi_mean"] == pytest.approx(5.0 / 256, rel=1e-6)
    assert int8.compare_landmarks(frames, rois, lm_a, lm_a)["body33_px_max"] == 0.0


def test_int8_command_without_tensorrt_is_a_device_error(tmp_path, capsys, clip):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    assert cli_main(["calibrate", "int8", str(clip)]) == 2
    assert "TensorRT is not available" in capsys.readouterr().err


def test_entropy_calibrator_feeds_device_memory_and_keeps_cache(tmp_path, monkeypatch):
    fake_trt, cudart = fakes.install(monkeypatch)
    batches = [np.random.default_rng(i).normal(size=(2, 3)).astype(np.float32) for i in range(3)]
    cache = tmp_path / "c" / "model.calib"
    cal = int8.entropy_calibrator(lambda: iter(batches), 2, cache, "m", 3)
    assert isinstance(cal, fake_trt.IInt8EntropyCalibrator2) and cal.get_batch_size() == 2
    assert cal.read_calibration_cache() is None
    for want in batches:
        ptrs = cal.get_batch(["x"])
        raw = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint8 * want.nbytes).from_address(ptrs[0]))
        np.testing.assert_array_equal(raw.view(np.float32).reshape(2, 3), want)
    assert cal.get_batch(["x"]) is None and cal.batches_fed == 3
    cal.write_calibration_cache(memoryview(b"scales"))
    assert cache.read_bytes() == b"scales" and cal.read_calibration_cache() == b"scales"
    cal.close()
    assert not cudart.allocs


def test_calibrate_int8_flow_with_stand_ins(tmp_path, monkeypatch, pose_models, clip):
    """The whole command with fake TensorRT (onnxruntime underneath): 12 real frames."""
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DANCEWIRE_CACHE", str(tmp_path / "cache"))
    # the engines cache under DANCEWIRE_CACHE, the models stay where they were built
    from edge.models import registry
    models_dir = pose_models["pose_detector"].parent
    monkeypatch.setattr(registry, "models_dir", lambda: models_dir)
    fake_trt, cudart = fakes.install(monkeypatch)
    report = int8.calibrate_int8(clip, max_frames=12, batch_size=4, max_batch=4)
    assert report["frames"] == 12 and report["crops"] >= 12 and report["gpu"] == "Fake GPU"
    det, lm = report["models"]["pose_detector"], report["models"]["pose_landmarks"]
    assert det["calibration_batches"] == 3 and lm["calibration_batches"] == report["crops"] // 4
    assert Path(det["calibration_cache"]).is_file() and Path(lm["calibration_cache"]).is_file()
    # what TensorRT was fed: the detector's letterboxed inputs, then the landmark crops
    fed = fake_trt.calibration_batches
    assert fed[0].shape == (4, 3, 224, 224) and fed[-1].shape == (4, 3, 256, 256)
    assert -1.0 <= fed[0].min() and fed[0].max() <= 1.0 and fed[0].std() > 0.1
    # "INT8" here is the same ONNX on onnxruntime: the comparison must find no difference
    assert det["fp16_vs_int8"]["count_agreement"] == 1.0 and det["fp16_vs_int8"]["score_abs_diff_max"] == 0.0
    assert lm["fp16_vs_int8"]["body33_px_max"] == 0.0 and lm["fp16_vs_int8"]["crops"] == report["crops"]
    saved = json.loads(Path(report["report_path"]).read_text())
    assert saved["models"]["pose_landmarks"]["fp16_vs_int8"]["crops"] == report["crops"]
    assert "INT8 calibration on Fake GPU" in int8.format_report(report)
    assert not cudart.allocs and not cudart.host_allocs      # every engine and calibrator freed
    # a second run reuses the calibration cache: TensorRT is fed nothing new
    n = len(fake_trt.calibration_batches)
    again = int8.calibrate_int8(clip, max_frames=12, batch_size=4, max_batch=4, compare=False)
    assert len(fake_trt.calibration_batches) == n and again["models"]["pose_detector"]["calibration_batches"] == 0


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="TensorRT is not installed here (JetPack or NVIDIA's index; see docs)")
def test_int8_with_real_tensorrt(tmp_path, monkeypatch, pose_models, clip):
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path / "home"))
    report = int8.calibrate_int8(clip, max_frames=60, batch_size=4, max_batch=8)
    det, lm = report["models"]["pose_detector"]["fp16_vs_int8"], report["models"]["pose_landmarks"]["fp16_vs_int8"]
    assert det["recall"] >= 0.9 and det["box_iou_mean"] >= 0.8
    assert lm["crops"] >= 60 and lm["rel_to_roi_mean"] < 0.02      # under 2% of the crop size on average
    assert lm["pose_flag_abs_diff_max"] < 0.2


def test_an_interrupted_recalibration_keeps_the_rigs_calibration(tmp_path, monkeypatch, pose_models, clip):
    """TensorRT swallows what get_batch raises and calibrates on what it got: a Ctrl-C (or CUDA error)
    mid-calibration left a cache from part of the data, which later runs reused. And --recalibrate
    deleted the rig's cache before a new one existed: an interrupted run left none."""
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DANCEWIRE_CACHE", str(tmp_path / "cache"))
    from edge.models import registry
    models_dir = pose_models["pose_detector"].parent
    monkeypatch.setattr(registry, "models_dir", lambda: models_dir)
    fakes.install(monkeypatch)
    report = int8.calibrate_int8(clip, max_frames=12, batch_size=4, max_batch=4, compare=False,
                                 models=("pose_detector",))
    cache = Path(report["models"]["pose_detector"]["calibration_cache"])
    good = cache.read_bytes()
    real = int8.detector_inputs

    def interrupted(*a, **kw):
        for k, x in enumerate(real(*a, **kw)):
            if k == 5:
                raise KeyboardInterrupt
            yield x

    monkeypatch.setattr(int8, "detector_inputs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        int8.calibrate_int8(clip, max_frames=12, batch_size=4, max_batch=4, compare=False,
                            models=("pose_detector",), recalibrate=True)
    assert cache.read_bytes() == good                         # the rig's calibration is still there
    with pytest.raises(DancewireError, match="max-frames"):
        int8.calibrate_int8(clip, max_frames=0, models=("pose_detector",))
