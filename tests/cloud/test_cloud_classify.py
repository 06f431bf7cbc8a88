"""Gallery, index and classifier: exact vs approximate search, real-data accuracy, calibration, Tong's two levels."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cloud.classify import Classifier, ece, fit_classifier
from cloud.gallery import Gallery
from cloud.index import ExactIndex, HnswIndex, build_index, normalize
from cloud.records import Reference
from cloud.settings import ClassifySettings


def clustered(n, dim=64, classes=8, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(classes, dim)))
    y = rng.integers(0, classes, n)
    x = normalize(centres[y] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim) * 3)
    return x, y


def test_exact_index_matches_brute_force():
    x, _ = clustered(500)
    q, _ = clustered(20, seed=1)
    sims, rows = ExactIndex(x).search(q, 7)
    full = q @ x.T
    for i in range(len(q)):
        want = np.argsort(-full[i])[:7]
        assert set(rows[i]) == set(want)
        assert np.all(np.diff(sims[i]) <= 1e-6)
        np.testing.assert_allclose(sims[i], full[i, rows[i]], rtol=1e-5)


def test_hnsw_recall_against_exact(tmp_path):
    x, _ = clustered(5000, seed=2)
    q, _ = clustered(200, seed=3)
    exact = ExactIndex(x).search(q, 10)[1]
    cache = tmp_path / "g.hnsw"
    h = HnswIndex(x, ef=128, cache=cache)
    approx = h.search(q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)])
    assert recall > 0.9
    # the saved index is reused when the vectors are the same
    assert cache.exists()
    again = HnswIndex(x, ef=128, cache=cache).search(q, 10)[1]
    assert np.array_equal(again, approx)
    assert build_index(x, exact_max=1000).kind == "hnsw"
    assert build_index(x, exact_max=10000).kind == "exact"


def test_same_answers_from_exact_and_hnsw_classifiers():
    x, y = clustered(3000, classes=5, seed=4)
    refs = [Reference(f"r{i}", f"s{c}", video=f"v{i // 20}", group=f"g{c % 2}") for i, c in enumerate(y)]
    g = Gallery(x, refs)
    q, _ = clustered(100, classes=5, seed=5)
    a = Classifier(g, index_kind="exact").classify(q)
    g2 = Gallery(x, refs)
    b = Classifier(g2, index_kind="hnsw").classify(q)
    agree = np.mean([ra.style == rb.style for ra, rb in zip(a, b)])
    assert agree > 0.97


def test_gallery_roundtrip(tmp_path, ballroom_gallery):
    g, _ = ballroom_gallery
    g.save(tmp_path / "g.npz")
    h = Gallery.load(tmp_path / "g.npz")
    assert len(h) == len(g) and h.styles == g.styles
    np.testing.assert_array_equal(h.embeddings, g.embeddings)
    assert h.params["temperature"] == g.params["temperature"]
    import dataclasses

    def fields(r):   # every field, NaN scores compared as equal
        return {k: ("nan" if k == "score" and math.isnan(v) else v) for k, v in dataclasses.asdict(r).items()}

    assert [fields(r) for r in h.refs] == [fields(r) for r in g.refs]
    assert any(r.routine for r in g.refs) and any(r.video for r in g.refs)   # the fields are really there


def test_damaged_gallery_files_give_one_clear_error(tmp_path, ballroom_gallery):
    """A truncated file, a foreign .npz, or a damaged reference table: BadInputError naming the file
    (the API answers 400 and `cloud serve` prints one line), never a KeyError or BadZipFile."""
    import json

    from dancewire.errors import BadInputError

    g, _ = ballroom_gallery
    good = tmp_path / "g.npz"
    g.save(good)
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    for name, meta in (("list", [1]), ("norefs", {"format": "dancewire-gallery/1"}),
                       ("short", {"format": "dancewire-gallery/1", "refs": {"ref_id": ["a", "b"], "style": ["x"]}})):
        np.savez(tmp_path / f"{name}.npz", embeddings=np.zeros((2, 4), np.float32),
                 meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    for name in ("truncated", "foreign", "list", "norefs", "short"):
        with pytest.raises(BadInputError, match=name):
            Gallery.load(tmp_path / f"{name}.npz")
    assert len(Gallery.load(good)) == len(g)


def test_real_ballroom_windows_classified(ballroom_gallery):
    """Unseen ballroom performances (one per style), real mocap through the shipped encoder: each
    performance's majority label is its style, and single windows are right far above chance (1/3):
    0.6 of all holdout windows, and above 0.4 in each performance (both encoders in the repository
    give 0.70 overall; their weakest performance, a cha-cha, 0.50 and 0.57)."""
    g, holdout = ballroom_gallery
    clf = Classifier(g)
    right = []
    for s in holdout:
        res = clf.classify(s["emb"])
        labels = [r.style for r in res]
        hits = [x == s["style"] for x in labels]
        right += hits
        acc = np.mean(hits)
        assert max(set(labels), key=labels.count) == s["style"] and acc > 0.4, (s["name"], acc)
        for r in res[:5]:
            assert abs(sum(r.probs.values()) - 1) < 1e-6
            assert 0 < r.confidence <= 1
            # Tong's two levels: nearest reference videos and nearest groups, best first, no repeats
            assert 1 <= len(r.nearest) <= 3 and len({n.ref_id for n in r.nearest}) == len(r.nearest)
            assert [n.score for n in r.nearest] == sorted([n.score for n in r.nearest], reverse=True)
            assert r.nearest_groups and r.nearest_groups[0].label.endswith("-crew")
            assert r.nearest[0].ref_id not in {h["name"] for h in holdout}
    assert np.mean(right) >= 0.6, np.mean(right)


def test_fitted_mixture_on_real_ballroom(ballroom_gallery):
    """The gallery's held-out fit is at least as accurate held out as the configured mixture, and
    so are the unseen performances: the fit generalises beyond the gallery it was made on."""
    g, holdout = ballroom_gallery
    rep = g.params["calibration"]
    assert rep["accuracy"] >= rep["configured_accuracy"]
    configured = Gallery(g.embeddings, g.refs, g.encoder, {"temperature": g.params["temperature"]})

    def accuracy(gallery):
        clf = Classifier(gallery)
        return np.mean([r.style == s["style"] for s in holdout for r in clf.classify(s["emb"])])
    assert accuracy(g) >= accuracy(configured), (g.params["knn_weight"], g.params["knn_temperature"])


def test_calibration_report(ballroom_gallery):
    g, _ = ballroom_gallery
    rep = g.params["calibration"]
    assert rep["method"] == "leave-one-video-out" and rep["samples"] > 100
    assert rep["nll_after"] <= rep["nll_before"] + 1e-9
    assert 0.05 <= rep["temperature"] <= 20
    assert rep["ece_after"] < 0.15


def test_temperature_fixes_overconfidence():
    """A deliberately over-sharp classifier gets T > 1 and a lower ECE."""
    x, y = clustered(1500, classes=4, spread=1.6, seed=7)
    refs = [Reference(f"r{i}", f"s{c}", video=f"v{i // 10}") for i, c in enumerate(y)]
    g = Gallery(x, refs)
    sharp = ClassifySettings(knn_temperature=0.005, proto_temperature=0.005)
    params, rep = fit_classifier(g, sharp)
    assert params["temperature"] > 1.0
    assert rep["ece_after"] < rep["ece_before"]


def styles_of_figures(n_videos, figures, spread, per_video, centres_seed=0, seed=0, styles=4, dim=32):
    """Windows of `styles` styles, each danced as `figures` distinct figures (clusters); every video
    (`per_video` windows) is one figure with its own offset. Same `centres_seed`: same figures."""
    centres = normalize(np.random.default_rng(centres_seed).normal(size=(styles * figures, dim)))
    rng = np.random.default_rng(seed)
    fig = rng.integers(0, styles * figures, n_videos).repeat(per_video)
    offset = rng.normal(size=(n_videos, dim)).repeat(per_video, 0)
    x = normalize(centres[fig] + spread / np.sqrt(dim) * (offset + rng.normal(size=offset.shape)))
    return x, fig % styles, np.arange(len(fig)) // per_video


@pytest.mark.parametrize("figures,spread,per_video,prefer", [(3, 0.8, 20, "knn"), (1, 3.0, 5, "prototypes")])
def test_mixture_fitted_to_the_gallery(figures, spread, per_video, prefer):
    """Styles danced as several figures are several clusters: their mean lies between them, the kNN
    vote must lead. Few noisy windows per video around one centre: their mean is the better
    summary, the prototypes must lead. The held-out fit finds which, and the fitted classifier
    classifies fresh videos at least as well as the configured 50/50 mixture and better than the
    wrong extreme."""
    x, y, v = styles_of_figures(100 if per_video == 20 else 400, figures, spread, per_video)
    q, qy, _ = styles_of_figures(100, figures, spread, 10, seed=1)
    refs = [Reference(f"r{i}", f"s{c}", video=f"v{vid}") for i, (c, vid) in enumerate(zip(y, v))]

    def accuracy(params):
        res = Classifier(Gallery(x, refs, params=params)).classify(q)
        return np.mean([r.style == f"s{c}" for r, c in zip(res, qy)])

    params, rep = fit_classifier(Gallery(x, refs))
    assert rep["samples"] > 500 and len(rep["grid"]) >= 17
    assert rep["accuracy"] >= rep["configured_accuracy"]
    if prefer == "knn":
        assert params["knn_weight"] >= 0.75
        assert accuracy(params) > accuracy({"knn_weight": 0.0}) + 0.05
    else:
        assert params["knn_weight"] <= 0.25
        assert accuracy(params) > accuracy({"knn_weight": 1.0}) + 0.05
    assert accuracy(params) >= accuracy({}) - 0.01


def test_unfittable_gallery_keeps_the_configured_mixture():
    """One video per style (the seed gallery's shape): nothing can be held out."""
    x, y, _ = styles_of_figures(4, 1, 1.0, 30)
    g = Gallery(x, [Reference(f"r{i}", f"s{c}", video=f"v{c}") for i, c in enumerate(y)])
    assert fit_classifier(g) == ({"temperature": 1.0}, None)
    mine = ClassifySettings(knn_weight=0.3)
    assert Classifier(g, mine).s.knn_weight == 0.3


def test_ece_of_perfectly_calibrated():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=conf.size) < conf
    p = np.stack([conf, 1 - conf], 1)
    y = np.where(correct, 0, 1)
    assert ece(p, y) < 0.02


def test_empty_gallery_gives_no_classification():
    g = Gallery.empty(16)
    assert Classifier(g).classify(np.ones((2, 16))) == [None, None]


def test_encoder_mismatch_refused():
    from dancewire.errors import BadInputError
    x, y = clustered(20, dim=8)
    g = Gallery(x, [Reference(f"r{i}", "a") for i in range(20)], {"hash": "aaa"})
    with pytest.raises(BadInputError):
        g.merged([Reference("n", "b")], x[:1], {"hash": "bbb"})
    h = g.merged([Reference("r0", "b")], x[:1], {"hash": "aaa"})
    assert len(h) == 20 and h.refs[-1].style == "b"


def test_re_enrolling_replaces_an_inputs_references_whatever_its_names_hold():
    """A '#' in a folder name cut the input's id short (take#1/a and take#2/a replaced each other), and
    a gallery enrolled before ids named the folder kept the old references beside the new ones."""
    x, _ = clustered(6, dim=8)
    old = ["perf1/front#0@0.00", "front#1@2.00", "other#0@0.00", "v|take#1/a#0@0.00", "v|take#2/a#0@0.00"]
    g = Gallery(x[:5], [Reference(i, "old") for i in old], {"hash": "aaa"})
    new = ["perf1|cams/front#0@0.00", "front|cams/front#1@2.50", "v|take#1/a#0@0.50"]
    h = g.merged([Reference(i, "new") for i in new], x[:3], {"hash": "aaa"})
    assert sorted((r.ref_id, r.style) for r in h.refs) == sorted(
        [("other#0@0.00", "old"), ("v|take#2/a#0@0.00", "old")] + [(i, "new") for i in new])


@pytest.mark.parametrize("case", ["rows", "dim", "nan"])
def test_a_damaged_gallery_is_refused_with_a_clear_error(case):
    """3 x 8 embeddings for 6 references loaded as 6 of dim 4; 5 for 3 was a bare ValueError (a 500 on
    /api/gallery/reload); one NaN made every classification NaN."""
    from dancewire.errors import BadInputError

    x, _ = clustered(6, dim=8)
    refs = [Reference(f"r{i}", "a") for i in range(6)]
    bad = {"rows": (x[:3], refs, {}), "dim": (x, refs, {"dim": 16}),
           "nan": (np.where(np.arange(48).reshape(6, 8) == 5, np.nan, x), refs, {})}[case]
    with pytest.raises(BadInputError):
        Gallery(*bad)
