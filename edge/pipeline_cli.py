"""`dancewire edge analyze|run`: the edge graph offline over a file, or live on the rig."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dancewire.config import port_arg


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (see edge/settings.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one setting, e.g. vision.detector_period=5 (repeatable)")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"),
                   help="backend of all three models: pose detector, landmarks and motion encoder (default onnxruntime)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per pose model (the encoder's: motion.threads)")


def load_settings(args):
    from edge.settings import load_edge_settings

    overrides = list(args.overrides)
    if args.backend:
        overrides += [f"engine.backend={args.backend}", f"motion.backend={args.backend}"]
    if args.threads is not None:
        overrides.append(f"engine.threads={args.threads}")   # 0 is refused by the settings, not ignored
    return load_edge_settings(args.config, overrides)


def register(sub: argparse._SubParsersAction) -> None:
    edge = sub.add_parser("edge", help="the edge node: analyze a file, or run live on the rig")
    cmds = edge.add_subparsers(dest="edge_command", metavar="COMMAND")

    a = cmds.add_parser("analyze", help="run the pipeline offline over a video, write JSON Lines")
    a.add_argument("video", type=Path)
    a.add_argument("--out", default="-", help="output .jsonl (default: stdout)")
    a.add_argument("--audio", type=Path, help="score against this music instead of the video's own audio")
    a.add_argument("--audio-offset", type=float, default=0.0, metavar="S",
                   help="the music starts S seconds later on the video's clock (may be negative)")
    a.add_argument("--max-frames", type=int)
    a.add_argument("--no-encoder", action="store_true", help="skip embeddings (rhythm metrics only)")
    _settings_args(a)
    a.set_defaults(func=_analyze)

    r = cmds.add_parser("run", help="live: camera + mic (or --source FILE / --demo) -> cloud, with rig feedback")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="a video file, replayed at real time")
    src.add_argument("--demo", action="store_true", help="the labelled demo source (generated music and dancers)")
    r.add_argument("--no-mic", action="store_true", help="camera only (no music analysis)")
    r.add_argument("--session", default="", help="session id (default: a new one per run)")
    r.add_argument("--show", action="store_true", help="feedback in a window")
    r.add_argument("--record", type=Path, help="write the annotated feedback video here (.mp4)")
    r.add_argument("--page", type=port_arg, metavar="PORT", help="serve the feedback as a local page on this port")
    r.add_argument("--duration", type=float, help="stop after this many seconds")
    r.add_argument("--no-cloud", action="store_true", help="do not connect to the cloud")
    r.add_argument("--insecure-dev", action="store_true", help="plaintext ZeroMQ (development only)")
    r.add_argument("--stats", type=Path, help="write the run's stage latencies and counters (JSON) here at exit")
    _settings_args(r)
    r.set_defaults(func=_run)
    edge.set_defaults(func=lambda args: edge.print_help() or 2)


def _analyze(args) -> int:
    from edge.pipeline import analyze
    from edge.records_io import JsonlWriter

    settings = load_settings(args)
    with JsonlWriter(args.out, atomic=True) as out:
        summary = analyze(settings, args.video, out, audio=args.audio, audio_offset=args.audio_offset,
                          max_frames=args.max_frames, encoder=not args.no_encoder)
    print(f"{summary['frames']} frames, {summary['frames_with_dancer']} with a dancer, "
          f"{summary['processing_fps']} fps, dancers {summary['dancers']}", file=sys.stderr)
    return 0


def _run(args) -> int:
    from edge.live import run_live

    return run_live(load_settings(args), args)
