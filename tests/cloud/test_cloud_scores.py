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


def test_routine_references_are_on_a_live_windows_scale():
    """A routine of three eight-counts, each a noisy move: the table's "other" reference is how close the
    teacher's windows of the other eight-counts come to a phrase's mean, so a window doing another part
    of the routine scores about 0 and a window doing this part about 100 (a mean-to-mean "other" would sit
    above the windows' own cosines and score a correct repetition near 0)."""
    rng = np.random.default_rng(3)
    d, per = 32, 40
    moves = normalize(rng.normal(size=(3, d)))
    moves[1] = normalize(moves[0] + 0.8 * moves[1])          # eight-counts 0 and 1 are alike, as in a waltz
    def windows(p, n):
        return normalize(moves[p] + 0.12 * rng.normal(size=(n, d)))
    refs = [Reference(f"t{p}-{k}", "waltz", routine="r", phrase=p) for p in range(3) for k in range(per)]
    g = Gallery(np.concatenate([windows(p, per) for p in range(3)]), refs)
    t = g.routine_tables["r"]
    assert np.all(t.self_cos > t.other_cos)
    for p in range(3):
        others = np.concatenate([g.embeddings[(np.arange(3 * per) // per) == q] for q in range(3) if q != p])
        assert np.isclose(t.other_cos[p], (others @ t.means[p]).mean(), atol=1e-6)
    again = windows(1, 50)                                    # a dancer repeating eight-count 1
    assert np.median([routine_score(float(t.means[1] @ e), t.self_cos[1], t.other_cos[1]) for e in again]) > 40
    wrong = windows(2, 50)                                    # ... and one dancing eight-count 2 instead
    assert np.median([routine_score(float(t.means[1] @ e), t.self_cos[1], t.other_cos[1]) for e in wrong]) == 0.0


def test_routine_similarity_on_real_motion(ballroom):
    """Teacher: one waltz performance enrolled as a routine. The same performance, later windows of each
    eight-count, scores high; a rumba scores lower; matches follow the routine's order."""
    from real_embeddings import make_gallery

    teacher = next(s for s in ballroom if s["name"] == "DANCE_W_1")
    g = make_gallery([teacher], routine_of=lambda s: "waltz-routine")
    table = g.routine_tables["waltz-routine"]
    # the teacher's repetitions of an eight-count (each against the mean of the others) are closer than
    # its other eight-counts, for nearly all of them (a waltz repeats its box step)
    assert len(table.phrases) >= 4 and np.mean(table.self_cos > table.other_cos) >= 0.8
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


def test_the_routine_score_does_not_depend_on_how_often_the_teacher_repeated_an_eight_count():
    """self_cos averaged each repetition's cosine to a mean that held it: the fewer the repetitions,
    the closer they looked, so a student exactly as close as the teacher scored 69 on an eight-count
    enrolled once (self_cos 1.0), 73 with two and 98 with forty."""
    rng = np.random.default_rng(0)
    dim = 32
    centres = [normalize(rng.normal(size=dim)) for _ in range(3)]
    medians = {}
    for n in (2, 5, 40):
        refs, embs = [], []
        for p, c in enumerate(centres):
            for k in range(n if p == 0 else 10):
                refs.append(Reference(f"t{p}-{k}", "x", routine="r", video="t", phrase=p))
                embs.append(normalize(c + 0.35 * rng.normal(size=dim) / np.sqrt(dim)))
        table = Gallery(np.stack(embs).astype(np.float32), refs).routine_tables["r"]
        student = [normalize(centres[0] + 0.35 * rng.normal(size=dim) / np.sqrt(dim)) for _ in range(300)]
        medians[n] = float(np.median([routine_match(table, e)[2] for e in student]))
    assert max(medians.values()) - min(medians.values()) < 12, medians
    # an eight-count enrolled once takes the routine's typical spread, not a perfect 1.0
    refs = [Reference("a", "x", routine="r", video="t", phrase=0)] + \
           [Reference(f"b{k}", "x", routine="r", video="t", phrase=1) for k in range(5)]
    e = np.stack([centres[0]] + [normalize(centres[1] + 0.35 * rng.normal(size=dim) / np.sqrt(dim)) for _ in range(5)])
    table = Gallery(e.astype(np.float32), refs).routine_tables["r"]
    assert table.self_cos[0] == table.self_cos[1] < 1.0
