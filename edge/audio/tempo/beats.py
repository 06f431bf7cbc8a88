"""Causal tempo and beat tracking on the onset-strength envelope (predictive).

Per envelope frame (``beat_hop`` samples, ~86 per second at 44.1 kHz):

1. **Tempo**, every quarter second over the last ``tempo_window_s`` (tapered so recent frames
   count more): autocorrelation of the mean-removed, rectified envelope; a comb over the first
   four multiples of each candidate period (as in BTrack, Stark et al. 2009); a log-normal
   prior around ``tempo_prior_bpm``; and a one-state-per-BPM filter whose Gaussian transition
   follows gradual tempo changes (a small uniform floor lets it jump to a new song's tempo).
2. **Phase / prediction**: half a period after each beat, every phase of a grid with the
   current period is scored by the envelope it collects over the history (older periods
   decay); near the expected next beat (one period after the last) phases get full weight,
   elsewhere ``beat_phase_floor``, so the grid keeps going through fills and off-beat
   accents but moves to a phase that explains the music clearly better. The best phase
   gives the next beat.
3. **Emission**: a predicted beat is emitted when the audio reaches it, so a beat is known
   as it happens (``known_at - t`` is at most one block) -- no lookahead at all: a frame is
   used only once all its samples have arrived.

Silence (nothing above the gate for ``silence_reset_s``) stops the beats and forgets the
grid; the tempo belief is kept for when the music comes back.
"""
from __future__ import annotations

import math

import numpy as np

from edge.audio.settings import AudioSettings


class BeatTracker:
    def __init__(self, settings: AudioSettings, frame_rate: float):
        s = settings
        self.fr = float(frame_rate)
        self.phase_sigma = float(s.beat_phase_sigma)
        self.phase_floor = float(s.beat_phase_floor)
        self.H = max(16, int(round(s.tempo_window_s * self.fr)))
        self.bpms = np.arange(s.tempo_min_bpm, s.tempo_max_bpm + 1e-9, 1.0)
        logdev = np.log2(self.bpms / s.tempo_prior_bpm) / max(s.tempo_prior_octaves, 1e-3)
        self.prior = np.exp(-0.5 * logdev ** 2)
        d = self.bpms[:, None] - self.bpms[None, :]
        # the step scales with the tempo (a fixed 2 BPM bled a slow tempo's narrow evidence away at
        # every update until its double, whose evidence is wider in BPM, won: 72 BPM read as 144)
        sig = np.maximum(float(s.tempo_change_sigma_bpm) * self.bpms[None, :] / 120.0, 0.1)
        self.transition = np.exp(-0.5 * (d / sig) ** 2)
        self.transition /= self.transition.sum(axis=0, keepdims=True)
        self.tempo_every = max(1, int(round(0.25 * self.fr)))
        self.memory_frames = max(0.0, float(s.tempo_memory_s)) * self.fr
        self.warmup_frames = int(round(s.beat_warmup_s * self.fr))
        self.silence_reset_frames = max(1, int(round(s.silence_reset_s * self.fr)))
        self.reset(keep_tempo=False)

    # ------------------------------------------------------------------ state
    def reset(self, keep_tempo: bool = True) -> None:
        """Forget the beat grid (after silence, or on request). The tempo belief is kept unless asked."""
        self.odf = np.zeros(self.H)
        self.filled = 0                # frames of history in odf
        self.active = 0                # frames since the music started (or came back)
        self.silent_run = 0
        self.next_beat: int | None = None   # absolute frame index of the predicted beat
        self.last_beat: int | None = None
        self.predict_at: int | None = None
        self._since_tempo = 0
        if not keep_tempo or not hasattr(self, "state"):
            self.state = self.prior / self.prior.sum()
            self.period = 60.0 * self.fr / float(self.bpms[np.argmax(self.state)])
            self.tempo_known = False
            self.confidence = 0.0

    @property
    def bpm(self) -> float:
        return 60.0 * self.fr / self.period

    @property
    def tracking(self) -> bool:
        return self.active > 0

    # ------------------------------------------------------------------ step
    def step(self, n: int, value: float, silent: bool, lead: float = 0.0) -> list[int]:
        """Feed envelope frame `n` (absolute index). Returns the frame indices of beats that are
        due: beat b is emitted at the first frame n >= b - lead."""
        if silent:
            self.silent_run += 1
            if self.silent_run >= self.silence_reset_frames and self.active:
                self.reset(keep_tempo=True)
            value = 0.0
        else:
            self.silent_run = 0
        if self.active or not silent:
            self.active += 1

        self.odf[:-1] = self.odf[1:]
        self.odf[-1] = value
        self.filled = min(self.H, self.filled + 1)
        if not self.active:
            return []

        self._since_tempo += 1
        if self._since_tempo >= self.tempo_every and self.filled >= 2 * self.fr:
            self._since_tempo = 0
            self._update_tempo()

        out: list[int] = []
        if self.last_beat is None:
            if self.next_beat is None and self.tempo_known and self.active >= self.warmup_frames:
                self._predict(n)
        elif self.next_beat is None and self.predict_at is not None and n >= self.predict_at:
            self._predict(n)
        while self.next_beat is not None and n >= self.next_beat - lead:
            b = self.next_beat
            out.append(b)
            self.last_beat = b
            self.next_beat = None
            self.predict_at = b + int(round(self.period / 2))
            if n >= self.predict_at:  # only if lead exceeds half a period
                self._predict(n)
        return out

    # ------------------------------------------------------------------ tempo
    def _update_tempo(self) -> None:
        o = self.odf[self.H - self.filled:]
        if not np.any(o > 0):
            return
        k = 8
        mean = np.convolve(o, np.ones(2 * k + 1) / (2 * k + 1), mode="same")
        o = np.maximum(0.0, o - mean)
        if self.memory_frames > 0:   # recent frames count more: a new tempo takes over sooner
            o = o * np.exp(-np.arange(o.size)[::-1] / self.memory_frames)
        n = o.size
        nfft = 1 << (2 * n - 1).bit_length()
        spec = np.fft.rfft(o, nfft)
        acf = np.fft.irfft(spec * np.conj(spec), nfft)[:n]
        acf /= np.arange(n, 0, -1)
        if acf[0] <= 0:
            return
        acf /= acf[0]
        comb = np.zeros(self.bpms.size)
        periods = 60.0 * self.fr / self.bpms
        for a in range(1, 5):
            for b in range(1 - a, a):
                lags = np.round(a * periods).astype(int) + b
                ok = (lags > 0) & (lags < n - n // 4)
                comb[ok] += acf[lags[ok]] / (2 * a - 1)
        obs = np.maximum(comb, 0.0) * self.prior
        if obs.sum() <= 0:
            return
        obs /= obs.sum()
        pred = self.transition @ self.state
        pred = 0.98 * pred / pred.sum() + 0.02 / pred.size
        state = pred * obs
        if state.sum() <= 0:
            return
        self.state = state / state.sum()
        i = int(np.argmax(self.state))
        shift = 0.0
        if 0 < i < self.state.size - 1:
            y0, y1, y2 = self.state[i - 1], self.state[i], self.state[i + 1]
            den = y0 - 2 * y1 + y2
            shift = 0.5 * (y0 - y2) / den if den < 0 else 0.0
        self.confidence = float(self.state[i])
        self.period = 60.0 * self.fr / float(self.bpms[i] + shift)
        self.tempo_known = True

    # ------------------------------------------------------------------ prediction
    def _predict(self, n: int) -> None:
        """Pick the next beat: the phase of the beat grid (period P) that collects the most
        onset strength over the history, favouring the beat one period after the last."""
        p = self.period
        h = self.odf[self.H - self.filled:]
        last = h.size - 1                     # index of frame n in h
        nph = max(2, int(math.ceil(p)))
        phases = np.arange(nph, dtype=float)  # frames back from n to the latest grid point
        score = np.zeros(nph)
        j = 0
        while True:
            pos = last - phases - j * p
            ok = pos >= 0
            if not ok.any():
                break
            i0 = np.floor(pos[ok]).astype(int)
            frac = pos[ok] - i0
            i1 = np.minimum(i0 + 1, last)
            score[ok] += (0.85 ** j) * ((1 - frac) * h[i0] + frac * h[i1])
            j += 1
        pred = n - phases + p                 # the next grid point after n, per phase
        if self.last_beat is not None:
            near = np.exp(-0.5 * ((pred - (self.last_beat + p)) / (p * self.phase_sigma)) ** 2)
            # continuity, but a phase that explains the history clearly better still wins
            score = score * (self.phase_floor + (1.0 - self.phase_floor) * near)
        best = float(pred[int(np.argmax(score))])
        self.next_beat = max(n + 1, int(round(best)))
        self.predict_at = None
