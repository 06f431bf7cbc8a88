"""Tong's quality filters, as settings.

Tong (sec. 3) kept an example (a dancer's sequence of frames) only if
1. every keypoint in every frame has confidence >= 0.15,
2. the mean keypoint confidence over the example is >= 0.5,
3. the example has at least 18 frames (~0.75 s at 24 fps).

Rules 1 and 3 are about whole sequences: the live window cutter applies rule 3
(`motion.min_valid`), and `sequence_quality` applies all three to a recorded sequence (data
curation, as Tong used them). Per frame, `QualityFilter` applies rule 2 to each pose
(a pose whose mean confidence is below the limit is dropped from the frame) and counts
the keypoints below the rule-1 limit; it never changes a keypoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.records import Pose, PoseFrame


@dataclass(frozen=True)
class QualityVerdict:
    ok: bool
    reason: str                     # "" when ok, else which rule failed
    frames: int
    min_conf: float
    mean_conf: float


def sequence_quality(kp: np.ndarray, valid: np.ndarray | None = None, *, min_keypoint_conf: float = 0.15,
                     min_mean_conf: float = 0.5, min_frames: int = 18) -> QualityVerdict:
    """Tong's three rules on one dancer's sequence kp (N, 17, 3); `valid` masks real frames."""
    kp = np.asarray(kp, np.float64).reshape(-1, 17, 3)
    if valid is not None:
        kp = kp[np.asarray(valid, bool)]
    n = len(kp)
    if n == 0:
        return QualityVerdict(False, "frames", 0, 0.0, 0.0)
    conf = kp[:, :, 2]
    lo, mean = float(np.nanmin(conf)), float(np.nanmean(conf))
    if n < min_frames:
        return QualityVerdict(False, "frames", n, lo, mean)
    if lo < min_keypoint_conf:
        return QualityVerdict(False, "keypoint_conf", n, lo, mean)
    if mean < min_mean_conf:
        return QualityVerdict(False, "mean_conf", n, lo, mean)
    return QualityVerdict(True, "", n, lo, mean)


class QualityFilter:
    """Per-frame part of Tong's filters; keeps counts for the log and the benchmarks."""

    def __init__(self, min_keypoint_conf: float = 0.15, min_mean_conf: float = 0.5):
        self.min_keypoint_conf = float(min_keypoint_conf)
        self.min_mean_conf = float(min_mean_conf)
        self.dropped = 0
        self.kept = 0
        self.weak_keypoints = 0

    def keep(self, pose: Pose) -> bool:
        conf = np.asarray(pose.kp17)[:, 2]
        return bool(np.mean(conf) >= self.min_mean_conf)

    def __call__(self, posefr: PoseFrame) -> PoseFrame:
        kept = []
        for pose in posefr.poses:
            if self.keep(pose):
                kept.append(pose)
                self.weak_keypoints += int((np.asarray(pose.kp17)[:, 2] < self.min_keypoint_conf).sum())
        self.kept += len(kept)
        self.dropped += len(posefr.poses) - len(kept)
        posefr.poses = kept
        return posefr
