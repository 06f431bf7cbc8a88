"""Rhythm metrics: how a dancer's motion lines up with the music.

Motion side (from keypoints): motion intensity = sum of joint speeds (DanceMVP), here in body
heights per second so cameras at any distance agree; motion peaks = its local maxima; motion
beats = local minima of the smoothed joint speed (kinematic beats: the body stops on the beat).
Music side (from `edge.audio` records, shifted by the audio offset): `Onset` times are the music
intensity peaks, `Beat` times the music beats (onsets stand in when no beat grid is known).

Only music the dancer could be scored against counts: beats to cover (and motion beats) are taken
inside the scored spans, the stretches with poses (a hole over `rhythm_gap_s` breaks them), less
`smooth_s` at each end where no speed minimum can be found, and, once a beat grid is known, only
where the grid has beats (a tracker that lost the beat leaves those stretches out, rather than
scoring onsets as beats there).

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

import math
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


def joint_speed_sum(kp: np.ndarray, times: np.ndarray, mask: np.ndarray | None = None,
                    max_gap_s: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
    """Sum over joints of speed (body heights / s) between consecutive real samples -> (times, intensity).
    Two samples over `max_gap_s` apart give no speed (the pose was lost in between)."""
    kp = np.asarray(kp, np.float64)[..., :2]
    times = np.asarray(times, np.float64)
    mask = np.ones(len(kp), bool) if mask is None else np.asarray(mask, bool)
    mask = mask & np.isfinite(kp).all(axis=(1, 2))
    kp, times = kp[mask], times[mask]
    if len(kp) < 3:
        return np.zeros(0), np.zeros(0)
    size = float(body_size(kp[None], np.ones((1, len(kp)), bool))[0])
    dt = np.diff(times)
    ok = (dt > 1e-6) & (dt <= max_gap_s)
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


Spans = list[tuple[float, float]]


def runs(times: np.ndarray, max_gap: float) -> Spans:
    """The stretches [first, last] of sorted times with no gap over `max_gap`."""
    times = np.asarray(times, float)
    if len(times) == 0:
        return []
    cut = np.flatnonzero(np.diff(times) > max_gap)
    return [(float(times[a]), float(times[b])) for a, b in zip(np.r_[0, cut + 1], np.r_[cut, len(times) - 1])]


def intersect(a: Spans, b: Spans) -> Spans:
    out = []
    for x0, x1 in a:
        for y0, y1 in b:
            lo, hi = max(x0, y0), min(x1, y1)
            if hi > lo:
                out.append((lo, hi))
    return out


def within(x: np.ndarray, spans: Spans) -> np.ndarray:
    """The times of x inside any span [lo, hi) (half-open: a beat on an edge belongs to one side)."""
    x = np.asarray(x, float)
    keep = np.zeros(len(x), bool)
    for lo, hi in spans:
        keep |= (x >= lo) & (x < hi)
    return x[keep]


@dataclass
class MotionCurve:
    """Smoothed motion intensity on a regular grid, with its peaks and kinematic beats, and the
    spans that had poses (the grid interpolates across shorter holes; longer ones break it)."""
    t: np.ndarray
    intensity: np.ndarray
    peaks: np.ndarray          # times of intensity maxima
    beats: np.ndarray          # times of speed minima (motion beats)
    spans: Spans = field(default_factory=list)


def motion_curve(t: np.ndarray, speed: np.ndarray, settings: MotionSettings | None = None, rate: float = 50.0) -> MotionCurve:
    s = settings or MotionSettings()
    spans = runs(t, s.rhythm_gap_s)
    t, x = _resample(np.asarray(t, float), np.asarray(speed, float), rate)
    if len(x) < 5:
        return MotionCurve(t, x, np.zeros(0), np.zeros(0), spans)
    xs = smooth(x, s.smooth_s * rate)
    dist = max(1, int(round(s.min_peak_gap_s * rate)))
    prom = 0.1 * float(np.std(xs)) + 1e-9
    pk, _ = find_peaks(xs, distance=dist, prominence=prom)
    mn, _ = find_peaks(-xs, distance=dist, prominence=prom)
    return MotionCurve(t, xs, within(t[pk], _closed(spans)), within(t[mn], _closed(spans)), spans)


def _closed(spans: Spans) -> Spans:
    return [(lo, hi + 1e-9) for lo, hi in spans]


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


def music_times(onsets: Iterable[Onset] = (), beats: Iterable[Beat] = (), offset: float = 0.0,
                fallback: bool = True) -> tuple[np.ndarray, np.ndarray, Spans | None]:
    """(music peaks, music beats, the beat grid's spans) in media time. Onsets are the intensity
    peaks. With no beats, onsets stand in for them when `fallback` (no beat grid is known at all)
    and the grid's spans are None (no limit); otherwise the spans are where the grid has beats:
    each run of beats no more than 1.5 beat periods apart, half a period past either end."""
    on = np.sort(np.array([o.t for o in onsets], float)) + offset
    beats = sorted(beats, key=lambda b: b.t)
    bt = np.array([b.t for b in beats], float) + offset
    peaks = on if len(on) else bt
    if not len(bt):
        return peaks, (on if fallback else bt), (None if fallback else [])
    diffs = np.diff(bt)
    typical = float(np.median(diffs)) if len(diffs) else 0.5
    period = np.array([60.0 / b.bpm if b.bpm > 0 else typical for b in beats])
    spans, start = [], 0
    for k in range(1, len(bt) + 1):
        if k == len(bt) or bt[k] - bt[k - 1] > 1.5 * period[k]:
            spans.append((float(bt[start] - period[start] / 2), float(bt[k - 1] + period[k - 1] / 2)))
            start = k
    return peaks, bt, spans


def scored_spans(curve: MotionCurve, t0: float, t1: float, grid: Spans | None, settings: MotionSettings) -> Spans:
    """Where beats count in [t0, t1): the curve's pose spans, `smooth_s` in from each end, within the grid."""
    edge = settings.smooth_s
    spans = intersect([(lo + edge, hi - edge) for lo, hi in curve.spans], [(t0, t1)])
    return spans if grid is None else intersect(spans, grid)


def metrics(curve: MotionCurve, music_peaks: np.ndarray, music_beats: np.ndarray, t0: float | None = None,
            t1: float | None = None, settings: MotionSettings | None = None,
            grid: Spans | None = None) -> dict[str, float | None]:
    """All rhythm metrics over [t0, t1) (default: the curve's span), counted inside the scored spans
    (see the module's docstring; `grid`: the beat grid's spans, None for no limit). Music events just
    outside still count as partners for the distance tests (within the tolerance), not as beats to cover."""
    s = settings or MotionSettings()
    if len(curve.t) == 0:
        return {k: None for k in METRICS}
    t0 = curve.t[0] if t0 is None else t0
    t1 = curve.t[-1] + 1e-9 if t1 is None else t1
    posed = intersect(_closed(curve.spans), [(t0, t1)])
    scored = scored_spans(curve, t0, t1, grid, s)
    near = lambda x: np.asarray(x)[(np.asarray(x) >= t0 - s.align_tol_s) & (np.asarray(x) <= t1 + s.align_tol_s)]
    mp, mb = within(curve.peaks, posed), within(curve.beats, scored)
    xb_in, xb_near, xp_near = within(music_beats, scored), near(music_beats), near(music_peaks)
    sel = np.isin(curve.t, within(curve.t, posed))
    out: dict[str, float | None] = {"intensity": float(np.mean(curve.intensity[sel])) if sel.any() else None}
    out["beat_alignment"] = beat_alignment_rate(mp, xp_near, s.align_tol_s) if len(music_peaks) else None
    out["beat_coverage"] = beat_coverage(mb, xb_in)
    out["beat_hit_rate"] = beat_hit_rate(mb, xb_near, s.align_tol_s) if len(xb_in) else None
    out.update(beat_align_score(mb, xb_in, s.align_sigma_s, motion_partners=curve.beats, music_partners=xb_near))
    out["motion_beats"] = float(len(mb))
    out["music_beats"] = float(len(xb_in))
    return out


def window_metrics(kp: np.ndarray, times: np.ndarray, mask: np.ndarray, onsets=(), beats=(), offset: float = 0.0,
                   settings: MotionSettings | None = None, t0: float | None = None, t1: float | None = None,
                   fallback: bool = True):
    """Rhythm metrics of one window (or any keypoint stream) against music events. `fallback`:
    onsets stand in for beats when there are none (no beat grid known yet)."""
    s = settings or MotionSettings()
    t, sp = joint_speed_sum(kp, times, mask, s.rhythm_gap_s)
    curve = motion_curve(t, sp, s)
    peaks, mbeats, grid = music_times(onsets, beats, offset, fallback)
    return metrics(curve, peaks, mbeats, t0, t1, s, grid)


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
        if self._prev is not None and t - self._prev[0] > self.settings.rhythm_gap_s:
            self._prev = None                     # out of view meanwhile: no speed across the hole
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
        peaks, mbeats, grid = music_times(onsets, beats, offset)
        out = metrics(curve, peaks, mbeats, settings=self.settings, grid=grid)
        out["duration_s"] = float(curve.t[-1] - curve.t[0]) if len(curve.t) > 1 else 0.0
        return out
