"""Per-stage latency from record stamps: bounded memory over a long run, lifetime count and mean."""
from __future__ import annotations

import numpy as np

from edge.latency import LatencyRecorder


def test_latency_keeps_the_newest_samples_and_counts_them_all():
    rec = LatencyRecorder(keep=100)
    for i in range(1000):                      # ms: detect takes i % 10, landmarks 1 + the frame's tenth
        t = 0.001 * i
        rec.add({"capture": t, "detect": t + (i % 10) * 1e-3, "landmarks": t + (i % 10) * 1e-3 + 1e-3 * (i // 100)})
    assert all(len(v) == 100 for v in rec.samples.values())       # an 8 h session does not grow it
    s = rec.summary()
    assert s["detect"]["n"] == 1000 and np.isclose(s["detect"]["mean"], 4.5)
    assert np.isclose(s["landmarks"]["mean"], 4.5) and np.isclose(s["landmarks"]["p50"], 9.0)  # the newest 100
    assert np.isclose(s["total"]["p95"], np.percentile([(i % 10) + 9 for i in range(900, 1000)], 95))
