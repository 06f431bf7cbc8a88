"""Eight-counts (DanceMVP's Eight-Beats segmentation), assigned causally beat by beat.

Each beat gets a count 1..8; a phrase starts at every count 1 and `phrase` numbers the
phrases since the tracker (re)started. Which beat is "1" is a **guess** until the rig says
otherwise:

* auto guess: dance music usually puts the kick on 1 (and 3), the snare on 2 and 4, so the
  beat position in the bar (mod 4) whose low-band accent (kick energy at the beat) is the
  strongest becomes the bar start, and the phrase starts on a bar start. The guess may move
  during the first `downbeat_guess_beats` beats after the tracker locks, then it is frozen
  so counts never jump under a dancer's feet. A tempo change of more than 10%, once the
  tracker has held the new tempo for 4 beats, re-opens it for as many beats on the new tempo's
  accents (catching up with a new tempo the tracker can add or drop a beat, which would leave
  count 1 off the bar start for the rest of the song). Telling 1 from 5 (mod 8) needs
  phrase-level structure that a causal tracker does not have: the first bar start after lock is "1".
* `reset(t)` ("this is 1"): the beat nearest media time `t` becomes count 1 and stays the
  anchor (no more guessing) until the beat tracker loses the music (silence) and restarts.

Missed beats (a gap of more than 1.5 periods) advance the count by the number of periods.
"""
from __future__ import annotations

import numpy as np


class EightCounter:
    RETEMPO = 0.10                      # a tempo change this large re-opens the bar-start guess

    def __init__(self, auto: bool = True, guess_beats: int = 16):
        self.auto = auto
        self.guess_beats = max(0, int(guess_beats))
        self.restart()

    def restart(self) -> None:
        """The tracker lost the beat: counting starts again from an automatic guess."""
        self.k = -1                     # index of the last beat since restart
        self.last_t: float | None = None
        self.offset = 0                 # beat index k with (k - offset) % 8 == 0 is count 1
        self.accents: dict[int, float] = {}
        self._guess_from = 0            # beat index where the current guessing window opened
        self._period: float | None = None   # the tempo that window opened at
        self._new: float | None = None      # a different tempo the tracker is settling on
        self._settling = 0                  # beats it has held that tempo
        self._changed_at = -4
        self.manual = False
        self.pending_reset: float | None = None
        self.phrase = -1
        self._last_count = 0

    def reset(self, t: float, period: float | None = None) -> None:
        """The rig says: the beat at media time `t` is 1."""
        self.manual = True
        if self.last_t is not None and period:
            if t <= self.last_t + period / 2.0:
                # the last emitted beat (or an earlier one) was "1"
                back = int(round((self.last_t - t) / period)) if t < self.last_t else 0
                self.offset = self.k - back
                self.pending_reset = None
                return
        self.pending_reset = t

    def assign(self, t: float, period: float) -> tuple[int, int]:
        """Count (1..8), phrase index and beat index for a new beat at time `t`."""
        step = 1
        if self.last_t is not None and period > 0:
            step = max(1, int(round((t - self.last_t) / period)))
        self.k += step
        self.last_t = t
        if self._period is None:
            self._period = period if period > 0 else None
        elif period > 0 and abs(period / self._period - 1.0) > self.RETEMPO:
            # a new tempo: once the tracker has held it for a bar, guess the bar start afresh
            self._settling = self._settling + 1 if self._new and abs(period / self._new - 1.0) < 0.03 else 0
            self._new = period
            if self._settling >= 4:
                self._guess_from, self.accents, self._period, self._settling = self.k, {}, period, 0
        else:
            self._settling = 0
        if self.pending_reset is not None and t >= self.pending_reset - period / 2.0:
            # the pressed beat is 1; this one is as many beats after it (pressed in the warm-up,
            # before the first beat came out, that is several: the first beat out is not the 1)
            back = int(round((t - self.pending_reset) / period)) if period > 0 else 0
            self.offset = self.k - back
            self.pending_reset = None
        elif self.auto and not self.manual and self.k - self._guess_from < self.guess_beats:
            guess = self._guess()
            # move to a new guess only where it starts a bar, so the count restarts at 1
            # instead of jumping into the middle of a phrase
            if (guess is not None and (self.k - guess) % 4 == 0 and (self.k - self.offset) % 4 != 0
                    and self.k - self._changed_at >= 4):
                self.offset = self.k
                self._changed_at = self.k
        count = (self.k - self.offset) % 8 + 1
        if self.phrase < 0 or count <= self._last_count or step >= 8:
            self.phrase += 1
        self._last_count = count
        return count, self.phrase

    def add_accent(self, k: int, accent: float) -> None:
        """Kick-band accent measured around beat `k` (known a few frames after the beat)."""
        if 0 <= k - self._guess_from < max(self.guess_beats, 1) * 2:
            self.accents[k] = float(accent)

    def _guess(self) -> int | None:
        """Bar phase (mod 4) with the strongest mean accent, if clearly the strongest."""
        if len(self.accents) < 4:
            return None
        sums = np.zeros(4)
        counts = np.zeros(4)
        for k, a in self.accents.items():
            sums[k % 4] += a
            counts[k % 4] += 1
        if np.any(counts == 0):
            return None
        scores = sums / counts
        p = int(np.argmax(scores))
        current = self.offset % 4
        if p != current and scores[p] < 1.2 * scores[current]:
            return current  # hysteresis: keep the current bar phase unless clearly weaker
        return p
