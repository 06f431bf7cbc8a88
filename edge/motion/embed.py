"""Keypoint files -> window embeddings, for enrolment without video.

`dancewire encoder embed FILE... --out OUT` reads labelled keypoint sequences in any of the
three shared formats (AIST++ .pkl, gendance .npy, ballroom skeletons.json), cuts them into the
same windows the live edge cuts, encodes them with the shipped encoder and writes either
- `.jsonl`: the edge analyze stream (`window` records + a `summary` naming the encoder), which
  `dancewire cloud enroll` reads like the output of `dancewire edge analyze VIDEO`; or
- `.npz`: `embeddings` (N, D) float32, `t0`, `t1`, `genre`, `video` (the performance, shared by its
  camera views), `dancer` (the sequence), `encoder_hash`.
`dancewire encoder seed-gallery` writes one `.npz` per AIST++ genre: the default gallery that
`dancewire up` enrols on a fresh cloud.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dancewire.errors import DancewireError
from dancewire.progress import Progress
from edge.motion.datasets import Sequence, load_folder, load_path
from edge.motion.settings import MotionSettings
from edge.motion.windows import cut_sequence


def embed_sequences(seqs: list[Sequence], encoder, settings: MotionSettings, hop_s: float,
                    desc: str = "embed") -> dict[str, np.ndarray]:
    embs, t0, t1, genre, video, dancer = [], [], [], [], [], []
    prog = Progress(desc, total=len(seqs))
    for k, seq in enumerate(seqs):
        windows = cut_sequence(seq.kp, seq.fps, settings, hop_s=hop_s, track_id=k)
        if windows:
            embs.append(encoder.encode(windows))
            t0 += [w.t0 for w in windows]
            t1 += [w.t1 for w in windows]
            genre += [seq.genre] * len(windows)
            video += [seq.name] * len(windows)           # the performance: its camera views share it
            dancer += [k] * len(windows)
        prog.update(1, seq.name)
    if not embs:
        raise DancewireError("no window long enough to encode (a window needs "
                             f"{settings.min_valid} valid frames)")
    return {"embeddings": np.concatenate(embs).astype(np.float32), "t0": np.asarray(t0), "t1": np.asarray(t1),
            "genre": np.asarray(genre), "video": np.asarray(video), "dancer": np.asarray(dancer),
            "encoder_hash": np.asarray(encoder.sha256), "encoder_model_id": np.asarray(encoder.model_id)}


def write(out: Path, data: dict[str, np.ndarray]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez_compressed(out, **data)
        return
    with open(out, "w") as f:
        for i, e in enumerate(data["embeddings"]):
            f.write(json.dumps({"type": "window", "dancer": int(data["dancer"][i]), "t0": float(data["t0"][i]),
                                "t1": float(data["t1"][i]), "embedding": [round(float(v), 6) for v in e],
                                "rhythm": {}}) + "\n")
        f.write(json.dumps({"type": "summary", "windows": int(len(data["embeddings"])),
                            "encoder": {"encoder_hash": str(data["encoder_hash"]),
                                        "model_id": str(data["encoder_model_id"])}}) + "\n")


def embed_files(paths: list[Path], out: Path, hop_s: float = 0.5, encoder=None,
                settings: MotionSettings | None = None) -> int:
    from edge.motion.encoder import MotionEncoder

    settings = settings or MotionSettings()
    encoder = encoder or MotionEncoder(settings=settings)
    seqs = [s for p in paths for s in load_folder(p)]      # files, DANCE_* folders or folders of them
    data = embed_sequences(seqs, encoder, settings, hop_s)
    write(out, data)
    return len(data["embeddings"])


def seed_gallery(data_root: Path, out_dir: Path, hop_s: float = 1.0, views: int = 3) -> dict[str, int]:
    """One .npz per AIST++ genre (all shared AIST++ keypoints, first `views` camera views)."""
    from edge.motion.datasets import aist_files
    from edge.motion.encoder import MotionEncoder

    settings = MotionSettings()
    encoder = MotionEncoder(settings=settings)
    by_genre: dict[str, list[Sequence]] = {}
    for p in aist_files(data_root):
        for seq in load_path(p):
            digits = "".join(ch for ch in seq.view if ch.isdigit())
            if digits and int(digits) > views:
                continue
            by_genre.setdefault(seq.genre, []).append(seq)
    if not by_genre:
        raise DancewireError(f"no AIST++ keypoints under {data_root}")
    counts = {}
    for genre, seqs in sorted(by_genre.items()):
        data = embed_sequences(seqs, encoder, settings, hop_s, desc=f"seed {genre}")
        data["embeddings"] = data["embeddings"].astype(np.float16)
        slug = genre.lower().replace(" ", "-")
        write(out_dir / f"aistpp-{slug}.npz", data)
        counts[genre] = int(len(data["embeddings"]))
    return counts
