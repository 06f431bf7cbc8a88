"""Augmentations for windows of 2D COCO-17 keypoints (numpy, batched).

Geometry (mirror, scale/aspect, in-plane rotation, perspective) acts on pixel keypoints before
normalization; time (crop, speed) is applied by the sampler in `train.py`; joint and frame
dropout act on the normalised features. The noise imitates a single-frame 2D pose estimator
(BlazePose-like) on live video: temporally correlated jitter that grows towards the extremities,
rare outlier jumps and rare left/right limb swaps, all relative to the dancer's size.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from edge.motion.normalize import body_size

FLIP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
# Jitter std as a share of body height: face, shoulders, elbows, wrists, hips, knees, ankles.
JITTER = np.array([0.010, 0.012, 0.012, 0.012, 0.012, 0.012, 0.012, 0.017, 0.017, 0.025, 0.025,
                   0.015, 0.015, 0.018, 0.018, 0.025, 0.025], np.float32)
LIMB_PAIRS = ((7, 8), (9, 10), (13, 14), (15, 16))


def _centre(kp, mask):
    w = mask[..., None, None].astype(np.float32)
    return (kp * w).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)) * kp.shape[2], 1.0)   # (B, 2)


def geometry(kp: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Mirror, scale and aspect, rotation, perspective about each window's centre. kp (B, N, 17, 2)."""
    B = kp.shape[0]
    kp = kp.copy()
    flip = rng.random(B) < 0.5
    kp[flip] = kp[flip][:, :, FLIP]
    c = _centre(kp, mask)[:, None, None, :]
    x = kp - c
    x[flip, ..., 0] *= -1
    size = body_size(kp, mask)[:, None, None]
    ang = np.radians(rng.uniform(-15, 15, B) * strength)
    s = np.exp(rng.uniform(-0.3, 0.3, B) * strength)
    aspect = np.exp(rng.uniform(-0.12, 0.12, B) * strength)
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = (cos * aspect * s)[:, None, None], (-sin * s)[:, None, None]
    c2, d = (sin * aspect * s)[:, None, None], (cos * s)[:, None, None]
    x = np.stack([a * x[..., 0] + b * x[..., 1], c2 * x[..., 0] + d * x[..., 1]], -1)
    # perspective: x' = x / (1 + p . x / size) (a tilted or turned image plane)
    p = rng.uniform(-0.25, 0.25, (B, 1, 1, 2)) * strength
    den = 1.0 + (x * p).sum(-1, keepdims=True) / size[..., None]
    x = x / np.clip(den, 0.5, 2.0)
    return (x + c).astype(np.float32)


def seen_from_behind(kp: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """A share `p` of the windows as a camera behind the dancer sees them: x mirrored, joint
    names kept (unlike `geometry`'s mirror, which is a mirrored dancer). kp (B, N, 17, 2)."""
    if p <= 0:
        return kp
    kp = kp.copy()
    back = rng.random(kp.shape[0]) < p
    kp[back, ..., 0] *= -1.0
    return kp


def estimator_noise(kp: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    B, N = kp.shape[:2]
    size = body_size(kp, mask)[:, None, None, None]
    white = rng.standard_normal((B, N, 17, 2)).astype(np.float32)
    # AR(1), unit variance: estimator errors persist over a few frames
    rho = 0.6
    b0 = np.sqrt(1 - rho ** 2)
    jit = lfilter([b0], [1.0, -rho], white, axis=1, zi=((1 - b0) * white[:, :1]).astype(np.float32))[0]
    level = rng.uniform(0.0, 1.5, (B, 1, 1, 1)) * strength
    out = kp + jit * JITTER[None, None, :, None] * size * level
    jump = rng.random((B, N, 17, 1)) < 0.004 * strength
    out = out + jump * rng.normal(0, 0.12, (B, N, 17, 2)) * size
    swap = rng.random((B, N)) < 0.01 * strength
    if swap.any():
        b, n = np.nonzero(swap)
        a, c = np.array(LIMB_PAIRS)[rng.integers(0, len(LIMB_PAIRS), len(b))].T
        tmp = out[b, n, a].copy()
        out[b, n, a] = out[b, n, c]
        out[b, n, c] = tmp
    return out.astype(np.float32)


def dropout(feats: np.ndarray, mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0):
    """Joint dropout (zero a joint's features) and frame dropout (mask samples, keeping >= 18)."""
    B, N, _ = feats.shape
    feats = feats.reshape(B, N, 17, 2).copy()
    pj = rng.uniform(0, 0.08, (B, 1, 1)) * strength
    drop = rng.random((B, N, 17)) < pj
    feats[drop] = 0.0
    pf = rng.uniform(0, 0.15, (B, 1)) * strength
    fdrop = (rng.random((B, N)) < pf) & mask
    keep_ok = (mask & ~fdrop).sum(1) >= 18
    mask = np.where(keep_ok[:, None], mask & ~fdrop, mask)
    feats = np.where(mask[..., None, None], feats, 0.0)
    return feats.reshape(B, N, 34).astype(np.float32), mask


def temporal_crop(mask: np.ndarray, rng: np.random.Generator, min_keep: float = 0.6) -> np.ndarray:
    """Keep one contiguous run of the real samples (min_keep..100 % of the window)."""
    B, N = mask.shape
    out = mask.copy()
    n_real = mask.sum(1)
    for b in range(B):
        if rng.random() < 0.5 or n_real[b] < 24:
            continue
        keep = int(max(18, round(n_real[b] * rng.uniform(min_keep, 1.0))))
        idx = np.nonzero(mask[b])[0]
        start = rng.integers(0, len(idx) - keep + 1)
        sel = np.zeros(N, bool)
        sel[idx[start:start + keep]] = True
        out[b] &= sel
    return out
