"""One-euro filter (Casiez et al. 2012) per track, as mediapipe's LandmarksSmoothingCalculator.

mediapipe's landmark parameters (min_cutoff 0.05 Hz, beta 80, derivative cutoff 1 Hz) are
given for normalised coordinates, but mediapipe itself applies them to *pixels* with a value
scale of 1 / object scale: the speed that drives the adaptive cutoff is measured in object
scales per second, while the position is filtered in pixels. We do the same, so the
parameters keep their meaning whatever the frame size or the dancer's distance:

    speed  = |dx / dt| / object_scale        (object scales per second, low-passed at d_cutoff)
    cutoff = min_cutoff + beta * speed       (Hz)
    x      = low-pass(x, alpha(cutoff, dt))  (pixels)

object_scale is the person's size in pixels: 2 x |landmark 33 - landmark 34| (mediapipe's
OBJECT_SCALE_ROI, i.e. the ROI side before the 1.25 margin); when it is unknown, the mean of
the keypoints' width and height. Scores get mediapipe's visibility low-pass (alpha 0.1).
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Vectorised one-euro filter over an array of values sharing one clock and one scale."""

    def __init__(self, min_cutoff: float = 0.05, beta: float = 80.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._t: float | None = None
        self._x: np.ndarray | None = None        # last filtered value
        self._raw: np.ndarray | None = None      # last raw value
        self._dx: np.ndarray | None = None       # last filtered derivative (scaled)

    def __call__(self, t: float, x: np.ndarray, value_scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._t is None or self._x is None:
            self._t, self._x, self._raw, self._dx = t, x.copy(), x.copy(), np.zeros_like(x)
            return x.copy()
        dt = t - self._t
        if dt <= 0:                               # mediapipe: out-of-order or repeated time
            return self._x.copy()
        dx = (x - self._raw) * value_scale / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = self._x + a * (x - self._x)
        self._raw, self._t = x.copy(), t
        return self._x.copy()


class PoseSmoother:
    """One-euro on keypoint positions and a low-pass on scores, one filter set per track."""

    def __init__(self, min_cutoff: float = 0.05, beta: float = 80.0, d_cutoff: float = 1.0,
                 score_alpha: float = 0.1, reset_s: float = 0.3):
        self.params = (min_cutoff, beta, d_cutoff)
        self.score_alpha = float(score_alpha)
        self.reset_s = float(reset_s)
        self._filters: dict[int, tuple[OneEuroFilter, list]] = {}   # id -> (xy filter, [score, last t])

    def __call__(self, track_id: int, t: float, kp: np.ndarray, object_scale: float | None = None) -> np.ndarray:
        """kp (K, 3) x, y, score in pixels -> smoothed copy."""
        kp = np.asarray(kp, np.float64)
        entry = self._filters.get(track_id)
        if entry is None or t - entry[1][1] > self.reset_s or t <= entry[1][1] - self.reset_s:
            entry = (OneEuroFilter(*self.params), [None, t])
            self._filters[track_id] = entry
        f, state = entry
        if object_scale is None or not object_scale > 0:
            span = np.ptp(kp[:, :2], axis=0)
            object_scale = max(float(span.mean()), 1.0)
        out = kp.copy()
        out[:, :2] = f(t, kp[:, :2], 1.0 / object_scale)
        if state[0] is None or self.score_alpha >= 1.0:
            state[0] = kp[:, 2].copy()
        else:
            # a NaN score would stay in the low-pass for good (and the quality filter drop the track)
            state[0] = state[0] + self.score_alpha * (np.where(np.isfinite(kp[:, 2]), kp[:, 2], state[0]) - state[0])
        out[:, 2] = state[0]
        state[1] = t
        return out

    def forget(self, keep_ids) -> None:
        """Drop the filters of tracks not in keep_ids."""
        keep = set(keep_ids)
        for tid in list(self._filters):
            if tid not in keep:
                del self._filters[tid]
