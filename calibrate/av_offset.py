"""A/V offset of a rig by the clap test.

The dancer claps N times facing the camera. Each clap is seen (the wrists meet) and heard
(a sharp transient). The audio time minus the video time of the same clap is the rig's A/V
offset: camera and microphone pipelines have different latencies, and the rhythm metrics
compare motion with beats, so a 60 ms offset would be a 60 ms rhythm error.

* Video: the distance between the two wrist keypoints (raw, unsmoothed: smoothing adds lag)
  has a sharp minimum at each clap. Its time is found below frame resolution by fitting
  lines to the approach and the separation and intersecting them; when the hands visibly
  rest together (two frames or more), contact is where the approach line reaches that
  resting distance (see `contact_time`).
* Audio: onsets from the audio area's onset detector (`edge.audio.onsets.OnsetDetector`,
  aubio), each then refined to the start of its attack on the waveform envelope.
* Matching: the most common audio-minus-video difference (within ``max_offset``) is found
  first; each clap is then paired with the audio onset nearest that guess. The result is
  refused when that many pairs could be chance (music or noise with onsets everywhere).

Conventions (seconds, on the one rig clock):
* the measured **audio lag** is ``t_audio - t_video`` of the same clap (positive: the sound
  of an event is stamped later than its picture);
* `load_offset(rig)` returns the **correction to add to audio event times** to put them on
  the video clock, i.e. minus the lag. That is the ``offset`` argument of
  `edge.motion.rhythm` ("a music event at audio time t happens at t + offset"), so the
  rhythm metrics apply it as is: ``window_metrics(..., offset=load_offset(rig))``.

Results are stored per rig in ``state_dir()/calibration/<rig>.json``; `load_offset(rig)`
reads them (0.0, with a log line, when the rig was never calibrated).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from dancewire.errors import BadInputError, DancewireError, DeviceError
from dancewire.paths import state_dir

log = logging.getLogger("dancewire.calibrate.av_offset")

LEFT_WRIST, RIGHT_WRIST = 9, 10          # COCO-17 indices (edge.records.COCO17)
MIN_CLAPS = 3
MIN_CLAP_INTERVAL_S = 0.38   # claps faster than this are refused: below it their timing is off by 20-40 ms


# ----------------------------------------------------------------------------- video side

def _piecewise_sse(t: np.ndarray, d: np.ndarray, tc: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of d = F + s1 max(0, tc - t) + s2 max(0, t - tc - r) for every
    (tc, r) pair at once. Returns the residual sum of squares (inf where the fit is
    degenerate or the slopes have the wrong sign) and the solved (F, s1, s2)."""
    a = np.maximum(0.0, tc[:, None] - t[None, :])                     # (M, N)
    b = np.maximum(0.0, t[None, :] - (tc + r)[:, None])
    X = np.stack([np.ones_like(a), a, b], axis=2)                      # (M, N, 3)
    XtX = np.einsum("mni,mnj->mij", X, X)
    Xty = np.einsum("mni,n->mi", X, d)
    det = np.linalg.det(XtX)
    ok = np.abs(det) > 1e-12 * np.maximum(1.0, np.abs(XtX).max(axis=(1, 2))) ** 3
    XtX[~ok] = np.eye(3)
    beta = np.linalg.solve(XtX, Xty[..., None])[..., 0]               # (M, 3)
    sse = ((np.einsum("mni,mi->mn", X, beta) - d[None, :]) ** 2).sum(axis=1)
    sse[~ok | (beta[:, 1] <= 0) | (beta[:, 2] <= 0)] = np.inf
    return sse, beta


def _grid_min(t: np.ndarray, y: np.ndarray, tcs: np.ndarray, rs: np.ndarray) -> tuple[float, float, float]:
    TC, R = np.meshgrid(tcs, rs, indexing="ij")
    sse, _ = _piecewise_sse(t, y, TC.ravel(), R.ravel())
    k = int(np.argmin(sse))
    return float(sse[k]), float(TC.ravel()[k]), float(R.ravel()[k])


def contact_time(times: np.ndarray, d: np.ndarray, i: int, reach_s: float = 0.15,
                 max_rest_s: float = 0.25) -> float:
    """Sub-frame time at which the hands meet, around the distance minimum at sample i.

    Model, fitted to the samples within ``reach_s`` of the low part of the dip: the distance
    falls along a line (approach), may rest at the contact distance, then rises along
    another line (separation). Contact is where the approach line reaches the bottom.

    Two fits: a "V" (no rest: contact where the two lines intersect) and a "trapezoid"
    (with a rest). With one sample at the bottom both fit equally well, so the V, which is
    what a clap looks like (the hands rebound at once), is kept unless the trapezoid is
    clearly better: the hands visibly rested together for two frames or more.
    """
    t_all = np.asarray(times, np.float64)
    finite = np.isfinite(d)
    near = (np.abs(t_all - t_all[i]) <= max_rest_s + reach_s) & finite
    top = float(np.max(d[near])) if near.any() else float(d[i])
    low = near & (d <= d[i] + 0.25 * (top - d[i]))       # the low part of the dip
    t_low = t_all[low]
    sel = finite & (t_all >= t_low.min() - reach_s) & (t_all <= t_low.max() + reach_s)
    t, y = t_all[sel], d[sel]
    if len(t) < 5:
        return float(t_all[i])
    dt = float(np.median(np.diff(t)))
    lo_t, hi_t = t_low.min() - dt, t_low.max() + dt
    zero = np.zeros(1)
    # V: 1-D search over the intersection time, coarse then fine
    sse_v, tc_v, _ = _grid_min(t, y, np.arange(lo_t, hi_t + 1e-9, dt / 50), zero)
    if np.isfinite(sse_v):
        sse_v, tc_v, _ = _grid_min(t, y, np.arange(tc_v - dt / 50, tc_v + dt / 50 + 1e-9, dt / 1000), zero)
    # trapezoid: 2-D search over contact time and rest length
    rs = np.arange(dt / 10, min(max_rest_s, hi_t - lo_t) + 1e-9, dt / 10)
    sse_t, tc_t, r_t = _grid_min(t, y, np.arange(lo_t, hi_t + 1e-9, dt / 10), rs) if len(rs) else (np.inf, 0, 0)
    if np.isfinite(sse_t):
        sse_t, tc_t, r_t = _grid_min(t, y, np.arange(tc_t - dt / 10, tc_t + dt / 10 + 1e-9, dt / 200),
                                     np.arange(max(dt / 200, r_t - dt / 10), r_t + dt / 10 + 1e-9, dt / 200))
    if not np.isfinite(sse_v) and not np.isfinite(sse_t):
        return float(t_all[i])
    # keypoint scatter, never taken below half a pixel (keypoints are pixel measurements)
    sigma2 = max(sse_t / max(len(t) - 5, 1), 0.25) if np.isfinite(sse_t) else 0.25
    rested = np.isfinite(sse_t) and (not np.isfinite(sse_v) or sse_v - sse_t > 9.0 * sigma2)
    return tc_t if rested else tc_v


def hand_meetings(times: np.ndarray, left: np.ndarray, right: np.ndarray,
                  scores: np.ndarray | None = None, *, min_score: float = 0.3,
                  min_gap_s: float = 0.3, prominence: float = 0.4) -> np.ndarray:
    """Times (s) at which the two wrists meet: sharp minima of their distance.

    ``left``/``right``: (T, 2) wrist positions in pixels at ``times`` (T,); ``scores`` (T, 2)
    their confidences (below ``min_score`` the frame is ignored). A minimum counts when it
    dips by at least ``prominence`` of the clip's distance range (5th to 90th percentile)
    below the distances around it; minima closer than ``min_gap_s`` keep the deeper one.
    """
    from scipy.signal import find_peaks

    times = np.asarray(times, np.float64)
    d = np.linalg.norm(np.asarray(left, np.float64) - np.asarray(right, np.float64), axis=1)
    if scores is not None:
        sc = np.asarray(scores, np.float64).reshape(len(d), -1)
        d[(sc < min_score).any(axis=1)] = np.nan
    valid = np.isfinite(d)
    if valid.sum() < 5:
        return np.zeros(0)
    lo, hi = np.percentile(d[valid], [5, 90])
    span = hi - lo
    if span <= 1e-6:
        return np.zeros(0)
    filled = np.interp(np.arange(len(d)), np.flatnonzero(valid), d[valid])   # for peak finding only
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    peaks, _ = find_peaks(-filled, prominence=prominence * span, distance=max(1, int(round(min_gap_s / dt))))
    out = []
    for k, p in enumerate(peaks):
        if not (valid[p] and d[p] <= lo + 0.5 * span):
            continue
        # fit within this dip's own basin, up to the widest points towards the neighbouring dips:
        # claps 0.4 s apart would put their neighbours' low parts into the fit (off by up to 98 ms)
        a = int(np.argmax(filled[peaks[k - 1]:p + 1])) + peaks[k - 1] if k > 0 else 0
        b = int(np.argmax(filled[p:peaks[k + 1] + 1])) + p if k + 1 < len(peaks) else len(d) - 1
        own = np.full_like(d, np.nan)
        own[a:b + 1] = d[a:b + 1]
        out.append(contact_time(times, own, int(p)))
    return np.asarray(out, np.float64)


# ----------------------------------------------------------------------------- audio side

def _coarse_onsets(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times (s from the first sample) from the audio area's onset detector."""
    from edge.audio.onsets import OnsetDetector
    from edge.audio.settings import AudioSettings

    det = OnsetDetector(AudioSettings(), sample_rate)
    hop = det.hop
    x = np.ascontiguousarray(samples, np.float32)
    x = np.concatenate([x, np.zeros((-len(x)) % hop + hop, np.float32)])
    out = []
    for start in range(0, len(x) - hop + 1, hop):
        hit = det.process(x[start:start + hop])
        if hit is not None:
            out.append(hit[0] / sample_rate)
    return np.asarray(out, np.float64)


def refine_onset(samples: np.ndarray, sample_rate: int, t: float, search_s: float = 0.06,
                 rel_threshold: float = 0.2) -> float:
    """Move a coarse onset to the start of its attack: where the envelope, going towards the
    loudest point near ``t``, first exceeds the background by ``rel_threshold`` of the peak."""
    x = np.abs(np.asarray(samples, np.float64))
    n = len(x)
    c = int(round(t * sample_rate))
    a, b = max(0, c - int(search_s * sample_rate)), min(n, c + int(search_s * sample_rate))
    if b - a < 8:
        return t
    w = max(1, int(0.0005 * sample_rate))                       # 0.5 ms envelope
    env = np.convolve(x[max(0, a - w):b], np.ones(w) / w, mode="same")[(a - max(0, a - w)):]
    p = int(np.argmax(env))
    pre = x[max(0, a - int(0.1 * sample_rate)):a]
    floor = float(np.median(np.convolve(pre, np.ones(w) / w, mode="same"))) if len(pre) > w else float(env.min())
    thr = floor + rel_threshold * (env[p] - floor)
    j = p
    while j > 0 and env[j - 1] > thr:
        j -= 1
    if j == 0:
        return (a + j) / sample_rate
    frac = (thr - env[j - 1]) / max(env[j] - env[j - 1], 1e-12)        # linear interpolation
    return (a + j - 1 + float(np.clip(frac, 0, 1))) / sample_rate


def clap_onsets(samples: np.ndarray, sample_rate: int, t0: float = 0.0) -> np.ndarray:
    """Refined audio onset times (s on the rig clock; the first sample is at ``t0``)."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    coarse = _coarse_onsets(samples, sample_rate)
    refined = [refine_onset(samples, sample_rate, float(t)) for t in coarse]
    return np.unique(np.round(np.asarray(refined, np.float64), 6)) + t0


# ----------------------------------------------------------------------------- matching

@dataclass
class AvOffsetResult:
    audio_lag_s: float               # mean of (t_audio - t_video) over the matched claps
    spread_s: float                  # their standard deviation
    median_lag_s: float
    n_claps: int
    claps: list[dict] = field(default_factory=list)   # {"t_video", "t_audio", "offset"}
    video_claps: int = 0
    audio_onsets: int = 0
    chance: float | None = None      # probability that this many matches are coincidence

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("audio_lag_s", "spread_s", "median_lag_s"):
            d[k] = round(float(d[k]), 5)
        return d


def match_claps(video: np.ndarray, audio: np.ndarray, max_offset: float = 0.5,
                search: float = 0.08, tolerance: float = 0.035) -> list[tuple[float, float]]:
    """Pairs (t_video, t_audio) of one clap each, see the module docstring.

    The common offset is the centre of the densest ``2 * search`` window of audio-minus-video
    differences (of windows that tie, the one nearest zero: a rig's lag is rarely large); each clap
    is then paired with the nearest onset within ``tolerance`` of it."""
    video, audio = np.sort(np.asarray(video, np.float64)), np.sort(np.asarray(audio, np.float64))
    if not len(video) or not len(audio):
        return []
    diffs = (audio[None, :] - video[:, None]).ravel()
    diffs = diffs[np.abs(diffs) <= max_offset]
    if not len(diffs):
        return []
    s = np.sort(diffs)
    counts = np.searchsorted(s, s + search, side="right") - np.searchsorted(s, s - search, side="left")
    best = s[counts == counts.max()]
    centre = float(best[np.argmin(np.abs(best))])     # one window: two tied ones' median lies between them
    guess = float(np.median(diffs[np.abs(diffs - centre) <= search]))
    pairs, used = [], set()
    for tv in video:
        j = int(np.argmin(np.abs(audio - (tv + guess))))
        if abs(audio[j] - (tv + guess)) <= tolerance and j not in used:
            used.add(j)
            pairs.append((float(tv), float(audio[j])))
    return pairs


def chance_probability(n_video: int, n_matched: int, onset_rate: float, tolerance: float,
                       max_offset: float) -> float:
    """How likely `n_matched` of `n_video` hand meetings would find an onset within
    ``tolerance`` by chance, with onsets arriving at ``onset_rate`` per second and the offset
    searched over ``+-max_offset`` (a Bonferroni factor for that search)."""
    from scipy.stats import binom

    p = 1.0 - math.exp(-onset_rate * 2.0 * tolerance)
    trials = max(1.0, max_offset / tolerance)
    return float(min(1.0, binom.sf(n_matched - 1, n_video, p) * trials))


def _refuse_an_alias(video: np.ndarray, audio: np.ndarray, lag: float, n: int, gaps: np.ndarray,
                     max_offset: float, tolerance: float, advice: str) -> None:
    """Claps at a steady interval P fit a lag L and L +- P almost equally (one clap unseen or one sound
    cut off makes them tie): when that other lag is within `max_offset` too and matches nearly as
    many claps, which is the rig's cannot be told, so refuse rather than store one a whole clap off."""
    if len(gaps) < 2 or not len(audio):
        return
    period = float(np.median(gaps))
    for alt in (lag - period, lag + period):
        if abs(alt) > max_offset:
            continue
        d = np.abs(audio[None, :] - (video[:, None] + alt)).min(axis=1)
        if int((d <= tolerance).sum()) >= n - 1:
            raise BadInputError(f"the claps come every {period:.2f} s, so an audio lag of {1000 * lag:+.0f} ms and "
                                f"one of {1000 * alt:+.0f} ms fit them about as well: clap more slowly (over "
                                f"{max_offset + abs(lag):.1f} s apart) or unevenly; {advice}")


def offset_from_events(video_claps: np.ndarray, audio_onsets: np.ndarray, *, audio_duration: float | None = None,
                       max_offset: float = 0.5, tolerance: float = 0.035, min_claps: int = MIN_CLAPS,
                       max_chance: float = 1e-3) -> AvOffsetResult:
    """Match claps seen with sounds heard and average their differences.

    Refuses (BadInputError) when fewer than `min_claps` match, or when that many matches
    could be chance: music or noise with onsets everywhere matches anything."""
    advice = (f"clap clearly {max(min_claps, 8)} times, about a second apart, facing the camera "
              "with both hands in view, in a quiet room (no music)")
    gaps = np.diff(np.sort(np.asarray(video_claps, np.float64)))
    if len(gaps) >= 2 and np.median(gaps) < MIN_CLAP_INTERVAL_S:
        raise BadInputError(f"the claps come every {np.median(gaps):.2f} s: too fast to time each one (their dips "
                            f"run into each other); {advice}")
    pairs = match_claps(video_claps, audio_onsets, max_offset, tolerance=tolerance)
    if len(pairs) < min_claps:
        raise BadInputError(f"found {len(pairs)} matching claps (seen {len(video_claps)}, heard "
                            f"{len(audio_onsets)} sounds); need at least {min_claps}: {advice}")
    if audio_duration is None:
        ev = np.r_[audio_onsets, video_claps]
        audio_duration = float(ev.max() - ev.min()) + 1.0
    rate = len(audio_onsets) / max(audio_duration, 1e-3)
    chance = chance_probability(len(video_claps), len(pairs), rate, tolerance, max_offset)
    if chance > max_chance:
        raise BadInputError(f"{len(pairs)} of {len(video_claps)} hand meetings match a sound, but with "
                            f"{len(audio_onsets)} sounds in {audio_duration:.0f} s that could be chance "
                            f"(p={chance:.2g}): {advice}")
    off = np.array([a - v for v, a in pairs])
    _refuse_an_alias(np.asarray(video_claps, np.float64), np.asarray(audio_onsets, np.float64), float(np.median(off)),
                     len(pairs), gaps, max_offset, tolerance, advice)
    # one stray pairing must not move the mean: drop pairs far from the median (> 3 MAD, >= 10 ms)
    med = float(np.median(off))
    mad = float(np.median(np.abs(off - med))) * 1.4826
    keep = np.abs(off - med) <= max(3 * mad, 0.010)
    if keep.sum() >= min_claps:
        pairs = [p for p, k in zip(pairs, keep) if k]
        off = off[keep]
    return AvOffsetResult(
        audio_lag_s=float(off.mean()), spread_s=float(off.std(ddof=1)) if len(off) > 1 else 0.0,
        median_lag_s=float(np.median(off)), n_claps=len(off),
        claps=[{"t_video": round(v, 5), "t_audio": round(a, 5), "offset": round(a - v, 5)} for v, a in pairs],
        video_claps=int(len(video_claps)), audio_onsets=int(len(audio_onsets)), chance=chance)


def estimate_offset(times: np.ndarray, left: np.ndarray, right: np.ndarray, samples: np.ndarray,
                    sample_rate: int, *, audio_t0: float = 0.0, scores: np.ndarray | None = None,
                    max_offset: float = 0.5, min_claps: int = MIN_CLAPS) -> AvOffsetResult:
    """The keypoint-level clap test: wrist tracks + the audio track -> audio lag (audio - video)."""
    video = hand_meetings(times, left, right, scores)
    audio = clap_onsets(samples, sample_rate, audio_t0)
    log.info("clap test: %d hand meetings, %d audio onsets", len(video), len(audio))
    return offset_from_events(video, audio, audio_duration=len(samples) / float(sample_rate),
                              max_offset=max_offset, min_claps=min_claps)


# ----------------------------------------------------------------------------- media decoding

def decode_audio(path: str | Path) -> tuple[np.ndarray, int, float]:
    """Mono float32 samples at the stream's own rate, on the media clock (a hole in the file's
    timeline is silence, so every later clap keeps its time), the rate, and the media time of
    the first sample (the same origin as `edge.sources.video.VideoFileSource`: pts minus the
    container's start). Corrupt packets are skipped, as the live reader skips them."""
    from edge.sources.audio_file import AudioFileSource, has_audio, on_timeline

    if Path(path).exists() and not has_audio(path):
        raise BadInputError(f"{path} has no audio track: the clap test needs sound")
    source = AudioFileSource(path)
    rate = source.info.sample_rate or 44100
    source = AudioFileSource(path, sample_rate=rate, block_size=1 << 16)
    samples, t0 = on_timeline(list(source.blocks()))
    if source.corrupt_packets:
        log.warning("%s: %d corrupt audio packets skipped (silence there)", path, source.corrupt_packets)
    return samples, rate, t0


WristTrack = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]   # times, left, right, scores


def wrists_from_frames(frames: Iterable, estimate: Callable[[np.ndarray], list[np.ndarray]],
                       progress=None) -> WristTrack:
    """Wrist tracks of the most prominent person: ``estimate(image) -> [kp17 (17, 3), ...]``."""
    times, left, right, scores = [], [], [], []
    for frame in frames:
        people = estimate(frame.image)
        times.append(frame.t)
        if people:
            kp = max(people, key=lambda k: float(np.ptp(k[:, 1])) * float(np.mean(k[:, 2])))
            left.append(kp[LEFT_WRIST, :2])
            right.append(kp[RIGHT_WRIST, :2])
            scores.append([kp[LEFT_WRIST, 2], kp[RIGHT_WRIST, 2]])
        else:
            left.append([np.nan, np.nan])
            right.append([np.nan, np.nan])
            scores.append([0.0, 0.0])
        if progress is not None:
            progress.update()
    return (np.asarray(times, np.float64), np.asarray(left, np.float64),
            np.asarray(right, np.float64), np.asarray(scores, np.float64))


def pose_estimator(backend: str = "onnxruntime", threads: int = 2) -> Callable[[np.ndarray], list[np.ndarray]]:
    """Raw (unsmoothed) COCO-17 keypoints per person, from the vision area's BlazePose loop."""
    from edge.engines import open_engine
    from edge.models.registry import model_path
    from edge.vision.blazepose_detector import BlazePoseDetector
    from edge.vision.blazepose_landmarks import BlazePoseLandmarks
    from edge.vision.estimator import MultiPoseEstimator
    from edge.vision.settings import VisionSettings

    s = VisionSettings()
    det = BlazePoseDetector(open_engine(model_path("pose_detector"), backend, threads=threads),
                            min_score=s.det_min_score, iou_threshold=s.det_nms_iou)
    lm = BlazePoseLandmarks(open_engine(model_path("pose_landmarks"), backend, threads=threads))
    est = MultiPoseEstimator(det, lm, s)

    def run(image: np.ndarray) -> list[np.ndarray]:
        return [e.result.coco17(s.keypoint_score) for e in est(image) if not e.lost]

    return run


def analyze_video(path: str | Path, estimate: Callable | None = None, *, max_offset: float = 0.5,
                  min_claps: int = MIN_CLAPS) -> AvOffsetResult:
    """The clap test on a recorded clip (video + audio in one file)."""
    from dancewire.progress import Progress
    from edge.sources.video import VideoFileSource

    src = VideoFileSource(path)
    if not src.info.has_audio:
        raise BadInputError(f"{path} has no audio track: the clap test needs sound")
    samples, rate, t0 = decode_audio(path)
    total = int(src.info.duration * src.info.fps) if src.info.duration and src.info.fps else None
    bar = Progress("clap test: tracking wrists", total)
    track = wrists_from_frames(src.frames(), estimate or pose_estimator(), bar)
    times, left, right, scores = track
    return estimate_offset(times, left, right, samples, rate, audio_t0=t0, scores=scores,
                           max_offset=max_offset, min_claps=min_claps)


def record_live(seconds: float, settings=None):
    """Capture camera frames and microphone audio for `seconds`, both on one RigClock, through
    the same sources `edge run` uses: the camera `source.*` names and the microphone `audio.*`
    names (device, rate, channels, `mic_offset_s`), so the stored offset is the one the rig needs.

    Returns (frames, samples, sample_rate, audio_t0); frames are kept JPEG-compressed
    (`Frame` records decoded on iteration) so a 12 s 1080p take fits in memory. audio_t0 is the
    first block's time on the rig clock (PortAudio's ADC time, as `MicSource` stamps it)."""
    import threading

    import cv2

    from edge.records import Frame
    from edge.settings import EdgeSettings
    from edge.sources.audio_file import on_timeline
    from edge.sources.camera import CameraSource
    from edge.sources.clock import RigClock
    from edge.sources.mic import MicSource

    s = settings or EdgeSettings()
    clock = RigClock()
    try:
        cam = CameraSource.from_settings(s.source, clock=clock)
        mic = MicSource(s.audio, clock=clock).start()
    except DeviceError as exc:
        raise DeviceError(f"{str(exc).split(';')[0]}; record a clip with sound through this rig's own camera "
                          "and microphone and pass its path instead of 'live' (with --rig to store it)") from None
    blocks, failed = [], []

    def listen() -> None:
        try:
            blocks.extend(mic.blocks())
        except DeviceError as exc:
            failed.append(exc)

    listener = threading.Thread(target=listen, name="clap-test-mic", daemon=True)
    listener.start()
    taken: list[tuple[int, float, bytes]] = []
    try:
        for frame in cam.frames():
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if ok:
                taken.append((frame.index, frame.t, jpeg.tobytes()))
            if frame.t >= seconds or failed:
                break
    finally:
        mic.stop()
        listener.join(5.0)
    if failed:
        raise failed[0]
    if not blocks:
        raise DeviceError("the microphone delivered no audio")
    if mic.overflows:
        log.warning("microphone: %d input overflows (the offset may be off; repeat the test)", mic.overflows)

    class _Frames:
        def __len__(self):
            return len(taken)

        def __iter__(self):
            for index, t, jpeg in taken:
                yield Frame(index, t, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))

    samples, t0 = on_timeline(blocks)          # a dropped mic block is silence, not a shift of what follows
    return _Frames(), samples, mic.sample_rate, t0


def analyze_live(seconds: float = 12.0, settings=None, estimate: Callable | None = None,
                 *, max_offset: float = 0.5, min_claps: int = MIN_CLAPS) -> AvOffsetResult:
    """The clap test from the rig's camera and microphone, as `settings` (EdgeSettings) name them
    (see `record_live`)."""
    from dancewire.progress import Progress

    frames, samples, rate, t0 = record_live(seconds, settings)
    times, left, right, scores = wrists_from_frames(frames, estimate or pose_estimator(),
                                                    Progress("clap test: tracking wrists", len(frames)))
    return estimate_offset(times, left, right, samples, rate, audio_t0=t0, scores=scores,
                           max_offset=max_offset, min_claps=min_claps)


# ----------------------------------------------------------------------------- per-rig storage

_RIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_rig() -> str:
    """$DANCEWIRE_RIG, else this machine's host name, made a valid rig name ("über-rig" -> "ber-rig")."""
    name = os.environ.get("DANCEWIRE_RIG") or socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name or "").lstrip("-._")[:64]
    return name or "rig"


def calibration_path(rig: str | None = None) -> Path:
    rig = rig or default_rig()
    if not _RIG_NAME.match(rig):
        raise DancewireError(f"bad rig name {rig!r}: letters, digits, '.', '_' or '-' (up to 64)")
    return state_dir() / "calibration" / f"{rig}.json"


def load_calibration(rig: str | None = None) -> dict | None:
    path = calibration_path(rig)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DancewireError(f"unreadable calibration file {path}: {exc}; "
                             "run `dancewire calibrate av-offset` again (it sets the file aside)") from None
    part = doc.get("av_offset", {}) if isinstance(doc, dict) else None
    lag = part.get("audio_lag_s") if isinstance(part, dict) else None
    if not isinstance(part, dict) or not (lag is None or (isinstance(lag, (int, float)) and not isinstance(lag, bool))):
        raise DancewireError(f"calibration file {path} is not a dancewire calibration; "
                             "run `dancewire calibrate av-offset` again (it sets the file aside)")
    return doc


def save_offset(result: AvOffsetResult, rig: str | None = None, source: str = "") -> Path:
    """Store the result under ``av_offset`` in the rig's calibration file (other keys kept)."""
    rig = rig or default_rig()
    path = calibration_path(rig)
    try:
        doc = load_calibration(rig) or {}
    except DancewireError as exc:          # damaged: set aside, so calibrating again mends it
        aside = path.with_name(path.name + ".bad")
        os.replace(path, aside)
        log.warning("%s; kept as %s, a new file is written", exc, aside)
        doc = {}
    doc.update({"rig": rig, "av_offset": {
        **result.to_json(), "audio_correction_s": round(-float(result.audio_lag_s), 5),
        "source": str(source), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_offset(rig: str | None = None) -> float:
    """Seconds to ADD to audio event times (beats, onsets) to put them on the video clock:
    minus the rig's measured audio lag; 0.0 when the rig was never calibrated.

    Same sign as `edge.motion.rhythm`'s ``offset`` ("a music event at audio time t happens
    at t + offset"), so it is passed through unchanged."""
    doc = load_calibration(rig)
    value = (doc or {}).get("av_offset", {}).get("audio_lag_s")
    if value is None or not math.isfinite(float(value)):
        log.info("rig %s has no A/V calibration; assuming offset 0 (run `dancewire calibrate av-offset`)",
                 rig or default_rig())
        return 0.0
    return -float(value)
