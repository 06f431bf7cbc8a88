"""How well a dancer does it: two scores, each with one exact meaning.

``gaussian_mu`` / ``gaussian_sigma`` (DanceMVP's Gaussian score; only when the gallery holds
references with labelled scores): a linear head on the embedding predicts a Gaussian over
the score a rater would give this window, N(mu, sigma^2), on the scale of the enrolled
scores (e.g. 0-10 if teachers rated 0-10). It is trained at enrolment with DanceMVP's loss
    L = mean( alpha / sigma(x)^2 * (y - mu(x))^2 + beta * log sigma(x)^2 )
(the Gaussian negative log-likelihood for alpha = 1/2, beta = 1/2), so mu is the expected rating and sigma
the predicted standard deviation of the rating (the aleatoric spread: a wide sigma says
raters - or the model - are unsure about this window).

``routine_similarity`` (no labelled scores needed): how closely a student's window matches
the teacher's enrolled routine at the matching eight-count, on 0-100:
    score = 100 * clip((c - other_p) / (self_p - other_p), 0, 1)
where c is the cosine between the window and the teacher's mean embedding of eight-count p
(the best-matching eight-count, with a small preference for staying in order), self_p is the
mean cosine of the teacher's own windows of p to that mean, and other_p the mean cosine of
p's mean to the routine's other eight-counts. So 100 = as close to the teacher as the
teacher's own repetitions of that eight-count, 0 = no closer than a different eight-count of
the same routine. ``routine_cosine`` is c itself and ``routine_phrase`` the matched p. The
per-eight-count score the aggregator reports is the mean of its windows' scores.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from cloud.gallery import Gallery, RoutineTable

log = logging.getLogger(__name__)

ORDER_BONUS = 0.02   # cosine bonus for the eight-count that follows (or repeats) the last match


class GaussianScoreHead:
    """mu(x) = w_mu.x + b_mu, log sigma^2(x) = w_s.x + b_s, on standardised targets."""

    def __init__(self, params: dict):
        self.w_mu = np.asarray(params["w_mu"], np.float32)
        self.b_mu = float(params["b_mu"])
        self.w_s = np.asarray(params["w_s"], np.float32)
        self.b_s = float(params["b_s"])
        self.y_mean = float(params["y_mean"])
        self.y_std = float(params["y_std"])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_2d(np.asarray(x, np.float32))
        mu = x @ self.w_mu + self.b_mu
        log_var = np.clip(x @ self.w_s + self.b_s, -12, 8)
        return mu * self.y_std + self.y_mean, np.exp(0.5 * log_var) * self.y_std

    @staticmethod
    def fit(x: np.ndarray, y: np.ndarray, alpha: float = 0.5, beta: float = 0.5, l2: float = 1e-3,
            steps: int = 1500, lr: float = 0.02, seed: int = 0) -> dict:
        """Minimise DanceMVP's loss with Adam (full batch). Returns the parameters as plain lists."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        y_mean, y_std = float(y.mean()), float(y.std() or 1.0)
        t = (y - y_mean) / y_std
        n, d = x.shape
        rng = np.random.default_rng(seed)
        theta = [rng.normal(0, 0.01, d), np.zeros(1), np.zeros(d), np.zeros(1)]
        m = [np.zeros_like(p) for p in theta]
        v = [np.zeros_like(p) for p in theta]
        b1, b2 = 0.9, 0.999
        for step in range(1, steps + 1):
            w_mu, b_mu, w_s, b_s = theta
            mu = x @ w_mu + b_mu
            s = np.clip(x @ w_s + b_s, -12, 8)
            inv = np.exp(-s)
            r = t - mu
            # dL/dmu = -2 alpha inv r / n ; dL/ds = (-alpha inv r^2 + beta) / n
            g_mu = -2 * alpha * inv * r / n
            g_s = (-alpha * inv * r * r + beta) / n
            grads = [x.T @ g_mu + 2 * l2 * w_mu, np.array([g_mu.sum()]), x.T @ g_s + 2 * l2 * w_s,
                     np.array([g_s.sum()])]
            for i, g in enumerate(grads):
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                theta[i] = theta[i] - lr * (m[i] / (1 - b1 ** step)) / (np.sqrt(v[i] / (1 - b2 ** step)) + 1e-8)
        w_mu, b_mu, w_s, b_s = theta
        mu = x @ w_mu + b_mu
        s = np.clip(x @ w_s + b_s, -12, 8)
        loss = float(np.mean(alpha * np.exp(-s) * (t - mu) ** 2 + beta * s))
        return {"w_mu": w_mu.astype(np.float32).tolist(), "b_mu": float(b_mu[0]),
                "w_s": w_s.astype(np.float32).tolist(), "b_s": float(b_s[0]),
                "y_mean": y_mean, "y_std": y_std, "n": int(n), "loss": loss, "alpha": alpha, "beta": beta}


def fit_gaussian(gallery: Gallery, min_scored: int = 10) -> dict | None:
    rows = [i for i, r in enumerate(gallery.refs) if math.isfinite(r.score)]
    if len(rows) < min_scored:
        return None
    y = np.array([gallery.refs[i].score for i in rows])
    params = GaussianScoreHead.fit(gallery.embeddings[rows], y)
    log.info("gaussian score head: %d scored references, loss %.3f", len(rows), params["loss"])
    return params


def routine_match(table: RoutineTable, embedding: np.ndarray, last: int | None = None) -> tuple[int, float, float]:
    """(matched eight-count p, cosine c, score 0..100) of one window against one routine."""
    c = table.means @ np.asarray(embedding, np.float32)
    bonus = np.zeros_like(c)
    if last is not None:
        bonus[(table.phrases == last) | (table.phrases == last + 1)] = ORDER_BONUS
    j = int(np.argmax(c + bonus))
    return int(table.phrases[j]), float(c[j]), routine_score(float(c[j]), float(table.self_cos[j]),
                                                              float(table.other_cos[j]))


def routine_score(c: float, self_cos: float, other_cos: float) -> float:
    span = self_cos - other_cos
    if span <= 1e-6:
        return 100.0 if c >= self_cos else 0.0
    return float(100.0 * min(max((c - other_cos) / span, 0.0), 1.0))


MEANINGS = {
    "gaussian_mu": "expected rater score of this window, on the enrolled scores' scale (DanceMVP Gaussian head)",
    "gaussian_sigma": "predicted standard deviation of that score (aleatoric uncertainty)",
    "routine_similarity": "0-100: 100 = as close to the teacher's eight-count as the teacher's own repetitions, "
                          "0 = no closer than a different eight-count of the routine",
    "routine_cosine": "cosine between the window and the teacher's matched eight-count mean",
    "routine_phrase": "index of the teacher's eight-count the window matched",
    "eightcount_similarity": "mean routine_similarity of the windows in the current eight-count so far",
    "beat_alignment": "share of motion intensity peaks within 0.2 s of a music peak (from the edge)",
}
