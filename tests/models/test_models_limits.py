"""The verification limits of a model build: what must fail does fail, NaN included."""
from __future__ import annotations

import math

import numpy as np

from edge.models import verify as V


def _clean_report() -> dict:
    lm = {"xy_max_abs_diff_px": 0.002, "z_max_abs_diff_px": 0.004, "visibility_max_abs_diff": 2e-5,
          "presence_max_abs_diff": 6e-6, "pose_flag_max_abs_diff": 2e-5, "world_max_abs_diff_m": 4e-5}
    return {"landmarks": {"pose_landmarks": dict(lm)},
            "detector": {"box_max_abs_diff_px_confident": 3e-5, "score_max_abs_diff": 8e-7, "decision_mismatches": 0},
            "batch": {"pose_landmarks": {"overall": 0.0}, "pose_detector": {"overall": 0.0}}}


def test_a_clean_report_passes():
    assert V.check_limits(_clean_report()) == []


def test_nan_and_every_landmark_output_are_checked():
    """NaN compares False with any limit: a model giving only NaN passed, and the pose flag, depth,
    visibility, presence and world landmarks were never limited at all."""
    for section, key, field, bad in [
            ("landmarks", "pose_landmarks", "xy_max_abs_diff_px", math.nan),
            ("landmarks", "pose_landmarks", "pose_flag_max_abs_diff", 0.958),
            ("landmarks", "pose_landmarks", "world_max_abs_diff_m", 5.0),
            ("landmarks", "pose_landmarks", "z_max_abs_diff_px", 100.0),
            ("landmarks", "pose_landmarks", "visibility_max_abs_diff", 1.0),
            ("landmarks", "pose_landmarks", "presence_max_abs_diff", math.nan),
            ("detector", None, "box_max_abs_diff_px_confident", math.nan),
            ("batch", "pose_detector", "overall", math.nan),
            ("batch", "pose_landmarks", "overall", math.inf)]:
        report = _clean_report()
        target = report[section] if key is None else report[section][key]
        target[field] = bad
        assert V.check_limits(report), (section, key, field, bad)


def test_a_batch_stuck_at_one_row_fails_the_batch_check():
    def stuck(x):                                   # a "dynamic" model that returns one row for any batch
        return {"out": np.asarray(x)[:1].reshape(1, -1).sum(1, keepdims=True)}

    x = V.distinct_batch(np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32))
    assert len(x) == 4 and len({a.tobytes() for a in x}) == 4   # padded with mirrored copies, all different
    assert V.batch_consistency(stuck, x)["overall"] == math.inf
