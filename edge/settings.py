"""The edge node's one typed settings object (file -> $DANCEWIRE_EDGE_* -> --set), composed per area."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dancewire.config import load
from edge.audio.settings import AudioSettings
from edge.motion.settings import MotionSettings
from edge.vision.settings import VisionSettings


@dataclass(frozen=True)
class EngineSettings:
    backend: str = "onnxruntime"        # "onnxruntime" (CPU) or "tensorrt" (GPU)
    threads: int = 2                    # ONNX Runtime intra-op threads per model
    precision: str = "fp16"             # TensorRT: "fp32", "fp16" or "int8"


@dataclass(frozen=True)
class SourceSettings:
    camera: str = "0"                   # V4L2 index or path, or a GStreamer pipeline ending in appsink
    width: int = 0                      # 0: the camera's default
    height: int = 0
    fps: float = 0.0
    frame_queue: int = 2                # leaky queue depth between capture and pose (frames)


@dataclass(frozen=True)
class LinkSettings:
    endpoint: str = "tcp://127.0.0.1:5555"
    node_id: str = ""                   # default: the host name
    dtype: str = "int8"                 # embedding on the wire: "int8" or "fp16"
    client_key: Path | None = None      # node's .key_secret (default: state_dir()/keys/edge.key_secret)
    server_key: Path | None = None      # cloud's .key (default: state_dir()/keys/cloud.key)
    insecure_dev: bool = False          # plaintext: development only
    spool_max_mb: int = 64
    spool_on_full: str = "drop_oldest"


@dataclass(frozen=True)
class EdgeSettings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    source: SourceSettings = field(default_factory=SourceSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    motion: MotionSettings = field(default_factory=MotionSettings)
    link: LinkSettings = field(default_factory=LinkSettings)


def load_edge_settings(file: str | Path | None = None, overrides: list[str] | None = None) -> EdgeSettings:
    return load(EdgeSettings, file, "DANCEWIRE_EDGE", overrides)
