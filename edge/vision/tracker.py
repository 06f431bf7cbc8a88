"""ByteTrack-style multi-object tracker (Zhang et al. 2022), compact, for person boxes.

Written here rather than taken from PyPI: the maintained packages that ship ByteTrack pull
in a second OpenCV build (supervision -> opencv-python, clashing with opencv-python-headless)
or torch (boxmot); `bytetracker` is unmaintained since 2023.

Per frame:
1. every track's box is predicted by a constant-velocity Kalman filter on
   (centre x, centre y, aspect w/h, height) (ByteTrack's / DeepSORT's model and noise);
2. first association: confirmed tracks against high-score boxes, cost 1 - IoU x score,
   Hungarian assignment (scipy.optimize.linear_sum_assignment): the tracked ones first, then
   the lost ones against the boxes left (a cascade, as DeepSORT's);
3. second association: the still-unmatched *tracked* tracks against low-score boxes, cost 1 - IoU;
4. unconfirmed tracks (seen once) against the remaining high boxes; unmatched ones are removed;
5. remaining high boxes above `new_thresh` start tracks (confirmed after `min_hits` frames,
   at once on the first frame); tracks lost longer than the buffer are removed.

Deliberate differences from ByteTrack, all for dancers who stop or hide for a while:
* its final "remove duplicate tracks" step (a lost track whose predicted box overlaps a
  tracked one by IoU > 0.85 is deleted) is left out: when dancers cross, the hidden dancer's
  lost track is predicted right through the visible one, and that step would delete it,
  giving the dancer a new id when they come out;
* a lost track matches by the better of the IoU with its predicted box and with its last
  observed box (as OC-SORT's observation-centric recovery), and its motion model restarts
  from the box that brings it back: a dancer who stops while hidden is not lost to the
  prediction drifting on at the old speed;
* ByteTrack pools tracked and lost tracks in the first association. With the last-box match a
  lost track could then take the box of a dancer still tracked there (dancer A stops where B
  was last seen before leaving: B's last box fits A's box better than A's own prediction, which
  overshoots as A stops; A's track is then lost on A too, and the two ids swap on every frame).
  In the cascade a lost track only gets a box no tracked dancer took.

`update()` returns (track_id, detection index) for the confirmed tracks matched this frame.
Track ids start at 1 and are never reused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.vision.blazepose_detector import iou_matrix

TRACKED, LOST, REMOVED = "tracked", "lost", "removed"


class KalmanBoxFilter:
    """Constant-velocity Kalman filter on (cx, cy, a, h) — ByteTrack's parameters."""

    std_pos = 1.0 / 20
    std_vel = 1.0 / 160

    def __init__(self):
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)

    def initiate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.r_[z, np.zeros(4)]
        h = z[3]
        std = [2 * self.std_pos * h, 2 * self.std_pos * h, 1e-2, 2 * self.std_pos * h,
               10 * self.std_vel * h, 10 * self.std_vel * h, 1e-5, 10 * self.std_vel * h]
        return mean, np.diag(np.square(std))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = mean[3]
        std = [self.std_pos * h, self.std_pos * h, 1e-2, self.std_pos * h,
               self.std_vel * h, self.std_vel * h, 1e-5, self.std_vel * h]
        mean = self.F @ mean
        cov = self.F @ cov @ self.F.T + np.diag(np.square(std))
        return mean, cov

    def update(self, mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = mean[3]
        r = np.diag(np.square([self.std_pos * h, self.std_pos * h, 1e-1, self.std_pos * h]))
        s = self.H @ cov @ self.H.T + r
        k = np.linalg.solve(s, (cov @ self.H.T).T).T
        mean = mean + k @ (z - self.H @ mean)
        cov = cov - k @ s @ k.T
        return mean, cov


def xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    w, h = b[2] - b[0], max(b[3] - b[1], 1e-6)
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, w / h, h], np.float64)


def xyah_to_xyxy(m: np.ndarray) -> np.ndarray:
    cx, cy, a, h = m[:4]
    w = a * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64)


@dataclass(eq=False)
class Track:
    track_id: int
    mean: np.ndarray
    cov: np.ndarray
    score: float
    start_frame: int
    frame_id: int                  # last frame it was matched
    last_box: np.ndarray | None = None     # last observed box
    state: str = TRACKED
    confirmed: bool = False
    hits: int = 1

    @property
    def box(self) -> np.ndarray:
        return xyah_to_xyxy(self.mean)


def _assign(cost: np.ndarray, max_cost: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment keeping only pairs cheaper than max_cost."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    big = max_cost + 1e3
    rows, cols = linear_sum_assignment(np.where(cost <= max_cost, cost, big))
    matches = [(r, c) for r, c in zip(rows, cols) if cost[r, c] <= max_cost]
    mr = {r for r, _ in matches}
    mc = {c for _, c in matches}
    return matches, [i for i in range(n) if i not in mr], [j for j in range(m) if j not in mc]


class ByteTracker:
    def __init__(self, high_thresh: float = 0.6, low_thresh: float = 0.1, new_thresh: float = 0.7,
                 match_iou: float = 0.2, low_iou: float = 0.5, buffer_frames: int = 30, min_hits: int = 2):
        self.high, self.low, self.new = high_thresh, low_thresh, new_thresh
        self.match_cost = 1.0 - match_iou            # ByteTrack: 0.8
        self.low_cost = 1.0 - low_iou                # ByteTrack: 0.5
        self.unconfirmed_cost = 0.7                  # ByteTrack's value
        self.buffer = int(buffer_frames)
        self.min_hits = int(min_hits)
        self.kf = KalmanBoxFilter()
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []      # tracked + lost (removed ones are dropped)
        self.frame_id = 0
        self.next_id = 1

    def _activate(self, box: np.ndarray, score: float) -> Track:
        mean, cov = self.kf.initiate(xyxy_to_xyah(box))
        t = Track(self.next_id, mean, cov, score, self.frame_id, self.frame_id, np.asarray(box, np.float64),
                  confirmed=self.frame_id == 1 or self.min_hits <= 1)
        self.next_id += 1
        return t

    def _update(self, t: Track, box: np.ndarray, score: float) -> None:
        if t.state == LOST:       # back after a gap: restart the motion model from this box
            t.mean, t.cov = self.kf.initiate(xyxy_to_xyah(box))
        else:
            t.mean, t.cov = self.kf.update(t.mean, t.cov, xyxy_to_xyah(box))
        t.last_box = np.asarray(box, np.float64)
        t.score = score
        t.frame_id = self.frame_id
        t.hits += 1
        if t.state != TRACKED:
            t.state = TRACKED
        if t.hits >= self.min_hits:
            t.confirmed = True

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> list[tuple[int, int]]:
        """One frame of boxes (N, 4 x0 y0 x1 y1) and scores (N,) -> [(track_id, box index)]."""
        self.frame_id += 1
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        high = np.flatnonzero(scores >= self.high)
        low = np.flatnonzero((scores > self.low) & (scores < self.high))
        out: dict[int, int] = {}          # det index -> track id

        for t in self.tracks:
            if t.state != TRACKED:          # ByteTrack: a lost box keeps its height
                t.mean[7] = 0
            t.mean, t.cov = self.kf.predict(t.mean, t.cov)

        confirmed = [t for t in self.tracks if t.confirmed]
        unconfirmed = [t for t in self.tracks if not t.confirmed]

        # 1) confirmed tracks vs high boxes, IoU fused with the score: tracked ones, then lost ones
        rest_high = high
        r_tracked: list[Track] = []
        for state in (TRACKED, LOST):
            pool = [t for t in confirmed if t.state == state]
            cost = self._cost(pool, boxes[rest_high], scores[rest_high])
            m, u_trk, u_det = _assign(cost, self.match_cost)
            for ti, di in m:
                self._update(pool[ti], boxes[rest_high[di]], scores[rest_high[di]])
                out[rest_high[di]] = pool[ti].track_id
            rest_high = rest_high[u_det]
            if state == TRACKED:
                r_tracked = [pool[i] for i in u_trk]

        # 2) still-unmatched tracked tracks vs low boxes, plain IoU
        cost = self._cost(r_tracked, boxes[low], None)
        m, u_trk2, _ = _assign(cost, self.low_cost)
        for ti, di in m:
            self._update(r_tracked[ti], boxes[low[di]], scores[low[di]])
            out[low[di]] = r_tracked[ti].track_id
        for i in u_trk2:
            r_tracked[i].state = LOST

        # 3) unconfirmed tracks vs remaining high boxes
        cost = self._cost(unconfirmed, boxes[rest_high], scores[rest_high])
        m, u_unc, u_det = _assign(cost, self.unconfirmed_cost)
        for ti, di in m:
            t = unconfirmed[ti]
            self._update(t, boxes[rest_high[di]], scores[rest_high[di]])
            if t.confirmed:
                out[rest_high[di]] = t.track_id
        for i in u_unc:
            unconfirmed[i].state = REMOVED
        rest_high = rest_high[u_det]

        # 4) new tracks
        for di in rest_high:
            if scores[di] < self.new:
                continue
            t = self._activate(boxes[di], scores[di])
            self.tracks.append(t)
            if t.confirmed:
                out[di] = t.track_id

        # 5) forget old lost tracks
        for t in self.tracks:
            if t.state == LOST and self.frame_id - t.frame_id > self.buffer:
                t.state = REMOVED
        self.tracks = [t for t in self.tracks if t.state != REMOVED]
        return sorted(((tid, di) for di, tid in out.items()), key=lambda p: p[0])

    def _cost(self, tracks: list[Track], boxes: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        if not tracks or len(boxes) == 0:
            return np.zeros((len(tracks), len(boxes)))
        iou = iou_matrix(np.array([t.box for t in tracks]), boxes)
        lost = [i for i, t in enumerate(tracks) if t.state == LOST]
        if lost:                  # a lost track may also match where it was last seen
            iou[lost] = np.maximum(iou[lost], iou_matrix(np.array([tracks[i].last_box for i in lost]), boxes))
        if scores is not None:
            iou = iou * scores[None, :]
        return 1.0 - iou
