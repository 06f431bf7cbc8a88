"""Typed records that flow between edge stages.

Times: ``t`` is media time in seconds on the one rig clock (the source's clock: frame
pts for files, monotonic capture time for live devices, both starting at 0).
``stamps`` maps a stage name to the wall-clock ``time.perf_counter()`` at which that stage
finished with the record; the latency suite reads them (Holoscan-style flow tracking).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)


def stamp(stamps: dict[str, float], stage: str) -> None:
    """Record that `stage` finished now."""
    stamps[stage] = time.perf_counter()


@dataclass
class Frame:
    """One decoded video frame, BGR uint8 (H, W, 3)."""
    index: int
    t: float
    image: np.ndarray
    stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class AudioBlock:
    """Mono float32 samples in [-1, 1] at `sample_rate`, the first sample at media time `t`."""
    t: float
    samples: np.ndarray
    sample_rate: int
    stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class Detection:
    """A person found by the detector, in original-frame pixels."""
    box: np.ndarray            # (4,) x0, y0, x1, y1
    score: float
    keypoints: np.ndarray      # (K, 2) detector keypoints (BlazePose: hip centre, scale, shoulder centre, upper body)


@dataclass
class Pose:
    """One dancer in one frame: COCO-17 keypoints (x, y, score) in original-frame pixels."""
    track_id: int
    t: float
    kp17: np.ndarray           # (17, 3)
    box: np.ndarray            # (4,) x0, y0, x1, y1
    score: float               # pose presence / mean confidence
    filled: np.ndarray | None = None   # (17,) bool: joints filled by cleaning, if any

    def to_json(self) -> dict:
        out = {
            "id": int(self.track_id),
            "box": [round(float(v), 2) for v in self.box],
            "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                          for x, y, s in self.kp17],
        }
        if self.filled is not None and np.any(self.filled):
            out["filled"] = [int(i) for i in np.flatnonzero(self.filled)]   # joints filled by cleaning
        return out


@dataclass
class PoseFrame:
    """All dancers in one frame, after tracking (and, later, smoothing and cleaning)."""
    index: int
    t: float
    width: int
    height: int
    poses: list[Pose]
    stamps: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"type": "frame", "t": round(self.t, 4), "dancers": [p.to_json() for p in self.poses]}


@dataclass
class Onset:
    t: float                   # estimated event time (media clock)
    known_at: float            # media time at which the tracker emitted it
    strength: float = 0.0

    def to_json(self) -> dict:
        return {"type": "onset", "t": round(self.t, 4), "known_at": round(self.known_at, 4)}


@dataclass
class Beat:
    t: float
    known_at: float
    count: int                 # 1..8 within the eight-count phrase
    bpm: float
    phrase: int = 0            # index of the eight-count phrase

    def to_json(self) -> dict:
        return {"type": "beat", "t": round(self.t, 4), "known_at": round(self.known_at, 4),
                "count": int(self.count), "bpm": round(float(self.bpm), 2)}


@dataclass
class Window:
    """A dancer's motion over [t0, t1]: sampled keypoints and a validity mask."""
    track_id: int
    t0: float
    t1: float
    kp: np.ndarray             # (N, 17, 3) sampled keypoints, pixels
    mask: np.ndarray           # (N,) bool: True where the frame is real
    times: np.ndarray          # (N,) media times of the samples
    stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class WindowResult:
    window: Window
    embedding: np.ndarray      # (D,) float32, L2-normalised
    rhythm: dict[str, float]
    stamps: dict[str, float] = field(default_factory=dict)

    def to_json(self, kind: str = "window") -> dict:
        """A `window` record, or with kind="primitive" a DanceMVP eight-beat primitive (t0, t1 = its downbeats)."""
        return {"type": kind, "dancer": int(self.window.track_id),
                "t0": round(self.window.t0, 4), "t1": round(self.window.t1, 4),
                "embedding": [round(float(v), 5) for v in self.embedding],
                "rhythm": {k: (round(float(v), 4) if v is not None else None) for k, v in self.rhythm.items()}}
