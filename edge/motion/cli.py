"""`dancewire encoder train | eval | export`: the motion encoder's commands."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dancewire.paths import SEED_DIR
from edge.motion.settings import LOSSES, POOLS, WEIGHTS_DIR


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _hop(text: str) -> float:
    """--hop: seconds between window starts, > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    enc = sub.add_parser("encoder", help="motion encoder: train, evaluate, export")
    cmds = enc.add_subparsers(dest="encoder_cmd", metavar="CMD")

    t = cmds.add_parser("train", help="pretrain (InfoNCE) + fine-tune on AIST++, evaluate, export ONNX")
    t.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data or $DANCEWIRE_DATA)")
    t.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where encoder.pt, encoder.onnx and metrics go")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--pretrain-steps", type=int, default=None)
    t.add_argument("--finetune-steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--normalization", choices=("ban", "tong"), default="ban")
    t.add_argument("--arch", choices=("stgcn", "transformer"), default="stgcn",
                   help="encoder architecture: the ST-GCN (shipped) or Tong's transformer")
    t.add_argument("--loss", choices=LOSSES, default=LOSSES[0],
                   help="fine-tuning loss of the weights written: supervised contrastive or Tong's pairwise")
    t.add_argument("--compare", action="store_true",
                   help="also fine-tune with the other loss and evaluate the pretrained encoder (report only: "
                        "the weights written are --loss's)")
    t.add_argument("--back-view", type=float, default=0.5, help="share of positive pairs whose second view is seen from behind")
    t.add_argument("--pool", choices=POOLS, default=POOLS[0],
                   help="ST-GCN pooling over frames and joints: mean and standard deviation (shipped), or mean only")
    t.add_argument("--speed-range", type=float, default=0.22,
                   help="playback speed augmentation: exp(U(-r, r)), 0.22 = 0.8-1.25x")
    t.add_argument("--profile-weight", type=float, default=0.6, metavar="W",
                   help="weight of the computed motion profile appended to the learned embedding (0: none, v4)")
    t.add_argument("--own-keypoints", action=argparse.BooleanOptionalAction, default=True,
                   help="also pretrain on keypoints our pose pipeline extracts from the shared videos "
                        "(shipped since v4; --no-own-keypoints trains on AIST++ alone, as v3 did)")
    t.set_defaults(func=_train)

    e = cmds.add_parser("eval", help="top-1/top-3 kNN genre accuracy of QUERY windows against a --gallery; "
                                     "or --suite for the full evaluation")
    e.add_argument("query", type=Path, nargs="?", help="folder (or file) of labelled keypoint sequences")
    e.add_argument("--gallery", type=Path, help="folder (or file) of labelled keypoint sequences")
    e.add_argument("--suite", action="store_true", help="AIST++ held-out genres, cross-view, ballroom enrolment")
    e.add_argument("--data", type=Path, default=None)
    e.add_argument("--model", type=Path, default=None, help="encoder ONNX (default: the shipped one)")
    e.add_argument("--hop", type=_hop, default=0.5, help="hop between windows, seconds (> 0)")
    e.add_argument("--json", type=Path, default=None, help="write the figures here")
    e.set_defaults(func=_eval)

    x = cmds.add_parser("export", help="ONNX export of a checkpoint, with the PyTorch parity check")
    x.add_argument("--ckpt", type=Path, default=WEIGHTS_DIR / "encoder.pt")
    x.add_argument("--onnx", type=Path, default=WEIGHTS_DIR / "encoder.onnx")
    x.add_argument("--data", type=Path, default=None)
    x.set_defaults(func=_export)

    m = cmds.add_parser("embed", help="keypoint files -> window embeddings (.jsonl for `cloud enroll`, or .npz)")
    m.add_argument("inputs", type=Path, nargs="+", help=".pkl / .npy / DANCE_*/skeletons.json, or folders of them")
    m.add_argument("--out", type=Path, required=True, help="output .jsonl or .npz")
    m.add_argument("--hop", type=_hop, default=0.5, help="hop between windows, seconds (> 0)")
    m.set_defaults(func=_embed)

    g = cmds.add_parser("seed-gallery", help="the default gallery (one .npz per AIST++ genre) for a fresh cloud")
    g.add_argument("--data", type=Path, default=None)
    g.add_argument("--out", type=Path, default=SEED_DIR)
    g.set_defaults(func=_seed_gallery)
    enc.set_defaults(func=lambda args: (enc.print_help(), 2)[1])


def _embed(args) -> int:
    from edge.motion.embed import embed_files

    n = embed_files(args.inputs, args.out, hop_s=args.hop)
    _say(f"{n} window embeddings -> {args.out}")
    return 0


def _seed_gallery(args) -> int:
    from edge.motion.embed import seed_gallery

    print(json.dumps(seed_gallery(_data(args), args.out), indent=2))
    return 0


def _data(args) -> Path:
    from dancewire.errors import DancewireError
    from dancewire.paths import shared_data_dir

    root = args.data or shared_data_dir()
    if not (root / "keypoints").exists():
        raise DancewireError(f"no keypoints/ under {root} (set --data or $DANCEWIRE_DATA)")
    return root


def _train(args) -> int:
    from dataclasses import replace

    from edge.motion.settings import MotionSettings
    from edge.motion.train import TrainConfig, train

    cfg = TrainConfig(threads=args.threads, seed=args.seed, own_keypoints=args.own_keypoints, back_view=args.back_view,
                      speed=args.speed_range, pool=args.pool, arch=args.arch, loss=args.loss, compare=args.compare,
                      profile_weight=args.profile_weight)
    if args.pretrain_steps is not None:
        cfg = replace(cfg, pretrain_steps=args.pretrain_steps)
    if args.finetune_steps is not None:
        cfg = replace(cfg, finetune_steps=args.finetune_steps)
    root = _data(args)
    summary = train(root, args.out, cfg, MotionSettings(normalization=args.normalization), progress=_say)
    onnx_path = args.out / "encoder.onnx"
    diff = _export_and_check(args.out / "encoder.pt", onnx_path, root)
    summary["onnx_parity_max_abs"] = diff
    (args.out / "train_metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    best = summary["results"][summary["shipped"]]
    print(json.dumps({"shipped": summary["shipped"], "aist_genre_top1": best["aist_genre"]["top1"],
                      "cross_view_top1": best["cross_view"]["top1"], "ballroom_top1": best["ballroom_enrol"]["top1"],
                      "onnx_parity_max_abs": diff, "train_seconds": summary["train_seconds"]}, indent=2))
    return 0


def _export_and_check(ckpt: Path, onnx_path: Path, root: Path | None) -> float:
    """Export, check parity with PyTorch (1e-4), then put the file in place. It is written beside
    the target and moved over it only once parity holds: the runtime file (the default target)
    is never left unchecked, nor half written without its metadata."""
    import numpy as np

    from edge.motion.export import export_onnx, parity

    _say(f"exporting {onnx_path}")
    partial = onnx_path.parent / f".{onnx_path.stem}.partial.onnx"
    try:
        export_onnx(ckpt, partial)
        feats, mask = None, None
        if root is not None:
            from edge.motion import datasets as ds
            from edge.motion.evaluate import window_set
            seqs = [q for f in ds.aist_files(root)[:2] for q in ds.load_path(f)][:3]
            ws = window_set(seqs)
            feats, mask = ws.feats[:256], ws.mask[:256]
        if feats is None or len(feats) == 0:
            rng = np.random.default_rng(0)
            feats = rng.normal(0, 0.3, (64, 60, 34)).astype(np.float32)
            mask = rng.random((64, 60)) > 0.2
        diff = parity(ckpt, partial, feats, mask)
        _say(f"ONNX parity: max |torch - onnxruntime| = {diff:.2e} over {len(feats)} windows")
        if diff > 1e-4:
            from dancewire.errors import DancewireError
            raise DancewireError(f"ONNX parity {diff:.2e} exceeds 1e-4; {onnx_path} left as it was")
        os.replace(partial, onnx_path)
    finally:
        partial.unlink(missing_ok=True)
    return diff


def _export(args) -> int:
    from dancewire.paths import shared_data_dir

    root = args.data or shared_data_dir()
    _export_and_check(args.ckpt, args.onnx, root if (root / "keypoints").exists() else None)
    return 0


def _print_genre(title: str, r: dict) -> None:
    lp = r.get("linear_probe")
    print(f"{title}: top-1 {r['top1']:.3f}  top-3 {r['top3']:.3f}  ({r['n']} query windows"
          + (f", linear probe {lp:.3f}" if lp is not None else "")
          + (f", per-sequence vote {r['per_sequence_top1']:.3f} over {r['sequences']}" if "per_sequence_top1" in r else "")
          + ")")


def _eval(args) -> int:
    from dancewire.errors import DancewireError
    from edge.motion.encoder import MotionEncoder
    from edge.motion.evaluate import evaluate_all, folder_eval

    enc = MotionEncoder(args.model)
    if args.suite:
        res = evaluate_all(enc, _data(args), hop_s=args.hop, progress=_say)
        _print_genre("AIST++ genre (held-out performances)", res["aist_genre"])
        cv = res["cross_view"]
        print(f"cross-view routine retrieval: top-1 {cv['top1']:.3f}  top-3 {cv['top3']:.3f}  "
              f"({cv['routines']} routines x {cv['views']} cameras, chance {cv['chance']:.2f}, "
              f"per-routine vote {cv['per_sequence_top1']:.3f})")
        _print_genre("ballroom enrolment (unseen genres)", res["ballroom_enrol"])
    else:
        if args.query is None or args.gallery is None:
            raise DancewireError("give QUERY_DIR and --gallery GALLERY_DIR (or --suite)")
        res = folder_eval(enc, args.query, args.gallery, hop_s=args.hop)
        _print_genre(f"genre kNN ({', '.join(res['genres'])})", res)
        if res["shared_sequences"]:
            _say(f"warning: {len(res['shared_sequences'])} sequences are in both folders")
        if res["genres_not_in_gallery"]:
            _say(f"warning: query genres with nothing enrolled in the gallery (their windows cannot be right): "
                 f"{', '.join(res['genres_not_in_gallery'])}")
    res["model"] = {"id": enc.model_id, "sha256": enc.sha256, "path": str(enc.path)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=float))
        _say(f"wrote {args.json}")
    return 0
