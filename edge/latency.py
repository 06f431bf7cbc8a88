"""Per-stage latency from the `stamps` each record carries (Holoscan-style flow tracking)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

# The order in which a frame's work happens; a stage's latency is the time since the
# previous stage present in the record's stamps.
STAGES = ("capture", "detect", "landmarks", "track", "clean", "window", "encode", "rhythm", "send", "feedback")
WINDOW_STAGES = ("window", "encode", "rhythm", "send")


class LatencyRecorder:
    def __init__(self, stages: tuple[str, ...] = STAGES):
        self.stages = stages
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stamps: dict[str, float], origin: str = "capture", total: str = "total",
            only: tuple[str, ...] | None = None) -> None:
        """Record the per-stage durations of one record, plus `total` from `origin` to its last stage.

        `only` limits the stages recorded (a window carries its last frame's stamps, which
        that frame already reported)."""
        prev = None
        for stage in self.stages:
            if stage not in stamps:
                continue
            if prev is not None and (only is None or stage in only):
                self.samples[stage].append((stamps[stage] - stamps[prev]) * 1e3)
            prev = stage
        if origin in stamps and prev is not None and prev != origin:
            self.samples[total].append((stamps[prev] - stamps[origin]) * 1e3)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {p50, p95, p99, mean, n}} in milliseconds."""
        out = {}
        for stage, values in self.samples.items():
            arr = np.asarray(values)
            out[stage] = {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
                          "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()), "n": int(arr.size)}
        return out
