"""Online onsets (aubio) and the onset-strength envelope (positive spectral flux), both causal.

Why ``aubio-ledfx`` and not PyPI's ``aubio`` 0.4.9: both provide the same ``aubio`` module
and the same C code, but 0.4.9 (2019) has no wheels for current Pythons, has to be built
from source, imports ``distutils`` (gone in Python 3.12) and fails to build when FFmpeg
development headers are installed; ``aubio-ledfx`` ships maintained wheels that work with
numpy 2 and bundle their libraries. Never install both: they fight over ``aubio``.

Latency of an onset (``known_at - true time``): aubio's phase vocoder puts the newest hop at
the end of a Hann window, so an onset weighs in once it nears the window centre
(``onset_window / 2``), and its peak picker confirms a peak about two hops later. With the
defaults (512-sample window, 64-sample hop at 44.1 kHz) that is ~6 ms + ~3 ms. The reported
``t`` is aubio's detection position minus the constant ``onset_delay_s``.
"""
from __future__ import annotations

import numpy as np

from edge.audio.settings import AudioSettings


def _aubio():
    try:
        import aubio
    except ImportError as exc:  # pragma: no cover - install problem
        from dancewire.errors import DancewireError
        raise DancewireError(f"aubio is not installed (pip install aubio-ledfx): {exc}") from None
    return aubio


def block_db(samples: np.ndarray) -> float:
    """Level of a block in dBFS (RMS about its mean: a microphone's DC offset is not sound); -inf-safe."""
    if samples.size == 0:
        return -200.0
    x = np.asarray(samples, np.float64)
    rms = float(np.sqrt(np.mean(np.square(x - x.mean()))))
    return 20.0 * np.log10(max(rms, 1e-10))


class OnsetDetector:
    """aubio.onset on fixed hops. `process(hop)` returns the onset position in samples
    (counted from the first sample fed, delay-compensated) or None, and its strength."""

    def __init__(self, settings: AudioSettings, sample_rate: int):
        aubio = _aubio()
        s = settings
        self.hop = s.onset_hop
        method = "default" if s.onset_method == "hfc" else s.onset_method
        self._o = aubio.onset(method, s.onset_window, s.onset_hop, sample_rate)
        self._o.set_threshold(float(s.onset_threshold))
        self._o.set_minioi_s(float(s.onset_min_ioi_s))
        self._o.set_silence(float(s.silence_db))
        self._o.set_delay(max(0, int(round(s.onset_delay_s * sample_rate))))
        self.sample_rate = sample_rate
        self.descriptor = 0.0

    def process(self, hop: np.ndarray) -> tuple[float, float] | None:
        """One hop of float32 samples -> (onset position in samples, strength) or None."""
        hit = self._o(hop)[0]
        self.descriptor = float(self._o.get_descriptor())
        if hit:
            return float(self._o.get_last()), self.descriptor
        return None


class OnsetEnvelope:
    """Onset-strength envelope, one value per `beat_hop` samples (MuDaR eq. 2 / SuperFlux):
    the positive difference between the log-magnitude spectrum and the previous frame's
    spectrum max-filtered over 3 bins. It is averaged within four bands (below `low_band_hz`
    -- the kick --, up to 2 kHz, up to 8 kHz, above) and the band means are added, the low
    band weighted by `low_band_weight`: a plain sum over bins would let broadband hi-hats
    (hundreds of bins) outvote the kick (a handful), and trackers would lock to off-beats.
    Strictly causal: each value uses past samples only.
    """

    def __init__(self, settings: AudioSettings, sample_rate: int):
        aubio = _aubio()
        self.hop = settings.beat_hop
        self.window = settings.beat_window
        self._pv = aubio.pvoc(self.window, self.hop)
        freqs = np.arange(self.window // 2 + 1) * sample_rate / self.window
        self._low = freqs < settings.low_band_hz
        edges = [0.0, settings.low_band_hz, 2000.0, 8000.0, np.inf]
        self._bands = [(freqs >= a) & (freqs < b) for a, b in zip(edges[:-1], edges[1:])]
        self._bands = [b for b in self._bands if b.any()]
        self._low_weight = float(settings.low_band_weight)
        self.gamma = float(settings.envelope_log_gamma)
        self._prev: np.ndarray | None = None
        # The value of a frame describes the middle of its window.
        self.centre_offset = self.window / 2.0

    def process(self, hop: np.ndarray) -> tuple[float, float]:
        """One `beat_hop` of samples -> (envelope value, low-band part)."""
        mag = np.asarray(self._pv(hop).norm, dtype=np.float64)
        logmag = np.log1p(self.gamma * mag)
        if self._prev is None:
            self._prev = logmag
            return 0.0, 0.0
        ref = self._prev.copy()
        ref[1:-1] = np.maximum(np.maximum(self._prev[:-2], self._prev[1:-1]), self._prev[2:])
        diff = np.maximum(0.0, logmag - ref)
        self._prev = logmag
        means = [float(diff[b].mean()) for b in self._bands]
        low = float(diff[self._low].mean()) if self._low.any() else 0.0
        return float(sum(means)) + (self._low_weight - 1.0) * low, low

    def reset(self) -> None:
        self._prev = None
