"""The converted ONNX models against the original TFLite models, on real images.

Raw tensors only (no decoding): the detector's boxes/scores for the same letterboxed
image, the landmark model's outputs for the same person crop. The TFLite side is the
ai-edge-litert interpreter running the untouched .tflite files from the wheel (the
detector with its sparse weights and DENSIFY ops), so the densification is checked too.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge.models import verify as V

pytestmark = pytest.mark.data

litert = pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (the TFLite reference) is not installed")


def _reference(path, x, names):
    from edge.models import tflite_ref

    raw, _ = tflite_ref.run(str(path), x)
    return {names[k]: v for k, v in raw.items()}


@pytest.fixture(scope="module")
def detector_pair(built_models, real_inputs):
    onnx_out = V.ort_runner(built_models / "pose_detector.onnx")(real_inputs.detector)
    ref = _reference(built_models / "pose_detection.tflite", real_inputs.detector, V.DETECTOR_OUTPUTS)
    return onnx_out, ref


@pytest.fixture(scope="module")
def landmark_ref(built_models, real_inputs):
    return _reference(built_models / "pose_landmark_full.tflite", real_inputs.landmarks, V.LANDMARK_OUTPUTS)


def test_inputs_are_real_people(real_inputs):
    assert len(real_inputs.detector) >= 8
    assert any(s.startswith("mmpose_coco/") for s in real_inputs.detector_sources)
    assert any(s.startswith("video/") for s in real_inputs.detector_sources)
    assert sum("#person" in s for s in real_inputs.landmark_sources) >= 8


def test_detector_matches_tflite(detector_pair):
    onnx_out, ref = detector_pair
    assert onnx_out["boxes"].shape == ref["boxes"].shape == (len(ref["boxes"]), V.N_ANCHORS, 12)
    r = V.compare_detector(onnx_out, ref)
    # the images hold people: TFLite must find someone in most of them, or the check is empty
    assert r["images_with_a_detection_tflite"] >= 0.8 * r["images"], r
    assert r["decision_mismatches"] == 0, r
    assert r["best_anchor_same"], r
    assert r["box_max_abs_diff_px_confident"] <= V.LIMITS["detector_box_px"], r
    assert r["score_max_abs_diff"] <= V.LIMITS["detector_score"], r
    assert r["best_score_max_abs_diff"] <= 1e-4, r


@pytest.mark.parametrize("name", ["pose_landmarks", "pose_landmarks_full"])
def test_landmarks_match_tflite_within_half_a_pixel(built_models, real_inputs, landmark_ref, name):
    onnx_out = V.ort_runner(built_models / f"{name}.onnx")(real_inputs.landmarks)
    r = V.compare_landmarks(onnx_out, landmark_ref)
    assert r["xy_max_abs_diff_px"] <= V.LIMITS["landmark_xy_px"], r
    assert r["z_max_abs_diff_px"] <= 1.0, r
    assert r["pose_flag_max_abs_diff"] <= 1e-3, r
    assert r["visibility_max_abs_diff"] <= 1e-3 and r["presence_max_abs_diff"] <= 1e-3, r
    assert r["world_max_abs_diff_m"] <= 1e-3, r
    # real people in the crops: TFLite itself is confident on most of them
    assert np.mean(landmark_ref["pose_flag"] > 0.5) >= 0.6


def test_trimmed_equals_full(built_models, real_inputs):
    """Cutting segmentation and heatmap does not change the kept outputs at all."""
    x = real_inputs.landmarks[:6]
    trimmed = V.ort_runner(built_models / "pose_landmarks.onnx")(x)
    full = V.ort_runner(built_models / "pose_landmarks_full.onnx")(x)
    assert set(trimmed) == {"landmarks", "pose_flag", "world_landmarks"}
    for k in trimmed:
        np.testing.assert_allclose(trimmed[k], full[k], atol=1e-4)

