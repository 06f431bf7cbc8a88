"""AudioAnalyzer: the one causal object that turns AudioBlocks into Onsets and Beats.

Live (mic) and offline (`dancewire audio analyze`, `edge analyze`) feed it the same way;
only the source and its pacing differ::

    an = AudioAnalyzer(settings, sample_rate=44100)
    for block in source.blocks():        # edge.records.AudioBlock, any size, mono or (n, ch)
        for ev in an.process(block):      # Onset | Beat, in the order they became known
            ...
    an.reset_count(t)                     # the rig: "the beat at media time t is 1"
    times, values = an.envelope()         # onset-strength envelope for the rhythm metrics
    an.summary()                          # counts, tempo, latencies

Clock: every block carries `t`, the media time of its first sample (file: pts relative to
the container start; mic: PortAudio's ADC time of the first sample mapped onto the rig's
monotonic clock, see edge/sources/mic.py). The analyzer counts samples from the first block
and re-anchors when a block's `t` disagrees by more than 20 ms (a dropout or a seek), so
event times stay on the same clock as the video frames.

Event times: `t` is the estimated time of the event; `known_at` is the media time of the
last sample that had arrived when the analyzer emitted it (never before `t` for onsets;
beats are predicted, so a beat is emitted in the block that reaches its time).

Latency bound (no lookahead beyond it): onsets need half the onset window plus two hops
(~9 ms at the defaults); beats are predicted from the past and emitted when reached.
"""
from __future__ import annotations

import logging
from collections import deque

import numpy as np

from edge.audio.eightcount import EightCounter
from edge.audio.onsets import OnsetDetector, OnsetEnvelope, block_db
from edge.audio.settings import AudioSettings
from edge.audio.tempo.beats import BeatTracker
from edge.records import AudioBlock, Beat, Onset, stamp

log = logging.getLogger(__name__)

_REANCHOR_S = 0.02
_FILL_MAX_S = 5.0     # holes up to this long are filled with silence; longer ones (a seek) only re-anchor


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """(n,), (n, ch) or (ch, n) with ch <= 8, any int/float dtype -> mono float32 in [-1, 1]."""
    x = np.asarray(samples)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        scale = float(max(-int(info.min), int(info.max)))
        x = x.astype(np.float32) / scale
        if info.min == 0:  # unsigned PCM: centre it
            x = x * 2.0 - 1.0
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        if x.shape[1] <= 8 and x.shape[0] >= x.shape[1]:
            x = x.mean(axis=1)
        else:
            x = x.mean(axis=0)
    elif x.ndim != 1:
        x = x.reshape(-1)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


class StreamResampler:
    """Streaming mono float32 resampling through libswresample (PyAV), for blocks at a rate
    other than the analysis rate. Keeps its filter state between blocks."""

    def __init__(self, rate_in: int, rate_out: int):
        import av

        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self._av = av
        self._r = av.AudioResampler(format="flt", layout="mono", rate=self.rate_out)
        self._pts = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(x, dtype=np.float32).reshape(1, -1),
                                                 format="flt", layout="mono")
        frame.sample_rate = self.rate_in
        frame.pts = self._pts
        self._pts += x.size
        out = [f.to_ndarray().reshape(-1) for f in self._r.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        out = [f.to_ndarray().reshape(-1) for f in self._r.resample(None)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


class AudioAnalyzer:
    """Onsets, beats with eight-counts and the onset envelope, causally, from AudioBlocks."""

    KEEP = 20_000      # events whose latency and tempo the summary keeps (the newest)
    NO_RHYTHM_BEATS = 6

    def __init__(self, settings: AudioSettings | None = None, sample_rate: int | None = None):
        self.settings = (settings or AudioSettings()).validate()
        self.sample_rate = int(sample_rate or self.settings.sample_rate)
        s = self.settings
        scale = self.sample_rate / s.sample_rate
        if scale != 1.0:
            # keep the hop/window durations of the settings at another analysis rate
            def p2(v: int) -> int:
                return 1 << max(6, int(round(np.log2(v * scale))))
            hop = max(16, int(round(s.onset_hop * scale)))
            ratio = max(1, int(round(s.beat_hop / s.onset_hop)))
            from dataclasses import replace
            s = replace(s, onset_hop=hop, onset_window=max(p2(s.onset_window), hop),
                        beat_hop=hop * ratio, beat_window=max(p2(s.beat_window), hop * ratio))
            self.settings = s.validate()
        self.hop = s.onset_hop
        self.hops_per_frame = s.beat_hop // s.onset_hop
        self.onsets = OnsetDetector(s, self.sample_rate)
        self.env = OnsetEnvelope(s, self.sample_rate)
        self.tracker = BeatTracker(s, self.sample_rate / s.beat_hop)
        self.counter = EightCounter(auto=s.downbeat_auto, guess_beats=s.downbeat_guess_beats)
        # beats are emitted once the audio reaches them: a frame's value describes its window centre
        self._lead = self.env.centre_offset / s.beat_hop
        n_env = max(1, int(round(s.envelope_seconds * self.sample_rate / s.beat_hop)))
        self._env_t: deque[float] = deque(maxlen=n_env)
        self._env_v: deque[float] = deque(maxlen=n_env)
        self._low: deque[tuple[int, float]] = deque(maxlen=16)   # (frame, kick-band flux)
        self._accent_due: list[tuple[int, int]] = []                # (beat index k, frame b)
        self._levels: deque[float] = deque(maxlen=max(1, int(round(0.5 * self.sample_rate / s.beat_hop))))
        self._pending = np.zeros(0, np.float32)
        self._frame_buf: list[np.ndarray] = []
        self._n = 0                        # analysis samples consumed into hops
        self._n_in = 0.0                   # analysis samples announced by blocks (anchor domain)
        self._anchors: deque[tuple[float, float]] = deque(maxlen=64)
        self._frames = 0                   # envelope frames
        self._resampler: StreamResampler | None = None
        self._block_rate: int | None = None
        self._was_tracking = False
        self._stats = {"blocks": 0, "samples": 0, "onsets": 0, "beats": 0, "reanchors": 0,
                       "resampled_from": None}
        # for the summary: the newest KEEP events' latencies and tempi (a live session runs for hours)
        self._onset_lat: deque[float] = deque(maxlen=self.KEEP)
        self._beat_lat: deque[float] = deque(maxlen=self.KEEP)
        self._bpms: deque[float] = deque(maxlen=self.KEEP)
        self._first_beat_t: float | None = None
        self._last_onset_n = 0             # analysis sample of the newest onset

    # ------------------------------------------------------------------ clock
    def time_of(self, n: float) -> float:
        """Media time of analysis sample index `n`."""
        if not self._anchors:
            return n / self.sample_rate
        n0, t0 = self._anchors[0]
        for a_n, a_t in self._anchors:
            if a_n <= n:
                n0, t0 = a_n, a_t
            else:
                break
        return t0 + (n - n0) / self.sample_rate

    # ------------------------------------------------------------------ input
    def process(self, block: AudioBlock) -> list[Onset | Beat]:
        """Analyse one block; returns the onsets and beats that became known, oldest first. Each is
        known at the end of this block (`known_at`): it cannot be handed on before the block is in."""
        rate = int(block.sample_rate)
        if rate <= 0:
            raise ValueError(f"audio block with sample rate {rate} Hz")
        x = to_mono_float(block.samples)
        if self._block_rate is None:
            self._block_rate = rate
        elif rate != self._block_rate:
            raise ValueError(f"sample rate changed mid-stream: {self._block_rate} -> {rate}")
        if rate != self.sample_rate and self._resampler is None:
            self._resampler = StreamResampler(rate, self.sample_rate)
            self._stats["resampled_from"] = rate
            log.info("resampling audio %d -> %d Hz", rate, self.sample_rate)
        # clock: where does this block's first sample sit on the analysis sample axis?
        expected = self.time_of(self._n_in)
        events: list[Onset | Beat] = []
        if not self._anchors:
            self._anchors.append((self._n_in, float(block.t)))
        # a hole of one lost block must count: 0.75 of this block (a 256-sample mic block is 5.8 ms,
        # and up to 3 lost ones under a fixed 20 ms left every later event early), 2..20 ms
        elif abs(float(block.t) - expected) > max(0.002, min(_REANCHOR_S, 0.75 * x.size / max(rate, 1))):
            gap = float(block.t) - expected
            self._stats["reanchors"] += 1
            log.debug("audio clock re-anchored: block t=%.4f, expected %.4f", block.t, expected)
            if 0 < gap <= _FILL_MAX_S:
                # a hole (dropped blocks, a gap in the file): silence in its place keeps the sample
                # axis, and with it the beat tracker's frame grid, on time (re-anchoring alone put
                # the beats predicted before a 150 ms hole 150 ms late after it)
                events += self._take(np.zeros(int(round(gap * rate)), np.float32), rate)
            self._anchors.append((self._n_in, float(block.t)))
        self._stats["blocks"] += 1
        self._stats["samples"] += int(x.size)
        if x.size:
            events += self._take(x, rate)
        stamp(block.stamps, "audio")
        return self._known(events, float(block.t) + x.size / rate)

    def _known(self, events: list[Onset | Beat], at: float) -> list[Onset | Beat]:
        for e in events:
            e.known_at = max(e.known_at, at)
            (self._beat_lat if isinstance(e, Beat) else self._onset_lat).append(e.known_at - e.t)
        return events

    def _take(self, x: np.ndarray, rate: int) -> list[Onset | Beat]:
        """Samples at the block rate onto the analysis sample axis, resampled, then analysed."""
        self._n_in += x.size * (self.sample_rate / rate)
        if self._resampler is not None:
            x = self._resampler(x)
        return self._consume(x)

    def flush(self) -> list[Onset | Beat]:
        """End of stream: push out what a resampler still holds (no padding, nothing invented)."""
        if self._resampler is None:
            return []
        return self._known(self._consume(self._resampler.flush()), self.time_of(self._n_in))

    def _consume(self, x: np.ndarray) -> list[Onset | Beat]:
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        events: list[Onset | Beat] = []
        hop = self.hop
        usable = (x.size // hop) * hop
        for start in range(0, usable, hop):
            chunk = x[start:start + hop]
            self._n += hop
            known_at = self.time_of(self._n)
            hit = self.onsets.process(chunk)
            if hit is not None:
                pos, strength = hit
                t = min(self.time_of(pos), known_at)      # never after the audio it was found in
                events.append(Onset(t=t, known_at=known_at, strength=strength))
                self._last_onset_n = self._n
                self._stats["onsets"] += 1
            self._frame_buf.append(chunk)
            if len(self._frame_buf) == self.hops_per_frame:
                frame = np.concatenate(self._frame_buf)
                self._frame_buf.clear()
                events.extend(self._beat_frame(frame, known_at))
        self._pending = x[usable:].copy()
        return events

    def _beat_frame(self, frame: np.ndarray, known_at: float) -> list[Beat]:
        s = self.settings
        # silence = nothing above the gate for the last half second (drum stems are quiet
        # between hits; that is not silence)
        self._levels.append(block_db(frame))
        silent = max(self._levels) < s.silence_db
        # no onset for NO_RHYTHM_BEATS beats (and silence_reset_s): the music stopped over a room's
        # noise floor (above the gate): beats stop and the grid goes, as in silence, until onsets return
        period_s = self.tracker.period * s.beat_hop / self.sample_rate
        if (self._n - self._last_onset_n) / self.sample_rate > max(s.silence_reset_s, self.NO_RHYTHM_BEATS * period_s):
            if self.tracker.active:
                self.tracker.reset(keep_tempo=True)
            silent = True
        value, low = self.env.process(frame)
        if silent:
            value, low = 0.0, 0.0
        n = self._frames
        self._frames += 1
        t_env = self.time_of(self._n - self.env.centre_offset)
        self._env_t.append(t_env)
        self._env_v.append(value)
        self._low.append((n, low))
        if self._accent_due:
            still = []
            for k, b in self._accent_due:
                if n >= b + 2:
                    self.counter.add_accent(k, max((v for f, v in self._low if b - 1 <= f <= b + 2), default=0.0))
                else:
                    still.append((k, b))
            self._accent_due = still
        due = self.tracker.step(n, value, silent, lead=self._lead)
        tracking = self.tracker.tracking
        if self._was_tracking and not tracking:
            self.counter.restart()
            self._accent_due.clear()
        self._was_tracking = tracking
        out = []
        for b in due:
            # frame b's value sits at its window centre: (b + 1) * beat_hop - centre_offset
            t = self.time_of((b + 1) * s.beat_hop - self.env.centre_offset)
            period_s = self.tracker.period * s.beat_hop / self.sample_rate
            count, phrase = self.counter.assign(t, period_s)
            self._accent_due.append((self.counter.k, b))
            bpm = self.tracker.bpm
            out.append(Beat(t=t, known_at=max(known_at, t), count=count, bpm=bpm, phrase=phrase))
            self._bpms.append(bpm)
            self._stats["beats"] += 1
            if self._first_beat_t is None:
                self._first_beat_t = t
        return out

    # ------------------------------------------------------------------ rig + metrics API
    def reset_count(self, t: float) -> None:
        """The rig says: the beat at media time `t` is count 1 (a phrase starts there)."""
        period_s = self.tracker.period * self.settings.beat_hop / self.sample_rate
        self.counter.reset(float(t), period_s)

    def envelope(self, seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Onset-strength envelope: (times on the media clock, values), oldest first,
        at `sample_rate / beat_hop` values per second, the last `seconds` (default: all kept)."""
        t = np.fromiter(self._env_t, dtype=float, count=len(self._env_t))
        v = np.fromiter(self._env_v, dtype=float, count=len(self._env_v))
        if seconds is not None and t.size:
            keep = t >= t[-1] - seconds
            t, v = t[keep], v[keep]
        return t, v

    @property
    def envelope_rate(self) -> float:
        return self.sample_rate / self.settings.beat_hop

    @property
    def bpm(self) -> float | None:
        return self.tracker.bpm if self.tracker.tempo_known else None

    def summary(self) -> dict:
        def stats(v: list[float]) -> dict:
            if not v:
                return {"median_ms": None, "p95_ms": None}
            a = np.asarray(v) * 1e3
            return {"median_ms": round(float(np.median(a)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2)}

        s = self.settings
        return {
            "type": "summary",
            "sample_rate": self.sample_rate,
            "resampled_from": self._stats["resampled_from"],
            "duration_s": round(self._n / self.sample_rate, 4),
            "blocks": self._stats["blocks"],
            "onsets": self._stats["onsets"],
            "beats": self._stats["beats"],
            "bpm": round(self.tracker.bpm, 2) if self.tracker.tempo_known else None,
            "bpm_median": round(float(np.median(self._bpms)), 2) if self._bpms else None,
            "tempo_confidence": round(self.tracker.confidence, 4),
            "first_beat_t": None if self._first_beat_t is None else round(self._first_beat_t, 4),
            "onset_latency": stats(self._onset_lat),
            "beat_latency": stats(self._beat_lat),
            "clock_reanchors": self._stats["reanchors"],
            "settings": {"onset_method": s.onset_method, "onset_hop": s.onset_hop,
                         "onset_window": s.onset_window, "onset_threshold": s.onset_threshold,
                         "onset_min_ioi_s": s.onset_min_ioi_s, "silence_db": s.silence_db,
                         "onset_delay_s": s.onset_delay_s, "beat_hop": s.beat_hop},
        }
