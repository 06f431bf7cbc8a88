"""Window normalization: Tong's (first-frame reference joint) and Ban's (relocate, then scale by body size).

Both take keypoints (..., N, 17, C>=2) in pixels and a mask (..., N) of real samples and
return features (..., N, 34) float32 with the masked samples set to zero, ready for the encoder.
"""
from __future__ import annotations

import numpy as np

NOSE, L_SH, R_SH, L_HIP, R_HIP, L_ANK, R_ANK = 0, 5, 6, 11, 12, 15, 16
TONG_DIVISOR = 100.0   # Tong feeds raw pixel offsets; /100 only keeps the numbers in a trainable range
METHODS = ("ban", "tong")


def _first_valid(mask: np.ndarray) -> np.ndarray:
    """Index of the first real sample along the last axis (0 when none)."""
    return np.argmax(mask, axis=-1)


def _take_frame(kp: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """kp (..., N, 17, 2), idx (...) -> (..., 17, 2)."""
    return np.take_along_axis(kp, idx[..., None, None, None], axis=-3)[..., 0, :, :]


def tong(kp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tong: every keypoint relative to keypoint 16 (right ankle) in the first real frame (no scaling)."""
    xy = np.asarray(kp, np.float32)[..., :2]
    mask = np.asarray(mask, bool)
    ref = _take_frame(xy, _first_valid(mask))[..., R_ANK, :]          # (..., 2)
    out = (xy - ref[..., None, None, :]) / TONG_DIVISOR
    out = np.where(mask[..., None, None], out, 0.0)
    return out.reshape(out.shape[:-2] + (34,)).astype(np.float32)


def body_size(kp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Ban's dancer size: the largest nose-to-ankle distance over the real frames (fallback: 3x torso)."""
    xy = np.asarray(kp, np.float32)[..., :2]
    mask = np.asarray(mask, bool)
    ankle = 0.5 * (xy[..., L_ANK, :] + xy[..., R_ANK, :])
    height = np.linalg.norm(xy[..., NOSE, :] - ankle, axis=-1)                     # (..., N)
    torso = np.linalg.norm(0.5 * (xy[..., L_SH, :] + xy[..., R_SH, :])
                           - 0.5 * (xy[..., L_HIP, :] + xy[..., R_HIP, :]), axis=-1)
    size = np.maximum(height, 3.0 * torso)       # crouching or cropped dancers: the torso still holds
    size = np.where(mask, size, 0.0).max(axis=-1)
    return np.maximum(size, 1e-3)


def ban(kp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Ban: relocate (hip centre of the first real frame to the origin), then divide by the dancer size."""
    xy = np.asarray(kp, np.float32)[..., :2]
    mask = np.asarray(mask, bool)
    first = _take_frame(xy, _first_valid(mask))
    ref = 0.5 * (first[..., L_HIP, :] + first[..., R_HIP, :])
    size = body_size(xy, mask)
    out = (xy - ref[..., None, None, :]) / size[..., None, None, None]
    out = np.where(mask[..., None, None], out, 0.0)
    return out.reshape(out.shape[:-2] + (34,)).astype(np.float32)


def normalize(kp: np.ndarray, mask: np.ndarray, method: str = "ban") -> np.ndarray:
    if method == "ban":
        return ban(kp, mask)
    if method == "tong":
        return tong(kp, mask)
    raise ValueError(f"unknown normalization {method!r}; choose one of {METHODS}")


def fill_gaps(feats: np.ndarray, mask: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Interior gaps of at most `max_gap` samples filled by linear interpolation between the real
    samples on either side, and marked real; leading and trailing gaps, and longer ones, stay
    masked. feats (B, N, D), mask (B, N). A dropped camera frame or a missed detection then reads
    as the motion around it, not as a zero pose with zero speed (which a temporal convolution,
    unlike masked attention, cannot ignore)."""
    feats = np.asarray(feats, np.float32)
    mask = np.asarray(mask, bool)
    if max_gap <= 0 or feats.size == 0:
        return feats, mask
    B, N = mask.shape
    pos = np.broadcast_to(np.arange(N), (B, N))
    prev = np.maximum.accumulate(np.where(mask, pos, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(mask, pos, N)[:, ::-1], axis=1)[:, ::-1]
    fill = ~mask & (prev >= 0) & (nxt < N) & (nxt - prev - 1 <= max_gap)
    if not fill.any():
        return feats, mask
    lo, hi = np.clip(prev, 0, N - 1), np.clip(nxt, 0, N - 1)
    w = np.where(fill, (pos - lo) / np.maximum(hi - lo, 1), 0.0)[..., None].astype(np.float32)
    interp = (1 - w) * np.take_along_axis(feats, lo[..., None], 1) + w * np.take_along_axis(feats, hi[..., None], 1)
    return np.where(fill[..., None], interp, feats).astype(np.float32), mask | fill
