"""Rig feedback: the overlay (skeletons, beat, eight-count, style, latency) and its outputs.

`overlay.draw_overlay` draws; `recorder.OverlayRecorder` (--record), `window.OverlayWindow`
(--show) and `page.OverlayPage` (local MJPEG page) show; `sink.FeedbackSink` ties them together.
"""
