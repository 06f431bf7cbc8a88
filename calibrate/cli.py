"""`dancewire calibrate av-offset|int8`: per-rig calibration."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="per-rig calibration: A/V offset (clap test), TensorRT INT8",
                       description=__doc__)
    csub = p.add_subparsers(dest="calibrate_command", metavar="WHAT")

    av = csub.add_parser("av-offset", help="measure the rig's audio/video offset with a clap test",
                         description="Clap clearly 8 or more times, about a second apart, facing the camera "
                                     "with both hands in view. The offset between the moment the hands meet "
                                     "(wrist keypoints) and the clap's sound is stored for this rig and "
                                     "applied by the rhythm metrics.")
    av.add_argument("source", metavar="VIDEO_OR_LIVE",
                    help="a recorded clip with sound, or 'live' to record from the camera and microphone")
    av.add_argument("--rig", help="store for this rig (default: $DANCEWIRE_RIG or the host name, for 'live'; "
                                  "a clip's offset is stored only with --rig: it is the offset of the camera "
                                  "and microphone that recorded it)")
    av.add_argument("--seconds", type=float, default=12.0, help="live: how long to record (default 12)")
    av.add_argument("--camera", help="live: camera index, /dev/video path or GStreamer pipeline "
                                     "(default: the edge's source.camera)")
    av.add_argument("--config", type=Path, help="live: the edge's TOML settings (camera, microphone, mic_offset_s)")
    av.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="live: override one edge setting, e.g. audio.mic_device=USB (repeatable)")
    av.add_argument("--max-offset", type=float, default=0.5, help="largest offset to consider, s (default 0.5)")
    av.add_argument("--min-claps", type=int, default=3, help="fewest matched claps to accept (default 3)")
    av.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                    help="pose engine backend")
    av.add_argument("--dry-run", action="store_true", help="measure and print, do not store")
    av.add_argument("--json", action="store_true", help="print the result as JSON")
    av.set_defaults(func=_av_offset)

    i8 = csub.add_parser("int8", help="calibrate INT8 TensorRT engines of the pose models on recorded frames",
                         description="Feeds frames recorded on this rig (a folder of images or a video) "
                                     "through the models' own preprocessing into TensorRT's entropy "
                                     "calibrator, builds INT8 engines and compares them with FP16. "
                                     "Needs TensorRT and a CUDA GPU.")
    i8.add_argument("source", metavar="FRAMES_OR_VIDEO", help="folder of images/frames, or a video file")
    i8.add_argument("--max-frames", type=int, default=200, help="frames to use, spread evenly (default 200)")
    i8.add_argument("--batch", type=int, default=8, help="calibration batch size (default 8)")
    i8.add_argument("--max-batch", type=int, default=8, help="largest engine batch (default 8)")
    i8.add_argument("--model", action="append", choices=("pose_detector", "pose_landmarks"),
                    help="calibrate only this model (repeatable; default both)")
    i8.add_argument("--recalibrate", action="store_true", help="ignore an existing calibration cache")
    i8.add_argument("--no-compare", action="store_true", help="skip the FP16 vs INT8 comparison")
    i8.add_argument("--json", action="store_true", help="print the report as JSON")
    i8.set_defaults(func=_int8)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _av_offset(args) -> int:
    from calibrate import av_offset as avo

    live = args.source == "live"
    store = not args.dry_run and (live or args.rig is not None)
    if store:
        avo.calibration_path(args.rig)      # a bad rig name is refused now, not after the clap test
    estimate = avo.pose_estimator(args.backend)
    if live:
        from edge.settings import load_edge_settings

        overrides = list(args.overrides) + ([f"source.camera={args.camera}"] if args.camera else [])
        settings = load_edge_settings(args.config, overrides)   # the devices `edge run` will use
        print(f"clap test: clap 8 times, about a second apart, facing the camera with both hands in view "
              f"({args.seconds:.0f} s)...", flush=True)
        result = avo.analyze_live(args.seconds, settings, estimate, max_offset=args.max_offset,
                                  min_claps=args.min_claps)
    else:
        result = avo.analyze_video(args.source, estimate, max_offset=args.max_offset, min_claps=args.min_claps)
    stored = avo.save_offset(result, args.rig, source=args.source) if store else None
    if args.json:
        out = result.to_json()
        out["stored"] = str(stored) if stored else None
        print(json.dumps(out, indent=2))
    else:
        lag_ms, spread_ms = 1000 * result.audio_lag_s, 1000 * result.spread_s
        direction = "later" if lag_ms >= 0 else "earlier"
        print(f"A/V offset: sound arrives {abs(lag_ms):.1f} ms {direction} than the picture "
              f"(spread {spread_ms:.1f} ms, median {1000 * result.median_lag_s:.1f} ms, "
              f"{result.n_claps} claps; {result.video_claps} seen, {result.audio_onsets} sounds heard)")
        if spread_ms > 20:
            print("warning: the claps disagree by more than 20 ms; repeat the test with clearer claps",
                  file=sys.stderr)
        if stored:
            print(f"stored for rig {args.rig or avo.default_rig()}: {stored}")
        elif not args.dry_run:
            print("not stored: pass --rig NAME if this clip was recorded through that rig's camera and microphone")
    return 0


def _int8(args) -> int:
    from calibrate import int8

    report = int8.calibrate_int8(args.source, max_frames=args.max_frames, batch_size=args.batch,
                                 max_batch=args.max_batch, recalibrate=args.recalibrate,
                                 compare=not args.no_compare, models=tuple(args.model or int8.MODELS))
    print(json.dumps(report, indent=2) if args.json else int8.format_report(report))
    return 0
