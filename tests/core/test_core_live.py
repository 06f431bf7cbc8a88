"""The live runner's pacing: a paced file starts at media time 0 when the runner starts, however
long model loading and the cloud connection took before (nothing floods the leaky queue)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edge.live import LiveRunner
from edge.pipeline import EdgeGraph
from edge.records import Pose, PoseFrame
from edge.settings import EdgeSettings
from edge.sources.clock import RigClock


def _frames(n=25, fps=25.0):
    for i in range(n):
        kp = np.zeros((17, 3), np.float32)
        kp[:, 0], kp[:, 1], kp[:, 2] = 100 + np.arange(17), 50 + 10 * np.arange(17), 0.9
        yield PoseFrame(i, i / fps, 640, 480, [Pose(1, i / fps, kp, np.array([100, 50, 117, 210.0]), 0.9)])


def test_a_paced_source_starts_when_the_runner_starts():
    clock = RigClock(origin=time.monotonic() - 3.0)          # built 3 s ago (models, link, ...)
    runner = LiveRunner(EdgeSettings(), EdgeGraph(EdgeSettings()), clock=clock)
    runner.add_video(_frames, paced=True)
    t0 = time.monotonic()
    runner.run(duration=10)
    wall = time.monotonic() - t0
    assert runner.counters["frames_done"] == 25 and runner.frames.dropped == 0
    assert 0.9 < wall < 3.0                                  # played at real time: 25 frames = 1 s
    assert len(runner.timeline) == 25


def test_a_dead_microphone_ends_the_run_with_its_error_while_frames_keep_coming():
    """The mic's DeviceError is raised by run() as soon as it happens, not only when the camera
    also stops (it was swallowed while frames arrived, and the rig ran on without music)."""
    import pytest

    from dancewire.errors import DeviceError
    from edge.sources.demo import DemoMusic, DemoSettings

    settings = EdgeSettings()
    runner = LiveRunner(settings, EdgeGraph.build(settings, video=False, audio=True, encoder=False))
    runner.add_video(lambda: _frames(n=250), paced=True)     # 10 s of frames
    music = DemoMusic(DemoSettings())

    def failing_mic():
        for i, block in enumerate(music.blocks()):
            if i == 20:
                raise DeviceError("audio input 'USB mic' delivered nothing for 2.0 s")
            yield block

    runner.add_audio(failing_mic, paced=True)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="USB mic"):
        runner.run(duration=8.0)
    assert time.monotonic() - t0 < 3.0 and runner.counters["frames_done"] < 100


def test_the_overlay_shows_the_stable_style_with_its_own_probability():
    """While the smoothed distribution already leans to tango, the stable label is still salsa: the rig
    showed 'salsa 52%' (tango's probability) instead of salsa's 48%."""
    from edge.live import overlay_info
    from proto import codec

    fb = codec.make_dancer_feedback(1, 7, {"salsa": 0.48, "tango": 0.52}, style="salsa", confidence=0.48,
                                    nearest=[("ref-1", "salsa", 0.9)])
    assert overlay_info(fb) == {"style": "salsa", "prob": pytest.approx(0.48), "similarity": pytest.approx(0.9)}
    early = codec.make_dancer_feedback(1, 2, {"salsa": 0.3, "tango": 0.7})     # no stable label yet
    assert overlay_info(early) == {"style": "tango", "prob": pytest.approx(0.7), "similarity": None}
