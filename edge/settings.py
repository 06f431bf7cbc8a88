"""The edge node's one typed settings object (file -> $DANCEWIRE_EDGE_* -> --set), composed per area."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dancewire.config import load, require
from edge.audio.settings import AudioSettings
from edge.motion.settings import MotionSettings
from edge.vision.settings import VisionSettings


@dataclass(frozen=True)
class EngineSettings:
    backend: str = "onnxruntime"        # "onnxruntime" (CPU) or "tensorrt" (GPU)
    threads: int = 2                    # ONNX Runtime intra-op threads per model
    precision: str = "fp16"             # TensorRT: "fp32", "fp16" or "int8"

    def validate(self) -> "EngineSettings":
        from edge.engines import BACKENDS
        from edge.engines.trt import PRECISIONS

        require(self.backend in BACKENDS, "engine", f"backend {self.backend!r} not in {BACKENDS}")
        require(self.precision in PRECISIONS, "engine", f"precision {self.precision!r} not in {PRECISIONS}")
        require(self.threads >= 1, "engine", "threads must be >= 1")
        return self


@dataclass(frozen=True)
class SourceSettings:
    camera: str = "0"                   # V4L2 index or path, or a GStreamer pipeline ending in appsink
    width: int = 0                      # 0: the camera's default
    height: int = 0
    fps: float = 0.0
    frame_queue: int = 2                # leaky queue depth between capture and pose (frames)

    def validate(self) -> "SourceSettings":
        require(self.frame_queue >= 1, "source", "frame_queue must be >= 1")
        require(min(self.width, self.height) >= 0 and self.fps >= 0, "source", "width, height and fps must be >= 0")
        return self


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

    def validate(self) -> "LinkSettings":
        from edge.link.spool import FULL_POLICIES
        from proto.codec import DTYPES

        require(self.dtype in DTYPES, "link", f"dtype {self.dtype!r} not in {tuple(DTYPES)}")
        require(self.spool_on_full in FULL_POLICIES, "link",
                f"spool_on_full {self.spool_on_full!r} not in {FULL_POLICIES}")
        require(self.spool_max_mb >= 1, "link", "spool_max_mb must be >= 1")
        m = re.fullmatch(r"tcp://(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(\d+)", self.endpoint)
        require(bool(m) and 1 <= int(m.group(2)) <= 65535 or self.endpoint.startswith("ipc://") and len(self.endpoint) > 6,
                "link", f"endpoint {self.endpoint!r} is not tcp://HOST:PORT (port 1..65535) or ipc://PATH")
        return self


@dataclass(frozen=True)
class EdgeSettings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    source: SourceSettings = field(default_factory=SourceSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    motion: MotionSettings = field(default_factory=MotionSettings)
    link: LinkSettings = field(default_factory=LinkSettings)

    def validate(self) -> "EdgeSettings":
        """Every area's ranges and choices, so a bad value is one clear error at start, not a
        traceback (or a hang) later."""
        for area in (self.engine, self.source, self.vision, self.audio, self.motion, self.link):
            area.validate()
        return self


def load_edge_settings(file: str | Path | None = None, overrides: list[str] | None = None) -> EdgeSettings:
    return load(EdgeSettings, file, "DANCEWIRE_EDGE", overrides).validate()
