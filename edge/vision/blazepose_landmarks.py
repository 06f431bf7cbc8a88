"""BlazePose GHUM "full" landmark model: rotated ROI crops in, 33 body points per person out.

Pre/post-processing of the one model, rtmlib style, following mediapipe 0.10.21's
PoseDetectionToRoi / PoseLandmarkByRoiCpu / PoseLandmarksToRoi graphs (pose-models.md):

* ROI from two points (detector keypoints 0 -> 1, or landmarks 33 -> 34 of the previous
  frame): centre at the first point, rotation so that the vector points up (target 90
  degrees), side = 2 x their distance x 1.25, square in pixels;
* input: the ROI cut out with one affine warp (cv2.warpAffine) into 256x256 RGB in [0, 1],
  NCHW or NHWC as the engine's input shape says; all people of a frame in ONE batch;
* outputs: landmarks (B, 195) = 39 x (x, y, z, visibility logit, presence logit) in crop
  pixels, pose flag (B, 1) probability; other outputs (segmentation, heatmap, world
  landmarks) are ignored if the graph still has them (no heatmap refinement is done).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.engines.base import Engine

INPUT_SIZE = 256
NUM_LANDMARKS = 39      # 33 body + 2 ROI helpers (33 centre, 34 scale/rotation) + 4 more
NUM_BODY = 33

# BlazePose 33 -> COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
BLAZEPOSE_TO_COCO17 = np.array([0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])
KEYPOINT_SCORES = ("visibility", "presence", "min")   # which BlazePose score a COCO-17 keypoint carries


@dataclass(frozen=True)
class Roi:
    """A rotated square in frame pixels: centre, side length, rotation (radians, clockwise in
    image coordinates; 0 = upright)."""
    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    def to_frame(self, crop_size: int = INPUT_SIZE) -> np.ndarray:
        """2x3 affine from crop pixels (0..crop_size) to frame pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        k = self.size / crop_size
        return np.array([[c * k, -s * k, self.cx - k * crop_size / 2 * (c - s)],
                         [s * k, c * k, self.cy - k * crop_size / 2 * (s + c)]], np.float64)

    def from_frame(self, crop_size: int = INPUT_SIZE) -> np.ndarray:
        """2x3 affine from frame pixels to crop pixels."""
        return cv2.invertAffineTransform(self.to_frame(crop_size))


def _normalize_angle(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def roi_from_points(start: np.ndarray, end: np.ndarray, scale: float = 1.25,
                    target_angle: float = math.pi / 2) -> Roi:
    """mediapipe AlignmentPointsRects + RectTransformation(scale, square_long) in pixels."""
    x0, y0 = float(start[0]), float(start[1])
    x1, y1 = float(end[0]), float(end[1])
    rotation = _normalize_angle(target_angle - math.atan2(-(y1 - y0), x1 - x0))
    size = 2.0 * math.hypot(x1 - x0, y1 - y0) * scale
    return Roi(x0, y0, size, rotation)


@dataclass
class LandmarkResult:
    """One person's landmarks in frame pixels."""
    roi: Roi                 # the ROI the crop was cut from
    points: np.ndarray       # (39, 2) frame pixels
    z: np.ndarray            # (39,) depth in frame-pixel units (relative to the hips)
    visibility: np.ndarray   # (39,) probability
    presence: np.ndarray     # (39,) probability
    flag: float              # pose presence probability

    def next_roi(self, scale: float = 1.25) -> Roi:
        """The next frame's ROI from auxiliary landmarks 33 (centre) and 34 (scale/rotation)."""
        return roi_from_points(self.points[33], self.points[34], scale)

    @property
    def object_scale(self) -> float:
        """Body scale in pixels: 2 x |33 34| (mediapipe's OBJECT_SCALE_ROI for smoothing)."""
        return 2.0 * float(np.hypot(*(self.points[34] - self.points[33])))

    def box(self) -> np.ndarray:
        """Axis-aligned box x0 y0 x1 y1 of the 33 body landmarks."""
        body = self.points[:NUM_BODY]
        return np.concatenate([body.min(0), body.max(0)]).astype(np.float32)

    def coco17(self, score: str = "visibility") -> np.ndarray:
        """(17, 3) COCO-17 keypoints x, y, score (one of KEYPOINT_SCORES)."""
        idx = BLAZEPOSE_TO_COCO17
        if score == "presence":
            s = self.presence[idx]
        elif score == "min":
            s = np.minimum(self.visibility[idx], self.presence[idx])
        elif score == "visibility":
            s = self.visibility[idx]
        else:
            raise ValueError(f"unknown keypoint score {score!r}; choose one of {KEYPOINT_SCORES}")
        return np.column_stack([self.points[idx], s]).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def _output_name(engine: Engine, names: tuple[str, ...], shape_ok) -> str:
    """An output by its usual names (converted ONNX, original TFLite), else by its shape."""
    outputs = {o.name: o for o in engine.outputs}
    for name in names:
        if name in outputs:
            return name
    for o in engine.outputs:
        if shape_ok(o.shape):
            return o.name
    raise ValueError(f"landmark model outputs {sorted(outputs)}: need landmarks (B, 195) and pose flag (B, 1)")


class BlazePoseLandmarks:
    """Runs the landmark model on any number of ROIs of one frame in one batch."""

    def __init__(self, engine: Engine):
        self.engine = engine
        spec = engine.inputs[0]
        self.input_name = spec.name
        self.nchw = len(spec.shape) == 4 and spec.shape[1] == 3
        self._lm_name = _output_name(engine, ("landmarks", "Identity"), lambda sh: sh[-1] == 5 * NUM_LANDMARKS)
        self._flag_name = _output_name(engine, ("pose_flag", "Identity_1"), lambda sh: len(sh) == 2 and sh[-1] == 1)

    def crop(self, image: np.ndarray, roi: Roi) -> np.ndarray:
        """The ROI of a BGR frame as 256x256x3 uint8 BGR (edge pixels replicated)."""
        return cv2.warpAffine(image, roi.to_frame(INPUT_SIZE), (INPUT_SIZE, INPUT_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)

    def preprocess(self, image: np.ndarray, rois: list[Roi]) -> np.ndarray:
        """Batch (B, 3, 256, 256) (or NHWC) float32 RGB in [0, 1]."""
        crops = [self.crop(image, r) for r in rois]
        batch = cv2.dnn.blobFromImages(crops, scalefactor=1.0 / 255.0, swapRB=True)   # NCHW RGB
        return batch if self.nchw else np.ascontiguousarray(batch.transpose(0, 2, 3, 1))

    def postprocess(self, raw: np.ndarray, flags: np.ndarray, rois: list[Roi]) -> list[LandmarkResult]:
        raw = raw.reshape(len(rois), NUM_LANDMARKS, 5).astype(np.float64)
        flags = flags.reshape(len(rois))
        results = []
        for i, roi in enumerate(rois):
            a = roi.to_frame(INPUT_SIZE)
            pts = raw[i, :, :2] @ a[:, :2].T + a[:, 2]
            results.append(LandmarkResult(
                roi=roi, points=pts, z=raw[i, :, 2] * roi.size / INPUT_SIZE,
                visibility=_sigmoid(raw[i, :, 3]), presence=_sigmoid(raw[i, :, 4]), flag=float(flags[i])))
        return results

    def __call__(self, image: np.ndarray, rois: list[Roi]) -> list[LandmarkResult]:
        if not rois:
            return []
        out = self.engine.run_batched(self.input_name, self.preprocess(image, rois))
        return self.postprocess(out[self._lm_name], out[self._flag_name], rois)
