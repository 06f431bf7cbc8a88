"""Fixtures for the model-cache tests: the built models (skip when `dancewire models build`
has not been run) and inputs made from real images of the shared data folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from dancewire.errors import ModelCacheError


@pytest.fixture(scope="session")
def built_models() -> Path:
    """The real model cache, checked against its manifest; skips when it was not built."""
    from edge.models import registry

    directory = registry.models_dir()
    try:
        registry.verify_cache(directory, rehash=False)
        for name in ("pose_detector", "pose_landmarks", "pose_landmarks_full"):
            registry.model_path(name, directory)
    except ModelCacheError as exc:
        pytest.skip(f"models not built: {exc}")
    return directory


@pytest.fixture(scope="session")
def real_inputs(shared_data):
    """Letterboxed detector inputs and person crops from the shared data's real images."""
    from edge.models.verify import collect_inputs

    inputs = collect_inputs(shared_data, frames_per_video=2)
    assert inputs.kind == "real", "shared data is present but yielded no images"
    return inputs
