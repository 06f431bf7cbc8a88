"""One object for the pipeline: draw the overlay once per frame, send it to every chosen output.

Outputs: ``record`` (an MP4 path, `--record`), ``show`` (an OpenCV window, `--show`) and
``page_port`` (the local MJPEG page). With none chosen, nothing is drawn. ``on_count_one`` is the
rig's "this is 1" (the page's button, the window's key 1): it resets the eight-count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from edge.feedback.overlay import Overlay, OverlayStyle
from edge.records import Beat, PoseFrame


class FeedbackSink:
    def __init__(self, record: str | Path | None = None, show: bool = False, page_port: int | None = None,
                 page_host: str = "127.0.0.1", fps: float = 30.0, style: OverlayStyle | None = None,
                 on_count_one=None):
        self.overlay = Overlay(style)
        self.recorder = self.window = self.page = None
        try:
            if record:
                from edge.feedback.recorder import OverlayRecorder
                self.recorder = OverlayRecorder(record, fps=fps)
            if show:
                from edge.feedback.window import OverlayWindow
                self.window = OverlayWindow(on_count_one=on_count_one)
            if page_port is not None:
                from edge.feedback.page import OverlayPage
                self.page = OverlayPage(page_host, page_port, on_count_one=on_count_one).start()
        except Exception:
            self.close()
            raise
        self.wants_stop = False

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.recorder, self.window, self.page))

    def on_beat(self, beat: Beat) -> None:
        self.overlay.on_beat(beat)

    def on_feedback(self, feedback: Mapping[int, Mapping]) -> None:
        for track_id, fields in feedback.items():
            self.overlay.on_feedback(track_id, **fields)

    def write(self, image: np.ndarray, poses: PoseFrame | None, latency_ms: float | None = None,
              t: float | None = None) -> np.ndarray | None:
        """Draw and send one frame; returns the annotated frame (None when no output is active)."""
        if not self.active:
            return None
        if t is None and poses is not None:
            t = poses.t
        out = self.overlay.draw(image, poses, latency_ms, t=t)
        if self.recorder is not None:
            self.recorder.write(out, t)
        if self.window is not None and not self.window.show(out):
            self.wants_stop = True          # the user closed the window
        if self.page is not None:
            self.page.publish(out)
        return out

    def close(self) -> None:
        """Close every output, each even if another one fails (the first error is raised after)."""
        parts = [p.close for p in (self.recorder, self.window) if p is not None]
        if self.page is not None:
            parts.append(self.page.stop)
        self.recorder = self.window = self.page = None
        error = None
        for close in parts:
            try:
                close()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> "FeedbackSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
