"""Per-stage latency from the `stamps` each record carries (Holoscan-style flow tracking)."""
from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from functools import partial

import numpy as np

KEEP = 20_000     # samples per stage the percentiles are taken over: about 11 min at 30 fps

# The order in which a frame's work happens; a stage's latency is the time since the
# previous stage present in the record's stamps.
# A live frame's "motion" is everything after its cleaning up to the drawing (the windows it completes:
# cut, encoded, scored, sent; ~0 on most frames); "feedback" is then the overlay drawn and shown.
STAGES = ("capture", "detect", "landmarks", "track", "clean", "window", "encode", "rhythm", "send", "motion", "feedback")
WINDOW_STAGES = ("window", "encode", "rhythm", "send")


class LatencyRecorder:
    """Per stage the last `keep` durations (a live rig runs for hours: memory stays bounded), and
    the lifetime count and mean. Percentiles are of the kept samples."""

    def __init__(self, stages: tuple[str, ...] = STAGES, keep: int = KEEP):
        self.stages = stages
        self.samples: dict[str, deque[float]] = defaultdict(partial(deque, maxlen=int(keep)))
        self._count: Counter = Counter()
        self._sum: Counter = Counter()
        self._lock = threading.Lock()       # stats() may read from another thread than the one adding

    def _put(self, stage: str, ms: float) -> None:
        with self._lock:
            self.samples[stage].append(ms)
            self._count[stage] += 1
            self._sum[stage] += ms

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
                self._put(stage, (stamps[stage] - stamps[prev]) * 1e3)
            prev = stage
        if origin in stamps and prev is not None and prev != origin:
            self._put(total, (stamps[prev] - stamps[origin]) * 1e3)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {p50, p95, p99 (of the kept samples), mean, n (lifetime)}} in milliseconds."""
        out = {}
        with self._lock:
            kept = {stage: (np.asarray(values), self._count[stage], self._sum[stage])
                    for stage, values in self.samples.items()}
        for stage, (arr, n, total) in kept.items():
            out[stage] = {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
                          "p99": float(np.percentile(arr, 99)), "mean": total / n, "n": n}
        return out
