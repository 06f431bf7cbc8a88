"""MotionStage: pose frames and music events in, per-dancer window results (embedding + rhythm) out.

    stage = MotionStage(settings, audio_offset=0.0)
    for event in audio_events: stage.push_audio(event)      # edge.records.Onset / Beat, any time
    for frame in pose_frames:
        for result in stage.push(frame):                     # WindowResult, to_json() -> "window" record
            ...
    stage.session_summary()                                  # {dancer: rhythm metrics over the session}

Music events may come from the live tracker or from another file (`--audio FILE --audio-offset S`):
an event at audio time t is taken to happen at media time t + audio_offset. A window's rhythm is
computed against the events known when the window closes; onsets stand in for beats only until the
first beat arrives. The encoder is loaded lazily; pass `encoder=False` for rhythm only.
`keep_session=False` (the live graph): no session summary, and music events older than KEEP_S
are forgotten, so memory does not grow with the session.
"""
from __future__ import annotations

import bisect
from typing import Iterable

import numpy as np

from edge.motion import rhythm
from edge.motion.settings import MotionSettings
from edge.motion.windows import WindowCutter, confident
from edge.records import Beat, Onset, PoseFrame, Window, WindowResult, stamp


class MotionStage:

    KEEP_S = 60.0    # live: music events this much older than the newest frame are forgotten

    def __init__(self, settings: MotionSettings | None = None, encoder=None, audio_offset: float = 0.0,
                 fps: float | None = None, keep_session: bool = True):
        self.s = settings or MotionSettings()
        self.offset = float(audio_offset)
        self.cutter = WindowCutter(self.s, fps=fps)
        self._encoder = encoder
        self.keep_session = keep_session
        self.onsets: list[Onset] = []
        self.beats: list[Beat] = []
        self.had_beats = False           # a beat grid was known at some point: onsets no longer stand in
        self.session: dict[int, rhythm.SessionRhythm] = {}

    @property
    def encoder(self):
        if self._encoder is None:
            from edge.motion.encoder import MotionEncoder
            self._encoder = MotionEncoder(settings=self.s)
        return self._encoder or None

    def push_audio(self, event: Onset | Beat) -> None:
        if isinstance(event, Beat):
            self.beats.append(event)
            self.had_beats = True
            shifted = Beat(event.t + self.offset, event.known_at + self.offset, event.count, event.bpm, event.phrase)
            self.cutter.push_beat(shifted)
        elif isinstance(event, Onset):
            self.onsets.append(event)

    def push_audio_events(self, events: Iterable[Onset | Beat]) -> None:
        for e in events:
            self.push_audio(e)

    def push(self, frame: PoseFrame) -> list[WindowResult]:
        windows = self.cutter.push(frame)
        if self.keep_session:
            step = self.cutter.step
            for pose in frame.poses:
                kp = np.asarray(pose.kp17)
                valid = confident(kp, self.s.min_joint_conf)
                self.session.setdefault(int(pose.track_id), rhythm.SessionRhythm(self.s)).push(frame.t, kp, valid, step)
        out = self.process(windows, frame.stamps)
        if not self.keep_session:
            self._forget_before(frame.t - self.offset - self.KEEP_S)
        return out

    def _forget_before(self, t: float) -> None:
        for events in (self.onsets, self.beats):
            if events and events[0].t < t - 10.0:          # in steps of 10 s, not on every frame
                del events[:bisect.bisect_left(events, t, key=lambda e: e.t)]

    def flush(self) -> list[WindowResult]:
        """End of stream: whatever the cutter still holds."""
        return self.process(self.cutter.flush())

    def process(self, windows: list[Window], stamps: dict | None = None) -> list[WindowResult]:
        if not windows:
            return []
        st = dict(stamps or {})
        stamp(st, "window")
        enc = self.encoder if self._encoder is not False else None
        if enc:
            emb = enc.encode(windows)
        else:
            emb = np.zeros((len(windows), 0), np.float32)
        stamp(st, "encode")
        out = []
        for w, e in zip(windows, emb):
            onsets, beats = self._events_near(w.t0, w.t1)
            r = rhythm.window_metrics(w.kp, w.times, w.mask, onsets, beats, self.offset, self.s, w.t0, w.t1,
                                      fallback=not self.had_beats)
            out.append(WindowResult(w, e, r, dict(st)))
        for res in out:
            stamp(res.stamps, "rhythm")
        return out

    MARGIN_S = 2.0   # music events this far outside a window still count for its metrics (tolerances, offsets)

    def _events_near(self, t0: float, t1: float) -> tuple[list[Onset], list[Beat]]:
        """The onsets and beats near [t0, t1] in media time (both lists are in time order), so a
        window's cost does not grow with the session."""
        lo, hi = t0 - self.offset - self.MARGIN_S, t1 - self.offset + self.MARGIN_S
        pick = []
        for events in (self.onsets, self.beats):
            a = bisect.bisect_left(events, lo, key=lambda e: e.t)
            b = bisect.bisect_right(events, hi, key=lambda e: e.t)
            pick.append(events[a:b])
        return pick[0], pick[1]

    def primitives(self) -> list[WindowResult]:
        """Eight-beat primitives cut since the last call (needs Beat events with counts)."""
        prims, self.cutter.primitives = self.cutter.primitives, []
        return self.process(prims)

    def session_summary(self) -> dict[int, dict]:
        if not self.keep_session:
            raise RuntimeError("this MotionStage keeps no session (keep_session=False)")
        return {tid: sr.summary(self.onsets, self.beats, self.offset) for tid, sr in sorted(self.session.items())}
