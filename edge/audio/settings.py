"""AudioSettings: every knob of the causal audio path (onsets, tempo/beats, eight-counts, mic).

Loaded like every other settings object (``dancewire.config.load``): a TOML table, the
environment, or ``--set field=value``. Sample counts are at the analysis rate
(`sample_rate`); the defaults were chosen with ``dancewire bench audio_accuracy``.
"""
from __future__ import annotations

from dataclasses import dataclass

ONSET_METHODS = ("hfc", "energy", "complex", "phase", "wphase", "specdiff", "kl", "mkl", "specflux")


@dataclass(frozen=True)
class AudioSettings:
    # Analysis rate: files are decoded to it, mic blocks at another rate are resampled to it.
    sample_rate: int = 44100

    # --- onsets (aubio.onset) ---
    onset_method: str = "hfc"            # one of ONSET_METHODS (aubio's "default" is "hfc")
    onset_hop: int = 64                  # samples per analysis step: 1.45 ms at 44.1 kHz
    onset_window: int = 512              # FFT size (power of two)
    onset_threshold: float = 0.12        # aubio peak-picking threshold (lower: more onsets)
    onset_min_ioi_s: float = 0.02        # minimum inter-onset interval
    silence_db: float = -60.0            # blocks quieter than this (dBFS) give no onsets and no beats
    # Constant delay compensation: subtracted from aubio's detection position to give the
    # onset time `t`. Measured on the benchmark data for the default window and hop.
    onset_delay_s: float = 0.002

    # --- onset-strength envelope and beat tracking ---
    beat_hop: int = 512                  # samples per envelope frame (~86 frames/s at 44.1 kHz)
    beat_window: int = 1024              # FFT size of the envelope's spectrogram
    low_band_hz: float = 200.0           # kick band, weighted up in the beat envelope
    envelope_log_gamma: float = 1.0      # log(1 + gamma * |X|) compression of the spectrum
    low_band_weight: float = 2.0         # weight of the kick band among the four band means
    tempo_min_bpm: float = 70.0
    tempo_max_bpm: float = 180.0
    tempo_prior_bpm: float = 120.0       # centre of the log-normal tempo prior
    tempo_prior_octaves: float = 1.0     # its width (standard deviation, in octaves)
    tempo_window_s: float = 6.0          # envelope history used for the tempo estimate
    tempo_memory_s: float = 2.0          # exponential taper of that history (0: none)
    tempo_change_sigma_bpm: float = 2.0  # how far the tempo may move per estimate at 120 BPM (scales with the tempo)
    beat_warmup_s: float = 2.0           # non-silent audio needed before the first beat
    beat_phase_sigma: float = 0.1        # width (in periods) of the window around the expected next beat
    beat_phase_floor: float = 0.7        # weight of a phase far from the expected beat (switch if 1/floor x better)
    silence_reset_s: float = 2.0         # this long below `silence_db`: beats stop, tracker resets

    # --- eight-counts ---
    downbeat_auto: bool = True           # guess which beat is "1" from the low-band accent
    downbeat_guess_beats: int = 16       # the guess may move during this many beats, then locks

    # --- exposure ---
    envelope_seconds: float = 12.0       # how much onset-strength envelope `envelope()` keeps

    # --- microphone (sounddevice / PortAudio) ---
    mic_device: str | None = None        # name substring or index; None: the default input
    mic_channels: int = 1                # 1 or 2 (downmixed to mono)
    mic_sample_rate: int | None = None   # None: the analysis rate (else resampled)
    mic_blocksize: int = 256             # frames per PortAudio callback
    mic_latency: str = "low"             # PortAudio suggested latency: "low", "high" or seconds
    mic_queue_blocks: int = 256          # bounded queue between callback and analyzer (~1.5 s)
    # Added to every mic block time, for devices whose reported ADC time is off by a constant
    # (e.g. measured with the clap test in calibrate/). Positive: the audio really happened later.
    mic_offset_s: float = 0.0

    def validate(self) -> "AudioSettings":
        from dancewire.config import require

        def need(cond: bool, msg: str) -> None:
            require(cond, "audio", msg)

        need(self.sample_rate >= 8000, f"sample_rate {self.sample_rate} < 8000")
        need(self.onset_delay_s >= 0, f"onset_delay_s {self.onset_delay_s} < 0")
        need(self.onset_method in ONSET_METHODS, f"onset_method {self.onset_method!r} not in {ONSET_METHODS}")
        for name in ("onset_window", "beat_window"):
            v = getattr(self, name)
            need(v >= 64 and v & (v - 1) == 0, f"{name} {v} must be a power of two >= 64")
        need(0 < self.onset_hop <= self.onset_window, "onset_hop must be in (0, onset_window]")
        need(0 < self.beat_hop <= self.beat_window, "beat_hop must be in (0, beat_window]")
        need(self.beat_hop % self.onset_hop == 0, "beat_hop must be a multiple of onset_hop")
        need(0 < self.tempo_min_bpm < self.tempo_max_bpm, "need 0 < tempo_min_bpm < tempo_max_bpm")
        need(self.tempo_window_s * self.tempo_min_bpm / 60.0 >= 2.0,
             "tempo_window_s must hold at least two beats at tempo_min_bpm")
        need(self.mic_channels in (1, 2), "mic_channels must be 1 or 2")
        need(self.onset_min_ioi_s >= 0 and self.onset_threshold >= 0, "thresholds must be >= 0")
        return self
