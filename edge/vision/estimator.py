"""Multi-person BlazePose: mediapipe's detect-once-then-follow loop, for several dancers.

Per frame:
1. every tracked person carries an ROI over from the previous frame's landmarks 33/34;
2. the detector runs only every `detector_period` frames, when someone was lost in the
   previous frame, or when nobody is tracked (a loss restarts a sweep under way, with the
   tiles that held the lost people first); a new detection whose hip and shoulder
   centres fall near a tracked person's (within `det_same_person` torso lengths) is that
   person and is ignored, the others start new ROIs (at most `max_people`);
   the BlazePose detector is single-person at heart (it reports the most salient person and
   rarely a second one), so the people already known are masked out of the detector's
   input (tracked people by the hull of their landmarks, people found in this frame by a
   body-axis rectangle from the detector keypoints) and it runs again, up to
   `det_max_rounds` times, while each round finds someone new; a frame far from square is
   searched in square tiles (see BlazePoseDetector.regions), `det_tiles_per_frame` of them
   per frame while someone is tracked, so that one detection sweep is spread over a few
   frames (no latency spike);
3. all ROIs go through the landmark model in ONE batch;
4. a person whose pose flag is below `pose_threshold` is lost (its ROI is dropped and the
   detector runs on the next frame); two estimates of one body are merged (see `_dedupe`).

Results with a flag in [keep_low_poses, pose_threshold) are still returned, marked `lost`,
so that the tracker can use them as ByteTrack's low-score boxes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.records import stamp
from edge.vision.blazepose_detector import BlazePoseDetector
from edge.vision.blazepose_landmarks import NUM_BODY, BlazePoseLandmarks, LandmarkResult, Roi, roi_from_points
from edge.vision.settings import VisionSettings

# BlazePose body indices used to compare people
_HIPS, _SHOULDERS = (23, 24), (11, 12)
_CORE = np.array([0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])


@dataclass
class PersonEstimate:
    result: LandmarkResult
    slot: int            # the estimator's ROI slot (stable while the ROI is carried over)
    lost: bool           # flag below the threshold: the ROI is not carried over
    from_detection: bool  # this frame's ROI came from the detector

    @property
    def score(self) -> float:
        return self.result.flag


def _torso(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points[list(_HIPS)].mean(0), points[list(_SHOULDERS)].mean(0)


def _inside(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of box a's area inside box b."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return float(max(iw, 0) * max(ih, 0) / area) if area > 0 else 0.0


def _same_detection(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Two detections' hip and shoulder centres within `tol` torso lengths."""
    torso = max(float(np.hypot(*(a[2] - a[0]))), 1.0)
    d = (np.hypot(*(a[0] - b[0])) + np.hypot(*(a[2] - b[2]))) / 2
    return bool(d < tol * torso)


class MultiPoseEstimator:
    def __init__(self, detector: BlazePoseDetector, landmarks: BlazePoseLandmarks,
                 settings: VisionSettings = VisionSettings()):
        self.detector = detector
        self.landmarks = landmarks
        self.s = settings
        self.reset()

    def reset(self) -> None:
        self._tracked: dict[int, LandmarkResult] = {}    # slot -> previous frame's result
        self._next_slot = 0
        self._since_detect = 10 ** 9
        self._sweep: list[tuple[int, int, int, int]] = []   # detector regions still to run
        self._lost_last = False
        self._lost_at: list[np.ndarray] = []    # centres of the people lost in the previous frame
        self.detector_runs = 0

    # -- detector bookkeeping --------------------------------------------------------------
    def _should_detect(self) -> bool:
        return (not self._tracked or self._lost_last
                or self._since_detect >= max(1, self.s.detector_period))

    def _is_tracked(self, kps: np.ndarray) -> bool:
        """Detector keypoints (0 hip centre, 2 shoulder centre) near a tracked person's?"""
        hip, shoulder = kps[0], kps[2]
        for res in self._tracked.values():
            t_hip, t_sh = _torso(res.points)
            torso = max(float(np.hypot(*(t_sh - t_hip))), 1.0)
            d = (np.hypot(*(hip - t_hip)) + np.hypot(*(shoulder - t_sh))) / 2
            if d < self.s.det_same_person * torso:
                return True
        return False

    def _dedupe(self, estimates: list[PersonEstimate]) -> list[PersonEstimate]:
        """One estimate per body.

        * Two estimates are the same person when at least `dedupe_frac` of their core
          keypoints lie within `dedupe_dist` body sizes of each other (two ROIs that
          converged on one dancer); the one kept is not lost, carried over, higher flag.
        * A fresh detection whose landmark box lies for at least `fresh_overlap` of its area
          inside a carried-over person's box is dropped: the detector also fires on parts of
          a dancer already tracked (a skirt, the legs), and the landmark model then finds a
          confident "person" there."""
        keep: list[PersonEstimate] = []
        for est in sorted(estimates, key=lambda e: (e.lost, e.from_detection, -e.score)):
            pts = est.result.points[_CORE]
            body = max(float(np.ptp(est.result.points[:NUM_BODY], axis=0).max()), 1.0)
            if any((np.linalg.norm(pts - k.result.points[_CORE], axis=1) < self.s.dedupe_dist * body).mean()
                   >= self.s.dedupe_frac for k in keep):
                continue
            if est.from_detection and any(not k.from_detection and _inside(est.result.box(), k.result.box())
                                          >= self.s.fresh_overlap for k in keep):
                continue
            keep.append(est)
        return sorted(keep, key=lambda e: e.slot)

    @staticmethod
    def _hull(res: LandmarkResult, margin: float = 0.15) -> np.ndarray:
        """Landmark hull of a tracked person, grown by `margin` about its centre."""
        pts = res.points[:NUM_BODY].astype(np.float32)
        hull = cv2.convexHull(pts).reshape(-1, 2)
        c = hull.mean(0)
        return (c + (hull - c) * (1 + margin)).astype(np.int32)

    @staticmethod
    def _body_rect(kps: np.ndarray) -> np.ndarray:
        """A rectangle around a detected body: along hip -> scale point, 2.2 x their distance
        long and 1.1 x wide (the detector's keypoints only)."""
        hip, top = kps[0].astype(np.float64), kps[1].astype(np.float64)
        axis = top - hip
        n = np.hypot(*axis)
        if n < 1e-6:
            return np.zeros((0, 2), np.int32)
        u = axis / n
        v = np.array([-u[1], u[0]])
        return np.array([hip + 1.1 * axis + 0.55 * n * v, hip + 1.1 * axis - 0.55 * n * v,
                         hip - 1.1 * axis - 0.55 * n * v, hip - 1.1 * axis + 0.55 * n * v]).astype(np.int32)

    def _detect(self, image: np.ndarray, n_tracked: int, regions: list) -> list:
        """Detections of people not tracked yet, masking known people between rounds."""
        found = []
        masks = [self._hull(r) for r in self._tracked.values()]
        for _ in range(max(1, self.s.det_max_rounds)):
            if n_tracked + len(found) >= self.s.max_people:
                break
            if masks:
                work = image.copy()
                for poly in masks:
                    if len(poly) >= 3:
                        cv2.fillConvexPoly(work, poly, (127, 127, 127))
            else:
                work = image
            new = [d for d in self.detector(work, regions) if not self._is_tracked(d.keypoints)
                   and not any(_same_detection(d.keypoints, f.keypoints, self.s.det_same_person) for f in found)]
            if not new:
                break
            found.extend(new)
            masks.extend(self._body_rect(d.keypoints) for d in new)
        return found

    # -- one frame ------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, stamps: dict[str, float] | None = None) -> list[PersonEstimate]:
        s = self.s
        rois: list[tuple[int, Roi, bool]] = [(slot, res.next_roi(s.roi_scale), False)
                                             for slot, res in self._tracked.items()]
        self._since_detect += 1
        if self._lost_last or (not self._sweep and self._should_detect()):
            self._since_detect = 0
            self._sweep = self._lost_first(self.detector.regions(image.shape[1], image.shape[0]))
        if self._sweep:
            # nobody to follow yet: the whole sweep at once (no landmark work to delay)
            n = s.det_tiles_per_frame if s.det_tiles_per_frame > 0 and self._tracked else len(self._sweep)
            regions, self._sweep = self._sweep[:n], self._sweep[n:]
            self.detector_runs += 1
            for det in self._detect(image, len(rois), regions):
                if len(rois) >= s.max_people:
                    break
                roi = roi_from_points(det.keypoints[0], det.keypoints[1], s.roi_scale)
                if roi.size < 8:
                    continue
                rois.append((self._next_slot, roi, True))
                self._next_slot += 1
        if stamps is not None:
            stamp(stamps, "detect")

        results = self.landmarks(image, [r for _, r, _ in rois])
        if stamps is not None:
            stamp(stamps, "landmarks")

        estimates = []
        for (slot, _, fresh), res in zip(rois, results):
            finite = (np.isfinite(res.points).all() and np.isfinite(res.visibility).all()
                      and np.isfinite(res.presence).all() and math.isfinite(res.flag))
            if not finite or res.flag < s.keep_low_poses:     # a NaN score (or flag) fails the estimate
                continue
            estimates.append(PersonEstimate(res, slot, res.flag < s.pose_threshold, fresh))
        estimates = self._dedupe(estimates)

        was = self._tracked
        self._tracked = {e.slot: e.result for e in estimates if not e.lost}
        # someone tracked before is gone now (a fresh ROI that failed does not count)
        self._lost_at = [was[slot].points[:NUM_BODY].mean(0) for slot in set(was) - set(self._tracked)]
        self._lost_last = bool(self._lost_at)
        return estimates

    def _lost_first(self, regions: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        """The sweep's tiles, those holding someone lost in the previous frame first."""
        def holds_lost(r):
            return any(r[0] <= c[0] < r[2] and r[1] <= c[1] < r[3] for c in self._lost_at)
        return sorted(regions, key=lambda r: not holds_lost(r))
