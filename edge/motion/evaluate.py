"""Evaluation: Tong's top-1/top-3 cosine kNN accuracy and a linear probe on embedded windows.

(a) AIST++ genres on held-out performances (gallery: the training performances);
(b) cross-view retrieval: held-out routines enrolled from one camera, queried from the others;
(c) enrolment transfer to unseen genres: ballroom Cha-cha / Rumba / Waltz projected to 2D.
`embed` is any function (feats (B, N, 34), mask (B, N)) -> (B, D) L2-normalised embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dancewire.errors import BadInputError
from edge.motion import datasets as ds
from edge.motion.normalize import normalize
from edge.motion.settings import MotionSettings
from edge.motion.windows import cut_arrays

EmbedFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class WindowSet:
    feats: np.ndarray      # (W, N, 34)
    mask: np.ndarray       # (W, N)
    genre: np.ndarray      # (W,) str
    name: np.ndarray       # (W,) performance
    view: np.ndarray       # (W,) camera
    start: np.ndarray      # (W,) start time, s

    def __len__(self) -> int:
        return len(self.feats)

    def select(self, keep: np.ndarray) -> "WindowSet":
        return WindowSet(*(getattr(self, f)[keep] for f in _FIELDS))

    def seen_from_behind(self) -> "WindowSet":
        """Each window as a camera on the far side would see it: x mirrored about the
        normalization's origin, joint names kept (from behind, the dancer's left hand is on the
        image's left). Enrolment augmentation for a gallery filmed from one camera."""
        back = self.feats.copy()
        back[..., 0::2] *= -1.0
        return WindowSet(back, *(getattr(self, f) for f in _FIELDS[1:]))

    def __add__(self, other: "WindowSet") -> "WindowSet":
        return WindowSet(*(np.concatenate([getattr(self, f), getattr(other, f)]) for f in _FIELDS))


_FIELDS = ("feats", "mask", "genre", "name", "view", "start")


def window_set(seqs: list[ds.Sequence], settings: MotionSettings | None = None, hop_s: float = 0.5) -> WindowSet:
    s = settings or MotionSettings()
    parts = []
    for seq in seqs:
        kp, mask, starts = cut_arrays(seq.kp, seq.fps, s, hop_s=hop_s)
        if len(kp) == 0:
            continue
        feats = normalize(kp, mask, s.normalization)
        n = len(kp)
        parts.append((feats, mask, np.full(n, seq.genre, object), np.full(n, seq.name, object),
                      np.full(n, seq.view, object), starts / seq.fps))
    if not parts:
        return WindowSet(np.zeros((0, s.max_frames, 34), np.float32), np.zeros((0, s.max_frames), bool),
                         *(np.zeros(0, object) for _ in range(3)), np.zeros(0))
    return WindowSet(*(np.concatenate(p) for p in zip(*parts)))


def embed_set(embed: EmbedFn, ws: WindowSet, batch: int = 256) -> np.ndarray:
    out = [embed(ws.feats[i:i + batch], ws.mask[i:i + batch]) for i in range(0, len(ws), batch)]
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def knn_accuracy(q: np.ndarray, ql: np.ndarray, g: np.ndarray, gl: np.ndarray, k: int = 3) -> dict:
    """Tong's metric: top-k = the true label is among the labels of the k most cosine-similar gallery items."""
    if len(q) == 0 or len(g) == 0:
        return {"top1": None, "top3": None, "n": 0}
    sim = q @ g.T
    order = np.argsort(-sim, axis=1)[:, :k]
    labels = gl[order]
    top1 = float(np.mean(labels[:, 0] == ql))
    topk = float(np.mean((labels == ql[:, None]).any(1)))
    return {"top1": top1, f"top{k}": topk, "n": int(len(q))}


def linear_probe(g: np.ndarray, gl: np.ndarray, q: np.ndarray, ql: np.ndarray, l2: float = 1e-3) -> float | None:
    """Multinomial logistic regression on the gallery embeddings, accuracy on the queries (scipy L-BFGS)."""
    from scipy.optimize import minimize

    classes = np.unique(gl)
    if len(classes) < 2 or len(q) == 0:
        return None
    y = np.searchsorted(classes, gl)
    X = np.concatenate([g, np.ones((len(g), 1))], 1).astype(np.float64)
    C, D = len(classes), X.shape[1]
    Y = np.eye(C)[y]

    def f(w):
        W = w.reshape(D, C)
        z = X @ W
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)) + l2 * np.sum(W[:-1] ** 2)
        grad = X.T @ (p - Y) / len(y)
        grad[:-1] += 2 * l2 * W[:-1]
        return loss, grad.ravel()

    res = minimize(f, np.zeros(D * C), jac=True, method="L-BFGS-B", options={"maxiter": 300})
    W = res.x.reshape(D, C)
    pred = classes[np.argmax(np.concatenate([q, np.ones((len(q), 1))], 1) @ W, 1)]
    return float(np.mean(pred == ql))


def genre_eval(embed: EmbedFn, gallery: WindowSet, query: WindowSet, probe: bool = True,
               back_view: bool = False) -> dict:
    gallery = (gallery + gallery.seen_from_behind()) if back_view else gallery
    ge, qe = embed_set(embed, gallery), embed_set(embed, query)
    res = knn_accuracy(qe, query.genre, ge, gallery.genre)
    res["gallery_windows"] = int(len(gallery))
    if probe:
        res["linear_probe"] = linear_probe(ge, gallery.genre, qe, query.genre)
    if len(qe) and len(ge):
        nn = gallery.genre[np.argmax(qe @ ge.T, 1)]
        res.update(_per_sequence(nn, query.genre, query.name, query.view))
        res.update(_breakdown(nn, query.genre, query.view))
    return res


def _breakdown(nn: np.ndarray, truth: np.ndarray, views: np.ndarray) -> dict:
    """Top-1 per true genre and per query camera, and the confusion counts {true: {top-1 label: n}}."""
    labels = sorted(set(truth) | set(nn))
    return {"per_genre_top1": {g: float(np.mean(nn[truth == g] == g)) for g in sorted(set(truth))},
            "per_view_top1": {v: float(np.mean(nn[views == v] == truth[views == v])) for v in sorted(set(views))},
            "confusion": {g: {h: int(np.sum((truth == g) & (nn == h))) for h in labels} for g in sorted(set(truth))}}


def _per_sequence(nn: np.ndarray, truth: np.ndarray, names: np.ndarray, views: np.ndarray) -> dict:
    """Per performance and camera: does the majority of its windows' top-1 labels say right?"""
    keys = np.array([f"{a}|{b}" for a, b in zip(names, views)])
    votes = []
    for key in np.unique(keys):
        sel = keys == key
        lab, cnt = np.unique(nn[sel], return_counts=True)
        votes.append(lab[np.argmax(cnt)] == truth[sel][0])
    return {"per_sequence_top1": float(np.mean(votes)), "sequences": int(len(votes))}


def cross_view_eval(embed: EmbedFn, ws: WindowSet, back_view: bool = False) -> dict:
    """Routine retrieval across cameras: gallery = every routine's windows from camera c,
    queries = the windows from every other camera; averaged over c. Label = the routine.
    Per window (Tong's top-k) and per routine and query camera (majority of its windows).
    `back_view`: the gallery also holds each of its windows seen from behind."""
    emb = embed_set(embed, ws)
    back = embed_set(embed, ws.seen_from_behind()) if back_view else None
    views = sorted(set(ws.view))
    t1, t3, seq, n = [], [], [], 0
    for v in views:
        g = ws.view == v
        gallery, labels = emb[g], ws.name[g]
        if back is not None:
            gallery, labels = np.concatenate([gallery, back[g]]), np.concatenate([labels, labels])
        r = knn_accuracy(emb[~g], ws.name[~g], gallery, labels)
        t1.append(r["top1"]); t3.append(r["top3"]); n += r["n"]
        nn = labels[np.argmax(emb[~g] @ gallery.T, 1)]
        seq.append(_per_sequence(nn, ws.name[~g], ws.name[~g], ws.view[~g])["per_sequence_top1"])
    return {"top1": float(np.mean(t1)), "top3": float(np.mean(t3)), "per_sequence_top1": float(np.mean(seq)),
            "routines": int(len(set(ws.name))), "views": len(views), "queries": n,
            "chance": 1.0 / max(1, len(set(ws.name)))}


@dataclass
class GenreTask:
    """One enrolment task: gallery and query windows, and the sequences they were cut from."""
    gallery: WindowSet
    query: WindowSet
    gallery_seqs: list[ds.Sequence]
    query_seqs: list[ds.Sequence]


def genre_tasks(data_root: Path, settings: MotionSettings | None = None, hop_s: float = 0.5) -> dict[str, GenreTask]:
    """(a) "aist_genre": training performances enrolled, held-out ones queried; (c) "ballroom_enrol"."""
    s = settings or MotionSettings()
    seqs = [q for f in ds.aist_files(data_root) for q in ds.load_path(f)]
    br = [q for d in ds.ballroom_dirs(data_root) for q in ds.load_ballroom(d)]
    out = {}
    for key, (g, q) in (("aist_genre", ds.aist_split(seqs)), ("ballroom_enrol", ds.ballroom_split(br))):
        out[key] = GenreTask(window_set(g, s, hop_s), window_set(q, s, hop_s), g, q)
    return out


def evaluate_all(embed: EmbedFn, data_root: Path, settings: MotionSettings | None = None,
                 hop_s: float = 0.5, progress=None, back_view: bool = False) -> dict:
    """(a), (b) and (c); `back_view` enrols every gallery window also as seen from behind."""
    s = settings or MotionSettings()
    say = progress or (lambda msg: None)
    tasks = genre_tasks(data_root, s, hop_s)
    say("embedding AIST++ windows")
    a = tasks["aist_genre"]
    out = {"aist_genre": genre_eval(embed, a.gallery, a.query, back_view=back_view)}
    out["aist_genre"]["held_out"] = sorted({q.name for q in a.query_seqs})
    multi = [q for q in a.query_seqs if q.source == "aistpp"]
    say("cross-view retrieval")
    out["cross_view"] = cross_view_eval(embed, window_set(multi, s, hop_s), back_view=back_view)
    say("ballroom enrolment")
    c = tasks["ballroom_enrol"]
    out["ballroom_enrol"] = genre_eval(embed, c.gallery, c.query, back_view=back_view)
    out["ballroom_enrol"]["gallery"] = sorted({q.name for q in c.gallery_seqs})
    out["ballroom_enrol"]["cameras"] = [c.name for c in ds.DEFAULT_CAMERAS]
    return out


def folder_eval(embed: EmbedFn, query_dir: Path, gallery_dir: Path, settings: MotionSettings | None = None,
                hop_s: float = 0.5) -> dict:
    """`dancewire encoder eval QUERY --gallery GALLERY`: genre kNN of query windows against gallery windows."""
    s = settings or MotionSettings()
    q = ds.load_folder(query_dir)
    g = ds.load_folder(gallery_dir)
    gws, qws = window_set(g, s, hop_s), window_set(q, s, hop_s)
    for name, folder, ws in (("query", query_dir, qws), ("gallery", gallery_dir, gws)):
        if len(ws) == 0:
            raise BadInputError(f"no windows in the {name} {folder}: its sequences hold fewer than "
                                f"{s.min_valid} valid samples per {s.window_s:g} s window")
    if not {x.genre for x in q} & {x.genre for x in g}:
        raise BadInputError(f"the query ({', '.join(sorted({x.genre for x in q}))}) and the gallery "
                            f"({', '.join(sorted({x.genre for x in g}))}) share no genre: nothing can be scored")
    shared = {x.name for x in q} & {x.name for x in g}
    res = genre_eval(embed, gws, qws)
    res.update({"query_sequences": sorted({x.name for x in q}), "gallery_sequences": sorted({x.name for x in g}),
                "shared_sequences": sorted(shared), "genres": sorted({x.genre for x in g}),
                "genres_not_in_gallery": sorted({x.genre for x in q} - {x.genre for x in g})})
    return res


def normalization_consistency(data_root: Path, methods=("ban", "tong"), hop_s: float = 1.0) -> dict:
    """Model-free check of a normalization across cameras: for windows filmed at the same moment by
    different cameras (AIST++ 9 views, ballroom virtual cameras), the mean feature distance between
    views of the same window divided by the mean distance between different windows of one view.
    Lower is better (0: the cameras agree exactly; 1: a camera change is as large as a change of move)."""
    out = {}
    aist = [q for f in sorted((data_root / "keypoints" / "aistpp").glob("*.pkl")) for q in ds.load_path(f)]
    br = [q for d in ds.ballroom_dirs(data_root)[::3] for q in ds.load_ballroom(d)]
    dist_cams = (ds.VirtualCamera(20, 10, 4.0, 800, 1280, 720), ds.VirtualCamera(20, 10, 6.0, 1200),
                 ds.VirtualCamera(20, 10, 9.0, 1800, 3840, 2160), ds.VirtualCamera(20, 10, 12.0, 900, 640, 480))
    brd = [q for d in ds.ballroom_dirs(data_root)[::3] for q in ds.load_ballroom(d, dist_cams)]
    for method in methods:
        s = MotionSettings(normalization=method)
        res = {}
        for label, seqs in (("aistpp_9_views", aist), ("ballroom_virtual_cameras", br),
                            ("ballroom_same_angle_distance_resolution", brd)):
            ws = window_set(seqs, s, hop_s)
            x = (ws.feats * ws.mask[..., None]).reshape(len(ws), -1)
            key = np.array([f"{n}|{t:.2f}" for n, t in zip(ws.name, ws.start)])
            same, diff = [], []
            for k in np.unique(key):
                idx = np.nonzero(key == k)[0]
                if len(idx) > 1:
                    d = np.linalg.norm(x[idx[:, None]] - x[idx[None, :]], axis=-1)
                    same.append(d[np.triu_indices(len(idx), 1)].mean())
            for v in np.unique(ws.view):
                idx = np.nonzero(ws.view == v)[0]
                if len(idx) > 1:
                    d = np.linalg.norm(x[idx[:, None]] - x[idx[None, :]], axis=-1)
                    diff.append(d[np.triu_indices(len(idx), 1)].mean())
            res[label] = float(np.mean(same) / np.mean(diff))
        out[method] = res
    return out
