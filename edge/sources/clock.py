"""The rig clock: one monotonic time base, in seconds from the source's start.

Files: media time is the stream's pts relative to the container's start, for video and audio
alike (both streams share the container's origin). Live devices: a frame or audio block is
stamped with `RigClock.now()` at capture (the mic maps PortAudio's ADC time onto the same
clock), so camera and microphone events land on one axis.
"""
from __future__ import annotations

import time


class RigClock:
    def __init__(self, origin: float | None = None):
        self.origin = time.monotonic() if origin is None else origin

    def restart(self) -> None:
        """Time 0 is now (before any source starts: a paced file plays from here)."""
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin

    def from_monotonic(self, t_monotonic: float) -> float:
        return t_monotonic - self.origin

    def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)
