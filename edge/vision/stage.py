"""`PoseStage`: the one object the pipeline calls for vision.

    stage = PoseStage.from_settings(VisionSettings())
    for frame in source:
        posefr = stage(frame)              # live: this frame, at once
        for done in stage.cleaned():       # final frames (at most `clean_delay` old), gaps filled
            ...
    rest = stage.flush()                   # end of stream: the last delayed frames

`__call__` runs estimate (detector + landmarks) -> track (ByteTrack) -> smooth (one-euro)
-> clean (Ban's jump rejection; spline gap filling on the delayed copy) -> quality (Tong),
and writes the stage stamps "detect", "landmarks", "track", "clean" into `frame.stamps`;
the returned PoseFrame carries a copy of them (with whatever the source wrote before).

Delay: spline filling needs frames after a gap, so it cannot be live. The live PoseFrame is
returned immediately (jump-rejected joints hold their last accepted position with score 0
and `Pose.filled` set); the same frames come out again through `cleaned()` once final: at
once when nothing in them waits for a later frame, else when the gap closes, at most
`clean_delay` frames later (0.2 s at 25 fps with the defaults), with gaps of up to
min(clean_max_gap, clean_delay) frames filled and `Pose.filled` marking the filled joints.
The overlay and the wire can use the live frames; windows for the encoder can use the
cleaned ones. With `clean=False`, `cleaned()` returns the live frames without delay.
"""
from __future__ import annotations

import logging

import numpy as np

from dancewire.errors import BadInputError
from edge.engines.base import Engine
from edge.records import Frame, Pose, PoseFrame, stamp
from edge.vision.blazepose_detector import BlazePoseDetector
from edge.vision.blazepose_landmarks import BlazePoseLandmarks
from edge.vision.cleaning import PoseCleaner
from edge.vision.estimator import MultiPoseEstimator
from edge.vision.quality import QualityFilter
from edge.vision.settings import VisionSettings
from edge.vision.smoothing import PoseSmoother
from edge.vision.tracker import ByteTracker

log = logging.getLogger(__name__)


class PoseStage:
    def __init__(self, settings: VisionSettings, detector: Engine, landmarks: Engine):
        self.settings = s = settings
        self.detector_engine, self.landmarks_engine = detector, landmarks
        self.detector = BlazePoseDetector(detector, s.det_min_score, s.det_nms_iou, s.det_tiles,
                                          s.det_tile_ratio, s.det_tile_overlap)
        self.landmarks = BlazePoseLandmarks(landmarks)
        self.estimator = MultiPoseEstimator(self.detector, self.landmarks, s)
        self.reset()

    @classmethod
    def from_settings(cls, settings: VisionSettings | None = None, backend: str = "onnxruntime",
                      threads: int = 2, precision: str = "fp16") -> "PoseStage":
        """Open both BlazePose models from the model cache on `backend` (`precision`: TensorRT's;
        an INT8 engine uses the rig's calibration cache from `dancewire calibrate int8`)."""
        from edge.engines import open_engine
        from edge.models.registry import model_path

        det = open_engine(model_path("pose_detector"), backend, threads=threads, precision=precision)
        lmk = open_engine(model_path("pose_landmarks"), backend, threads=threads, precision=precision)
        return cls(settings or VisionSettings(), det, lmk)

    def reset(self) -> None:
        """Forget every track (a new stream starts)."""
        s = self.settings
        self.estimator.reset()
        self._fps: float | None = None
        self._first_t: float | None = None
        self.tracker = ByteTracker(s.track_high, s.track_low, s.track_new, s.track_match_iou,
                                   s.track_low_iou, buffer_frames=round(s.track_buffer_s * 30),
                                   min_hits=s.track_min_hits)
        self.smoother = PoseSmoother(s.smooth_min_cutoff, s.smooth_beta, s.smooth_d_cutoff,
                                     s.smooth_score_alpha, s.smooth_reset_s)
        self.cleaner = PoseCleaner(s.jump_max, s.jump_max_rejects, s.clean_max_gap, s.clean_delay,
                                   s.clean_context)
        self.quality = QualityFilter(s.min_keypoint_conf, s.min_mean_conf)
        self._final: list[PoseFrame] = []
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _learn_fps(self, frame: Frame) -> None:
        """The tracker counts frames: size its buffer from the stream's real frame rate."""
        if self._first_t is None:
            self._first_t = frame.t
        elif self._fps is None and self.frames >= 5 and frame.t > self._first_t:
            self._fps = self.frames / (frame.t - self._first_t)
            self.tracker.buffer = max(1, round(self.settings.track_buffer_s * self._fps))

    @staticmethod
    def _validate(frame: Frame) -> None:
        img = frame.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 \
                or min(img.shape[:2]) == 0:
            what = (f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray)
                    else type(img).__name__)
            raise BadInputError(f"frame {frame.index}: need a BGR uint8 image (H, W, 3), got {what}")

    def _new_size(self, frame: Frame) -> None:
        """The frame size changed (a camera renegotiated its mode, a file switches resolution): every
        ROI, box and filter is in the old frame's pixels. What is buffered is finalised, and the people
        are found again, under new ids (ids are never reused); the frame-rate estimate stays."""
        h, w = frame.image.shape[:2]
        log.warning("pose stage: frame size changed from %dx%d to %dx%d at frame %d; dancers are found again "
                    "under new ids", self._size[1], self._size[0], w, h, frame.index)
        self._finish_cleaning()
        runs = self.estimator.detector_runs
        self.estimator.reset()
        self.estimator.detector_runs = runs
        next_id, buffer = self.tracker.next_id, self.tracker.buffer
        self.tracker.reset()
        self.tracker.next_id, self.tracker.buffer = next_id, buffer
        self.smoother.forget(())
        rejected, filled = self.cleaner.rejected_total, self.cleaner.filled_total
        self.cleaner.reset()
        self.cleaner.rejected_total, self.cleaner.filled_total = rejected, filled

    def _finish_cleaning(self) -> None:
        for f in self.cleaner.flush():
            stamp(f.stamps, "clean")
            self._final.append(self.quality(f))

    def __call__(self, frame: Frame) -> PoseFrame:
        s = self.settings
        self._validate(frame)
        size = frame.image.shape[:2]
        if self._size is not None and size != self._size:
            self._new_size(frame)
        self._size = size
        self._learn_fps(frame)
        self.frames += 1
        estimates = self.estimator(frame.image, frame.stamps)           # stamps detect, landmarks

        boxes = np.array([e.result.box() for e in estimates], np.float64).reshape(-1, 4)
        scores = np.array([e.score for e in estimates], np.float64)
        pairs = self.tracker.update(boxes, scores)
        stamp(frame.stamps, "track")

        poses = []
        for tid, di in pairs:
            res = estimates[di].result
            kp = res.coco17(s.keypoint_score)
            if s.smooth:
                kp = self.smoother(tid, frame.t, kp, res.object_scale).astype(np.float32)
            poses.append(Pose(tid, frame.t, kp, boxes[di].astype(np.float32), float(res.flag)))
        self.smoother.forget(t.track_id for t in self.tracker.tracks)

        h, w = frame.image.shape[:2]
        posefr = PoseFrame(frame.index, frame.t, w, h, poses, dict(frame.stamps))
        if s.clean:
            self.cleaner.live(posefr)         # the delayed copy keeps the stamps so far
            final = self.cleaner.pop_final()
        else:
            final = []
        stamp(frame.stamps, "clean")
        posefr.stamps["clean"] = frame.stamps["clean"]
        for f in final:
            stamp(f.stamps, "clean")
            self._final.append(self.quality(f))
        self.quality(posefr)
        if not s.clean:
            self._final.append(posefr)
        return posefr

    def cleaned(self) -> list[PoseFrame]:
        """Final frames ready since the last call (at most `clean_delay` frames behind the live one)."""
        out, self._final = self._final, []
        return out

    def flush(self) -> list[PoseFrame]:
        """End of stream: every frame still waiting for cleaning, finalised."""
        self._finish_cleaning()
        out = self.cleaned()
        log.info("pose stage: %s", self.stats())
        return out

    def stats(self) -> dict[str, int]:
        """Counters since the last reset (for logs and summaries)."""
        return {"frames": self.frames, "detector_frames": self.estimator.detector_runs,
                "tracks": self.tracker.next_id - 1,   # ids given, tentative ones included
                "joints_rejected": self.cleaner.rejected_total,
                "joints_filled": self.cleaner.filled_total, "poses_dropped_quality": self.quality.dropped,
                "weak_keypoints": self.quality.weak_keypoints}

    def close(self) -> None:
        for e in (self.detector_engine, self.landmarks_engine):
            e.close()
