"""Dynamic batch: one batch-4 run equals four batch-1 runs (landmarks and detector)."""
from __future__ import annotations

import numpy as np
import pytest

from edge.models import verify as V
from dancewire.paths import shared_data_dir


def _crops(n: int, size: int, low: float) -> tuple[np.ndarray, str]:
    root = shared_data_dir()
    if (root / "README.md").exists():
        inputs = V.collect_inputs(root, max_videos=2, frames_per_video=1)
        x = inputs.landmarks if size == V.LM_SIZE else inputs.detector
        if len(x) >= n:
            return x[:n], "real"
    rng = np.random.default_rng(0)
    return rng.uniform(low, 1.0, (n, size, size, 3)).astype(np.float32), "random"


def test_landmark_model_is_dynamic_batch(built_models):
    import onnx

    model = onnx.load(str(built_models / "pose_landmarks.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param, value.name
    assert [o.name for o in model.graph.output] == ["landmarks", "pose_flag", "world_landmarks"]
    assert model.graph.input[0].name == "image"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 256, 256]


def test_landmarks_batch4_equals_four_single_runs(built_models):
    x, kind = _crops(4, V.LM_SIZE, 0.0)
    run = V.ort_runner(built_models / "pose_landmarks.onnx")
    batched = run(x)
    assert batched["landmarks"].shape == (4, 195) and batched["pose_flag"].shape == (4, 1)
    assert batched["world_landmarks"].shape == (4, 117)
    for i in range(4):
        single = run(x[i:i + 1])
        for k in batched:
            np.testing.assert_allclose(batched[k][i:i + 1], single[k], atol=1e-4,
                                       err_msg=f"{k}, item {i} ({kind} inputs)")
    # in pixels: the 39 points agree to well under a thousandth of a pixel
    r = V.batch_consistency(run, x)
    assert r["overall"] <= 1e-3


@pytest.mark.parametrize("n", [1, 3, 7])
def test_landmarks_odd_batch_sizes(built_models, n):
    x, _ = _crops(n, V.LM_SIZE, 0.0)
    if len(x) < n:
        x = np.concatenate([x] * n)[:n]
    out = V.ort_runner(built_models / "pose_landmarks.onnx")(x)
    assert out["landmarks"].shape == (n, 195)


def test_detector_batch4_equals_four_single_runs(built_models):
    x, kind = _crops(4, V.DET_SIZE, -1.0)
    run = V.ort_runner(built_models / "pose_detector.onnx")
    r = V.batch_consistency(run, x)
    assert r["overall"] <= 1e-3, (kind, r)
    assert run(x)["boxes"].shape == (4, V.N_ANCHORS, 12)
