"""Normalization: Tong (first-frame right ankle at the origin) and Ban (relocate, scale by body size)."""
from __future__ import annotations

import numpy as np

from edge.motion.normalize import ban, normalize, tong


def _pose_seq(rng, N=60):
    base = rng.normal(0, 30, (17, 2)) + [500, 400]
    base[0] = [500, 250]                       # nose high
    base[15], base[16] = [480, 600], [520, 600]  # ankles low
    kp = base[None] + rng.normal(0, 5, (N, 17, 2))
    return np.concatenate([kp, np.ones((N, 17, 1))], -1).astype(np.float32)


def test_tong_reference_joint():
    rng = np.random.default_rng(0)
    kp, mask = _pose_seq(rng), np.ones(60, bool)
    mask[:3] = False
    f = tong(kp, mask).reshape(60, 17, 2)
    assert np.allclose(f[3, 16], 0.0, atol=1e-6)      # first real frame's right ankle
    assert np.all(f[:3] == 0)


def test_ban_is_invariant_to_camera_distance_and_position():
    rng = np.random.default_rng(1)
    kp, mask = _pose_seq(rng), np.ones(60, bool)
    far = kp.copy()
    far[..., :2] = kp[..., :2] * 0.37 + [123.0, -45.0]     # further away, elsewhere in a smaller image
    assert np.allclose(ban(kp, mask), ban(far, mask), atol=1e-5)
    assert not np.allclose(tong(kp, mask), tong(far, mask), atol=1e-2)


def test_batched_and_masked():
    rng = np.random.default_rng(2)
    kp = np.stack([_pose_seq(rng), _pose_seq(rng)])
    mask = np.ones((2, 60), bool)
    mask[1, 50:] = False
    for method in ("ban", "tong"):
        f = normalize(kp, mask, method)
        assert f.shape == (2, 60, 34) and f.dtype == np.float32
        assert np.all(f[1, 50:] == 0)
        assert np.allclose(f[0], normalize(kp[0], mask[0], method))


def test_fill_gaps_interpolates_short_interior_gaps_only():
    from edge.motion.normalize import fill_gaps

    t = np.arange(12, dtype=np.float32)
    feats = np.stack([t, -2 * t], -1)[None]                  # (1, 12, 2): linear motion
    mask = np.ones((1, 12), bool)
    mask[0, [0, 3, 4, 7, 8, 9, 11]] = False                  # leading, gap of 2, gap of 3, trailing
    f, m = fill_gaps(np.where(mask[..., None], feats, 0), mask, max_gap=2)
    assert m[0].tolist() == [False, True, True, True, True, True, True, False, False, False, True, False]
    np.testing.assert_allclose(f[0, 3:5], feats[0, 3:5], atol=1e-6)   # the line, recovered
    assert np.all(f[0, [0, 7, 8, 9, 11]] == 0)                        # longer and end gaps untouched
    same_f, same_m = fill_gaps(feats, np.ones((1, 12), bool), max_gap=2)
    assert same_m.all() and np.array_equal(same_f, feats)
