"""Live fan-out to dashboards, and rolling latency statistics.

``LiveHub.publish`` may be called from any thread (the ingest thread); each WebSocket client
has an asyncio queue on the server's event loop, fed with ``call_soon_threadsafe``. A slow
client loses its oldest messages rather than slowing ingest down.
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections import deque

import numpy as np


class LiveHub:
    def __init__(self, queue_size: int = 512):
        self._clients: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self._lock = threading.Lock()
        self.queue_size = queue_size
        self.published = 0
        self.dropped = 0

    def subscribe(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        with self._lock:
            self._clients.add((loop, q))
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self._lock:
            self._clients = {c for c in self._clients if c[1] is not q}

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, message: dict) -> None:
        with self._lock:
            clients = list(self._clients)
        if not clients:
            return
        text = json.dumps(message, separators=(",", ":"), default=float)
        self.published += 1
        for loop, q in clients:
            try:
                loop.call_soon_threadsafe(self._put, q, text)
            except RuntimeError:      # loop closed
                self.unsubscribe(q)

    def _put(self, q: asyncio.Queue, text: str) -> None:
        if q.full():
            try:
                q.get_nowait()
                self.dropped += 1
            except asyncio.QueueEmpty:
                pass
        q.put_nowait(text)


class LatencyStats:
    """Per stage: the last `size` samples in milliseconds, plus lifetime count and sum."""

    STAGES = {
        "classify": "window arrival -> classified (kNN + prototypes)",
        "aggregate": "classified -> aggregated (smoothing, hysteresis, scores)",
        "publish": "window arrival -> sent to live dashboards",
        "store": "window arrival -> committed to the store",
        "total": "window arrival -> feedback ready for the edge (after the store commit)",
        "dashboard": "window arrival -> drawn in a dashboard (the browser's clock vs the cloud's; same machine in tests)",
        "dashboard_rtt": "window arrival -> the dashboard's drawn-acknowledgement back at the cloud (upper bound)",
    }

    def __init__(self, size: int = 4096):
        self.size = size
        self._d: dict[str, deque] = {}
        self._count: dict[str, int] = {}
        self._sum: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._d.setdefault(stage, deque(maxlen=self.size)).append(float(ms))
            self._count[stage] = self._count.get(stage, 0) + 1
            self._sum[stage] = self._sum.get(stage, 0.0) + float(ms)

    def samples(self, stage: str) -> list[float]:
        with self._lock:
            return list(self._d.get(stage, ()))

    def summary(self) -> dict[str, dict]:
        out = {}
        with self._lock:
            items = {k: list(v) for k, v in self._d.items()}
            counts, sums = dict(self._count), dict(self._sum)
        for stage, vals in items.items():
            a = np.asarray(vals)
            out[stage] = {"count": counts[stage], "sum_ms": sums[stage], "recent": len(a),
                          "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
                          "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()), "mean_ms": float(a.mean()),
                          "meaning": self.STAGES.get(stage, "")}
        return out
