"""Per-dancer windows (Tong's sampling) and DanceMVP eight-beat primitives.

Tong: windows of `window_s` (2 s) holding at most `max_frames` (60) samples, taking every
s-th frame with s = max(1, floor(f / 30)) (f within 2% below a multiple of 30 counts as that
multiple: a 59.94 fps camera samples every 2nd frame, like a 60 fps one). Live, the sampling grid
is laid in media time: sample j of a window starting at t0 sits at t0 + j * s / f and takes the
pose frame nearest to it (within 0.6 frame periods; a tie goes to the earlier frame); a missing or
unconfident pose leaves the sample masked. Window starts are a whole number of frames apart (the
hop rounded to frames, as offline: 0.5 s at 25 fps is 12 frames, 0.48 s), so samples fall on frames.
Windows with fewer than `min_valid` (18) real samples are dropped. A window spans
its samples: t1 = t0 + n * s / f, which is `window_s` unless the 60-sample cap cuts it short
(50 fps: 1.2 s), so its rhythm metrics count only the music it covers.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge.motion.settings import MotionSettings
from edge.records import Beat, PoseFrame, Window

NOMINAL_FPS = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0, 90.0, 100.0, 119.88, 120.0)


def confident(kp: np.ndarray, min_joint_conf: float) -> np.ndarray | bool:
    """A pose (17, C), or each pose of (..., 17, C), is real when its mean keypoint confidence
    reaches `min_joint_conf` (keypoints without a confidence channel always are). One rule for the
    live cutter, the offline cut and the session rhythm."""
    kp = np.asarray(kp)
    if kp.shape[-1] < 3:
        return np.ones(kp.shape[:-2], bool) if kp.ndim > 2 else True
    ok = np.nan_to_num(kp[..., 2]).mean(-1) >= min_joint_conf
    return ok if kp.ndim > 2 else bool(ok)


def sample_step(fps: float) -> int:
    """Tong's step: every s-th frame, s = max(1, floor(f / 30)), with 2% tolerance (NTSC rates)."""
    return max(1, int(math.floor(fps / 30.0 + 0.02)))


def nominal_fps(fps: float) -> float:
    """A measured frame rate snapped to the nearest common camera rate within 3% (a millisecond
    time base makes 60 fps measure 58.8), else as measured."""
    best = min(NOMINAL_FPS, key=lambda f: abs(f - fps))
    return best if abs(best - fps) <= 0.03 * best else float(fps)


def samples_per_window(fps: float, window_s: float = 2.0, max_frames: int = 60) -> int:
    return max(1, min(max_frames, int(math.floor(window_s * fps / sample_step(fps) + 1e-6))))


def cut_sequence(kp: np.ndarray, fps: float, settings: MotionSettings | None = None, *,
                 hop_s: float | None = None, valid: np.ndarray | None = None, track_id: int = 0,
                 t_start: float = 0.0) -> list[Window]:
    """Cut a regularly sampled sequence (T, 17, C) into windows (offline: datasets, files), the
    windows the live cutter would cut from it (poses under `min_joint_conf` are masked)."""
    s = settings or MotionSettings()
    kp = np.asarray(kp, np.float32)
    if kp.ndim == 3:                            # unconfident poses are masked, as live
        conf_ok = confident(kp, s.min_joint_conf)
        valid = conf_ok if valid is None else (np.asarray(valid, bool) & conf_ok)
    arr = cut_arrays(kp, fps, s, hop_s=hop_s, valid=valid)
    windows = []
    span = samples_per_window(fps, s.window_s, s.max_frames) * sample_step(fps) / fps
    for w, m, start in zip(*arr):
        times = t_start + (start + np.arange(s.max_frames) * sample_step(fps)) / fps
        t0 = t_start + start / fps
        windows.append(Window(track_id, float(t0), float(t0 + span), w, m, times))
    return windows


def cut_arrays(kp: np.ndarray, fps: float, settings: MotionSettings | None = None, *,
               hop_s: float | None = None, valid: np.ndarray | None = None):
    """Vectorised `cut_sequence`: (W, max_frames, 17, C) keypoints, (W, max_frames) masks, (W,) start frames.

    Samples past the window's n = min(max_frames, floor(window_s * f / s)) samples, past the
    end of the sequence, or on invalid frames (NaN, or `valid` False) are masked and zero.
    """
    s = settings or MotionSettings()
    kp = np.asarray(kp, np.float32)
    T = len(kp)
    step = sample_step(fps)
    n = samples_per_window(fps, s.window_s, s.max_frames)
    hop = max(1, int(round((s.hop_s if hop_s is None else hop_s) * fps)))
    ok = np.isfinite(kp[..., :2]).all(axis=(-1, -2))
    if valid is not None:
        ok &= np.asarray(valid, bool)
    span = (n - 1) * step + 1
    starts = np.arange(0, max(T - span, 0) + 1, hop)
    if T == 0:
        starts = np.zeros(0, int)
    idx = starts[:, None] + np.arange(s.max_frames)[None, :] * step          # (W, max_frames)
    inside = (np.arange(s.max_frames)[None, :] < n) & (idx < T)
    idx_c = np.minimum(idx, max(T - 1, 0))
    mask = inside & ok[idx_c] if T else np.zeros(idx.shape, bool)
    w = kp[idx_c] if T else np.zeros(idx.shape + kp.shape[1:], np.float32)
    w = np.where(mask[..., None, None], np.nan_to_num(w), 0.0).astype(np.float32)
    keep = mask.sum(1) >= s.min_valid
    return w[keep], mask[keep], starts[keep]


@dataclass
class _Track:
    times: deque = field(default_factory=deque)
    kps: deque = field(default_factory=deque)
    valid: deque = field(default_factory=deque)
    next_t0: float | None = None
    last_seen: float = 0.0


class WindowCutter:
    """Live windows per track: `push(pose_frame)` returns the windows that this frame completed
    (the frame nearest a window's last sample completes it, so a stream that ends there keeps it).

    `push_beat(beat)` feeds the audio tracker's beats; with `eight_beats` on, each run of eight
    consecutive beats (counts 1..8, no gap over 1.75 beat periods) up to the next downbeat
    becomes one eight-beat primitive per track, cut once the poses have caught up with it
    (`Window` over the phrase, `max_frames` samples spread evenly across it). A phrase broken by a
    missed beat, a count that jumps, or a tracker restart is skipped, never stretched.
    `fps`: the source's frame rate when known; otherwise it is measured from the frame times.
    """

    def __init__(self, settings: MotionSettings | None = None, fps: float | None = None):
        self.s = settings or MotionSettings()
        self.fixed_fps = fps
        self._dts: deque = deque(maxlen=60)
        self._last_t: float | None = None
        self.tracks: dict[int, _Track] = {}
        self._downbeat: float | None = None  # start of the phrase being counted
        self._run = 0                         # consecutive beats counted in it (1..8)
        self._last_beat: Beat | None = None
        self._phrases: deque = deque()       # (t_start, t_end) waiting for poses
        self.step = 1                         # Tong's step at the last frame pushed
        self.primitives: list[Window] = []   # eight-beat primitives cut so far (drained by the caller)

    @property
    def fps(self) -> float:
        if self.fixed_fps:
            return nominal_fps(float(self.fixed_fps))
        if len(self._dts) < 3:
            return self.s.base_fps
        dt = float(np.median(self._dts))
        return nominal_fps(1.0 / dt) if dt > 0 else self.s.base_fps

    def push_beat(self, beat: Beat) -> None:
        if not self.s.eight_beats:
            return
        prev, self._last_beat = self._last_beat, beat
        gap = prev is not None and beat.bpm > 0 and beat.t - prev.t > 1.75 * 60.0 / beat.bpm
        if beat.count == 1:
            if self._downbeat is not None and self._run == 8 and not gap and beat.t > self._downbeat:
                self._phrases.append((self._downbeat, beat.t))
            self._downbeat, self._run = beat.t, 1
        elif self._downbeat is not None and prev is not None and beat.count == prev.count + 1 and not gap:
            self._run += 1
        else:
            self._downbeat, self._run = None, 0      # a broken phrase: wait for the next count 1

    def push(self, frame: PoseFrame) -> list[Window]:
        t = float(frame.t)
        if self._last_t is not None and t > self._last_t:
            self._dts.append(t - self._last_t)
        self._last_t = t
        for pose in frame.poses:
            tr = self.tracks.setdefault(int(pose.track_id), _Track())
            kp = np.asarray(pose.kp17, np.float32)
            conf_ok = confident(kp, self.s.min_joint_conf)
            tr.times.append(t)
            tr.kps.append(kp[:, :3] if kp.shape[1] >= 3 else np.concatenate([kp, np.ones((17, 1), np.float32)], 1))
            tr.valid.append(bool(conf_ok and np.isfinite(kp[:, :2]).all()))
            tr.last_seen = t
            if tr.next_t0 is None:
                tr.next_t0 = t
        out: list[Window] = []
        fps = self.fps
        self.step = sample_step(fps)          # Tong's step at this frame (the session rhythm uses it too)
        last = (samples_per_window(fps, self.s.window_s, self.s.max_frames) - 1) * self.step / fps
        hop = max(1, round(self.s.hop_s * fps)) / fps       # whole frames, as offline
        for tid in list(self.tracks):
            tr = self.tracks[tid]
            out += self._cut_from(tid, tr, t - last + 0.5 / fps, hop)
            if t - tr.last_seen > self.s.max_track_gap_s:
                # gone: the windows begun while it was in view are cut with what it left
                out += self._cut_from(tid, tr, tr.last_seen, hop)
                del self.tracks[tid]
        while self._phrases and t >= self._phrases[0][1]:
            a, b = self._phrases.popleft()
            for tid, tr in self.tracks.items():
                grid = np.linspace(a, b, self.s.max_frames, endpoint=False)
                w = self._sample(tid, tr, grid, a, b)
                if w is not None:
                    self.primitives.append(w)
        self._prune(t)
        return out

    def flush(self) -> list[Window]:
        """Forget all tracks (end of stream); windows whose last sample never came are dropped."""
        self.tracks.clear()
        return []

    def _cut_from(self, tid: int, tr: _Track, upto: float, hop: float) -> list[Window]:
        """The windows of `tr` that start at or before `upto`, one hop apart."""
        out = []
        while tr.next_t0 is not None and tr.next_t0 <= upto:
            w = self._cut(tid, tr, tr.next_t0)
            tr.next_t0 += hop
            if w is not None:
                out.append(w)
        return out

    def _cut(self, tid: int, tr: _Track, t0: float) -> Window | None:
        fps = self.fps
        step = sample_step(fps)
        n = samples_per_window(fps, self.s.window_s, self.s.max_frames)
        grid = t0 + np.arange(n) * step / fps
        return self._sample(tid, tr, grid, t0, t0 + n * step / fps)

    def _sample(self, tid: int, tr: _Track, grid: np.ndarray, t0: float, t1: float) -> Window | None:
        if not tr.times:
            return None
        times = np.fromiter(tr.times, float, len(tr.times))
        kps = np.stack(tr.kps)
        valid = np.fromiter(tr.valid, bool, len(tr.valid))
        j = np.clip(np.searchsorted(times, grid), 1, max(len(times) - 1, 1))
        j0 = np.clip(j - 1, 0, len(times) - 1)
        j1 = np.clip(j, 0, len(times) - 1)
        near = np.where(np.abs(times[j0] - grid) <= np.abs(times[j1] - grid) + 1e-9, j0, j1)   # a tie: the earlier
        tol = 0.6 / self.fps
        ok = (np.abs(times[near] - grid) <= tol) & valid[near]
        N = self.s.max_frames
        kp = np.zeros((N, 17, 3), np.float32)
        mask = np.zeros(N, bool)
        tt = np.zeros(N, float)
        n = len(grid)
        kp[:n] = np.where(ok[:, None, None], kps[near], 0.0)
        mask[:n] = ok
        tt[:n] = grid
        if n < N and n > 1:
            tt[n:] = grid[-1] + (np.arange(1, N - n + 1)) * (grid[1] - grid[0])
        if mask.sum() < self.s.min_valid:
            return None
        return Window(tid, float(t0), float(t1), kp, mask, tt)

    def _prune(self, t: float) -> None:
        keep_from = t - 30.0
        for tr in self.tracks.values():
            horizon = min(tr.next_t0 if tr.next_t0 is not None else t, t) - 1.0
            if self._phrases:
                horizon = min(horizon, self._phrases[0][0] - 1.0)
            elif self._downbeat is not None and self.s.eight_beats:
                horizon = min(horizon, self._downbeat - 1.0)
            horizon = max(horizon, keep_from)
            while tr.times and tr.times[0] < horizon:
                tr.times.popleft(); tr.kps.popleft(); tr.valid.popleft()
