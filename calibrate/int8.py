"""INT8 calibration of the pose models on TensorRT, from frames recorded on the rig.

``dancewire calibrate int8 SOURCE`` (a folder of images/frames, or a video):

1. FP16 engines of the detector and the landmark model are opened (built and cached on
   first use); with them the vision area's own loop (`MultiPoseEstimator`) runs over the
   recorded frames, so the landmark crops are the ROIs of the people the live pipeline keeps
   (a crop it runs and then drops, a lost or duplicate estimate, is not among them);
2. an ``IInt8EntropyCalibrator2`` per model is fed the model inputs made by the models'
   own preprocessing — `BlazePoseDetector.regions`/`.letterbox`/`.preprocess` (224
   letterbox, [-1, 1]) and `BlazePoseLandmarks.preprocess` (rotated 256 crops, [0, 1]) — never a copy
   of it; TensorRT keeps the resulting scales in a calibration cache
   (`edge.engines.trt.int8_cache_path`, per rig), from which INT8 engines can later be
   rebuilt without the frames;
3. the INT8 engines are built (and cached), then compared with FP16 on the same frames:
   detector score and box agreement (matched detections, IoU) and landmark pixel error
   on identical crops. The report goes to stdout and ``state_dir()/calibration/int8-report.json``.

TensorRT 10 marks implicit (calibrator-based) INT8 as deprecated in favour of explicit
quantization (Q/DQ nodes, e.g. NVIDIA ModelOpt); it still works in TensorRT 10.x and is
what JetPack 6 ships. Without TensorRT and a GPU the command stops with a DeviceError.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from dancewire.errors import BadInputError, DancewireError
from dancewire.paths import state_dir
from dancewire.progress import Progress

log = logging.getLogger("dancewire.calibrate.int8")

MODELS = ("pose_detector", "pose_landmarks")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------- recorded frames

@dataclass(frozen=True)
class RecordedFrames:
    """A re-iterable set of BGR frames: a folder of images or a video, evenly thinned to at
    most `max_frames` (consecutive frames are near duplicates; spread gives variety)."""
    source: Path
    max_frames: int = 200

    def _images(self) -> list[Path]:
        files = sorted(p for p in self.source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.source}")
        if len(files) > self.max_frames:
            keep = np.linspace(0, len(files) - 1, self.max_frames).round().astype(int)
            files = [files[i] for i in np.unique(keep)]
        return files

    def __len__(self) -> int:
        if self.source.is_dir():
            return len(self._images())
        from edge.sources.video import VideoFileSource
        info = VideoFileSource(self.source).info
        total = int(round(info.duration * info.fps)) if info.duration and info.fps else self.max_frames
        return min(total, self.max_frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        if not self.source.exists():
            raise BadInputError(f"calibration source not found: {self.source}")
        if self.source.is_dir():
            for path in self._images():
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    log.warning("skipping unreadable image %s", path)
                    continue
                yield image
            return
        from edge.sources.video import VideoFileSource
        src = VideoFileSource(self.source)
        info = src.info
        total = int(round(info.duration * info.fps)) if info.duration and info.fps else 0
        wanted = set(np.linspace(0, total - 1, self.max_frames).round().astype(int).tolist()) \
            if total > self.max_frames else None
        n = 0
        for frame in src.frames():
            if wanted is None or frame.index in wanted:
                yield frame.image
                n += 1
                if n >= self.max_frames:
                    return


# ----------------------------------------------------------------------------- model inputs

def detector_inputs(frames: Iterable[np.ndarray], detector) -> Iterator[np.ndarray]:
    """Detector inputs exactly as `BlazePoseDetector` makes them: each region of each frame
    letterboxed (`letterbox`) and turned into a model input (`preprocess`)."""
    for image in frames:
        h, w = image.shape[:2]
        smalls = [detector.letterbox(image, region)[0] for region in detector.regions(w, h)]
        yield from detector.preprocess(smalls)


def live_rois(frames: Iterable[np.ndarray], estimator) -> list[list]:
    """The ROIs of the estimates the live loop (`MultiPoseEstimator`) keeps on each frame, in frame
    order (not the crops it ran and dropped: 2-7% fewer on two shared clips)."""
    return [[e.result.roi for e in estimator(image)] for image in frames]


def landmark_inputs(frames: Iterable[np.ndarray], rois: list[list], landmarks) -> Iterator[np.ndarray]:
    """Landmark crops exactly as `BlazePoseLandmarks` cuts them, for the given ROIs of each frame."""
    for image, frame_rois in zip(frames, rois):
        if frame_rois:
            yield from landmarks.preprocess(image, frame_rois)


def batched(items: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Full batches only (TensorRT calibrates at one fixed batch size); the remainder is dropped."""
    buf: list[np.ndarray] = []
    for item in items:
        buf.append(item)
        if len(buf) == batch_size:
            yield np.ascontiguousarray(np.stack(buf), dtype=np.float32)
            buf = []


# ----------------------------------------------------------------------------- calibrator

def entropy_calibrator(batches: Callable[[], Iterator[np.ndarray]], batch_size: int, cache_file: Path,
                       name: str = "model", total_batches: int | None = None, fresh: bool = False):
    """A TensorRT ``IInt8EntropyCalibrator2`` fed from ``batches()`` (float32 arrays of shape
    (batch_size, ...)), with its calibration cache in ``cache_file`` (`fresh`: the cache there is
    not read, and is replaced only once a new calibration completes).

    The batch is copied into one device buffer with cuda-python's ``cudaMemcpy``; the buffer
    is freed by ``close()`` (call it after the engine is built). TensorRT's Python binding catches
    whatever ``get_batch`` raises, prints it and takes it as the end of the data (then calibrates on
    what it got): so the error (Ctrl-C, CUDA, a bad batch) is kept in ``error`` for the caller to
    raise, and no cache is written from the partial data."""
    from edge.engines.trt import _write_atomic, cuda_call, import_cudart, import_tensorrt

    trt = import_tensorrt()
    cudart = import_cudart()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cache_file = Path(cache_file)
            self.batch_size = int(batch_size)
            self.batches_fed = 0
            self._iter: Iterator[np.ndarray] | None = None
            self._device = None
            self._nbytes = 0
            self._bar = Progress(f"INT8 calibration of {name}", total_batches)
            self.error: BaseException | None = None
            self.used_cache = False

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):
            try:
                return self._next_batch()
            except BaseException as exc:       # TensorRT would swallow it: kept, raised after the build
                self.error = exc
                return None

        def _next_batch(self):
            if self._iter is None:
                self._iter = iter(batches())
            try:
                batch = next(self._iter)
            except StopIteration:
                return None
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            if batch.shape[0] != self.batch_size:
                raise DancewireError(f"calibration batch of {batch.shape[0]}, expected {self.batch_size}")
            if self._device is None or batch.nbytes > self._nbytes:
                if self._device is not None:
                    cudart.cudaFree(self._device)
                self._device = cuda_call(cudart, cudart.cudaMalloc(batch.nbytes), "cudaMalloc")
                self._nbytes = batch.nbytes
            cuda_call(cudart, cudart.cudaMemcpy(self._device, batch.ctypes.data, batch.nbytes,
                                                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice),
                      "cudaMemcpy (calibration batch)")
            self.batches_fed += 1
            self._bar.update(1, f"{self.batches_fed * self.batch_size} inputs")
            return [int(self._device)]

        def read_calibration_cache(self):
            if not fresh and self.cache_file.is_file():
                log.info("using INT8 calibration cache %s", self.cache_file)
                self.used_cache = True
                return self.cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if self.error is not None:
                log.error("INT8 calibration of %s stopped (%s): no cache written", name, self.error)
                return
            _write_atomic(self.cache_file, bytes(memoryview(cache)))
            log.info("wrote INT8 calibration cache %s", self.cache_file)

        def close(self):
            if self._device is not None:
                cudart.cudaFree(self._device)
                self._device = None

    return EntropyCalibrator()


# ----------------------------------------------------------------------------- comparison

def _match(boxes_a: np.ndarray, boxes_b: np.ndarray, min_iou: float = 0.3) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU: (index in a, index in b, IoU)."""
    from edge.vision.blazepose_detector import iou_matrix

    if not len(boxes_a) or not len(boxes_b):
        return []
    iou = iou_matrix(boxes_a, boxes_b)
    pairs = []
    while True:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[i, j] < min_iou:
            return pairs
        pairs.append((int(i), int(j), float(iou[i, j])))
        iou[i, :] = -1
        iou[:, j] = -1


def _stats(values: list[float], prefix: str) -> dict[str, float | None]:
    arr = np.asarray(values, np.float64)
    if not arr.size:
        return {f"{prefix}_mean": None, f"{prefix}_p95": None, f"{prefix}_max": None}
    return {f"{prefix}_mean": float(arr.mean()), f"{prefix}_p95": float(np.percentile(arr, 95)),
            f"{prefix}_max": float(arr.max())}


def compare_detectors(frames: Iterable[np.ndarray], reference, candidate) -> dict:
    """Decoded detections of two `BlazePoseDetector`s (e.g. FP16 and INT8) on the same frames."""
    n_frames = same_count = n_ref = n_cand = 0
    score_diff, ious, centre_err = [], [], []
    for image in frames:
        a, b = reference(image), candidate(image)
        n_frames += 1
        n_ref += len(a)
        n_cand += len(b)
        same_count += len(a) == len(b)
        for i, j, iou in _match(np.array([d.box for d in a]), np.array([d.box for d in b])):
            score_diff.append(abs(a[i].score - b[j].score))
            ious.append(iou)
            centre_err.append(float(np.linalg.norm(a[i].keypoints - b[j].keypoints, axis=1).mean()))
    matched = len(ious)
    out = {"frames": n_frames, "detections_reference": n_ref, "detections_candidate": n_cand,
           "matched": matched, "count_agreement": same_count / n_frames if n_frames else None,
           "recall": matched / n_ref if n_ref else None,
           "box_iou_mean": float(np.mean(ious)) if ious else None,
           "box_iou_min": float(np.min(ious)) if ious else None}
    out.update(_stats(score_diff, "score_abs_diff"))
    out.update(_stats(centre_err, "keypoint_px"))
    return out


def compare_landmarks(frames: Iterable[np.ndarray], rois: list[list], reference, candidate) -> dict:
    """Landmarks of two `BlazePoseLandmarks` (e.g. FP16 and INT8) on the SAME crops (``rois``:
    the ROIs the live loop used on each frame, see `live_rois`). Errors in frame pixels."""
    from edge.vision.blazepose_landmarks import BLAZEPOSE_TO_COCO17, NUM_BODY

    body_err, coco_err, rel_err, flag_diff = [], [], [], []
    n_frames = n_crops = 0
    for image, frame_rois in zip(frames, rois):
        n_frames += 1
        if not frame_rois:
            continue
        a, b = reference(image, frame_rois), candidate(image, frame_rois)
        for ra, rb in zip(a, b):
            n_crops += 1
            err = np.linalg.norm(ra.points[:NUM_BODY] - rb.points[:NUM_BODY], axis=1)
            body_err.extend(err.tolist())
            coco_err.extend(err[BLAZEPOSE_TO_COCO17].tolist())
            rel_err.append(float(err.mean() / max(ra.roi.size, 1.0)))
            flag_diff.append(abs(ra.flag - rb.flag))
    out = {"frames": n_frames, "crops": n_crops}
    out.update(_stats(body_err, "body33_px"))
    out.update(_stats(coco_err, "coco17_px"))
    out.update(_stats(rel_err, "rel_to_roi"))
    out.update(_stats(flag_diff, "pose_flag_abs_diff"))
    return out


# ----------------------------------------------------------------------------- the command

def report_path() -> Path:
    return state_dir() / "calibration" / "int8-report.json"


def calibrate_int8(source: str | Path, *, max_frames: int = 200, batch_size: int = 8, max_batch: int = 8,
                   recalibrate: bool = False, compare: bool = True, models: tuple[str, ...] = MODELS) -> dict:
    """Calibrate, build the INT8 engines, compare them with FP16; returns the report."""
    from edge.engines.trt import TrtEngine, _write_atomic, gpu_info, import_cudart, import_tensorrt, int8_cache_path
    from edge.models.registry import model_path
    from edge.vision.blazepose_detector import BlazePoseDetector
    from edge.vision.blazepose_landmarks import BlazePoseLandmarks
    from edge.vision.estimator import MultiPoseEstimator
    from edge.vision.settings import VisionSettings

    unknown = set(models) - set(MODELS)
    if unknown:
        raise DancewireError(f"unknown model(s) {sorted(unknown)}; choose from {MODELS}")
    if not 1 <= batch_size <= max_batch:
        raise DancewireError(f"--batch must be between 1 and --max-batch ({max_batch})")
    if max_frames < 1:
        raise DancewireError(f"--max-frames must be at least 1 (got {max_frames})")
    trt = import_tensorrt()                   # a DeviceError here, before any slow work
    gpu = gpu_info(import_cudart())
    frames = RecordedFrames(Path(source), max_frames)
    n_frames = len(frames)                  # estimate (from the container) until pass 1 has counted
    log.info("INT8 calibration on %s (%s) with about %d frames of %s", gpu.name, trt.__version__, n_frames, source)

    s = VisionSettings()
    paths = {name: model_path(name) for name in MODELS}
    fp16 = {name: TrtEngine(paths[name], "fp16", max_batch) for name in MODELS}
    det16 = BlazePoseDetector(fp16["pose_detector"], s.det_min_score, s.det_nms_iou,
                              s.det_tiles, s.det_tile_ratio, s.det_tile_overlap)
    lm16 = BlazePoseLandmarks(fp16["pose_landmarks"])

    # Pass 1 (FP16, outside any TensorRT build): the ROIs the live loop cuts on every frame.
    bar = Progress("tracking dancers (FP16) for the landmark crops", n_frames)
    rois = live_rois(_counting(frames, bar), MultiPoseEstimator(det16, lm16, s))
    n_frames, n_crops = len(rois), sum(len(r) for r in rois)
    if "pose_landmarks" in models and n_crops < batch_size:
        raise BadInputError(f"only {n_crops} dancer crops found in {source}: record frames with dancers in view")
    feeds = {   # CPU-only preprocessing while TensorRT calibrates
        "pose_detector": lambda: batched(detector_inputs(frames, det16), batch_size),
        "pose_landmarks": lambda: batched(landmark_inputs(frames, rois, lm16), batch_size),
    }
    totals = {"pose_detector": None, "pose_landmarks": n_crops // batch_size}
    report: dict = {"source": str(source), "frames": n_frames, "crops": n_crops, "gpu": gpu.name,
                    "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
                    "tensorrt": trt.__version__, "batch_size": batch_size, "max_batch": max_batch,
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": {}}
    int8: dict[str, TrtEngine] = {}
    for name in models:
        cache = int8_cache_path(paths[name])
        # --recalibrate: the old cache stays until a new one is complete (a failed run keeps the rig's)
        calib = entropy_calibrator(feeds[name], batch_size, cache, name, totals[name], fresh=recalibrate)
        try:
            int8[name] = TrtEngine(paths[name], "int8", max_batch, calib, rebuild=True)
        finally:
            calib.close()
        if calib.error is not None:       # the engine was built from part of the data: not kept
            partial = int8.pop(name)
            partial.close()
            for f in (partial.cache_path, partial.cache_path.with_suffix(".json")):
                f.unlink(missing_ok=True)
            raise calib.error
        if calib.batches_fed == 0 and not calib.used_cache:
            raise BadInputError(f"no calibration inputs for {name} in {source} (no people found?)")
        report["models"][name] = {"calibration_cache": str(cache), "calibration_batches": calib.batches_fed,
                                  "engine": str(int8[name].cache_path)}

    if compare:
        if "pose_detector" in int8:
            det8 = BlazePoseDetector(int8["pose_detector"], s.det_min_score, s.det_nms_iou,
                                     s.det_tiles, s.det_tile_ratio, s.det_tile_overlap)
            bar = Progress("comparing detector FP16 vs INT8", n_frames)
            report["models"]["pose_detector"]["fp16_vs_int8"] = compare_detectors(
                _counting(frames, bar), det16, det8)
        if "pose_landmarks" in int8:
            lm8 = BlazePoseLandmarks(int8["pose_landmarks"])
            bar = Progress("comparing landmarks FP16 vs INT8", n_frames)
            report["models"]["pose_landmarks"]["fp16_vs_int8"] = compare_landmarks(
                _counting(frames, bar), rois, lm16, lm8)
    for eng in list(fp16.values()) + list(int8.values()):
        eng.close()
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
    report["report_path"] = str(path)
    return report


def _counting(frames: Iterable[np.ndarray], bar: Progress) -> Iterator[np.ndarray]:
    for image in frames:
        yield image
        bar.update()


def format_report(report: dict) -> str:
    lines = [f"INT8 calibration on {report['gpu']} (TensorRT {report['tensorrt']}), "
             f"{report['frames']} frames of {report['source']}"]

    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    for name, m in report["models"].items():
        lines.append(f"  {name}: {m['calibration_batches']} calibration batches; cache {m['calibration_cache']}")
        c = m.get("fp16_vs_int8")
        if not c:
            continue
        if name == "pose_detector":
            lines.append(f"    detections fp16/int8 {c['detections_reference']}/{c['detections_candidate']}, "
                         f"matched {c['matched']}, same count in {f(c['count_agreement'], '.1%')} of frames")
            lines.append(f"    score |diff| mean {f(c['score_abs_diff_mean'], '.4f')} "
                         f"max {f(c['score_abs_diff_max'], '.4f')}; "
                         f"box IoU mean {f(c['box_iou_mean'], '.3f')} min {f(c['box_iou_min'], '.3f')}")
        else:
            lines.append(f"    {c['crops']} crops: body px error mean {f(c['body33_px_mean'], '.2f')} "
                         f"p95 {f(c['body33_px_p95'], '.2f')} max {f(c['body33_px_max'], '.2f')}; "
                         f"COCO-17 mean {f(c['coco17_px_mean'], '.2f')} px; "
                         f"pose flag |diff| max {f(c['pose_flag_abs_diff_max'], '.3f')}")
    if "report_path" in report:
        lines.append(f"  report: {report['report_path']}")
    return "\n".join(lines)
