"""Style classification: cosine kNN (top-k) combined with per-style prototypes, calibrated.

For a window embedding x (L2-normalised) and the gallery:

* kNN vote: the k most similar references (cosine s_j) vote for their style with weight
  exp((s_j - s_max) / T_knn); p_knn is the normalised vote (smoothed by 1e-3 per style).
* prototypes: each style's prototype is the normalised mean of its references;
  p_proto = softmax(cos(x, prototype) / T_proto).
* combined logits z = a * log p_knn + (1 - a) * log p_proto (a = ``knn_weight``), and the
  reported probabilities are softmax(z / T).

Fitted on the gallery at enrolment by leave-one-video-out (each reference classified with every
window of its own video held out; ``fit_classifier``):
* the mixture a and T_knn, from a small grid, by the held-out accuracy (ties: the lower NLL,
  then the configured values). Which is better depends on the gallery: a style filmed as many
  different figures is several clusters, whose mean (the prototype) lies between them, and kNN
  wins; a few noisy references per style are better summarised by their mean;
* then T, minimising the negative log-likelihood, so that a confidence of 0.8 is right about
  80% of the time on data like the gallery's.
The fit's grid, accuracy, NLL and expected calibration error (ECE) before and after are kept in
the gallery. A gallery that cannot be held out (fewer than 2 videos, or no style with 2) keeps the
configured a and T_knn and T = 1.

Nearest references, Tong's two levels: ``nearest`` lists the reference videos among the top-k
neighbours (score: best cosine to any of the video's windows), ``nearest_groups`` the groups
(score: best cosine to any of the group's windows), best first.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from cloud.gallery import Gallery
from cloud.records import Classification, Neighbor
from cloud.settings import ClassifySettings

log = logging.getLogger(__name__)

EPS = 1e-3
MIX_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)          # knn_weight candidates
KNN_T_GRID = (0.01, 0.02, 0.05, 0.1)            # knn_temperature candidates


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def combine(knn_sims: np.ndarray, knn_styles: np.ndarray, proto_sims: np.ndarray, n_styles: int,
            s: ClassifySettings, temperature: float = 1.0, valid: np.ndarray | None = None):
    """(n,k) neighbour cosines + style codes and (n,C) prototype cosines -> (p, p_knn, p_proto)."""
    n = len(proto_sims)
    if valid is None:
        valid = np.ones(knn_sims.shape, bool)
    smax = np.where(valid, knn_sims, -np.inf).max(axis=1, keepdims=True) if knn_sims.size else np.zeros((n, 1))
    w = np.where(valid, np.exp((knn_sims - smax) / s.knn_temperature), 0.0)
    p_knn = np.zeros((n, n_styles))
    if knn_sims.size:
        np.add.at(p_knn, (np.repeat(np.arange(n), knn_sims.shape[1]), knn_styles.ravel()), w.ravel())
    p_knn = p_knn / np.maximum(p_knn.sum(1, keepdims=True), 1e-12)
    p_knn = (p_knn + EPS) / (1.0 + n_styles * EPS)
    p_proto = _softmax(proto_sims / s.proto_temperature)
    z = s.knn_weight * np.log(p_knn) + (1.0 - s.knn_weight) * np.log(np.maximum(p_proto, 1e-12))
    return _softmax(z / temperature), p_knn, p_proto


class Classifier:
    """Classifies window embeddings against a gallery (exact or approximate index inside)."""

    def __init__(self, gallery: Gallery, settings: ClassifySettings | None = None, *, index_kind: str = "auto",
                 index_cache=None, n_nearest: int = 3):
        self.gallery = gallery
        self.s = fitted_settings(settings or ClassifySettings(), gallery.params)
        self.n_nearest = n_nearest
        self.temperature = float(gallery.params.get("temperature", 1.0))
        self.index = gallery.index(exact_max=self.s.exact_max, m=self.s.hnsw_m,
                                   ef_construction=self.s.hnsw_ef_construction, ef=max(self.s.hnsw_ef, self.s.k),
                                   kind=index_kind, cache=index_cache)

    @property
    def ready(self) -> bool:
        return len(self.gallery) > 0

    def classify(self, embeddings: np.ndarray) -> list[Classification]:
        g = self.gallery
        q = np.atleast_2d(np.asarray(embeddings, np.float32))
        if not len(g) or not len(q):
            return [None] * len(q)  # type: ignore[list-item]
        nrm = np.linalg.norm(q, axis=1, keepdims=True)
        q = q / np.maximum(nrm, 1e-12)
        sims, rows = self.index.search(q, self.s.k)
        psims = q @ g.prototypes.T
        p, p_knn, p_proto = combine(sims, g.style_idx[rows], psims, len(g.styles), self.s, self.temperature)
        out = []
        styles = g.styles
        for i in range(len(q)):
            best = int(np.argmax(p[i]))
            nearest, groups = self._neighbours(sims[i], rows[i])
            out.append(Classification(
                probs={st: float(v) for st, v in zip(styles, p[i])}, style=styles[best],
                confidence=float(p[i, best]), nearest=nearest, nearest_groups=groups,
                top_cosine=float(sims[i, 0]) if sims.shape[1] else math.nan,
                knn_probs={st: float(v) for st, v in zip(styles, p_knn[i])},
                proto_probs={st: float(v) for st, v in zip(styles, p_proto[i])}))
        return out

    def _neighbours(self, sims: np.ndarray, rows: np.ndarray) -> tuple[list[Neighbor], list[Neighbor]]:
        g = self.gallery
        videos: dict[str, float] = {}
        groups: dict[str, float] = {}
        for s, r in zip(sims.tolist(), rows.tolist()):
            v = g.videos[r]
            if v not in videos:
                videos[v] = s
            grp = g.groups[r]
            if grp and grp not in groups:
                groups[grp] = s
        n = self.n_nearest
        nearest = [Neighbor(v, "/".join(x for x in (g.video_group.get(v, ""), g.video_routine.get(v, "")) if x), s)
                   for v, s in list(videos.items())[:n]]
        near_groups = [Neighbor(grp, grp, s) for grp, s in list(groups.items())[:n]]
        return nearest, near_groups


# ----- calibration ----------------------------------------------------------------------------

def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence (equal-width bins)."""
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def leave_one_video_out(gallery: Gallery, s: ClassifySettings, max_queries: int = 3000, seed: int = 0):
    """Combined-logit inputs for references classified without their own video.

    Returns (knn_sims, knn_styles, valid, proto_sims, y) for the references whose style still
    has support once their video is held out, or None when fewer than 2 videos exist.
    """
    g = gallery
    n = len(g)
    vids, vcode = np.unique(g.videos.astype(str), return_inverse=True)
    if len(vids) < 2 or len(g.styles) < 2:
        return None
    rng = np.random.default_rng(seed)
    q_rows = np.arange(n) if n <= max_queries else np.sort(rng.choice(n, max_queries, replace=False))
    C, D = len(g.styles), g.dim
    class_sum = np.zeros((C, D)); np.add.at(class_sum, g.style_idx, g.embeddings)
    class_cnt = np.bincount(g.style_idx, minlength=C)
    vs_sum = {}
    vs_cnt = {}
    for v, c, e in zip(vcode, g.style_idx, g.embeddings):
        vs_sum[(v, c)] = vs_sum.get((v, c), 0.0) + e
        vs_cnt[(v, c)] = vs_cnt.get((v, c), 0) + 1
    k = s.k
    all_sims, all_sty, all_valid, all_ps, ys = [], [], [], [], []
    for start in range(0, len(q_rows), 512):
        rows = q_rows[start:start + 512]
        q = g.embeddings[rows]
        sims = q @ g.embeddings.T
        sims[vcode[rows][:, None] == vcode[None, :]] = -np.inf
        kk = min(k, n - 1)
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        ps = np.take_along_axis(sims, part, 1)
        for j, r in enumerate(rows):
            v = vcode[r]
            sums = class_sum.copy(); cnt = class_cnt.copy()
            for c in range(C):
                if (v, c) in vs_sum:
                    sums[c] -= vs_sum[(v, c)]; cnt[c] -= vs_cnt[(v, c)]
            if cnt[g.style_idx[r]] == 0:
                continue          # no other video of this style: nothing to learn from
            protos = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
            psims = protos @ q[j]
            psims[cnt == 0] = -1.0
            all_sims.append(ps[j]); all_sty.append(g.style_idx[part[j]]); all_valid.append(np.isfinite(ps[j]))
            all_ps.append(psims); ys.append(g.style_idx[r])
    if len(ys) < 10:
        return None
    sims = np.stack(all_sims)
    valid = np.stack(all_valid)
    return np.where(valid, sims, 0.0), np.stack(all_sty), valid, np.stack(all_ps), np.array(ys)


def fitted_settings(s: ClassifySettings, params: dict) -> ClassifySettings:
    """`s` with the mixture and kNN temperature a gallery was fitted with (if it was)."""
    return dataclasses.replace(s, knn_weight=float(params.get("knn_weight", s.knn_weight)),
                               knn_temperature=float(params.get("knn_temperature", s.knn_temperature)))


def _fit_temperature(data, C: int, s: ClassifySettings) -> tuple[float, float]:
    sims, sty, valid, ps, y = data
    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 121))
    nlls = [_nll(combine(sims, sty, ps, C, s, t, valid)[0], y) for t in grid]
    best = int(np.argmin(nlls))
    return float(grid[best]), float(nlls[best])


def fit_classifier(gallery: Gallery, s: ClassifySettings | None = None) -> tuple[dict, dict | None]:
    """Leave-one-video-out fit of knn_weight, knn_temperature and T on `gallery`.

    Returns (params for ``gallery.params``, report); ({"temperature": 1.0}, None) when the gallery
    cannot be held out, so the configured mixture applies."""
    s = s or ClassifySettings()
    data = leave_one_video_out(gallery, s)
    if data is None:
        return {"temperature": 1.0}, None
    sims, sty, valid, ps, y = data
    C = len(gallery.styles)
    configured = (s.knn_weight, s.knn_temperature)
    pairs = {(a, tk) for a in MIX_GRID for tk in (KNN_T_GRID if a > 0 else (s.knn_temperature,))} | {configured}
    grid = []
    for a, tk in sorted(pairs):
        cand = dataclasses.replace(s, knn_weight=a, knn_temperature=tk)
        acc = float((combine(sims, sty, ps, C, cand, 1.0, valid)[0].argmax(1) == y).mean())
        grid.append({"knn_weight": a, "knn_temperature": tk, "accuracy": acc, "configured": (a, tk) == configured})
    top = max(g["accuracy"] for g in grid)
    for g in grid:               # T does not change the argmax: fit it only where accuracy ties
        if g["accuracy"] == top:
            cand = dataclasses.replace(s, knn_weight=g["knn_weight"], knn_temperature=g["knn_temperature"])
            g["temperature"], g["nll"] = _fit_temperature(data, C, cand)
    best = max((g for g in grid if g["accuracy"] == top), key=lambda g: (-round(g["nll"], 6), g["configured"]))
    chosen = dataclasses.replace(s, knn_weight=best["knn_weight"], knn_temperature=best["knn_temperature"])
    p1 = combine(sims, sty, ps, C, chosen, 1.0, valid)[0]
    pT = combine(sims, sty, ps, C, chosen, best["temperature"], valid)[0]
    report = {"method": "leave-one-video-out", "samples": int(len(y)), "accuracy": best["accuracy"],
              "configured_accuracy": next(g["accuracy"] for g in grid if g["configured"]),
              "knn_weight": best["knn_weight"], "knn_temperature": best["knn_temperature"],
              "nll_before": _nll(p1, y), "nll_after": _nll(pT, y), "ece_before": ece(p1, y),
              "ece_after": ece(pT, y), "temperature": best["temperature"], "grid": grid}
    log.info("classifier fit: knn_weight=%.2f T_knn=%.2f T=%.3f acc=%.3f (configured %.3f) ECE %.3f -> %.3f",
             best["knn_weight"], best["knn_temperature"], best["temperature"], best["accuracy"],
             report["configured_accuracy"], report["ece_before"], report["ece_after"])
    params = {"temperature": best["temperature"], "knn_weight": best["knn_weight"],
              "knn_temperature": best["knn_temperature"]}
    return params, report
