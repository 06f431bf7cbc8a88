"""Progress for long work (model build, training, calibration, enrolment), on stderr."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    """A one-line progress meter; prints at most every `interval` seconds, always the last step."""

    def __init__(self, desc: str, total: int | None = None, interval: float = 0.5, stream=None):
        self.desc, self.total, self.interval = desc, total, interval
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval or (self.total is not None and self.done >= self.total):
            self._last = now
            self._print(note)

    def _print(self, note: str) -> None:
        elapsed = time.monotonic() - self.start
        if self.total:
            pct = 100.0 * self.done / self.total
            msg = f"{self.desc}: {self.done}/{self.total} ({pct:5.1f}%) {elapsed:6.1f}s"
        else:
            msg = f"{self.desc}: {self.done} {elapsed:6.1f}s"
        if note:
            msg += f"  {note}"
        print(msg, file=self.stream, flush=True)

    def step(self, note: str) -> None:
        """Announce a named phase of work."""
        self.update(1, note)


def track(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = Progress(desc, total)
    for item in items:
        yield item
        bar.update()
