"""Synthetic test music: click/drum tracks with known onset and beat times (no external data)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

SR = 44100


def hit(sr: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A short percussive sound: 'kick' (decaying low sine) or 'hat' (decaying noise burst)."""
    n = int(0.12 * sr)
    t = np.arange(n) / sr
    if kind == "kick":
        f = 60 + 90 * np.exp(-t * 40)
        return (np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t * 25)).astype(np.float32)
    return (rng.standard_normal(n) * np.exp(-t * 60) * 0.5).astype(np.float32)


def drum_track(bpm: float | list[tuple[float, float]] = 120.0, seconds: float = 12.0, sr: int = SR,
               start: float = 0.25, gain: float = 0.5, offbeat_hats: bool = True, seed: int = 0,
               hat_gain: float = 0.25):
    """Kick on every beat (accented every 4th), hi-hat between beats.
    `bpm` may be [(from_time, bpm), ...] for tempo changes. Returns (x, beat_times, onset_times)."""
    rng = np.random.default_rng(seed)
    segments = [(0.0, float(bpm))] if np.isscalar(bpm) else [(float(a), float(b)) for a, b in bpm]
    x = np.zeros(int(seconds * sr) + sr, np.float32)
    beats, onsets = [], []
    t = start
    while t < seconds - 0.2:
        cur = [b for a, b in segments if a <= t][-1]
        period = 60.0 / cur
        beats.append(t)
        onsets.append(t)
        i = int(round(t * sr))
        k = hit(sr, "kick", rng) * (1.0 if len(beats) % 4 == 1 else 0.6)
        x[i:i + k.size] += k[: x.size - i]
        if offbeat_hats and t + period / 2 < seconds - 0.2:
            j = int(round((t + period / 2) * sr))
            h = hit(sr, "hat", rng) * hat_gain
            x[j:j + h.size] += h[: x.size - j]
            onsets.append(t + period / 2)
        t += period
    x = x[: int(seconds * sr)] * gain
    return x.astype(np.float32), np.array(beats), np.array(sorted(onsets))


def write_wav(path: Path, x: np.ndarray, sr: int = SR, channels: int = 1) -> Path:
    """16-bit PCM WAV; `channels=2` duplicates the signal (slightly attenuated right channel)."""
    data = np.clip(x, -1, 1)
    if channels == 2:
        data = np.stack([data, data * 0.8], axis=1)
    pcm = (data * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def feed(analyzer, x: np.ndarray, sr: int = SR, block: int = 1024, t0: float = 0.0, channels_last=None):
    """Run `x` through `analyzer` in blocks; returns (onsets, beats) lists of records."""
    from edge.records import AudioBlock, Beat, Onset

    events = []
    for i in range(0, len(x), block):
        events += analyzer.process(AudioBlock(t=t0 + i / sr, samples=x[i:i + block], sample_rate=sr))
    events += analyzer.flush()
    return [e for e in events if isinstance(e, Onset)], [e for e in events if isinstance(e, Beat)]


def match(ref: np.ndarray, est: np.ndarray, window: float) -> int:
    """Number of one-to-one matches within `window` (greedy in time order)."""
    used = set()
    n = 0
    for r in ref:
        cands = [(abs(e - r), j) for j, e in enumerate(est) if j not in used and abs(e - r) <= window]
        if cands:
            used.add(min(cands)[1])
            n += 1
    return n
