"""Robustness of pose detection and style retrieval to degraded video (cf. Table 5 of the classification paper).

Each shared video (../shared/data/video/*.mp4, the first --max-seconds of each) is degraded by
compression (libx264 CRF), Gaussian noise, horizontal motion blur, low light, random frame drops
(timestamps kept) and a second camera resolution (downscale, then upscale to 1080 rows), each at
2-3 severities (benchmarks/degrade.py), and run through `PoseStage` like the clean video.

Pose metrics, per condition, over all frames of all clips:
- detection_rate: share of the degraded stream's frames with >= 1 dancer (live PoseStage output);
- displacement: for frames where the clean run found a dancer, the mean distance of the degraded
  run's nearest dancer's keypoints (joints the clean run saw with score >= 0.5) to the clean ones,
  divided by the clean dancer's body size (Ban's: max(nose-to-ankle, 3 x torso), as the encoder's
  normalization); frames where the degraded run found nobody are counted in `lost`.

Style accuracy: every video is its own class (its movement style: dance, taichi, ballet, moonwalk,
footskate-dance). Windows are cut from the cleaned PoseStage output by `WindowCutter` (2 s, hop
--hop). Gallery: windows of the CLEAN clips starting at the first detected frame. Queries: windows
of the DEGRADED clips starting --hop/2 later (a different window phase). Top-1 cosine kNN over the
gallery. `coverage` = query windows produced / query windows of the clean run (a window with fewer
than --min-valid real samples is not produced: the dancer was lost). `top1_all` = correct / query
windows of the clean run (lost windows count as wrong: the end-to-end figure); `top1` = correct /
windows produced. The reference is clean-vs-clean with the shifted phase; `drop` = reference
top1_all - condition top1_all. As top-1 over five very different clips saturates,
`similarity_to_clean` also reports the mean cosine similarity of each degraded query window to
the clean window starting at the same time (1.0 = the embedding did not move). Two embeddings:
the motion encoder (edge/motion/weights/encoder.onnx, or --encoder; reported as unavailable when
it is not built) and a training-free baseline (mean and std over time of Ban-normalised keypoints).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from benchmarks import degrade
from dancewire.errors import BadInputError, ModelCacheError
from dancewire.paths import shared_data_dir
from dancewire.progress import Progress
from edge.records import Frame, Pose, PoseFrame, Window


LABELS = {
    "qengineering_Dance": "dance",
    "hybrik_taiji": "taichi",
    "controlvideo_moonwalk": "moonwalk",
    "footskate_reducer_dance": "footskate-dance",
    "t2vzero_ballet": "ballet",
}
VISIBLE = 0.5          # clean-run keypoint score from which a joint counts in the displacement
OUT_HEIGHT = 1080      # the "second camera" delivers 1080-row frames

Apply = Callable[[list[Frame], float, np.random.Generator], tuple[Iterable[Frame], float]]


@dataclass(frozen=True)
class Condition:
    kind: str
    severity: str
    apply: Apply          # (frames, fps, rng) -> (degraded frames, factor from degraded to clean pixels)

    @property
    def name(self) -> str:
        return self.kind if self.kind == "clean" else f"{self.kind}:{self.severity}"


def _per_image(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> Apply:
    def apply(frames, fps, rng):
        return (Frame(f.index, f.t, fn(f.image, rng)) for f in frames), 1.0
    return apply


def _compress(crf: int) -> Apply:
    def apply(frames, fps, rng):
        images = degrade.h264_roundtrip((f.image for f in frames), crf, fps)
        return (Frame(f.index, f.t, im) for f, im in zip(frames, images)), 1.0
    return apply


def _resample(low_height: int) -> Apply:
    def apply(frames, fps, rng):
        h = frames[0].image.shape[0] if frames else OUT_HEIGHT
        return ((Frame(f.index, f.t, degrade.resample(f.image, low_height, OUT_HEIGHT)) for f in frames),
                h / OUT_HEIGHT)
    return apply


def _drop(fraction: float) -> Apply:
    def apply(frames, fps, rng):
        return degrade.drop_frames(frames, fraction, rng), 1.0
    return apply


def conditions() -> list[Condition]:
    conds = [Condition("clean", "-", lambda frames, fps, rng: (frames, 1.0))]
    conds += [Condition("compression", f"crf{c}", _compress(c)) for c in (35, 43, 51)]
    conds += [Condition("noise", f"sigma{s}", _per_image(lambda im, rng, s=s: degrade.gaussian_noise(im, s, rng)))
              for s in (10, 30)]
    conds += [Condition("blur", f"motion{k}px", _per_image(lambda im, rng, k=k: degrade.motion_blur(im, k)))
              for k in (9, 25)]
    conds += [Condition("low_light", f"{round(b * 100)}pct",
                        _per_image(lambda im, rng, b=b: degrade.low_light(im, b, rng))) for b in (0.3, 0.1)]
    conds += [Condition("frame_drop", f"{round(p * 100)}pct", _drop(p)) for p in (0.1, 0.3, 0.5)]
    conds += [Condition("resolution", f"{h}p_to_{OUT_HEIGHT}p", _resample(h)) for h in (360, 240)]
    return conds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", type=Path, default=None, help="folder of .mp4 clips (default: shared data video/)")
    p.add_argument("--max-seconds", type=float, default=6.0, help="use the first S seconds of each clip")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hop", type=float, default=0.25, help="hop between window starts, s (query phase: hop/2)")
    p.add_argument("--min-valid", type=int, default=12,
                   help="windows need this many real samples (2 s at 8 fps has only 16)")
    p.add_argument("--encoder", type=Path, default=None,
                   help="motion encoder ONNX (default: edge/motion/weights/encoder.onnx)")
    p.add_argument("--against", type=Path, nargs="*", default=[],
                   help="other encoder ONNX files scored side by side in the same run (columns encoder:<model_id>)")
    p.add_argument("--only", default="", help="comma-separated condition kinds to run (clean always runs)")


# --------------------------------------------------------------------------- pose runs

@dataclass
class Run:
    live: dict[int, PoseFrame]    # frame index -> live output (keypoints in clean-frame pixels)
    final: list[PoseFrame]        # cleaned output, in order
    seconds: float                # wall time inside PoseStage calls


def _rescale(pf: PoseFrame, factor: float) -> PoseFrame:
    if factor == 1.0:
        return pf
    poses = []
    for p in pf.poses:
        kp = np.array(p.kp17, np.float32)
        kp[:, :2] *= factor
        poses.append(dataclasses.replace(p, kp17=kp, box=np.asarray(p.box, np.float32) * factor))
    return dataclasses.replace(pf, poses=poses, width=round(pf.width * factor), height=round(pf.height * factor))


def run_pose(stage, frames: Iterable[Frame], factor: float) -> Run:
    stage.reset()
    live, final, busy = {}, [], 0.0
    for f in frames:
        start = time.perf_counter()
        pf = stage(f)
        busy += time.perf_counter() - start
        live[f.index] = _rescale(pf, factor)
        final += stage.cleaned()
    final += stage.flush()
    return Run(live, [_rescale(pf, factor) for pf in final], busy)


def _body_size(kp17: np.ndarray) -> float:
    from edge.motion.normalize import body_size
    return float(body_size(kp17[None, :, :2], np.ones(1, bool)))


def displacement(clean: Pose, found: list[Pose]) -> float:
    """Mean keypoint distance of the nearest found pose to `clean`, in clean body sizes."""
    ref = np.asarray(clean.kp17, np.float32)
    vis = ref[:, 2] >= VISIBLE
    if vis.sum() < 4:
        vis[:] = True
    size = _body_size(ref)
    dists = [float(np.linalg.norm(np.asarray(p.kp17)[vis, :2] - ref[vis, :2], axis=1).mean()) for p in found]
    return min(dists) / size


def pose_metrics(clean: Run, deg: Run) -> dict:
    frames = len(deg.live)
    detected = sum(bool(pf.poses) for pf in deg.live.values())
    disp, lost, compared = [], 0, 0
    for idx, pf in deg.live.items():
        ref = clean.live.get(idx)
        if ref is None or not ref.poses:
            continue
        compared += 1
        if not pf.poses:
            lost += 1
            continue
        disp.append(displacement(max(ref.poses, key=lambda p: p.score), pf.poses))
    return {"frames": frames, "detected": detected, "compared": compared, "lost": lost, "disp": disp}


def _summarise_pose(parts: list[dict]) -> dict:
    frames = sum(p["frames"] for p in parts)
    compared = sum(p["compared"] for p in parts)
    disp = np.concatenate([np.asarray(p["disp"], float) for p in parts]) if parts else np.zeros(0)
    return {
        "frames": frames,
        "detection_rate": sum(p["detected"] for p in parts) / frames if frames else None,
        "displacement_mean": float(disp.mean()) if disp.size else None,
        "displacement_median": float(np.median(disp)) if disp.size else None,
        "lost": sum(p["lost"] for p in parts) / compared if compared else None,
    }


# --------------------------------------------------------------------------- style

def cut_windows(frames: list[PoseFrame], fps: float, settings, phase: float) -> list[Window]:
    """Windows of the cleaned stream, the first starting `phase` s after the clip's first frame."""
    from edge.motion.windows import WindowCutter

    if not frames:
        return []
    cutter = WindowCutter(settings, fps=fps)
    t_first = frames[0].t
    out = []
    for pf in frames:
        if pf.t >= t_first + phase - 1e-6:
            out += cutter.push(pf)
    return out


def pose_stats_embedding(windows: list[Window], settings) -> np.ndarray:
    """Training-free baseline: mean and std over real samples of Ban-normalised keypoints, L2-normalised."""
    from edge.motion.normalize import normalize

    if not windows:
        return np.zeros((0, 68), np.float32)
    kp = np.stack([w.kp[:settings.max_frames] for w in windows])
    mask = np.stack([w.mask[:settings.max_frames] for w in windows])
    feats = normalize(kp, mask, "ban")
    m = mask[..., None].astype(np.float32)
    n = np.maximum(m.sum(1), 1.0)
    mean = (feats * m).sum(1) / n
    std = np.sqrt(((feats - mean[:, None]) ** 2 * m).sum(1) / n)
    e = np.concatenate([mean, std], 1)
    return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8)).astype(np.float32)


def _open_encoder(path: Path | None, settings, threads: int):
    from edge.motion.encoder import MotionEncoder
    try:
        return MotionEncoder(path, settings=settings, threads=threads), None
    except ModelCacheError as exc:
        return None, str(exc)


def _open_against(paths: list[Path], settings, threads: int) -> list:
    """The --against encoders; a missing file is an error before any video is read."""
    from edge.motion.encoder import MotionEncoder
    for path in paths:
        if not path.is_file():
            raise BadInputError(f"--against: no encoder file {path}")
    return [MotionEncoder(path, settings=settings, threads=threads) for path in paths]


def _describe(encoder) -> str:
    return f"{encoder.path.name} (model_id {encoder.model_id}, sha256 {encoder.sha256[:12]})"


def _same_time_similarity(q: np.ndarray, ws: list[Window], ref_e: np.ndarray, ref_ws: list[Window],
                          tol: float) -> list[float]:
    """Cosine similarity of each query window's embedding to the clean window starting at the same time."""
    if not len(ref_ws):
        return []
    t_ref = np.array([w.t0 for w in ref_ws])
    sims = []
    for e, w in zip(q, ws):
        j = int(np.argmin(np.abs(t_ref - w.t0)))
        if abs(t_ref[j] - w.t0) <= tol:
            sims.append(float(e @ ref_e[j]))
    return sims


def style_metrics(embed, gallery: dict[str, list[Window]], queries: dict[str, list[Window]],
                  clean_queries: dict[str, list[Window]], tol: float) -> dict:
    """Top-1 kNN of `queries` against `gallery`, coverage and same-time similarity to `clean_queries`."""
    from edge.motion.evaluate import knn_accuracy

    g_lab = np.array([lab for lab, ws in gallery.items() for _ in ws], object)
    g = embed([w for ws in gallery.values() for w in ws])
    per_class = {}
    correct = total = denom = 0
    sims: list[float] = []
    for lab, ws in queries.items():
        acc = None
        if ws:
            q = embed(ws)
            acc = knn_accuracy(q, np.array([lab] * len(ws), object), g, g_lab, k=1)["top1"]
            ref_ws = clean_queries.get(lab, [])
            sims += _same_time_similarity(q, ws, embed(ref_ws) if ref_ws else np.zeros((0, 1)), ref_ws, tol)
        per_class[lab] = {"top1": acc, "windows": len(ws), "expected": len(clean_queries.get(lab, []))}
        correct += round((acc or 0.0) * len(ws))
        total += len(ws)
        denom += max(len(ws), len(clean_queries.get(lab, [])))
    accs = [v["top1"] for v in per_class.values() if v["top1"] is not None]
    exp = sum(len(ws) for ws in clean_queries.values())
    return {"top1_all": correct / denom if denom else None,
            "top1": correct / total if total else None,
            "top1_macro": float(np.mean(accs)) if accs else None,
            "coverage": total / exp if exp else None,
            "similarity_to_clean": float(np.mean(sims)) if sims else None,
            "per_class": per_class}


# --------------------------------------------------------------------------- main

def _clips(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BadInputError(f"video folder not found: {folder} (set DANCEWIRE_DATA or pass --videos)")
    paths = sorted(folder.glob("*.mp4"))
    if not paths:
        raise BadInputError(f"no .mp4 clips in {folder}")
    return paths


def run(args) -> dict:
    from edge.motion.settings import MotionSettings
    from edge.sources.video import VideoFileSource
    from edge.vision.stage import PoseStage

    mset = dataclasses.replace(MotionSettings(), hop_s=args.hop, min_valid=args.min_valid, eight_beats=False)
    paths = _clips(args.videos or shared_data_dir() / "video")
    conds = conditions()
    if args.only:
        kinds = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = kinds - {c.kind for c in conds}
        if unknown:
            raise BadInputError(f"unknown condition(s) {sorted(unknown)}; choose from "
                                f"{sorted({c.kind for c in conds})}")
        conds = [c for c in conds if c.kind == "clean" or c.kind in kinds]
    against = _open_against(args.against, mset, args.threads)
    stage = None
    try:
        stage = PoseStage.from_settings(threads=args.threads)
        encoder, encoder_missing = _open_encoder(args.encoder, mset, args.threads)
    except BaseException:           # nothing opened so far stays open
        for e in against:
            e.close()
        if stage is not None:
            stage.close()
        raise
    encoders = ([("encoder", encoder)] if encoder is not None else []) + \
        [(f"encoder:{e.model_id}", e) for e in against]
    embeds = {name: e.encode for name, e in encoders}
    embeds["pose_stats"] = lambda ws: pose_stats_embedding(ws, mset)

    bar = Progress("robustness", total=len(paths) * len(conds))
    pose_parts: dict[str, list[dict]] = {c.name: [] for c in conds}
    per_clip: dict[str, dict] = {c.name: {} for c in conds}
    seconds: dict[str, float] = {c.name: 0.0 for c in conds}
    pose_seconds: dict[str, float] = {c.name: 0.0 for c in conds}
    gallery: dict[str, list[Window]] = {}
    queries: dict[str, dict[str, list[Window]]] = {c.name: {} for c in conds}
    t_start = time.perf_counter()
    try:
        for ci, path in enumerate(paths):
            label = LABELS.get(path.stem, path.stem)
            src = VideoFileSource(path)
            fps = src.info.fps or 25.0
            src.max_frames = max(1, round(args.max_seconds * fps))
            frames = list(src.frames())
            clean = None
            for cond in conds:
                rng = np.random.default_rng([args.seed, ci, zlib.crc32(cond.name.encode())])
                t0 = time.perf_counter()
                stream, factor = cond.apply(frames, fps, rng)
                result = run_pose(stage, stream, factor)
                seconds[cond.name] += time.perf_counter() - t0
                pose_seconds[cond.name] += result.seconds
                if clean is None:
                    clean = result
                    gallery[label] = cut_windows(result.final, fps, mset, 0.0)
                part = pose_metrics(clean, result)
                pose_parts[cond.name].append(part)
                summary = _summarise_pose([part])
                per_clip[cond.name][label] = {"detection_rate": summary["detection_rate"],
                                              "displacement_mean": summary["displacement_mean"]}
                queries[cond.name][label] = cut_windows(result.final, fps, mset, args.hop / 2)
                bar.update(note=f"{label} {cond.name}")
    finally:
        stage.close()

    metrics: dict[str, dict] = {}
    try:            # the encoders embed the windows here, so they close after (closed, they now refuse to run)
        for cond in conds:
            m = {"kind": cond.kind, "severity": cond.severity, **_summarise_pose(pose_parts[cond.name]),
                 "run_seconds": round(seconds[cond.name], 2), "pose_seconds": round(pose_seconds[cond.name], 2),
                 "per_clip": per_clip[cond.name]}
            for name, fn in embeds.items():
                m[f"style_{name}"] = style_metrics(fn, gallery, queries[cond.name], queries["clean"], args.hop / 2)
            metrics[cond.name] = m
    finally:
        for _, e in encoders:
            e.close()
    for name in embeds:
        ref = metrics["clean"][f"style_{name}"]["top1_all"]
        for m in metrics.values():
            top1 = m[f"style_{name}"]["top1_all"]
            m[f"style_{name}"]["drop"] = (ref - top1) if ref is not None and top1 is not None else None

    protocol = {
        "clips": {LABELS.get(p.stem, p.stem): p.name for p in paths},
        "max_seconds": args.max_seconds, "seed": args.seed, "threads": args.threads,
        "window_s": mset.window_s, "hop_s": mset.hop_s, "query_phase_s": args.hop / 2, "min_valid": mset.min_valid,
        "gallery_windows": {lab: len(ws) for lab, ws in gallery.items()},
        "style": "each clip is one class; gallery = windows of the clean clips (phase 0); queries = windows "
                 "of the degraded clips at phase hop/2; top-1 cosine kNN; reference = clean queries "
                 "(same phase shift); drop = reference - condition",
        "displacement": "mean |kp - kp_clean| over joints with clean score >= 0.5, divided by the clean "
                        "dancer's body size (max(nose-ankle, 3 x torso)), nearest degraded dancer, "
                        "frames where both runs found someone",
        "encoder": _describe(encoder) if encoder is not None else f"unavailable: {encoder_missing}",
        "against": {f"encoder:{e.model_id}": _describe(e) for e in against},
    }
    plots = _plot(metrics, list(embeds), args.plots)
    return {"metrics": metrics, "protocol": protocol, "table_md": table(metrics, list(embeds)),
            "total_seconds": round(time.perf_counter() - t_start, 1), "plots": plots}


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def table(metrics: dict[str, dict], embeds: list[str]) -> str:
    """Markdown table for the README."""
    head = ["Condition", "Severity", "Pose detected (%)", "Keypoint shift (body sizes)", "Lost (%)",
            "Query windows kept (%)"]
    for name in embeds:
        head += [f"Style top-1 {name} (%)", f"Top-1 {name}, kept windows (%)", f"Drop {name} (pts)",
                 f"Cosine to clean {name}"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics.values():
        cells = [m["kind"], m["severity"], _fmt(m["detection_rate"], True), _fmt(m["displacement_mean"]),
                 _fmt(m["lost"], True), _fmt(m[f"style_{embeds[0]}"]["coverage"], True)]
        for name in embeds:
            s = m[f"style_{name}"]
            cells += [_fmt(s["top1_all"], True), _fmt(s["top1"], True), _fmt(s["drop"], True),
                      _fmt(s["similarity_to_clean"])]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _plot(metrics: dict[str, dict], embeds: list[str], folder: Path) -> list[str]:
    from benchmarks.common import pyplot

    plt = pyplot()
    names = list(metrics)
    x = np.arange(len(names))
    colors = [f"C{sorted({m['kind'] for m in metrics.values()}).index(metrics[n]['kind'])}" for n in names]
    out = []

    def bars(values, ylabel, title, fname, ylim=None):
        fig, ax = plt.subplots(figsize=(11, 4))
        ax.bar(x, [np.nan if v is None else v for v in values], color=colors)
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(str(path))

    bars([None if metrics[n]["detection_rate"] is None else 100 * metrics[n]["detection_rate"] for n in names],
         "frames with >= 1 dancer (%)", "Pose detection rate under degradation", "robustness_detection.png", (0, 105))
    bars([metrics[n]["displacement_mean"] for n in names], "mean keypoint shift (body sizes)",
         "Keypoint displacement vs the clean run", "robustness_displacement.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(1, len(embeds))
    for i, name in enumerate(embeds):
        vals = [metrics[n][f"style_{name}"]["top1_all"] for n in names]
        ax.bar(x + (i - (len(embeds) - 1) / 2) * width, [np.nan if v is None else 100 * v for v in vals],
               width, label=name)
    ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("top-1 kNN accuracy (%),\nlost windows count as wrong")
    ax.set_ylim(0, 120)
    ax.set_title("Style retrieval (clean gallery, degraded queries)")
    ax.legend(loc="upper right", ncol=len(embeds))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = folder / "robustness_style.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(str(path))
    return out
