"""Scores: DanceMVP's Gaussian head and the per-eight-count routine similarity."""
from __future__ import annotations

import numpy as np

from cloud.gallery import Gallery
from cloud.index import normalize
from cloud.records import Reference
from cloud.scores import GaussianScoreHead, fit_gaussian, routine_match, routine_score


def test_gaussian_head_learns_mean_and_spread():
    rng = np.random.default_rng(0)
    d, n = 16, 3000
    x = normalize(rng.normal(size=(n, d)))
    w = rng.normal(size=d)
    mu_true = 5 + 3 * (x @ w)
    sigma_true = 0.6 * np.exp(1.5 * x[:, 0] * np.sqrt(d))    # raters disagree more on some windows
    y = mu_true + sigma_true * rng.normal(size=n)
    head = GaussianScoreHead(GaussianScoreHead.fit(x, y))
    mu, sigma = head.predict(x)
    assert np.corrcoef(mu, mu_true)[0, 1] > 0.9
    assert np.corrcoef(np.log(sigma), np.log(sigma_true))[0, 1] > 0.8
    assert 0.7 < np.median(sigma / sigma_true) < 1.4
    # the loss is DanceMVP's: the NLL of the truth is lower than with a constant sigma
    def nll(m, s):
        return np.mean(0.5 * (y - m) ** 2 / s ** 2 + np.log(s))
    assert nll(mu, sigma) < nll(mu, np.full(n, np.std(y - mu)))


def test_fit_gaussian_needs_scored_references():
    x = normalize(np.random.default_rng(1).normal(size=(30, 8)))
    refs = [Reference(f"r{i}", "a") for i in range(30)]
    assert fit_gaussian(Gallery(x, refs)) is None
    refs = [Reference(f"r{i}", "a", score=float(i % 10)) for i in range(30)]
    p = fit_gaussian(Gallery(x, refs))
    assert p and p["n"] == 30


def test_routine_score_meaning():
    assert routine_score(0.95, 0.95, 0.5) == 100.0            # as close as the teacher's own repetitions
    assert routine_score(0.50, 0.95, 0.5) == 0.0              # no closer than another eight-count
    assert abs(routine_score(0.725, 0.95, 0.5) - 50.0) < 1e-9
    assert routine_score(0.2, 0.95, 0.5) == 0.0 and routine_score(1.0, 0.95, 0.5) == 100.0


def test_routine_similarity_on_real_motion(ballroom):
    """Teacher: one waltz performance enrolled as a routine. The same performance, later windows of each
    eight-count, scores high; a rumba scores lower; matches follow the routine's order."""
    from real_embeddings import make_gallery

    teacher = next(s for s in ballroom if s["name"] == "DANCE_W_1")
    g = make_gallery([teacher], routine_of=lambda s: "waltz-routine")
    table = g.routine_tables["waltz-routine"]
    assert len(table.phrases) >= 4 and np.all(table.self_cos > table.other_cos)
    same = [routine_match(table, e)[2] for e in teacher["emb"]]
    rumba = next(s for s in ballroom if s["style"] == "rumba")
    other = [routine_match(table, e)[2] for e in rumba["emb"]]
    assert np.mean(same) > np.mean(other) + 20
    # in order: each window of the teacher matches its own eight-count (or a neighbour) more often than
    # not; chance is ~3/14 (14 eight-counts). A waltz repeats its box step, so real embeddings of
    # different eight-counts are close: the shipped encoder gets ~0.58 here.
    mids = teacher["times"].mean(1)
    matched = []
    last = None
    for e in teacher["emb"]:
        p, _, _ = routine_match(table, e, last)
        matched.append(p)
        last = p
    assert np.mean(np.abs(np.array(matched) - (mids // 4.0)) <= 1) > 0.5
