"""The model cache: `dancewire models build` (build.py) and `model_path(name)` (registry.py).

Pose models: BlazePose GHUM 3D (Google) detector + "full" landmarks from the mediapipe
0.10.21 wheel (Apache-2.0), converted to ONNX and verified against TFLite. See MODEL_CARD.md.
Importing this package is cheap; nothing here imports TensorFlow or mediapipe.
"""
from edge.models.registry import model_path

__all__ = ["model_path"]
