"""Image and video degradations for the robustness benchmark (Table 5 of the classification paper).

Image functions take a BGR uint8 image (H, W, 3) and return a new one of the same dtype;
video functions take a sequence and return the degraded sequence. Randomness comes only from
the `rng` passed in, so a seed reproduces a run.

- `gaussian_noise`: additive white noise N(0, sigma^2) in 8-bit grey levels (paper: sigma 10 and 30).
- `motion_blur`: horizontal line kernel of `length` pixels (camera shake streaks, as in the paper).
- `low_light`: brightness scaling of a gamma-darkened image plus sensor noise (paper: 30 % light).
- `resample`: a second camera: downscale to `low_height` rows, then upscale to `out_height` rows.
- `h264_roundtrip`: re-encode with libx264 at constant rate factor `crf` (0 best .. 51 worst) and decode.
- `drop_frames`: remove round(fraction * n) randomly chosen items, keeping order (and so timestamps).
"""
from __future__ import annotations

import io
from typing import Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np

from dancewire.errors import BadInputError

T = TypeVar("T")


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BadInputError(f"expected a BGR uint8 image (H, W, 3), got {image.dtype} {image.shape}")


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    _check_image(image)
    noisy = image.astype(np.float32) + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def motion_blur(image: np.ndarray, length: int) -> np.ndarray:
    _check_image(image)
    if length < 1:
        raise BadInputError(f"motion blur length must be >= 1 pixel, got {length}")
    kernel = np.full((1, int(length)), 1.0 / int(length), np.float32)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def low_light(image: np.ndarray, brightness: float, rng: np.random.Generator, gamma: float = 1.5,
              sigma: float = 3.0) -> np.ndarray:
    """255 * brightness * (image / 255) ** gamma + N(0, sigma^2): a dim scene with a noisier sensor."""
    _check_image(image)
    if not 0.0 < brightness <= 1.0:
        raise BadInputError(f"low-light brightness must be in (0, 1], got {brightness}")
    dim = 255.0 * brightness * (image.astype(np.float32) / 255.0) ** gamma
    dim += np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(dim), 0, 255).astype(np.uint8)


def resample(image: np.ndarray, low_height: int, out_height: int) -> np.ndarray:
    """Downscale to `low_height` rows (area averaging), then upscale to `out_height` rows (bilinear)."""
    _check_image(image)
    h, w = image.shape[:2]
    if low_height < 8 or out_height < 8:
        raise BadInputError(f"resample heights must be >= 8 rows, got {low_height} and {out_height}")
    low = cv2.resize(image, (max(1, round(w * low_height / h)), low_height), interpolation=cv2.INTER_AREA)
    return cv2.resize(low, (max(1, round(w * out_height / h)), out_height), interpolation=cv2.INTER_LINEAR)


def h264_roundtrip(images: Iterable[np.ndarray], crf: int, fps: float = 25.0) -> Iterator[np.ndarray]:
    """Encode `images` (BGR, one size) to an in-memory H.264 MP4 at `crf`, then decode them one by one.

    Odd widths or heights are padded by one edge pixel for yuv420p and cropped again on decode.
    """
    import av

    if not 0 <= crf <= 51:
        raise BadInputError(f"libx264 CRF must be in 0..51, got {crf}")
    buf = io.BytesIO()
    shape = None
    n_in = 0
    with av.open(buf, mode="w", format="mp4") as out:
        stream = None
        for image in images:
            _check_image(image)
            if shape is None:
                shape = image.shape
                stream = out.add_stream("libx264", rate=max(1, round(fps)))
                stream.width, stream.height = shape[1] + shape[1] % 2, shape[0] + shape[0] % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(int(crf)), "preset": "veryfast"}
            elif image.shape != shape:
                raise BadInputError(f"h264_roundtrip: frame size changed from {shape} to {image.shape}")
            padded = np.pad(image, ((0, shape[0] % 2), (0, shape[1] % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="bgr24")):
                out.mux(packet)
            n_in += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    if n_in == 0:
        return
    buf.seek(0)
    with av.open(buf, mode="r") as inp:
        for vf in inp.decode(video=0):
            yield vf.to_ndarray(format="bgr24")[:shape[0], :shape[1]]


def drop_frames(frames: Sequence[T], fraction: float, rng: np.random.Generator) -> list[T]:
    """Keep all but round(fraction * n) randomly chosen frames, in their original order."""
    if not 0.0 <= fraction < 1.0:
        raise BadInputError(f"drop fraction must be in [0, 1), got {fraction}")
    n = len(frames)
    drop = rng.choice(n, size=int(round(fraction * n)), replace=False) if n else np.zeros(0, int)
    keep = np.ones(n, bool)
    keep[drop] = False
    return [f for f, k in zip(frames, keep) if k]
