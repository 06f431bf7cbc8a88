"""The robustness benchmark's metrics, and one short end-to-end run on two real clips."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from benchmarks import robustness
from dancewire.errors import BadInputError, ModelCacheError
from dancewire.paths import REPO_ROOT
from edge.records import Pose


def _pose(kp_xy: np.ndarray, score: float = 0.9) -> Pose:
    kp = np.concatenate([kp_xy, np.full((17, 1), score)], 1).astype(np.float32)
    return Pose(0, 0.0, kp, np.array([0, 0, 1, 1], np.float32), score)


def _standing(height: float = 200.0) -> np.ndarray:
    """A rough upright COCO-17 figure, nose to ankles `height` px."""
    y = np.array([0, -.03, -.03, -.02, -.02, .18, .18, .35, .35, .5, .5, .5, .5, .75, .75, 1, 1]) * height
    x = np.array([0, -.02, .02, -.04, .04, -.1, .1, -.15, .15, -.17, .17, -.07, .07, -.07, .07, -.07, .07]) * height
    return np.stack([x + 300, y + 100], 1)


def test_displacement_is_in_body_sizes_and_picks_the_nearest_dancer():
    ref = _pose(_standing(200.0))
    shifted = _pose(_standing(200.0) + [20.0, 0.0])             # 0.1 body size to the right
    far = _pose(_standing(200.0) + [400.0, 0.0])
    assert robustness.displacement(ref, [far, shifted]) == pytest.approx(0.1, rel=1e-4)
    assert robustness.displacement(ref, [ref]) == 0.0


def test_pose_stats_embedding_is_normalised_and_scale_invariant():
    from edge.motion.settings import MotionSettings
    from edge.records import Window

    rng = np.random.default_rng(0)
    kp = np.concatenate([_standing()[None].repeat(60, 0) + rng.normal(0, 3, (60, 17, 2)),
                         np.ones((60, 17, 1))], 2).astype(np.float32)
    mask = np.ones(60, bool)
    big = kp.copy()
    big[..., :2] *= 2.0
    settings = MotionSettings()
    e = robustness.pose_stats_embedding([Window(0, 0, 2, kp, mask, np.arange(60) / 30),
                                         Window(0, 0, 2, big, mask, np.arange(60) / 30)], settings)
    assert e.shape == (2, 68)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert float(e[0] @ e[1]) > 0.999


def test_unknown_condition_and_missing_folder_are_clear_errors(tmp_path):
    args = argparse.Namespace(videos=tmp_path / "nope", only="", max_seconds=1, threads=1, seed=0, hop=0.25,
                              min_valid=12, plots=tmp_path, encoder=None,
                              against=[])
    with pytest.raises(BadInputError, match="video folder not found"):
        robustness.run(args)
    (tmp_path / "v").mkdir()
    args.videos = tmp_path / "v"
    with pytest.raises(BadInputError, match="no .mp4"):
        robustness.run(args)
    (tmp_path / "v" / "clip.mp4").write_bytes(b"")
    args.against = [tmp_path / "missing.onnx"]
    with pytest.raises(BadInputError, match="--against: no encoder file"):
        robustness.run(args)


def test_against_encoders_closed_when_the_pose_models_are_missing(tmp_path, monkeypatch):
    """A missing pose model cache ends the run with its clear error, and the --against encoders
    opened before it are released (their sessions do not outlive the failed run)."""
    from edge.motion.encoder import MotionEncoder
    from edge.motion.settings import WEIGHTS_DIR
    from edge.vision.stage import PoseStage

    def no_models(*a, **k):
        raise ModelCacheError("pose models not built (run `dancewire models build`)")
    closed = []
    monkeypatch.setattr(PoseStage, "from_settings", classmethod(no_models))
    monkeypatch.setattr(MotionEncoder, "close", lambda self: closed.append(self.path))
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "clip.mp4").write_bytes(b"")
    shipped = WEIGHTS_DIR / "encoder.onnx"
    args = argparse.Namespace(videos=tmp_path / "v", only="", max_seconds=1, threads=1, seed=0, hop=0.25,
                              min_valid=12, plots=tmp_path, encoder=None, against=[shipped, shipped])
    with pytest.raises(ModelCacheError, match="pose models not built"):
        robustness.run(args)
    assert closed == [shipped, shipped]


def test_short_run_on_two_clips(shared_data, tmp_path):
    from edge.models.registry import model_path

    try:
        model_path("pose_detector"), model_path("pose_landmarks")
    except ModelCacheError as exc:
        pytest.skip(f"pose models not built: {exc}")
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("footskate_reducer_dance.mp4", "controlvideo_moonwalk.mp4"):
        (videos / name).symlink_to(shared_data / "video" / name)
    from edge.motion.settings import MotionSettings

    shipped = MotionSettings().encoder_onnx
    transformer = REPO_ROOT / "edge/motion/weights/experiments/transformer/encoder.onnx"
    args = argparse.Namespace(videos=videos, only="frame_drop", max_seconds=2.6, threads=1, seed=0, hop=0.25,
                              min_valid=12, plots=tmp_path, encoder=None, against=[shipped, transformer])
    out = robustness.run(args)
    m = out["metrics"]
    same, other = out["protocol"]["against"]                  # --against scores side by side in the same run
    for cond in m.values():                                   # the shipped file against itself: same columns
        assert cond[f"style_{same}"] == cond["style_encoder"]
    # another encoder's file really is used: its embeddings move differently under frame drops
    assert m["frame_drop:50pct"][f"style_{other}"]["similarity_to_clean"] != \
        m["frame_drop:50pct"]["style_encoder"]["similarity_to_clean"]
    assert list(m) == ["clean", "frame_drop:10pct", "frame_drop:30pct", "frame_drop:50pct"]
    assert m["clean"]["detection_rate"] == 1.0 and m["clean"]["displacement_mean"] == 0.0
    n = m["clean"]["frames"]
    assert n == 2 * 62                                           # 2.6 s at 23.976 fps of each clip
    for p in (10, 30, 50):
        d = m[f"frame_drop:{p}pct"]
        assert abs(d["frames"] - (1 - p / 100) * n) <= 2
        assert 0.0 <= d["displacement_mean"] < 0.2
    assert m["clean"]["style_pose_stats"]["top1"] == m["clean"]["style_pose_stats"]["top1_all"] == 1.0
    assert m["clean"]["style_pose_stats"]["coverage"] == 1.0
    assert m["frame_drop:50pct"]["style_pose_stats"]["drop"] is not None
    assert m["clean"]["style_pose_stats"]["similarity_to_clean"] == pytest.approx(1.0)
    assert 0.5 < m["frame_drop:50pct"]["style_pose_stats"]["similarity_to_clean"] <= 1.0 + 1e-6
    assert out["table_md"].count("\n") == 1 + len(m)
    for path in out["plots"]:
        assert (tmp_path / path.split("/")[-1]).stat().st_size > 5000
    json.dumps(out, default=float)


def test_style_metrics_count_lost_windows_as_wrong():
    from edge.records import Window

    def win(kp_xy, t0):
        kp = np.concatenate([kp_xy[None].repeat(60, 0), np.ones((60, 17, 1))], 2).astype(np.float32)
        kp[:, :, 0] += np.sin(np.arange(60) / 5.0)[:, None] * 10        # a little motion
        return Window(0, t0, t0 + 2, kp, np.ones(60, bool), t0 + np.arange(60) / 30)

    a, b = _standing(), _standing()[:, ::-1].copy()                      # B: x and y swapped, lying down
    def norm(ws):                                                        # mean keypoint position, unit length
        e = np.stack([w.kp[..., :2].mean((0, 1)) for w in ws]) if ws else np.zeros((0, 2))
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8)

    gallery = {"A": [win(a, 0.0)], "B": [win(b, 0.0)]}
    clean_q = {"A": [win(a, 0.125), win(a, 0.375)], "B": [win(b, 0.125)]}
    out = robustness.style_metrics(norm, gallery, {"A": [win(a, 0.125)], "B": []}, clean_q, tol=0.125)
    assert out["top1"] == 1.0
    assert out["top1_all"] == pytest.approx(1 / 3)
    assert out["coverage"] == pytest.approx(1 / 3)
    assert out["similarity_to_clean"] == pytest.approx(1.0)
    assert out["per_class"]["B"] == {"top1": None, "windows": 0, "expected": 1}
