"""Training augmentations that change what counts as "the same motion"."""
from __future__ import annotations

import numpy as np

from edge.motion import augment as aug
from edge.motion.normalize import ban


def test_seen_from_behind_mirrors_x_and_keeps_joint_names():
    rng = np.random.default_rng(0)
    kp = rng.uniform(100, 500, (64, 60, 17, 2)).astype(np.float32)
    out = aug.seen_from_behind(kp, np.random.default_rng(1), 0.5)
    back = out[:, 0, 0, 0] < 0
    assert 16 < back.sum() < 48                                      # about half of the windows
    assert np.array_equal(out[back][..., 0], -kp[back][..., 0]) and np.array_equal(out[back][..., 1], kp[back][..., 1])
    assert np.array_equal(out[~back], kp[~back])
    # after normalization the back view is the front view mirrored about the hip, joint for joint
    mask = np.ones((64, 60), bool)
    f, b = ban(kp, mask).reshape(64, 60, 17, 2), ban(out, mask).reshape(64, 60, 17, 2)
    assert np.allclose(b[back][..., 0], -f[back][..., 0], atol=1e-5) and np.allclose(b[back][..., 1], f[back][..., 1], atol=1e-5)
    # p = 0 draws nothing from the generator: default training runs keep their random stream
    g = np.random.default_rng(2)
    assert aug.seen_from_behind(kp, g, 0.0) is kp and g.random() == np.random.default_rng(2).random()
