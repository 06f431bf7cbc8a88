"""The microphone through sounddevice/PortAudio in callback mode, on the rig clock.

How a block is stamped (input latency accounting): PortAudio calls back with
``time.inputBufferAdcTime``, the time the block's first sample was captured by the ADC, and
``time.currentTime``, both on the stream's clock. Reading ``time.monotonic()`` at the top of
the callback gives the offset between that clock and the rig's, so

    t = rig.from_monotonic(monotonic_now - (currentTime - inputBufferAdcTime)) + mic_offset_s

is the capture time of the first sample on the same monotonic axis as the camera frames:
the driver's and PortAudio's input buffering (the "input latency") is *excluded* from ``t``.
When a host API reports no ADC time (0), the fallback is ``monotonic_now - stream.latency -
frames / rate`` (PortAudio's own input latency estimate). Delays that no API reports (a USB
or Bluetooth codec) are a constant: measure it with the clap test and set
``audio.mic_offset_s``. Processing delay is separate: an event's ``known_at`` is the media
time of the last sample the analyzer had, and the wall-clock delay after that is the
analyzer's compute time (stamped in ``AudioBlock.stamps``).

PortAudio's stamps jitter from callback to callback (milliseconds), and through PulseAudio's
ALSA plugin they can even step by hundreds of milliseconds while no sample is lost; the
sample count is the steady clock. So the first block is stamped with its ADC time, each next
block continues ``t + frames / rate``, and the stamps only steer that slowly (2 % of the
difference per callback, at most 500 ppm: enough for real clock drift). A reported input
overflow (samples lost) or a stamp more than 1 s off re-syncs to the ADC time (``resyncs``).

The callback only copies the block into a bounded queue (dropping the oldest block when the
consumer falls behind; the analyzer re-anchors its clock across the gap). Blocks keep the
device rate; the analyzer resamples when it differs from the analysis rate.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterator

import numpy as np

from dancewire.errors import DeviceError
from edge.audio.settings import AudioSettings
from edge.queues import Closed, LeakyQueue
from edge.records import AudioBlock, stamp
from edge.sources.clock import RigClock

log = logging.getLogger(__name__)

_STAMP_GAIN = 0.02   # per callback: the stamp follows PortAudio's ADC time with a ~50-block time constant,
_MAX_DRIFT = 5e-4    # but never faster than 500 ppm (real clock drift is well below; stamp steps are not)
_RESYNC_S = 1.0      # a stamp this far off (or an input overflow) is a real discontinuity: jump to it


def _sd():
    try:
        import sounddevice as sd
    except ImportError as exc:
        raise DeviceError(f"microphone support is not installed (pip install 'dancewire[mic]'): {exc}") from None
    except OSError as exc:  # libportaudio2 missing
        raise DeviceError(f"PortAudio is not available (apt-get install libportaudio2): {exc}") from None
    return sd


def list_input_devices() -> list[dict]:
    """[{index, name, hostapi, channels, default_samplerate}] for devices with inputs."""
    sd = _sd()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except Exception as exc:  # PortAudioError and friends
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    out = []
    for i, d in enumerate(devices):
        if d.get("max_input_channels", 0) > 0:
            out.append({"index": i, "name": d["name"], "hostapi": apis[d["hostapi"]]["name"],
                        "channels": int(d["max_input_channels"]),
                        "default_samplerate": float(d["default_samplerate"])})
    return out


def describe_devices() -> str:
    sd = _sd()
    try:
        devices = sd.query_devices()
    except Exception as exc:
        return f"(cannot list devices: {exc})"
    if len(devices) == 0:
        return "PortAudio sees no audio devices at all"
    parts = [f"{i}: {d['name']!r} (in {d['max_input_channels']}, out {d['max_output_channels']})"
             for i, d in enumerate(devices)]
    return "devices: " + "; ".join(parts)


def resolve_input_device(device: str | int | None) -> int:
    """Index of the input device: `None` = PortAudio's default input, an int or digit string =
    that index, else the first input whose name contains the string. DeviceError otherwise."""
    sd = _sd()
    inputs = list_input_devices()
    if device is None or (isinstance(device, str) and device.strip() == ""):
        try:
            idx = sd.default.device[0]
            if idx is None or int(idx) < 0:
                raise ValueError("no default input")
            info = sd.query_devices(int(idx), "input")
            if info["max_input_channels"] <= 0:
                raise ValueError("default device has no input channels")
            return int(idx)
        except Exception:
            if inputs:
                return int(inputs[0]["index"])
            raise DeviceError(f"no audio input device found; {describe_devices()}") from None
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        idx = int(device)
        if any(d["index"] == idx for d in inputs):
            return idx
        raise DeviceError(f"audio device {idx} is not an input device; {describe_devices()}")
    for d in inputs:
        if str(device).lower() in d["name"].lower():
            return int(d["index"])
    raise DeviceError(f"no audio input device matches {device!r}; {describe_devices()}")


class MicSource:
    """Live AudioBlocks from an input device. Use as a context manager or call start()/stop()."""

    def __init__(self, settings: AudioSettings | None = None, clock: RigClock | None = None,
                 device: str | int | None = None):
        self.settings = settings or AudioSettings()
        self.clock = clock or RigClock()
        self._sd = _sd()
        self.device = resolve_input_device(device if device is not None else self.settings.mic_device)
        info = self._sd.query_devices(self.device, "input")
        self.device_name = info["name"]
        self.sample_rate = int(self.settings.mic_sample_rate or self.settings.sample_rate)
        self.channels = min(int(self.settings.mic_channels), int(info["max_input_channels"]))
        self.queue: LeakyQueue[AudioBlock] = LeakyQueue(self.settings.mic_queue_blocks, name="mic")
        self.overflows = 0
        self.fallback_stamps = 0
        self.resyncs = 0
        self._t_next: float | None = None
        self._stream = None
        self._lock = threading.Lock()

    # PortAudio's thread: keep it short, never block
    def _callback(self, indata, frames, time_info, status) -> None:
        now = time.monotonic()
        if status:
            if status.input_overflow:
                self.overflows += 1
        try:
            adc = float(time_info.inputBufferAdcTime)
            cur = float(time_info.currentTime)
        except Exception:
            adc = cur = 0.0
        if adc > 0.0 and cur > 0.0 and 0.0 <= cur - adc < 2.0:
            t_mono = now - (cur - adc)
        else:
            self.fallback_stamps += 1
            lat = self._stream.latency if self._stream is not None else 0.0
            t_mono = now - float(lat or 0.0) - frames / self.sample_rate
        # PortAudio's per-callback stamps jitter by milliseconds (more through PulseAudio); the
        # sample count is the steadier clock. Follow the stamps slowly (drift), jump on gaps.
        overflow = bool(status and status.input_overflow)
        if self._t_next is None or overflow or abs(t_mono - self._t_next) > _RESYNC_S:
            if self._t_next is not None:
                self.resyncs += 1
            t_smooth = t_mono
        else:
            limit = _MAX_DRIFT * frames / self.sample_rate
            t_smooth = self._t_next + float(np.clip(_STAMP_GAIN * (t_mono - self._t_next), -limit, limit))
        self._t_next = t_smooth + frames / self.sample_rate
        t_mono = t_smooth
        x = np.asarray(indata, dtype=np.float32)
        mono = x[:, 0].copy() if x.shape[1] == 1 else x.mean(axis=1).astype(np.float32)
        block = AudioBlock(t=self.clock.from_monotonic(t_mono) + self.settings.mic_offset_s,
                           samples=mono, sample_rate=self.sample_rate)
        stamp(block.stamps, "capture")
        self.queue.put(block)

    def start(self) -> "MicSource":
        latency = self.settings.mic_latency
        try:
            latency = float(latency)
        except (TypeError, ValueError):
            pass
        try:
            self._stream = self._sd.InputStream(device=self.device, channels=self.channels,
                                                samplerate=self.sample_rate, blocksize=self.settings.mic_blocksize,
                                                dtype="float32", latency=latency, callback=self._callback)
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise DeviceError(f"cannot open audio input {self.device} ({self.device_name!r}) at "
                              f"{self.sample_rate} Hz, {self.channels} ch: {exc}") from None
        log.info("mic %r: %d Hz, %d ch, block %d, input latency %.1f ms", self.device_name, self.sample_rate,
                 self.channels, self.settings.mic_blocksize, 1e3 * float(self._stream.latency or 0.0))
        return self

    def blocks(self, timeout: float = 2.0, start_timeout: float = 8.0) -> Iterator[AudioBlock]:
        """Blocks until stop() (starting the stream first if needed; a stream started here is
        stopped when the iterator ends). DeviceError when the device delivers nothing for `timeout`
        s (`start_timeout` for the first block: PulseAudio can take seconds to start a stream)."""
        owned = self._stream is None
        if owned:
            self.start()
        wait = start_timeout
        try:
            while True:
                try:
                    block = self.queue.get(timeout=wait)
                except Closed:
                    return
                except TimeoutError:
                    raise DeviceError(f"audio input {self.device_name!r} delivered nothing for {wait:.1f} s") from None
                wait = timeout
                yield block
        finally:
            if owned:
                self.stop()

    def stop(self) -> None:
        with self._lock:
            if self._stream is not None:
                try:
                    self._stream.stop()
                    self._stream.close()
                finally:
                    self._stream = None
            self.queue.close()

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def __enter__(self) -> "MicSource":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
