"""A documented, fixed stand-in for the motion encoder, used by the cloud tests until real
embeddings from edge/motion's encoder are available in the test environment.

It is NOT learned: each 2 s window of 2D keypoints (N, J, 2) is centred on its mean joint
position and scaled to unit RMS, then described by per-joint statistics (mean pose, pose
spread, mean and spread of joint speed, and the magnitude of the first four temporal
frequencies of each coordinate). Each group of features is scaled to unit norm, and the
concatenation is mapped to 128 dimensions by a fixed Gaussian random projection (seed 1234)
and L2-normalised. Same keypoints in, same embedding out, on every machine.

The data is real (AIST++ via gendance_aist_small, and the ballroom mocap of Tang et al.
2018, front view), so classification tests see the variability of real dancers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DIM = 128
WINDOW_S = 2.0
HOP_S = 0.5


def _features(win: np.ndarray) -> np.ndarray:
    x = np.asarray(win, np.float64)[..., :2]
    x = x - x.mean(axis=(0, 1), keepdims=True)
    x = x / (np.sqrt((x ** 2).mean()) + 1e-9)
    parts = [x.mean(0).ravel(), x.std(0).ravel()]
    v = np.linalg.norm(np.diff(x, axis=0), axis=-1)
    parts += [v.mean(0), v.std(0)]
    spec = np.abs(np.fft.rfft(x - x.mean(0), axis=0))[1:5]
    parts.append(spec.reshape(4, -1).ravel())
    return np.concatenate([p / (np.linalg.norm(p) + 1e-9) for p in parts])


_PROJ: dict[int, np.ndarray] = {}


def embed_windows(windows: np.ndarray) -> np.ndarray:
    """(W, N, J, 2) keypoint windows -> (W, 128) float32 L2-normalised embeddings."""
    feats = np.stack([_features(w) for w in windows])
    f = feats.shape[1]
    if f not in _PROJ:
        _PROJ[f] = np.random.default_rng(1234).normal(0, 1 / np.sqrt(DIM), (f, DIM))
    e = feats @ _PROJ[f]
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def cut(kp: np.ndarray, fps: float, window_s: float = WINDOW_S, hop_s: float = HOP_S):
    """(T, J, C) -> list of (t0, t1, (N, J, 2) window), sampled at about 30 fps (Tong's step)."""
    step = max(1, int(fps // 30))
    n = int(window_s * fps)
    hop = max(1, int(round(hop_s * fps)))
    out = []
    for s in range(0, len(kp) - n + 1, hop):
        w = kp[s:s + n:step, :, :2]
        if np.isfinite(w).all():
            out.append((s / fps, (s + n) / fps, w))
    return out


def load_ballroom(root: Path) -> list[dict]:
    """Ballroom sequences: [{"name", "style", "kp" (T, 23, 2) front view, "fps"}]."""
    out = []
    for d in sorted(root.glob("DANCE_*")):
        sk = np.asarray(json.loads((d / "skeletons.json").read_text())["skeletons"], np.float64)
        out.append({"name": d.name, "style": {"C": "cha-cha", "R": "rumba", "W": "waltz"}[d.name.split("_")[1]],
                    "kp": np.stack([sk[..., 0], -sk[..., 1]], -1), "fps": 25.0})
    return out


def load_gendance(root: Path) -> list[dict]:
    """gendance_aist_small sequences: [{"name", "style", "kp" (T, 17, 2) pixels, "fps"}]."""
    z = np.load(root / "kps_scaler_extracted.npz")
    out = []
    for f in sorted(root.glob("*/nor_k_feat/*.npy")):
        a = np.load(f).reshape(-1, 17, 2) * z["scale"] + z["mean"]
        style = {"gHO": "house", "gKR": "krump", "gMH": "middle-hiphop"}[f.name[:3]]
        out.append({"name": f.stem, "style": style, "kp": a, "fps": 30.0})
    return out


def sequence_embeddings(seq: dict, window_s: float = WINDOW_S, hop_s: float = HOP_S):
    """(times (W, 2), embeddings (W, 128)) of one sequence."""
    wins = cut(seq["kp"], seq["fps"], window_s, hop_s)
    times = np.array([(a, b) for a, b, _ in wins])
    return times, embed_windows(np.stack([w for _, _, w in wins]))


def make_gallery(seqs: list[dict], routine_of=None, score_of=None):
    """A gallery of the sequences' windows: label style, group "<style>-crew", video = the sequence."""
    from cloud.gallery import Gallery
    from cloud.records import Reference

    refs, embs = [], []
    for s in seqs:
        for k, ((t0, t1), e) in enumerate(zip(s["times"], s["emb"])):
            routine = routine_of(s) if routine_of else ""
            refs.append(Reference(f"{s['name']}@{k}", s["style"], routine=routine, group=s["style"] + "-crew",
                                  video=s["name"], t0=float(t0), t1=float(t1),
                                  phrase=int(((t0 + t1) / 2) // 4.0) if routine else -1,
                                  score=score_of(s, k) if score_of else float("nan")))
            embs.append(e)
    return Gallery(np.stack(embs), refs, {"model_id": "standin", "hash": "standin-v1"})


def simulated_session(seqs: list[dict], node: str = "studio-a", session: str = "class-1", bpm: float = 120.0,
                      start_seq: int = 0):
    """A simulated edge's stream: [(t, windows, beat grids)] in media-time order.

    Each sequence is one dancer (track id = its position); windows carry their stand-in
    embeddings; beat grids every 2 s hold beats at the given tempo with counts 1..8. The beat
    grid and the windows' beat_alignment values are synthetic (a slow wave per dancer): they
    exercise the display and the plumbing, not the edge's rhythm metrics.
    """
    from cloud.records import BeatGridIn, WindowIn

    period = 60.0 / bpm
    events = []
    for track, s in enumerate(seqs):
        for (t0, t1), e in zip(s["times"], s["emb"]):
            events.append((float(t1), track, float(t0), e))
    events.sort(key=lambda x: (x[0], x[1]))
    out, seq, next_grid = [], start_seq, 0.0
    for t1, track, t0, e in events:
        grids = []
        while next_grid <= t1:
            beats = [k * period for k in range(int(np.ceil(next_grid / period)), int(np.ceil((next_grid + 2.0) / period)))]
            grids.append(BeatGridIn(node, session, seq, next_grid, next_grid + 2.0, bpm, 0.9, beats,
                                    [int(round(b / period)) % 8 + 1 for b in beats], beats))
            seq += 1
            next_grid += 2.0
        mid = 0.5 * (t0 + t1)
        ba = float(np.clip(0.7 + 0.25 * np.sin(2 * np.pi * mid / 9.0 + 1.3 * track) + 0.08 * np.sin(7.3 * mid), 0, 1))
        w = WindowIn(node, session, track, seq, t0, t1, e, {"beat_alignment": ba, "tempo_bpm": bpm}, 0.9)
        seq += 1
        out.append((t1, [w], grids))
    return out
