"""Fidelity of the converted ONNX models against the original TFLite models.

Compares raw tensors, which needs no decoding: the detector's raw boxes and score logits
for the same letterboxed image, and the landmark model's raw outputs for the same crop.
Inputs are real images: the COCO val images of ``reference/mmpose_coco`` (detector on the
whole image, landmarks on a square crop around each labelled person) and frames of
``video/*.mp4`` from the shared data folder; extra images can be given. Only when no image
exists at all are synthetic inputs used, and the report says so.

Units: detector boxes are in 224-px input pixels, landmark x/y in 256-px crop pixels.
"""
from __future__ import annotations

import json
import math
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

DET_SIZE = 224
LM_SIZE = 256
N_ANCHORS = 2254
N_LANDMARKS = 39
MIN_SCORE = 0.5            # mediapipe's min_score_thresh for the detector

# Acceptance limits of the build (the build fails above them).
LIMITS = {
    "landmark_xy_px": 0.5,           # any of the 39 points, x or y, 256-px crop pixels
    "detector_box_px": 0.5,          # box and keypoints of anchors scoring >= 0.5, 224-px pixels
    "detector_score": 1e-3,          # sigmoid score, any anchor
    "batch_vs_single": 1e-3,         # batch-4 run vs four batch-1 runs, any output element
    "landmark_z_px": 0.5,            # depth, same pixels
    "landmark_prob": 1e-3,           # visibility and presence (after the sigmoid), pose flag
    "world_m": 1e-3,                 # world landmarks, metres
}

# TFLite output tensor name -> ONNX output name.
DETECTOR_OUTPUTS = {"Identity": "boxes", "Identity_1": "scores"}
LANDMARK_OUTPUTS = {"Identity": "landmarks", "Identity_1": "pose_flag", "Identity_2": "segmentation",
                    "Identity_3": "heatmap", "Identity_4": "world_landmarks"}


@dataclass
class Inputs:
    """NHWC float32 batches for both models, and where each sample came from."""
    detector: np.ndarray                   # (N, 224, 224, 3) RGB in [-1, 1], letterboxed
    landmarks: np.ndarray                  # (M, 256, 256, 3) RGB in [0, 1], person crops
    detector_sources: list[str] = field(default_factory=list)
    landmark_sources: list[str] = field(default_factory=list)
    kind: str = "real"                     # "real" or "synthetic"


# ---------------------------------------------------------------- input preparation
def letterbox(rgb: np.ndarray, size: int = DET_SIZE) -> np.ndarray:
    """Aspect-kept resize into a size x size square, centred, zero border; [-1, 1]."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    out = np.zeros((size, size, 3), np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized / 127.5 - 1.0
    return out


def square_crop(rgb: np.ndarray, cx: float, cy: float, side: float, size: int = LM_SIZE) -> np.ndarray:
    """An axis-aligned square around (cx, cy) resampled to size x size; [0, 1], zero outside."""
    import cv2

    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop.astype(np.float32) / 255.0


def _read_rgb(path: Path) -> np.ndarray | None:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _video_frames(path: Path, fractions=(0.15, 0.5, 0.85)) -> list[tuple[int, np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        frames = []
        for f in fractions:
            index = int(f * max(count - 1, 0))
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, bgr = cap.read()
            if ok and bgr is not None:
                frames.append((index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        return frames
    finally:
        cap.release()


def _coco_people(ann_file: Path) -> dict[str, list[list[float]]]:
    """file_name -> person boxes [x, y, w, h] from a COCO keypoint annotation file."""
    data = json.loads(ann_file.read_text())
    names = {img["id"]: img["file_name"] for img in data.get("images", [])}
    people: dict[str, list[list[float]]] = {}
    for ann in data.get("annotations", []):
        if ann.get("category_id", 1) != 1 or ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        if w * h < 32 * 32:
            continue
        people.setdefault(names.get(ann["image_id"], ""), []).append([x, y, w, h])
    return people


def collect_inputs(data_dir: Path | None, extra_images: list[Path] | None = None,
                   max_videos: int | None = None, frames_per_video: int = 3) -> Inputs:
    """Real inputs from the shared data folder (and extra images); synthetic only if none."""
    det, lm, det_src, lm_src = [], [], [], []

    def add_image(rgb: np.ndarray, label: str, boxes: list[list[float]] | None) -> None:
        det.append(letterbox(rgb))
        det_src.append(label)
        h, w = rgb.shape[:2]
        for i, (x, y, bw, bh) in enumerate(boxes or [[0, 0, w, h]]):
            side = 1.25 * max(bw, bh) if boxes else min(h, w)
            lm.append(square_crop(rgb, x + bw / 2, y + bh / 2, side))
            lm_src.append(f"{label}#person{i}" if boxes else f"{label}#centre")

    if data_dir is not None and data_dir.is_dir():
        coco = data_dir / "reference" / "mmpose_coco"
        people = _coco_people(coco / "test_coco.json") if (coco / "test_coco.json").exists() else {}
        for jpg in sorted(coco.glob("*.jpg")):
            rgb = _read_rgb(jpg)
            if rgb is not None:
                add_image(rgb, f"mmpose_coco/{jpg.name}", people.get(jpg.name))
        fractions = tuple((i + 0.5) / frames_per_video for i in range(frames_per_video))
        videos = sorted((data_dir / "video").glob("*.mp4"))[:max_videos]
        for mp4 in videos:
            for index, rgb in _video_frames(mp4, fractions):
                add_image(rgb, f"video/{mp4.name}@{index}", None)
    for path in extra_images or []:
        rgb = _read_rgb(Path(path))
        if rgb is not None:
            add_image(rgb, str(path), None)
    if det:
        return Inputs(np.stack(det), np.stack(lm), det_src, lm_src, "real")
    log.warning("no real images found: verifying on synthetic inputs")
    rng = np.random.default_rng(0)
    synth = []
    for i in range(4):
        yy, xx = np.mgrid[0:480, 0:640] / 480.0
        img = 127 + 100 * np.sin(xx * (3 + i) + yy * (2 + i))[..., None] * np.array([1.0, 0.6, 0.3])
        img += rng.normal(0, 20, img.shape)
        synth.append(np.clip(img, 0, 255).astype(np.uint8))
    for i, rgb in enumerate(synth):
        add_image(rgb, f"synthetic{i}", None)
    return Inputs(np.stack(det), np.stack(lm), det_src, lm_src, "synthetic")


# ---------------------------------------------------------------- comparisons
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -100.0, 100.0)))


def compare_detector(onnx_out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    """Raw boxes and scores: ONNX vs TFLite, both (N, 2254, 12) / (N, 2254, 1)."""
    boxes, ref_boxes = onnx_out["boxes"], ref["boxes"]
    s, rs = sigmoid(onnx_out["scores"][..., 0]), sigmoid(ref["scores"][..., 0])
    confident = rs >= MIN_SCORE
    box_diff = np.abs(boxes - ref_boxes)
    decision = (s >= MIN_SCORE) != confident
    borderline = np.abs(rs - MIN_SCORE) <= LIMITS["detector_score"]
    best = rs.argmax(axis=1)
    return {
        "images": int(len(boxes)),
        "anchors_scoring_over_0.5_tflite": int(confident.sum()),
        "images_with_a_detection_tflite": int(confident.any(axis=1).sum()),
        "score_logit_max_abs_diff": float(np.abs(onnx_out["scores"] - ref["scores"]).max()),
        "score_max_abs_diff": float(np.abs(s - rs).max()),
        "decision_mismatches": int((decision & ~borderline).sum()),
        "decision_mismatches_borderline": int((decision & borderline).sum()),
        "box_max_abs_diff_px_confident": float(box_diff[confident].max()) if confident.any() else 0.0,
        "box_max_abs_diff_px_all_anchors": float(box_diff.max()),
        "box_max_abs_value_px": float(np.abs(ref_boxes).max()),
        "best_anchor_same": bool((s.argmax(axis=1) == best).all()),
        "best_score_max_abs_diff": float(np.abs(s[np.arange(len(s)), best] - rs[np.arange(len(rs)), best]).max()),
    }


def compare_landmarks(onnx_out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    """Raw landmark outputs for the same crops: ONNX vs TFLite (x/y/z in 256-px crop pixels)."""
    lm = onnx_out["landmarks"].reshape(-1, N_LANDMARKS, 5)
    rl = ref["landmarks"].reshape(-1, N_LANDMARKS, 5)
    xy = np.abs(lm[..., :2] - rl[..., :2])
    out = {
        "crops": int(len(lm)),
        "xy_max_abs_diff_px": float(xy.max()),
        "xy_max_abs_diff_px_body_0_32": float(xy[:, :33].max()),
        "xy_mean_abs_diff_px": float(xy.mean()),
        "z_max_abs_diff_px": float(np.abs(lm[..., 2] - rl[..., 2]).max()),
        "visibility_max_abs_diff": float(np.abs(sigmoid(lm[..., 3]) - sigmoid(rl[..., 3])).max()),
        "presence_max_abs_diff": float(np.abs(sigmoid(lm[..., 4]) - sigmoid(rl[..., 4])).max()),
        "pose_flag_max_abs_diff": float(np.abs(onnx_out["pose_flag"] - ref["pose_flag"]).max()),
        "pose_flag_tflite_min_max": [float(ref["pose_flag"].min()), float(ref["pose_flag"].max())],
    }
    if "world_landmarks" in onnx_out:
        out["world_max_abs_diff_m"] = float(np.abs(onnx_out["world_landmarks"] - ref["world_landmarks"]).max())
    for name in ("segmentation", "heatmap"):
        if name in onnx_out:
            out[f"{name}_max_abs_diff"] = float(np.abs(onnx_out[name] - ref[name]).max())
    if "segmentation" in onnx_out:   # logits reach +-2000: compare as probabilities too
        out["segmentation_prob_max_abs_diff"] = float(
            np.abs(sigmoid(onnx_out["segmentation"]) - sigmoid(ref["segmentation"])).max())
    return out


def batch_consistency(run: Callable[[np.ndarray], dict[str, np.ndarray]], x: np.ndarray) -> dict:
    """Max difference between one batch run of ``x`` and ``len(x)`` single runs (inf when the batch
    run's output has another shape: a model whose batch is stuck at 1 would broadcast)."""
    batched = run(x)
    singles = [run(x[i:i + 1]) for i in range(len(x))]
    diffs = {}
    for k in batched:
        one = np.concatenate([s[k] for s in singles])
        diffs[k] = float(np.abs(batched[k] - one).max()) if batched[k].shape == one.shape else math.inf
    return {"batch": int(len(x)), "max_abs_diff": diffs, "overall": max(diffs.values())}


def distinct_batch(x: np.ndarray, n: int = 4) -> np.ndarray:
    """`n` inputs for the batch check, all different (copies of one input would hide a batch that
    returns the same row for every item): too few are padded with mirrored copies."""
    out = list(x[:n])
    k = 0
    while len(out) < n:
        flip = [lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1]][k // max(len(x), 1) % 3]
        out.append(np.ascontiguousarray(flip(x[k % len(x)])))
        k += 1
    return np.stack(out)


def nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def ort_runner(onnx_path: Path, threads: int = 2) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function NHWC batch -> outputs, through the project's ORT engine (NCHW input)."""
    from edge.engines import open_engine

    engine = open_engine(onnx_path, "onnxruntime", threads=threads)
    name = engine.inputs[0].name
    fixed = engine.inputs[0].shape[0] == 1

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        if fixed and len(x) != 1:
            parts = [engine.run({name: nchw(x[i:i + 1])}) for i in range(len(x))]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return engine.run({name: nchw(x)})

    return run


def _over(value: float, limit: float) -> bool:
    """Outside the limit, or not a number at all (NaN compares False with everything)."""
    return not math.isfinite(value) or value > limit


# landmark report field -> (limit name, what it is)
_LANDMARK_CHECKS = {"xy_max_abs_diff_px": ("landmark_xy_px", "landmarks x/y"),
                    "z_max_abs_diff_px": ("landmark_z_px", "landmark depth"),
                    "visibility_max_abs_diff": ("landmark_prob", "visibility"),
                    "presence_max_abs_diff": ("landmark_prob", "presence"),
                    "pose_flag_max_abs_diff": ("landmark_prob", "pose flag"),
                    "world_max_abs_diff_m": ("world_m", "world landmarks")}


def check_limits(report: dict) -> list[str]:
    """Human-readable failures of a verification report (empty: all within limits)."""
    failures = []
    for key, result in report.get("landmarks", {}).items():
        for name, (limit, what) in _LANDMARK_CHECKS.items():
            if name in result and _over(result[name], LIMITS[limit]):
                failures.append(f"{key}: {what} differ by {result[name]:.3g} (limit {LIMITS[limit]})")
    det = report.get("detector")
    if det:
        if _over(det["box_max_abs_diff_px_confident"], LIMITS["detector_box_px"]):
            failures.append(f"detector boxes differ by {det['box_max_abs_diff_px_confident']:.3f} px")
        if _over(det["score_max_abs_diff"], LIMITS["detector_score"]):
            failures.append(f"detector scores differ by {det['score_max_abs_diff']:.2e}")
        if det["decision_mismatches"]:
            failures.append(f"detector: {det['decision_mismatches']} anchors cross the 0.5 threshold")
    for key, result in report.get("batch", {}).items():
        if _over(result["overall"], LIMITS["batch_vs_single"]):
            failures.append(f"{key}: batch run differs from single runs by {result['overall']:.2e}")
    return failures
