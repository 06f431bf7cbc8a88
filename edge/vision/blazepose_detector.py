"""BlazePose person detector (mediapipe `pose_detection`): letterbox in, `Detection`s out.

Pre/post-processing of the one model, rtmlib style, following mediapipe 0.10.21's
PoseDetectionCpu graph (shared/docs/pose-models.md):

* input: the frame letterboxed (aspect kept, black border, one continuous affine warp as
  mediapipe's ImageToTensor) into 224x224 RGB scaled to [-1, 1];
  NCHW or NHWC is read off the engine's input shape;
* outputs: boxes (B, 2254, 12) = x, y, w, h + 4 keypoints (x, y), in 224-px units relative to
  SSD anchors; scores (B, 2254, 1) logits;
* decode: sigmoid(clip(logit, +-100)) >= min score; weighted NMS at IoU 0.3; undo the letterbox.

Keypoints: 0 hip centre, 1 full-body scale/rotation point, 2 shoulder centre, 3 upper-body point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.engines.base import Engine
from edge.records import Detection

INPUT_SIZE = 224
NUM_KEYPOINTS = 4


@dataclass(frozen=True)
class AnchorParams:
    """mediapipe SsdAnchorsCalculatorOptions of the pose detector."""
    input_size: int = INPUT_SIZE
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    offset: float = 0.5
    strides: tuple[int, ...] = (8, 16, 32, 32, 32)
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) / 2
    return min_scale + (max_scale - min_scale) * index / (count - 1)


def ssd_anchors(p: AnchorParams = AnchorParams()) -> np.ndarray:
    """SSD anchors as (N, 4) x_centre, y_centre, w, h in [0, 1] (mediapipe's SsdAnchorsCalculator)."""
    n_layers = len(p.strides)
    anchors: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < n_layers:
        sizes: list[tuple[float, float]] = []          # (w, h) per anchor of a grid cell
        last = layer
        while last < n_layers and p.strides[last] == p.strides[layer]:
            scale = _scale(p.min_scale, p.max_scale, last, n_layers)
            for ratio in p.aspect_ratios:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if p.interpolated_scale_aspect_ratio > 0:
                nxt = 1.0 if last == n_layers - 1 else _scale(p.min_scale, p.max_scale, last + 1, n_layers)
                s = math.sqrt(scale * nxt)
                r = p.interpolated_scale_aspect_ratio
                sizes.append((s * math.sqrt(r), s / math.sqrt(r)))
            last += 1
        fm = math.ceil(p.input_size / p.strides[layer])
        for y in range(fm):
            for x in range(fm):
                for w, h in sizes:
                    if p.fixed_anchor_size:
                        w = h = 1.0
                    anchors.append(((x + p.offset) / fm, (y + p.offset) / fm, w, h))
        layer = last
    return np.asarray(anchors, np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (N, 4) x (M, 4), x0 y0 x1 y1."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                 iou_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mediapipe's WEIGHTED non-max suppression.

    Take the best remaining detection; every remaining detection overlapping it by IoU above
    the threshold (itself included) is merged into one: box and keypoints averaged with the
    scores as weights, the score of the best kept. Returns (boxes, scores, keypoints), best first.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    keypoints = np.asarray(keypoints, np.float64)
    keypoints = keypoints.reshape(len(boxes), keypoints.shape[-2] if keypoints.ndim == 3 else -1, 2)
    order = np.argsort(-scores, kind="stable")
    out_b, out_s, out_k = [], [], []
    if len(order):
        ious = iou_matrix(boxes, boxes)
    while len(order):
        top = order[0]
        overlap = ious[top, order] > iou_threshold
        overlap[0] = True
        group, order = order[overlap], order[~overlap]
        w = scores[group]
        total = w.sum()
        out_b.append((boxes[group] * w[:, None]).sum(0) / total)
        out_k.append((keypoints[group] * w[:, None, None]).sum(0) / total)
        out_s.append(scores[top])
    k = keypoints.shape[1]
    return (np.asarray(out_b, np.float64).reshape(-1, 4), np.asarray(out_s, np.float64),
            np.asarray(out_k, np.float64).reshape(-1, k, 2))


def _pick(outputs: dict[str, np.ndarray], last_dim: int, prefer: tuple[str, ...]) -> np.ndarray:
    for name in prefer:
        if name in outputs:
            return outputs[name]
    for value in outputs.values():
        if value.ndim == 3 and value.shape[-1] == last_dim:
            return value
    raise ValueError(f"detector outputs {sorted(outputs)} have no (B, N, {last_dim}) tensor")


class BlazePoseDetector:
    """Runs the BlazePose detector through an `Engine` and decodes its output."""

    MAX_TILES = 8

    def __init__(self, engine: Engine, min_score: float = 0.5, iou_threshold: float = 0.3,
                 tiles: bool = True, tile_ratio: float = 2.0, tile_overlap: float = 0.25):
        self.engine = engine
        self.min_score = float(min_score)
        self.iou_threshold = float(iou_threshold)
        self.tiles, self.tile_ratio, self.tile_overlap = tiles, float(tile_ratio), float(tile_overlap)
        spec = engine.inputs[0]
        self.input_name = spec.name
        self.nchw = len(spec.shape) == 4 and spec.shape[1] == 3
        self.anchors = ssd_anchors()

    # -- pre-processing ---------------------------------------------------------------
    def regions(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """Parts of the frame to run the detector on, x0 y0 x1 y1: the whole frame, or, when
        the frame is far from square, overlapping squares of the short side that cover it."""
        long_, short = max(width, height), min(width, height)
        if not self.tiles or short <= 0 or long_ / short <= self.tile_ratio:
            return [(0, 0, width, height)]
        step = short * (1.0 - self.tile_overlap)
        # at most MAX_TILES (the overlap grows instead): a 600x3 frame made 267 tiles, 2.6 s a frame
        n = min(self.MAX_TILES, max(2, math.ceil((long_ - short) / step) + 1))
        starts = np.linspace(0, long_ - short, n).round().astype(int)
        return [(int(s), 0, int(s) + short, short) if width >= height else (0, int(s), short, int(s) + short)
                for s in starts]

    def letterbox(self, image: np.ndarray, region: tuple[int, int, int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Letterbox `region` of a BGR frame into 224x224 BGR uint8 (black border).

        Returns the small image and the 2x3 affine from its pixels back to frame pixels."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = region or (0, 0, w, h)
        rw, rh = x1 - x0, y1 - y0
        s = INPUT_SIZE / max(rw, rh)
        pad_x, pad_y = (INPUT_SIZE - rw * s) / 2, (INPUT_SIZE - rh * s) / 2
        # frame -> tensor: q = s * (p - origin) + pad (continuous, as mediapipe's warp)
        fwd = np.array([[s, 0, pad_x - s * x0], [0, s, pad_y - s * y0]], np.float64)
        small = cv2.warpAffine(image, fwd, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        back = np.array([[1 / s, 0, x0 - pad_x / s], [0, 1 / s, y0 - pad_y / s]], np.float64)
        return small, back

    def preprocess(self, smalls: list[np.ndarray]) -> np.ndarray:
        """Letterboxed BGR images -> model batch, RGB in [-1, 1], NCHW (or NHWC)."""
        batch = cv2.dnn.blobFromImages(smalls, scalefactor=1.0 / 127.5, mean=(127.5, 127.5, 127.5),
                                       swapRB=True)
        return batch if self.nchw else np.ascontiguousarray(batch.transpose(0, 2, 3, 1))

    # -- post-processing ----------------------------------------------------------------
    def decode(self, raw_boxes: np.ndarray, raw_scores: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's raw outputs -> (boxes (N, 4), scores (N,), keypoints (N, 4, 2)) in tensor
        pixels (0..224), before NMS."""
        raw_boxes = raw_boxes.reshape(-1, 4 + 2 * NUM_KEYPOINTS)
        logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        # an anchor with a NaN or infinite box or keypoint (an fp16 overflow) is no detection: its
        # keypoints made the ROI maths raise on every frame
        keep = (scores >= self.min_score) & np.isfinite(raw_boxes).all(axis=1)
        if not keep.any():
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, NUM_KEYPOINTS, 2))
        r = raw_boxes[keep].astype(np.float64)
        a = self.anchors[keep].astype(np.float64)
        size = float(INPUT_SIZE)
        # anchor-relative -> normalised tensor coordinates (fixed anchor size: w = h = 1)
        cx = r[:, 0] / size * a[:, 2] + a[:, 0]
        cy = r[:, 1] / size * a[:, 3] + a[:, 1]
        bw = r[:, 2] / size * a[:, 2]
        bh = r[:, 3] / size * a[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * size
        kx = r[:, 4::2] / size * a[:, 2:3] + a[:, 0:1]
        ky = r[:, 5::2] / size * a[:, 3:4] + a[:, 1:2]
        kps = np.stack([kx, ky], -1) * size
        return boxes, scores[keep], kps

    @staticmethod
    def _to_frame(points: np.ndarray, back: np.ndarray) -> np.ndarray:
        return points @ back[:, :2].T + back[:, 2]

    def __call__(self, image: np.ndarray, regions: list[tuple[int, int, int, int]] | None = None
                 ) -> list[Detection]:
        """Detect people in `regions` of the frame (default: `self.regions`), all regions in one
        batch, one NMS over all of them in frame pixels (IoU does not change under the
        letterbox's uniform scaling, so for one region this is mediapipe's NMS exactly)."""
        h, w = image.shape[:2]
        regions = regions or self.regions(w, h)
        smalls, backs = zip(*(self.letterbox(image, r) for r in regions))
        outputs = self.engine.run_batched(self.input_name, self.preprocess(list(smalls)))
        raw_boxes = _pick(outputs, 4 + 2 * NUM_KEYPOINTS, ("boxes", "Identity"))
        raw_scores = _pick(outputs, 1, ("scores", "Identity_1"))
        all_b, all_s, all_k = [], [], []
        for i, back in enumerate(backs):
            b, s, k = self.decode(raw_boxes[i], raw_scores[i])
            all_b.append(self._to_frame(b.reshape(-1, 2), back).reshape(-1, 4))
            all_s.append(s)
            all_k.append(self._to_frame(k.reshape(-1, 2), back).reshape(-1, NUM_KEYPOINTS, 2))
        boxes, scores, kps = weighted_nms(np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_k),
                                          self.iou_threshold)
        return [Detection(box=boxes[i].astype(np.float32), score=float(scores[i]),
                          keypoints=kps[i].astype(np.float32)) for i in range(len(scores))]
