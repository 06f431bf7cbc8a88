"""Ban's pose cleaning: jump rejection + spline interpolation, per track and per joint.

Ban (Tilburg thesis, sec. 3.3) rejects a frame when any keypoint moved more than 50 px from
the previous frame in 1/30 s, compares with the frame before when only the previous frame
was rejected (so a real move is re-accepted after two rejections), and recovers missing and
rejected frames by spline interpolation. Here, per joint rather than per frame:

* a joint is *rejected* when it is farther than `jump_max` x body size x (dt * 30) from its
  last accepted position (body size = the track's median box long side, dt = time since that
  position, the factor clamped to [0.5, 5]); after `max_rejects` consecutive rejections it is
  compared with its previous (rejected) position instead, as Ban does;
* a joint is *missing* when its track has no pose in a frame (the tracker kept the track);
* gaps (missing or rejected runs) of at most `max_gap` frames are filled by a cubic spline
  (scipy make_interp_spline, degree lowered when fewer points) through up to `context`
  accepted samples on each side, in time.

Two outputs, so that the live path never waits:

* `live(posefr)` cleans the newest frame in place at once: rejected joints hold their last
  accepted position with score 0 and `filled` True; nothing can be interpolated yet;
* `pop_final()` returns the frames that are final: gaps filled by the spline, tracks that
  were missed for a few frames re-inserted, `Pose.filled` marking every filled joint. A frame
  is final as soon as no later frame can change it (every joint accepted and no recent track
  missing, or the sample that closes each of its gaps has arrived), and at the latest when it
  is `delay` frames old: a clean stream is not delayed at all, a gap holds the frames from its
  start until it closes. `flush()` finalises the rest at the end of a stream.
The longest gap that can be filled is min(max_gap, delay) frames; the spline uses the
`context` accepted samples before a gap and those after it that have arrived when it closes.
Gaps and ages are counted in the frames this cleaner is given, not in `Frame.index` (a rig slower
than its camera drops frames, and the camera's counter then skips).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.interpolate import make_interp_spline

from edge.records import Pose, PoseFrame

BASE_FPS = 30.0


def _copy(pose: Pose) -> Pose:
    return Pose(pose.track_id, pose.t, np.array(pose.kp17, np.float32, copy=True), np.array(pose.box, copy=True),
                pose.score, None if pose.filled is None else pose.filled.copy())


class _Sample(NamedTuple):
    index: int                     # the cleaner's own frame count (see PoseCleaner.live)
    t: float
    kp: np.ndarray                 # (17, 3) as measured (before any fill)
    accepted: np.ndarray           # (17,) bool
    box: np.ndarray


@dataclass
class _LiveState:
    last_xy: np.ndarray            # (17, 2) last accepted position
    last_t: np.ndarray             # (17,) its time
    prev_xy: np.ndarray            # (17, 2) previous raw position
    prev_t: float
    rejects: np.ndarray            # (17,) consecutive rejections
    sizes: deque = field(default_factory=lambda: deque(maxlen=15))
    last_index: int = -1


@dataclass
class _Entry:
    """One frame waiting to be finalised."""
    frame: PoseFrame               # skeleton: index, t, size, stamps (poses replaced on output)
    seq: int                       # the cleaner's own frame count
    poses: dict[int, Pose]         # track id -> pose (copy of the live one, raw accepted values)
    accepted: dict[int, np.ndarray]  # track id -> (17,) bool


class PoseCleaner:
    def __init__(self, jump_max: float = 0.35, max_rejects: int = 2, max_gap: int = 4,
                 delay: int = 5, context: int = 4, reset_frames: int | None = None):
        self.jump_max = float(jump_max)
        self.max_rejects = int(max_rejects)
        self.max_gap = int(max_gap)
        self.delay = max(0, int(delay))
        self.context = max(1, int(context))
        self.reset_frames = reset_frames if reset_frames is not None else max(self.max_gap, self.delay) + 1
        self.reset()

    def reset(self) -> None:
        self._live: dict[int, _LiveState] = {}
        self._buffer: deque[_Entry] = deque()
        self._hist: dict[int, deque[_Sample]] = {}     # finalised samples per track
        self._held: dict[int, np.ndarray] = {}          # track id -> (17, 2) last accepted, finalised
        self._seq = 0                                   # frames given to live() so far
        self.rejected_total = 0
        self.filled_total = 0

    # -- live path ------------------------------------------------------------------------
    def _body_size(self, st: _LiveState, pose: Pose) -> float:
        b = np.asarray(pose.box, np.float64)
        st.sizes.append(max(b[2] - b[0], b[3] - b[1], 1.0))
        return float(np.median(st.sizes))

    def _check(self, pose: Pose, index: int, t: float) -> np.ndarray:
        """Jump test of one pose; updates the live state; returns accepted (17,) bool."""
        xy = np.asarray(pose.kp17[:, :2], np.float64)
        st = self._live.get(pose.track_id)
        if st is None or index - st.last_index > self.reset_frames:
            st = _LiveState(xy.copy(), np.full(len(xy), t), xy.copy(), t, np.zeros(len(xy), int))
            self._live[pose.track_id] = st
            st.last_index = index
            self._body_size(st, pose)
            return np.ones(len(xy), bool)
        body = self._body_size(st, pose)
        relock = st.rejects >= self.max_rejects
        ref = np.where(relock[:, None], st.prev_xy, st.last_xy)
        dt = np.where(relock, t - st.prev_t, t - st.last_t)
        factor = np.clip(dt * BASE_FPS, 0.5, 5.0)
        dist = np.linalg.norm(xy - ref, axis=1)
        accepted = dist <= self.jump_max * body * factor
        st.last_xy[accepted] = xy[accepted]
        st.last_t[accepted] = t
        st.rejects = np.where(accepted, 0, st.rejects + 1)
        st.prev_xy, st.prev_t, st.last_index = xy.copy(), t, index
        return accepted

    def live(self, posefr: PoseFrame) -> PoseFrame:
        """Clean the newest frame in place (jump rejection only) and buffer it for the spline."""
        accepted_by_id = {}
        raw = {}
        seq, self._seq = self._seq, self._seq + 1
        for tid in [tid for tid, st in self._live.items() if seq - st.last_index > self.reset_frames]:
            del self._live[tid]           # would start afresh anyway: a long session does not pile them up
        for pose in posefr.poses:
            acc = self._check(pose, seq, posefr.t)
            accepted_by_id[pose.track_id] = acc
            raw[pose.track_id] = _copy(pose)
            if not acc.all():
                self.rejected_total += int((~acc).sum())
                st = self._live[pose.track_id]
                bad = ~acc
                pose.kp17 = np.array(pose.kp17, np.float32, copy=True)
                pose.kp17[bad, :2] = st.last_xy[bad]
                pose.kp17[bad, 2] = 0.0
                filled = np.zeros(len(pose.kp17), bool) if pose.filled is None else pose.filled.copy()
                filled[bad] = True
                pose.filled = filled
        skeleton = PoseFrame(posefr.index, posefr.t, posefr.width, posefr.height, [], dict(posefr.stamps))
        self._buffer.append(_Entry(skeleton, seq, raw, accepted_by_id))
        return posefr

    # -- delayed path -----------------------------------------------------------------------
    def pop_final(self) -> list[PoseFrame]:
        """Frames that are final (settled, or `delay` frames old), oldest first, gaps filled."""
        out = []
        while self._buffer and (len(self._buffer) > self.delay or self._settled()):
            out.append(self._finalize(self._buffer.popleft()))
        return out

    def _settled(self) -> bool:
        """No later frame can change the oldest buffered one: each of its rejected joints and each
        recently seen track it misses is back in a later frame (or it has none)."""
        head, later = self._buffer[0], list(self._buffer)[1:]
        for tid, acc in head.accepted.items():
            for j in np.flatnonzero(~acc):
                if not any(tid in e.accepted and e.accepted[tid][j] for e in later):
                    return False
        for tid, hist in self._hist.items():
            if (tid not in head.poses and head.seq - hist[-1].index <= self.max_gap
                    and not any(tid in e.poses for e in later)):
                return False
        return True

    def flush(self) -> list[PoseFrame]:
        out = []
        while self._buffer:
            out.append(self._finalize(self._buffer.popleft()))
        return out

    def _future(self, tid: int) -> list[_Sample]:
        return [_Sample(e.seq, e.frame.t, np.asarray(e.poses[tid].kp17, np.float64), e.accepted[tid],
                        np.asarray(e.poses[tid].box)) for e in self._buffer if tid in e.poses]

    def _fill_joint(self, j: int, index: int, t: float, past: list[_Sample],
                    future: list[_Sample]) -> np.ndarray | None:
        """Spline value (x, y, score) of joint j at (index, t), or None if the gap is too long."""
        before = [(p.index, p.t, p.kp[j]) for p in past if p.accepted[j]][-self.context:]
        after = [(p.index, p.t, p.kp[j]) for p in future if p.accepted[j]][:self.context]
        if not before or not after:
            return None
        gap = after[0][0] - before[-1][0] - 1
        if gap > min(self.max_gap, self.delay) or gap < 1:
            return None
        pts = before + after
        ts = np.array([p[1] for p in pts], np.float64)
        vals = np.array([p[2] for p in pts], np.float64)
        if np.any(np.diff(ts) <= 0):
            return None
        k = min(3, len(pts) - 1)
        xy = make_interp_spline(ts, vals[:, :2], k=k)(t)
        # score: linear between the two samples bounding the gap
        t0, t1 = before[-1][1], after[0][1]
        w = (t - t0) / (t1 - t0)
        score = (1 - w) * before[-1][2][2] + w * after[0][2][2]
        return np.array([xy[0], xy[1], score])

    def _finalize(self, entry: _Entry) -> PoseFrame:
        index, t = entry.seq, entry.frame.t
        poses: list[Pose] = []
        for tid in sorted(set(entry.poses) | set(self._hist)):
            past = list(self._hist.get(tid, ()))
            pose = entry.poses.get(tid)
            if pose is None:
                pose = self._reinsert(tid, index, t, past)
                if pose is not None:
                    poses.append(pose)   # a filled pose is not a sample for later fills
                continue
            pose = _copy(pose)
            acc = entry.accepted[tid]
            filled = np.zeros(len(pose.kp17), bool)
            if not acc.all():
                future = self._future(tid)
                for j in np.flatnonzero(~acc):
                    v = self._fill_joint(j, index, t, past, future)
                    if v is None:        # gap too long: hold the last accepted position, score 0
                        if tid in self._held:
                            pose.kp17[j, :2] = self._held[tid][j]
                        pose.kp17[j, 2] = 0.0
                    else:
                        pose.kp17[j] = v
                        filled[j] = True
                self.filled_total += int(filled.sum())
            pose.filled = filled
            poses.append(pose)
            held = self._held.setdefault(tid, np.array(entry.poses[tid].kp17[:, :2], np.float64))
            held[acc] = entry.poses[tid].kp17[acc, :2]
            hist = self._hist.setdefault(tid, deque(maxlen=self.context + self.max_gap + 1))
            hist.append(_Sample(index, t, np.array(entry.poses[tid].kp17, np.float64), acc,
                                np.asarray(pose.box, np.float64)))
        for tid in list(self._hist):     # forget tracks gone for good
            if index - self._hist[tid][-1].index > self.max_gap + self.delay + 1:
                del self._hist[tid]
                self._held.pop(tid, None)
        frame = entry.frame
        frame.poses = poses
        return frame

    def _reinsert(self, tid: int, index: int, t: float, past: list[_Sample]) -> Pose | None:
        """A track missed in this frame but seen before and after within the gap limit: its
        pose with every joint filled, or None."""
        if not past or index - past[-1].index > self.max_gap:
            return None
        future = self._future(tid)
        if not future:
            return None
        vals = [self._fill_joint(j, index, t, past, future) for j in range(past[-1].kp.shape[0])]
        if any(v is None for v in vals):
            return None
        kp = np.array(vals, np.float32)
        w = (t - past[-1].t) / max(future[0].t - past[-1].t, 1e-9)
        box = ((1 - w) * past[-1].box + w * future[0].box).astype(np.float32)
        self.filled_total += len(kp)
        return Pose(tid, t, kp, box, float(np.mean(kp[:, 2])), filled=np.ones(len(kp), bool))
