"""Settings of the vision area: detector, landmarks, multi-person estimator, tracker, smoothing,
cleaning and quality filters. Every knob of `PoseStage` lives here (loaded by dancewire.config).

Defaults follow mediapipe 0.10.21's pose graphs (shared/docs/pose-models.md), ByteTrack's
published defaults (Zhang et al. 2022), Tong's quality filters and Ban's pose cleaning.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionSettings:
    # --- detector (BlazePose pose_detection) -------------------------------------------
    det_min_score: float = 0.5          # sigmoid score threshold (mediapipe)
    det_nms_iou: float = 0.3            # weighted NMS IoU threshold (mediapipe)
    # Square tiles for frames much wider (or taller) than square: the 224x224 detector
    # letterboxes the whole frame, so people in a wide multi-dancer frame get tiny. With
    # tiling on, a frame whose long/short side ratio exceeds `det_tile_ratio` is instead cut
    # into overlapping squares of the short side, all run through the detector in one batch
    # (one NMS over all tiles in frame space).
    det_tiles: bool = True
    det_tile_ratio: float = 2.0
    det_tile_overlap: float = 0.25      # overlap between neighbouring tiles (fraction of a tile)
    det_tiles_per_frame: int = 2        # tiles searched per frame (a sweep spans frames); 0 = all at once

    # --- landmarks (BlazePose GHUM full) --------------------------------------------------
    roi_scale: float = 1.25             # ROI = 2 x |kp0 kp1| x roi_scale, square (mediapipe)
    pose_threshold: float = 0.5         # pose flag below this = person lost (mediapipe)

    # --- multi-person estimator -------------------------------------------------------
    # Run the detector every N frames (and at once when someone is lost or nobody is tracked):
    # with everyone followed by ROI carry-over it only looks for newcomers, and 15 frames
    # (0.5 s at 30 fps) finds them about as fast as they walk in. Each sweep of a wide frame
    # costs one detector run per tile (~15 ms each on 2 CPU cores): at 10 frames the sweeps
    # took about a sixth of the 3-dancer mosaic's frame time (bench pose_vs_mediapipe).
    detector_period: int = 15
    max_people: int = 8
    # A new detection is "the same person" as a tracked ROI (and ignored) when its hip and
    # shoulder centres lie within this many torso lengths of the tracked person's.
    det_same_person: float = 0.5
    # The detector reports about one person per image; known people are masked out and it
    # runs again while it finds someone new, at most this many times per detection frame.
    det_max_rounds: int = 4
    # Two estimates are one body (the weaker is dropped) when at least `dedupe_frac` of their
    # 13 core keypoints lie within `dedupe_dist` body sizes of each other.
    dedupe_dist: float = 0.1
    dedupe_frac: float = 0.5
    # A fresh detection whose landmark box lies this much inside a tracked person's box is
    # a part of that person (the detector fires on skirts, legs), not a new dancer.
    fresh_overlap: float = 0.5
    keep_low_poses: float = 0.2         # pose flags in [this, pose_threshold) go to the tracker as low-score boxes

    # --- tracker (ByteTrack) ------------------------------------------------------------
    track_high: float = 0.6             # high-score detections (first association)
    track_low: float = 0.1              # low-score detections (second association) above this
    track_new: float = 0.7              # a new track starts only from a detection this confident
    track_match_iou: float = 0.2        # first association: accepted when IoU x score >= this (ByteTrack 0.8 cost)
    track_low_iou: float = 0.5          # second association: IoU >= this (ByteTrack 0.5 cost)
    track_buffer_s: float = 1.5         # a lost track is kept this long (ByteTrack: 30 frames at 30 fps)
    track_min_hits: int = 3             # frames before a new track is confirmed (not on the first frame; SORT: 3)

    # --- smoothing (one-euro, mediapipe's landmark parameters) --------------------------
    smooth: bool = True
    smooth_min_cutoff: float = 0.05     # Hz
    smooth_beta: float = 80.0           # applied to speed in body scales per second (see smoothing.py)
    smooth_d_cutoff: float = 1.0        # Hz
    smooth_score_alpha: float = 0.1     # low-pass on keypoint scores (mediapipe visibility filter); 1 = off
    smooth_reset_s: float = 0.3         # a track unseen this long restarts its filters

    # --- cleaning (Ban: jump rejection + spline interpolation) -------------------------
    clean: bool = True
    # A joint is rejected when it moves more than `jump_max` body sizes in 1/30 s (scaled by
    # the real time step) from its last valid position; Ban used 50 px per 1/30 s.
    jump_max: float = 0.35
    jump_max_rejects: int = 2           # consecutive rejections after which the new position is accepted (Ban: 2)
    clean_max_gap: int = 4              # longest gap (frames) filled by spline interpolation
    clean_delay: int = 5                # most frames the cleaned stream lags the live one (>= clean_max_gap)
    clean_context: int = 4              # valid frames on each side used to fit the spline

    # --- quality (Tong) -------------------------------------------------------------
    min_keypoint_conf: float = 0.15     # a keypoint below this is unreliable (Tong: every keypoint of an example)
    min_mean_conf: float = 0.5          # a pose whose mean keypoint confidence is below this is dropped
    # Tong's third rule (an example needs >= 18 frames) is `motion.min_valid`: windows are cut there.
    keypoint_score: str = "visibility"  # per-keypoint score: "visibility", "presence" or "min" of both

    def validate(self) -> "VisionSettings":
        from dancewire.config import require
        from edge.vision.blazepose_landmarks import KEYPOINT_SCORES

        require(self.keypoint_score in KEYPOINT_SCORES, "vision",
                f"keypoint_score {self.keypoint_score!r} not in {KEYPOINT_SCORES}")
        require(self.max_people >= 1 and self.detector_period >= 1, "vision",
                "max_people and detector_period must be >= 1")
        require(self.track_buffer_s >= 0 and self.track_min_hits >= 1, "vision",
                "track_buffer_s must be >= 0 and track_min_hits >= 1")
        require(self.clean_delay >= self.clean_max_gap >= 0, "vision", "need clean_delay >= clean_max_gap >= 0")
        return self
