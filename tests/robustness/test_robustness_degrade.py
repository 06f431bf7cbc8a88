"""Degradations of the robustness benchmark, on real frames of the shared videos."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import degrade
from dancewire.errors import BadInputError
from edge.records import Frame
from edge.sources.video import VideoFileSource


@pytest.fixture(scope="module")
def dance_frames(shared_data) -> list[Frame]:
    return list(VideoFileSource(shared_data / "video" / "qengineering_Dance.mp4", max_frames=12).frames())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def _hf_energy(image: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    return float(np.mean(cv2.Laplacian(grey, cv2.CV_64F) ** 2))


@pytest.mark.parametrize("sigma", [10.0, 30.0])
def test_noise_has_the_stated_sigma(dance_frames, sigma):
    image = dance_frames[0].image
    noisy = degrade.gaussian_noise(image, sigma, np.random.default_rng(1))
    assert noisy.dtype == np.uint8 and noisy.shape == image.shape
    diff = noisy.astype(np.float64) - image
    mid = (image >= 3 * sigma) & (image <= 255 - 3 * sigma)      # away from clipping
    assert mid.sum() > 10_000
    assert abs(diff[mid].mean()) < 0.5
    assert diff[mid].std() == pytest.approx(sigma, rel=0.03)


def test_noise_is_reproducible_with_a_seed(dance_frames):
    image = dance_frames[0].image
    a = degrade.gaussian_noise(image, 10, np.random.default_rng(7))
    b = degrade.gaussian_noise(image, 10, np.random.default_rng(7))
    c = degrade.gaussian_noise(image, 10, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_blur_reduces_high_frequency_energy(dance_frames):
    image = dance_frames[0].image
    e0 = _hf_energy(image)
    e9 = _hf_energy(degrade.motion_blur(image, 9))
    e25 = _hf_energy(degrade.motion_blur(image, 25))
    assert e25 < e9 < 0.9 * e0
    # a horizontal streak: columns are averaged, so horizontal detail goes first
    blurred = degrade.motion_blur(image, 25).astype(np.float64)
    gx = np.mean(np.abs(np.diff(blurred, axis=1))) / np.mean(np.abs(np.diff(image.astype(np.float64), axis=1)))
    gy = np.mean(np.abs(np.diff(blurred, axis=0))) / np.mean(np.abs(np.diff(image.astype(np.float64), axis=0)))
    assert gx < gy
    assert np.array_equal(degrade.motion_blur(image, 1), image)


def test_high_crf_lowers_psnr_and_keeps_frames(dance_frames):
    images = [f.image[:, :513] for f in dance_frames]          # odd width: padded and cropped again
    psnr = {}
    for crf in (18, 35, 51):
        out = list(degrade.h264_roundtrip(images, crf, fps=25))
        assert len(out) == len(images)
        assert all(o.shape == i.shape and o.dtype == np.uint8 for o, i in zip(out, images))
        psnr[crf] = np.mean([_psnr(i, o) for i, o in zip(images, out)])
    assert psnr[18] > psnr[35] > psnr[51]
    assert psnr[18] > 35 and psnr[51] < 30


def test_low_light_darkens_by_the_stated_factor(dance_frames):
    image = dance_frames[0].image
    rng = np.random.default_rng(3)
    ratio = {b: degrade.low_light(image, b, rng).mean() / image.mean() for b in (0.3, 0.1)}
    expected = 0.3 * np.mean((image / 255.0) ** 1.5) * 255 / image.mean()
    assert ratio[0.3] == pytest.approx(expected, rel=0.05)
    assert ratio[0.1] < ratio[0.3] < 0.3


def test_resample_keeps_aspect_and_loses_detail(dance_frames):
    image = dance_frames[0].image                               # 514 x 496
    out = degrade.resample(image, 360, 1080)
    assert out.shape[0] == 1080 and out.shape[1] == round(514 * 1080 / 496)
    direct = cv2.resize(image, (out.shape[1], 1080), interpolation=cv2.INTER_LINEAR)
    low = degrade.resample(image, 240, 1080)
    assert _psnr(direct, low) < _psnr(direct, out)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_frame_drop_fraction_and_monotonic_times(shared_data, fraction):
    frames = [Frame(i, t, np.zeros((2, 2, 3), np.uint8))
              for i, t in enumerate(np.arange(200) / 23.976)]
    kept = degrade.drop_frames(frames, fraction, np.random.default_rng(5))
    assert abs(len(kept) - (1 - fraction) * len(frames)) <= 1
    times = [f.t for f in kept]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert all(f is frames[f.index] for f in kept)           # frames and their timestamps untouched
    gaps = np.diff([f.index for f in kept])
    assert gaps.max() > 1 and (gaps >= 1).all()


def test_frame_drop_on_a_real_clip_keeps_media_times(dance_frames):
    kept = degrade.drop_frames(dance_frames, 0.25, np.random.default_rng(0))
    assert len(kept) == 9
    assert [f.t for f in kept] == sorted(f.t for f in kept)
    assert degrade.drop_frames(dance_frames, 0.0, np.random.default_rng(0)) == dance_frames


def test_bad_parameters_are_clear_errors(dance_frames):
    image = dance_frames[0].image
    rng = np.random.default_rng(0)
    with pytest.raises(BadInputError, match="drop fraction"):
        degrade.drop_frames(dance_frames, 1.0, rng)
    with pytest.raises(BadInputError, match="CRF"):
        list(degrade.h264_roundtrip([image], 60))
    with pytest.raises(BadInputError, match="brightness"):
        degrade.low_light(image, 0.0, rng)
    with pytest.raises(BadInputError, match="BGR uint8"):
        degrade.gaussian_noise(image.astype(np.float32), 10, rng)
    with pytest.raises(BadInputError, match="frame size changed"):
        list(degrade.h264_roundtrip([image, image[:100]], 30))
