"""Latency suite: per-stage p50/p95/p99 from glass to cloud feedback on a paced file, backends side by side.

For each backend configuration (ONNX Runtime with 1 and 2 threads per pose model; TensorRT FP16
and INT8 pose engines where `import tensorrt` works, with the motion encoder on TensorRT FP16 too:
it has no INT8 calibration) the real edge graph replays a video at real time (frames are
stamped when released: glass time) into a real cloud process over CURVE ZeroMQ, and records:
- per-stage latency of every frame: capture -> detect -> landmarks -> track -> clean -> motion
  (the windows this frame completes cut, encoded, scored and sent: ~0 on most frames) -> feedback
  (the overlay drawn and JPEG-encoded for the rig's local page), and of every window: window ->
  encode -> rhythm -> send;
- edge feedback latency: capture to overlay, per frame (`edge_feedback_ms_*`);
- cloud feedback latency: capture of a window's last frame to the cloud's Feedback for that
  window arriving back at the edge (`cloud_feedback_ms_*`), and the cloud's own stage times
  (`cloud_stages_ms`, per configuration: each runs against a cloud process of its own);
- dropped frames (the leaky queue between capture and pose).
With `--soak-seconds`, a long run checks for latency build-up (slope of latency over time).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import pyplot
from dancewire.errors import DancewireError
from dancewire.paths import shared_data_dir
from edge.sources.video import VideoFileSource


def add_arguments(p) -> None:
    p.add_argument("--video", type=Path, default=None, help="default: shared video/qengineering_Dance.mp4")
    p.add_argument("--loops", type=int, default=2, help="replay the video this many times per configuration")
    p.add_argument("--configs", default="ort-1,ort-2,trt-fp16,trt-int8",
                   help="comma list of ort-<threads>, trt-fp16, trt-int8 (TensorRT ones skipped without TensorRT)")
    p.add_argument("--soak-seconds", type=float, default=0.0, help="also run ort-2 this long and fit latency drift")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _looped_frames(path: Path, loops: int):
    src = VideoFileSource(path)
    period = (src.info.duration or 0) or 10.0
    index = 0
    for k in range(loops):
        for f in src.frames():
            f.t += k * period
            f.index = index
            index += 1
            yield f


def _looped_audio(path: Path, loops: int, rate: int, period: float):
    from edge.sources.audio_file import AudioFileSource

    for k in range(loops):
        for b in AudioFileSource(path, rate).blocks():
            if b.t >= period:
                break
            b.t += k * period
            yield b


@contextlib.contextmanager
def cloud_process(home: Path, api_port: int, zmq_port: int, server_secret: Path):
    env = dict(os.environ, DANCEWIRE_HOME=str(home), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "dancewire", "cloud", "serve", "--set", f"api_port={api_port}",
           "--set", f"zmq_bind=tcp://127.0.0.1:{zmq_port}", "--set", f"server_key={server_secret}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cloud did not start: {proc.stdout.read() if proc.stdout else ''}")
                time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _configs(spec: str) -> list[tuple[str, dict]]:
    out = []
    for name in [c.strip() for c in spec.split(",") if c.strip()]:
        if name.startswith("ort-"):
            out.append((name, {"backend": "onnxruntime", "threads": int(name[4:])}))
        elif name.startswith("trt-"):
            try:
                import tensorrt  # noqa: F401
            except ImportError:
                continue
            out.append((name, {"backend": "tensorrt", "precision": name[4:]}))
    return out


def run_config(settings, video: Path, loops: int, keys: dict, zmq_port: int, session: str,
               duration: float | None = None) -> dict:
    from edge.feedback.sink import FeedbackSink
    from edge.live import LiveRunner, open_link
    from edge.pipeline import EdgeGraph
    from edge.sources.audio_file import has_audio

    settings = replace(settings, link=replace(settings.link, endpoint=f"tcp://127.0.0.1:{zmq_port}",
                                              client_key=keys["edge_secret"], server_key=keys["server_public"]))
    graph = EdgeGraph.build(settings)
    sink = FeedbackSink(page_port=0)     # the rig's local page: overlay drawn and JPEG-encoded per frame
    runner = LiveRunner(settings, graph, sink=sink, session=session)
    period = VideoFileSource(video).info.duration or 10.0
    runner.add_video(lambda: _looped_frames(video, loops), paced=True)
    if has_audio(video):
        runner.add_audio(lambda: _looped_audio(video, loops, settings.audio.sample_rate, period), paced=True)
    link = open_link(settings, graph.motion.encoder, session, on_feedback=runner.on_feedback)
    runner.link = link
    link.wait_ready(20)
    try:
        runner.run(duration)
        link.wait_acked(10)
        time.sleep(0.5)               # the last feedback messages
    finally:
        link.close(2.0)
        sink.close()
        graph.close()
    stats = runner.stats()
    stats["timeline"] = list(runner.timeline)
    return stats


def run(args) -> dict:
    from edge.settings import load_edge_settings
    from proto import keys as keymod

    video = args.video or shared_data_dir() / "video" / "qengineering_Dance.mp4"
    if not video.exists():
        raise SystemExit(f"video not found: {video} (shared data absent? pass --video)")
    results, cloud_lat = {}, {}
    with tempfile.TemporaryDirectory(prefix="dw-latency-") as tmp:
        home = Path(tmp)
        os.environ["DANCEWIRE_HOME"] = str(home)
        kd = keymod.keys_dir()
        keymod.generate("cloud")
        keymod.generate("edge-bench")
        keymod.allow(kd / "edge-bench.key")
        keys = {"edge_secret": kd / "edge-bench.key_secret", "server_public": kd / "cloud.key"}
        from cloud.settings import load_settings
        from dancewire.up import ensure_gallery
        ensure_gallery([sys.executable, "-m", "dancewire"], Path(load_settings(None, []).gallery_path))
        base = load_edge_settings()
        runs = []
        for name, cfg in _configs(args.configs):
            eng = replace(base.engine, **cfg)
            motion = replace(base.motion, backend=eng.backend)     # the encoder on the same backend
            runs.append((name, replace(base, engine=eng, motion=motion), args.loops, None))
        if args.soak_seconds:
            eng = replace(base.engine, backend="onnxruntime", threads=2)
            length = VideoFileSource(video).info.duration or 9.0
            runs.append(("soak", replace(base, engine=eng), int(np.ceil(args.soak_seconds / length)) + 1,
                         args.soak_seconds))
        if not runs:
            raise DancewireError(f"no configuration to run of {args.configs!r} (TensorRT ones need `import tensorrt`)")
        for name, settings, loops, duration in runs:
            # a cloud of its own per configuration: its stage times are that configuration's alone
            api_port, zmq_port = _free_port(), _free_port()
            with cloud_process(home, api_port, zmq_port, kd / "cloud.key_secret"):
                print(f"latency: {name} ...", file=sys.stderr, flush=True)
                results[name] = run_config(settings, video, loops, keys, zmq_port, session=f"bench-{name}",
                                           duration=duration)
                token = (home / "cloud-token").read_text().strip()
                req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/latency",
                                             headers={"Authorization": f"Bearer {token}"})
                cloud_lat[name] = json.loads(urllib.request.urlopen(req, timeout=5).read())
        os.environ.pop("DANCEWIRE_HOME", None)

    table = {}
    for name, st in results.items():
        lat = st["latency_ms"]
        table[name] = {stage: {q: round(v[q], 2) for q in ("p50", "p95", "p99")} for stage, v in lat.items()}
        table[name]["cloud_feedback"] = ({q: round(st["cloud_feedback_ms"][q], 2) for q in ("p50", "p95", "p99")}
                                         | {"n": st["cloud_feedback_ms"]["n"]} if st["cloud_feedback_ms"] else None)
        table[name]["dropped_frames"] = st["dropped_frames"]
        table[name]["frames"] = st["counters"]["frames_done"]
        table[name]["timeline_points"] = len(st["timeline"])       # plotted in latency_timeline.png
    main = "ort-2" if "ort-2" in results else next(iter(results))
    m = results[main]
    metrics = {
        "config": main,
        "edge_feedback_ms_p50": m["edge_feedback_ms"]["p50"] if m["edge_feedback_ms"] else None,
        "edge_feedback_ms_p95": m["edge_feedback_ms"]["p95"] if m["edge_feedback_ms"] else None,
        "cloud_feedback_ms_p50": m["cloud_feedback_ms"]["p50"] if m["cloud_feedback_ms"] else None,
        "cloud_feedback_ms_p95": m["cloud_feedback_ms"]["p95"] if m["cloud_feedback_ms"] else None,
        "dropped_frames": m["dropped_frames"],
        "frames": m["counters"]["frames_done"],
    }
    if "soak" in results:
        tl = np.asarray(results["soak"]["timeline"])
        slope = float(np.polyfit(tl[:, 0], tl[:, 1], 1)[0]) if len(tl) > 10 else None
        metrics["soak_seconds"] = args.soak_seconds
        metrics["soak_latency_slope_ms_per_min"] = None if slope is None else round(slope * 60, 3)
        metrics["soak_edge_feedback_ms_p95"] = results["soak"]["edge_feedback_ms"]["p95"]
        metrics["soak_dropped_frames"] = results["soak"]["dropped_frames"]
    _plots(results, args.plots)
    return {"metrics": metrics, "configs": table, "cloud_stages_ms": cloud_lat, "video": str(video),
            "definitions": __doc__}


def _plots(results: dict, folder: Path) -> None:
    plt = pyplot()
    stages = ["detect", "landmarks", "track", "clean", "motion", "feedback"]
    names = [n for n in results if n != "soak"]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = np.zeros(len(names))
    for stage in stages:
        vals = np.array([results[n]["latency_ms"].get(stage, {}).get("p50", 0.0) for n in names])
        ax.bar(names, vals, bottom=bottom, label=stage)
        bottom += vals
    ax.set_ylabel("p50 latency per frame (ms)")
    ax.set_title("Edge stages, capture to overlay (p50)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "latency_stages.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for n in results:
        tl = np.asarray(results[n]["timeline"])
        if len(tl):
            ax.plot(tl[:, 0], tl[:, 1], lw=0.7, label=n)
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("glass-to-overlay (ms)")
    ax.set_title("Edge feedback latency over time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "latency_timeline.png", dpi=100)
    plt.close(fig)
