"""Pose: our PoseStage vs MediaPipe's legacy pose solution, fps and per-frame latency.

Two scenes from the shared data: one dancer (video/qengineering_Dance.mp4) and a mosaic of
three real clips side by side (qengineering_Dance, footskate_reducer_dance,
controlvideo_moonwalk, resized to one height; the shorter clips play back and forth to the
first one's length). Frames are decoded once, before timing; both sides are timed per frame
on the same frames, pinned to the same `--cores` CPUs:

* ours: `PoseStage` (detector + landmarks on onnxruntime, tracker, one-euro, cleaning,
  quality), in this process, once per `--threads` value (1 and 2 by default: onnxruntime's
  spinning worker threads lose badly on a busy 2-core machine, and win on an idle one);
* MediaPipe: `mp.solutions.pose.Pose(model_complexity=1)` (the same BlazePose GHUM full and
  detector models, TFLite/XNNPACK, which mediapipe runs on 1 thread by default on Linux) in a
  subprocess of its own virtualenv
  (`cache_dir()/mediapipe-venv`, mediapipe==0.10.21, created on first use: it pins numpy<2
  and protobuf<5, so it cannot share ours). MediaPipe's graph is single-person: on the mosaic
  it follows one dancer while ours follows three.

The runs alternate (ours, MediaPipe, ours, ...) `--repeats` times and the median run of each
is reported, because the machine may be shared. Goals: >= 1.5x MediaPipe's fps with one
dancer on 2 cores; >= 25 processed fps with three dancers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import percentiles, pyplot
from dancewire.errors import DancewireError
from dancewire.paths import cache_dir, shared_data_dir
from dancewire.progress import Progress
from edge.vision.settings import VisionSettings

MEDIAPIPE_VERSION = "0.10.21"
RUNNER = Path(__file__).with_name("_mediapipe_runner.py")
SINGLE = "qengineering_Dance.mp4"
MOSAIC = ("qengineering_Dance.mp4", "footskate_reducer_dance.mp4", "controlvideo_moonwalk.mp4")
WARMUP = 5          # first frames of each run left out of fps and percentiles


def _at_least_one(text: str) -> int:
    import argparse

    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (no frames: nothing to time)")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default: ../shared/data)")
    p.add_argument("--cores", type=int, default=2, help="CPUs both sides are pinned to (default 2)")
    p.add_argument("--threads", default="1,2",
                   help="onnxruntime threads per model, comma-separated; each is timed (default 1,2)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each side (default 3)")
    p.add_argument("--mosaic-height", type=int, default=480, help="tile height of the 3-dancer mosaic")
    p.add_argument("--max-frames", type=_at_least_one, default=None, help="cut each scene to this many frames")
    p.add_argument("--backend", default="onnxruntime", help="engine backend for ours")
    p.add_argument("--skip-mediapipe", action="store_true", help="time ours only")


# ----------------------------------------------------------------------------- inputs

def _decode(path: Path, height: int | None = None) -> np.ndarray:
    import av
    import cv2

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            img = frame.to_ndarray(format="bgr24")
            if height is not None and img.shape[0] != height:
                w = round(img.shape[1] * height / img.shape[0])
                img = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
            frames.append(img)
    if not frames:
        raise DancewireError(f"no frames decoded from {path}")
    return np.stack(frames)


def _pingpong(n_frames: int, length: int) -> list[int]:
    period = max(1, 2 * n_frames - 2)
    out = []
    for i in range(length):
        k = i % period
        out.append(k if k < n_frames else period - k)
    return out


def _scene(clips: list[np.ndarray], max_frames: int | None) -> list[list[int]]:
    length = len(clips[0]) if max_frames is None else min(len(clips[0]), max_frames)
    columns = [_pingpong(len(c), length) for c in clips]
    return [list(col) for col in zip(*columns)]


def _frame(clips: list[np.ndarray], idx: list[int]) -> np.ndarray:
    parts = [c[i] for c, i in zip(clips, idx)]
    return parts[0] if len(parts) == 1 else np.hstack(parts)


# ----------------------------------------------------------------------------- mediapipe side

def mediapipe_python() -> Path:
    """The isolated virtualenv's python with mediapipe==0.10.21, created on first use."""
    venv = cache_dir() / "mediapipe-venv"
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text().strip() == MEDIAPIPE_VERSION and py.exists():
        return py
    Progress("pose_vs_mediapipe").step(f"creating {venv} with mediapipe=={MEDIAPIPE_VERSION} (first run only, ~1 min)")
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"mediapipe=={MEDIAPIPE_VERSION}"],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["?"]
        raise DancewireError(f"cannot install mediapipe=={MEDIAPIPE_VERSION} into {venv}: {tail[0]}") from None
    stamp.write_text(MEDIAPIPE_VERSION + "\n")
    return py


def run_mediapipe(py: Path, clip_files: list[str], frames: list[list[int]], cpus: list[int], work: Path) -> dict:
    job = work / "job.json"
    out = work / "mediapipe.json"
    job.write_text(json.dumps({"clips": clip_files, "frames": frames, "cpus": cpus}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.setdefault("GLOG_minloglevel", "2")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([str(py), str(RUNNER), str(job), str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DancewireError(f"mediapipe run failed: {' | '.join(tail)}")
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------- our side

def run_ours(clips: list[np.ndarray], frames: list[list[int]], backend: str, threads: int) -> dict:
    from edge.records import Frame
    from edge.vision.stage import PoseStage

    stage = PoseStage.from_settings(VisionSettings(), backend=backend, threads=threads)
    latencies, counts, parts = [], [], {k: [] for k in ("detect", "landmarks", "track", "clean")}
    ids: set[int] = set()
    try:
        for i, idx in enumerate(frames):
            image = _frame(clips, idx)
            frame = Frame(i, i / 25.0, image)
            t0 = time.perf_counter()
            pf = stage(frame)
            stage.cleaned()
            latencies.append(time.perf_counter() - t0)
            counts.append(len(pf.poses))
            ids.update(p.track_id for p in pf.poses)
            prev = t0
            for k in parts:
                parts[k].append(frame.stamps[k] - prev)
                prev = frame.stamps[k]
        stage.flush()
        det_runs = stage.estimator.detector_runs
    finally:
        stage.close()
    return {"latencies_s": latencies, "poses_per_frame": counts, "ids": sorted(ids),
            "detector_runs": det_runs, "stage_s": parts}


# ----------------------------------------------------------------------------- report

def _summary(latencies: list[float]) -> dict:
    lat = np.asarray(latencies[WARMUP:] if len(latencies) > 2 * WARMUP else latencies)
    ms = percentiles(lat * 1e3, (50, 95))
    return {"fps": float(len(lat) / lat.sum()), "latency_ms_p50": ms["p50"], "latency_ms_p95": ms["p95"],
            "frames": int(len(lat))}


def _median_run(runs: list[dict]) -> dict:
    order = sorted(range(len(runs)), key=lambda i: _summary(runs[i]["latencies_s"])["fps"])
    return runs[order[(len(order) - 1) // 2]]


def _plot(results: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = {"mediapipe": "tab:orange", "ours_t1": "tab:blue", "ours_t2": "tab:green"}
    for ax, scene in zip(axes[:2], ("one_dancer", "three_dancers")):
        for side, run_ in results[scene]["runs"].items():
            ms = np.asarray(run_["latencies_s"]) * 1e3
            ax.plot(ms, lw=0.7, color=colors.get(side), label=f"{side}: p50 {np.median(ms[WARMUP:]):.1f} ms")
        ax.set_title(f"{scene.replace('_', ' ')}: per-frame latency (median run)")
        ax.set_xlabel("frame")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    ax = axes[2]
    labels, values, bar_colors = [], [], []
    for scene in ("one_dancer", "three_dancers"):
        for side in results[scene]["runs"]:
            labels.append(f"{side}\n{scene.split('_')[0]}")
            values.append(results[scene]["metrics"][f"{side}_fps"])
            bar_colors.append(colors.get(side))
    ax.bar(labels, values, color=bar_colors)
    ax.axhline(25, ls="--", color="gray", lw=0.8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("processed fps (median run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _side_metrics(side: str, runs: list[dict]) -> dict:
    best = _summary(_median_run(runs)["latencies_s"])
    return {f"{side}_fps": best["fps"], f"{side}_latency_ms_p50": best["latency_ms_p50"],
            f"{side}_latency_ms_p95": best["latency_ms_p95"],
            f"{side}_fps_runs": [round(_summary(r["latencies_s"])["fps"], 2) for r in runs]}


def run(args) -> dict:
    data = args.data or shared_data_dir()
    if not (data / "video").is_dir():
        raise DancewireError(f"shared data not found at {data} (set DANCEWIRE_DATA or --data)")
    try:
        threads = sorted({int(t) for t in str(args.threads).split(",") if t.strip()})
    except ValueError:
        raise DancewireError(f"--threads must be a comma-separated list of integers, got {args.threads!r}") from None
    cpus = sorted(os.sched_getaffinity(0))[:max(1, args.cores)]
    os.sched_setaffinity(0, set(cpus))
    py = None if args.skip_mediapipe else mediapipe_python()

    single = [_decode(data / "video" / SINGLE)]
    mosaic = [_decode(data / "video" / n, args.mosaic_height) for n in MOSAIC]
    scenes = {"one_dancer": (single, _scene(single, args.max_frames)),
              "three_dancers": (mosaic, _scene(mosaic, args.max_frames))}

    sides = [f"ours_t{t}" for t in threads] + ([] if py is None else ["mediapipe"])
    reps = max(1, args.repeats)
    bar = Progress("pose_vs_mediapipe runs", total=len(scenes) * reps * len(sides))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="dancewire-bench-") as tmp:
        work = Path(tmp)
        for scene, (clips, frames) in scenes.items():
            files = []
            for k, clip in enumerate(clips):
                f = work / f"{scene}_{k}.npy"
                np.save(f, clip)
                files.append(str(f))
            runs: dict[str, list[dict]] = {side: [] for side in sides}
            for rep in range(reps):                     # alternate the sides, run after run
                for side in sides:
                    if side == "mediapipe":
                        r = run_mediapipe(py, files, frames, cpus, work)
                    else:
                        r = run_ours(clips, frames, args.backend, int(side[len("ours_t"):]))
                    runs[side].append(r)
                    bar.update(note=f"{scene} {side} run {rep}: {_summary(r['latencies_s'])['fps']:.1f} fps")
            metrics: dict = {}
            for side in sides:
                metrics.update(_side_metrics(side, runs[side]))
            ours = [s for s in sides if s != "mediapipe"]
            best = max(ours, key=lambda s: metrics[f"{s}_fps"])
            med = _median_run(runs[best])
            metrics.update({"ours_fps": metrics[f"{best}_fps"], "ours_best_threads": int(best[len("ours_t"):]),
                            "ours_mean_poses_per_frame": float(np.mean(med["poses_per_frame"])),
                            "ours_ids": med["ids"], "ours_detector_runs": med["detector_runs"],
                            "ours_stage_ms_p50": {k: round(float(np.median(v[WARMUP:]) * 1e3), 3)
                                                  for k, v in med["stage_s"].items()}})
            if "mediapipe" in runs:
                metrics["mediapipe_frames_with_pose"] = _median_run(runs["mediapipe"])["frames_with_pose"]
                for s in ours:
                    metrics[f"fps_ratio_{s[len('ours_'):]}"] = metrics[f"{s}_fps"] / metrics["mediapipe_fps"]
                metrics["fps_ratio"] = metrics["ours_fps"] / metrics["mediapipe_fps"]
            h, w = _frame(clips, frames[0]).shape[:2]
            results[scene] = {"frames": len(frames), "size": [w, h], "metrics": metrics,
                              "runs": {side: _median_run(rs) for side, rs in runs.items()}}

    plot = args.plots / "pose_vs_mediapipe.png"
    _plot(results, plot)
    one, three = results["one_dancer"]["metrics"], results["three_dancers"]["metrics"]
    metrics = {f"one_dancer_{k}": v for k, v in one.items()}
    metrics.update({f"three_dancers_{k}": v for k, v in three.items()})
    metrics["goal_one_dancer_ratio_1_5x"] = one["fps_ratio"] >= 1.5 if "fps_ratio" in one else None
    metrics["goal_three_dancers_25fps"] = three["ours_fps"] >= 25
    for scene in results.values():         # per-frame series go to the plot, not the JSON
        del scene["runs"]
    return {"metrics": metrics, "cpus": cpus, "threads": threads, "backend": args.backend,
            "repeats": reps, "detector_period": VisionSettings().detector_period,
            "scenes": results, "plot": str(plot),
            "note": "shared machine: timings are noisy; median of alternating runs; ours_fps is the "
                    "better of the thread counts; mediapipe (XNNPACK, 1 thread by default on Linux) "
                    "tracks one person, on the mosaic too"}
