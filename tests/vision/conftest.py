"""Fixtures for the vision tests: the built pose models and decoded real video frames."""
from __future__ import annotations

import numpy as np
import pytest

from dancewire.errors import ModelCacheError


@pytest.fixture(scope="session")
def pose_model_paths():
    """Paths of the two BlazePose ONNX models; skips when `dancewire models build` was not run."""
    from edge.models.registry import model_path

    try:
        return model_path("pose_detector"), model_path("pose_landmarks")
    except ModelCacheError as exc:
        pytest.skip(f"pose models not built ({exc})")


@pytest.fixture()
def pose_stage(pose_model_paths):
    """A fresh PoseStage on onnxruntime with default settings."""
    from edge.engines import open_engine
    from edge.vision.settings import VisionSettings
    from edge.vision.stage import PoseStage

    det, lmk = (open_engine(p, "onnxruntime", threads=2) for p in pose_model_paths)
    stage = PoseStage(VisionSettings(), det, lmk)
    yield stage
    stage.close()


@pytest.fixture(scope="session")
def read_frames():
    """`read_frames(path, step=1, limit=None) -> (frames, fps)`: decode a video with PyAV."""
    return _read_frames


def _read_frames(path, step: int = 1, limit: int | None = None) -> tuple[list[np.ndarray], float]:
    """Decode a video's frames (BGR) with PyAV, every `step`-th one; returns (frames, fps)."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for i, frame in enumerate(container.decode(stream)):
            if i % step == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
                if limit is not None and len(frames) >= limit:
                    break
    return frames, fps
