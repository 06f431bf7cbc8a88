"""Rhythm metrics: how a dancer's motion lines up with the music.

Motion side (from keypoints): motion intensity = sum of joint speeds (DanceMVP), here in body
heights per second so cameras at any distance agree; motion peaks = its local maxima; motion
beats = local minima of the smoothed joint speed (kinematic beats: the body stops on the beat).
Music side (from `edge.audio` records, shifted by the audio offset): `Onset` times are the music
intensity peaks, `Beat` times the music beats (onsets stand in when no beat grid is known).

Metrics (each None when undefined; the names are the wire's `RhythmMetrics` fields, see `proto.codec`):
* ``beat_alignment``: DanceMVP beat alignment rate, the share of motion-intensity peaks within 0.2 s of a music peak;
* ``beat_coverage``: Ban / Lee et al., motion beats / music beats;
* ``beat_hit_rate``: aligned motion beats / motion beats (aligned: within 0.2 s of a music beat);
* ``align_recall``: beat-align score (AIST++ / Bailando style): mean over music beats of
  exp(-d^2 / 2 sigma^2), d = distance to the nearest motion beat; ``align_precision``: the same over
  motion beats towards music beats; ``align_f1``: their harmonic mean.
Times are media seconds; an offset o means a music event at audio time t happens at t + o.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from scipy.ndimage import gaussian_filter1d      # imported with the graph, not on the first window
from scipy.signal import find_peaks

from edge.motion.normalize import body_size
from edge.motion.settings import MotionSettings
from edge.records import Beat, Onset

METRICS = ("intensity", "beat_alignment", "beat_coverage", "beat_hit_rate", "align_recall", "align_precision", "align_f1",
           "motion_beats", "music_beats")


def joint_speed_sum(kp: np.ndarray, times: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum over joints of speed (body heights / s) between consecutive real samples -> (times, intensity)."""
    kp = np.asarray(kp, np.float64)[..., :2]
    times = np.asarray(times, np.float64)
    mask = np.ones(len(kp), bool) if mask is None else np.asarray(mask, bool)
    mask = mask & np.isfinite(kp).all(axis=(1, 2))
    kp, times = kp[mask], times[mask]
    if len(kp) < 3:
        return np.zeros(0), np.zeros(0)
    size = float(body_size(kp[None], np.ones((1, len(kp)), bool))[0])
    dt = np.diff(times)
    ok = dt > 1e-6
    sp = np.linalg.norm(np.diff(kp, axis=0), axis=-1).sum(-1) / np.where(ok, dt, 1.0) / size
    mid = 0.5 * (times[1:] + times[:-1])
    return mid[ok], sp[ok]


def _resample(t: np.ndarray, x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Regular grid (holes interpolated) so smoothing and peak distances are in seconds."""
    if len(t) < 2:
        return t, x
    grid = np.arange(t[0], t[-1] + 1e-9, 1.0 / rate)
    return grid, np.interp(grid, t, x)


def smooth(x: np.ndarray, sigma_samples: float) -> np.ndarray:
    if sigma_samples <= 0 or len(x) < 3:
        return x
    return gaussian_filter1d(x, sigma_samples, mode="nearest")


@dataclass
class MotionCurve:
    """Smoothed motion intensity on a regular grid, with its peaks and kinematic beats."""
    t: np.ndarray
    intensity: np.ndarray
    peaks: np.ndarray          # times of intensity maxima
    beats: np.ndarray          # times of speed minima (motion beats)


def motion_curve(t: np.ndarray, speed: np.ndarray, settings: MotionSettings | None = None, rate: float = 50.0) -> MotionCurve:
    s = settings or MotionSettings()
    t, x = _resample(np.asarray(t, float), np.asarray(speed, float), rate)
    if len(x) < 5:
        return MotionCurve(t, x, np.zeros(0), np.zeros(0))
    xs = smooth(x, s.smooth_s * rate)
    dist = max(1, int(round(s.min_peak_gap_s * rate)))
    prom = 0.1 * float(np.std(xs)) + 1e-9
    pk, _ = find_peaks(xs, distance=dist, prominence=prom)
    mn, _ = find_peaks(-xs, distance=dist, prominence=prom)
    return MotionCurve(t, xs, t[pk], t[mn])


def nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each time in a, the distance to the nearest time in b (inf when b is empty)."""
    a, b = np.asarray(a, float), np.sort(np.asarray(b, float))
    if len(b) == 0:
        return np.full(len(a), np.inf)
    j = np.clip(np.searchsorted(b, a), 1, len(b) - 1) if len(b) > 1 else np.zeros(len(a), int)
    d = np.abs(a - b[j])
    if len(b) > 1:
        d = np.minimum(d, np.abs(a - b[j - 1]))
    return d


def beat_alignment_rate(motion_peaks, music_peaks, tol: float = 0.2) -> float | None:
    motion_peaks = np.asarray(motion_peaks, float)
    if len(motion_peaks) == 0 or len(music_peaks) == 0:
        return None
    return float(np.mean(nearest_distance(motion_peaks, music_peaks) <= tol))


def beat_coverage(motion_beats, music_beats) -> float | None:
    return None if len(music_beats) == 0 else float(len(motion_beats) / len(music_beats))


def beat_hit_rate(motion_beats, music_beats, tol: float = 0.2) -> float | None:
    if len(motion_beats) == 0 or len(music_beats) == 0:
        return None
    return float(np.mean(nearest_distance(motion_beats, music_beats) <= tol))


def beat_align_score(motion_beats, music_beats, sigma: float = 0.1, *, motion_partners=None,
                     music_partners=None) -> dict[str, float | None]:
    """Recall: each music beat's Gaussian closeness to its nearest motion beat (among `motion_partners`,
    default `motion_beats`); precision: each motion beat's to its nearest music beat (among
    `music_partners`, default `music_beats`); F1 their harmonic mean. Partners may reach past a
    window's span so that a beat at its edge is not penalised for a partner just outside."""
    if len(motion_beats) == 0 or len(music_beats) == 0:
        return {"align_recall": None, "align_precision": None, "align_f1": None}
    motion_partners = motion_beats if motion_partners is None else motion_partners
    music_partners = music_beats if music_partners is None else music_partners
    rec = float(np.mean(np.exp(-nearest_distance(music_beats, motion_partners) ** 2 / (2 * sigma ** 2))))
    prec = float(np.mean(np.exp(-nearest_distance(motion_beats, music_partners) ** 2 / (2 * sigma ** 2))))
    f1 = 0.0 if rec + prec == 0 else 2 * rec * prec / (rec + prec)
    return {"align_recall": rec, "align_precision": prec, "align_f1": float(f1)}


def music_times(onsets: Iterable[Onset] = (), beats: Iterable[Beat] = (), offset: float = 0.0):
    """(music peaks, music beats) in media time. Onsets are the intensity peaks; beats fall back to onsets."""
    on = np.sort(np.array([o.t for o in onsets], float)) + offset
    bt = np.sort(np.array([b.t for b in beats], float)) + offset
    peaks = on if len(on) else bt
    return peaks, (bt if len(bt) else on)


def metrics(curve: MotionCurve, music_peaks: np.ndarray, music_beats: np.ndarray, t0: float | None = None,
            t1: float | None = None, settings: MotionSettings | None = None) -> dict[str, float | None]:
    """All rhythm metrics over [t0, t1] (default: the curve's span). Music events just outside the span
    still count as partners for the distance tests (within the tolerance), not as beats to cover."""
    s = settings or MotionSettings()
    if len(curve.t) == 0:
        return {k: None for k in METRICS}
    t0 = curve.t[0] if t0 is None else t0
    t1 = curve.t[-1] if t1 is None else t1
    inside = lambda x: np.asarray(x)[(np.asarray(x) >= t0) & (np.asarray(x) <= t1)]
    near = lambda x: np.asarray(x)[(np.asarray(x) >= t0 - s.align_tol_s) & (np.asarray(x) <= t1 + s.align_tol_s)]
    mp, mb = inside(curve.peaks), inside(curve.beats)
    xb_in, xb_near, xp_near = inside(music_beats), near(music_beats), near(music_peaks)
    sel = (curve.t >= t0) & (curve.t <= t1)
    out: dict[str, float | None] = {"intensity": float(np.mean(curve.intensity[sel])) if sel.any() else None}
    out["beat_alignment"] = beat_alignment_rate(mp, xp_near, s.align_tol_s) if len(music_peaks) else None
    out["beat_coverage"] = beat_coverage(mb, xb_in)
    out["beat_hit_rate"] = beat_hit_rate(mb, xb_near, s.align_tol_s)
    out.update(beat_align_score(mb, xb_in, s.align_sigma_s, motion_partners=curve.beats, music_partners=xb_near))
    out["motion_beats"] = float(len(mb))
    out["music_beats"] = float(len(xb_in))
    return out


def window_metrics(kp: np.ndarray, times: np.ndarray, mask: np.ndarray, onsets=(), beats=(), offset: float = 0.0,
                   settings: MotionSettings | None = None, t0: float | None = None, t1: float | None = None):
    """Rhythm metrics of one window (or any keypoint stream) against music events."""
    s = settings or MotionSettings()
    t, sp = joint_speed_sum(kp, times, mask)
    curve = motion_curve(t, sp, s)
    peaks, mbeats = music_times(onsets, beats, offset)
    return metrics(curve, peaks, mbeats, t0, t1, s)


@dataclass
class SessionRhythm:
    """Per-track running intensity for the session summary (cheap: one float per sample).

    Speeds are taken between every `step`-th frame, Tong's sampling step as in the windows, so the
    session's intensity is the windows' and does not grow with the camera's frame rate (keypoint
    jitter adds more speed the shorter the interval it is differenced over)."""
    settings: MotionSettings = field(default_factory=MotionSettings)
    t: list = field(default_factory=list)
    speed: list = field(default_factory=list)
    _prev: tuple | None = None
    _since: int = 0
    _size: float | None = None

    def push(self, t: float, kp: np.ndarray, valid: bool = True, step: int = 1) -> None:
        xy = np.asarray(kp, np.float64)[:, :2]
        if not valid or not np.isfinite(xy).all():
            self._prev = None
            return
        size = float(body_size(xy[None, None], np.ones((1, 1), bool))[0])
        self._size = size if self._size is None else 0.95 * self._size + 0.05 * size
        self._since += 1
        if self._prev is not None and self._since < step:
            return
        if self._prev is not None and t - self._prev[0] > 1e-6:
            sp = np.linalg.norm(xy - self._prev[1], axis=-1).sum() / (t - self._prev[0]) / self._size
            self.t.append(0.5 * (t + self._prev[0]))
            self.speed.append(float(sp))
        self._prev, self._since = (t, xy), 0

    def summary(self, onsets=(), beats=(), offset: float = 0.0) -> dict[str, float | None]:
        curve = motion_curve(np.array(self.t), np.array(self.speed), self.settings)
        peaks, mbeats = music_times(onsets, beats, offset)
        out = metrics(curve, peaks, mbeats, settings=self.settings)
        out["duration_s"] = float(curve.t[-1] - curve.t[0]) if len(curve.t) > 1 else 0.0
        return out
