"""`dancewire models build|info|verify`: the model cache."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="build, inspect and verify the model cache",
                       description="The pose models (BlazePose GHUM 3D from mediapipe 0.10.21, "
                                   "Apache-2.0) converted to ONNX, in the model cache.")
    msub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    b = msub.add_parser("build", help="fetch, convert and verify the models (cached; seconds when up to date)")
    b.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    b.add_argument("--data", type=Path, default=None,
                   help="shared data folder with real images for the fidelity check "
                        "(default: $DANCEWIRE_DATA or ../shared/data)")
    b.add_argument("--images", type=Path, nargs="*", default=None,
                   help="extra real images (jpg/png) to verify on")
    b.set_defaults(func=_build)

    i = msub.add_parser("info", help="where the models are, their tensors, licence and fidelity")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=_info)

    v = msub.add_parser("verify", help="re-hash the cache and re-run the ONNX-vs-TFLite check")
    v.add_argument("--hashes-only", action="store_true", help="only check files against the manifest")
    v.add_argument("--data", type=Path, default=None, help="shared data folder (real images)")
    v.add_argument("--images", type=Path, nargs="*", default=None, help="extra real images")
    v.set_defaults(func=_verify)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _build(args) -> int:
    from edge.models.build import build

    result = build(force=args.force, data_dir=args.data, images=args.images)
    if not result.rebuilt:
        print(f"models up to date in {result.directory} ({result.seconds:.1f}s; --force rebuilds)")
        return 0
    r = result.report or {}
    lm = r.get("landmarks", {}).get("pose_landmarks", {})
    det = r.get("detector", {})
    print(f"models built in {result.directory} ({result.seconds:.0f}s); verified on {r.get('inputs', {}).get('kind')} "
          f"inputs: landmarks within {lm.get('xy_max_abs_diff_px', float('nan')):.3f} px, detector boxes within "
          f"{det.get('box_max_abs_diff_px_confident', float('nan')):.2e} px, scores within "
          f"{det.get('score_max_abs_diff', float('nan')):.1e}")
    return 0


def _info(args) -> int:
    from edge.models import registry

    directory = registry.models_dir()
    manifest = registry.verify_cache(directory, rehash=False)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"model cache: {directory}")
    for name, entry in manifest.get("models", {}).items():
        path = registry.model_path(name, directory)
        ins = ", ".join(f"{t['name']}{tuple(t['shape'])}" for t in entry.get("inputs", []))
        outs = ", ".join(f"{t['name']}{tuple(t['shape'])}" for t in entry.get("outputs", []))
        print(f"  {name}: {path}\n    in: {ins}\n    out: {outs}")
    for key, b in manifest.get("builds", {}).items():
        ver = b.get("verification", {})
        print(f"build {key}: {b.get('built_at')}, licence {b.get('license', {}).get('spdx')}")
        print(f"  {b.get('attribution')}")
        if ver:
            print(f"  verified ({ver.get('inputs')} inputs, {ver.get('reference')}): landmarks within "
                  f"{ver.get('landmark_xy_max_abs_diff_px', float('nan')):.3f} px, detector boxes within "
                  f"{ver.get('detector_box_max_abs_diff_px', float('nan')):.2e} px")
    return 0


def _verify(args) -> int:
    import tempfile

    from dancewire.paths import cache_dir, shared_data_dir
    from edge.models import registry

    directory = registry.models_dir()
    registry.verify_cache(directory, rehash=True)
    print(f"hashes OK: {directory}")
    if args.hashes_only:
        return 0
    from edge.models.build import verify_models

    venv_python = cache_dir() / "build-venv" / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        report = verify_models(directory, build_python=venv_python if venv_python.exists() else None,
                               work=Path(tmp), data_dir=args.data or shared_data_dir(), images=args.images)
    lm = report["landmarks"]["pose_landmarks"]
    det = report["detector"]
    print(f"{report['inputs']['kind']} inputs ({len(report['inputs']['detector_images'])} images, "
          f"{lm['crops']} crops), reference {report['reference']}: landmarks within "
          f"{lm['xy_max_abs_diff_px']:.3f} px, detector boxes within {det['box_max_abs_diff_px_confident']:.2e} px, "
          f"scores within {det['score_max_abs_diff']:.1e}, batch vs single {report['batch']['pose_landmarks']['overall']:.1e}")
    if not report["passed"]:
        for f in report["failures"]:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1
    return 0
