"""Real embeddings for the cloud tests, made by the shipped motion encoder.

The ballroom motion capture (Tang et al. 2018: real dancers, three styles; evaluation and tests
only) is projected to 2D COCO-17 keypoints through one virtual front camera
(`edge.motion.datasets`), cut into the live edge's 2 s windows (hop 0.5 s) and encoded by
`edge.motion.encoder.MotionEncoder` with the committed weights: the vectors an edge would send
for these dances. The cloud itself never imports the edge; only these tests do, to make input.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

HOP_S = 0.5


@lru_cache(maxsize=1)
def encoder():
    from edge.motion.encoder import MotionEncoder

    return MotionEncoder()


def load_ballroom(root: Path) -> list[dict]:
    """Ballroom sequences: [{"name", "style" (lower case), "kp" (T, 17, 3) pixels, "fps"}], front view."""
    from edge.motion.datasets import DEFAULT_CAMERAS
    from edge.motion.datasets import load_ballroom as load_folder

    out = []
    for d in sorted(root.glob("DANCE_*")):
        seq = load_folder(d, cameras=DEFAULT_CAMERAS[:1])[0]
        out.append({"name": d.name, "style": seq.genre.lower(), "kp": seq.kp, "fps": seq.fps})
    return out


def sequence_embeddings(seq: dict, hop_s: float = HOP_S):
    """(times (W, 2), embeddings (W, D)) of one sequence, windows as the live edge cuts them."""
    from edge.motion.windows import cut_sequence

    windows = cut_sequence(seq["kp"], seq["fps"], hop_s=hop_s)
    times = np.array([(w.t0, w.t1) for w in windows])
    return times, encoder().encode(windows)


def encoder_info() -> dict:
    return {"model_id": encoder().model_id, "hash": encoder().sha256}


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
    return Gallery(np.stack(embs), refs, encoder_info())


def simulated_session(seqs: list[dict], node: str = "studio-a", session: str = "class-1", bpm: float = 120.0,
                      start_seq: int = 0):
    """A simulated edge's stream: [(t, windows, beat grids)] in media-time order.

    Each sequence is one dancer (track id = its position); windows carry their real
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
