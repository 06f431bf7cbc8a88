"""Tong's quality filters, as settings.

Tong (sec. 3) kept an example (a dancer's sequence of frames) only if
1. every keypoint in every frame has confidence >= 0.15,
2. the mean keypoint confidence over the example is >= 0.5,
3. the example has at least 18 frames (~0.75 s at 24 fps).

Rules 1 and 3 are about whole sequences (Tong curated training data with them): the live
window cutter applies rule 3 (`motion.min_valid`). Per frame, `QualityFilter` applies rule 2
to each pose (a pose whose mean confidence is below the limit is dropped from the frame) and
counts the keypoints below the rule-1 limit; it never changes a keypoint.
"""
from __future__ import annotations

import numpy as np

from edge.records import Pose, PoseFrame


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
