"""Windows: Tong's sampling, masks, minimum valid samples, live hop, eight-beat primitives."""
from __future__ import annotations

import numpy as np
import pytest

from edge.motion.settings import MotionSettings
from edge.motion.windows import WindowCutter, cut_arrays, cut_sequence, sample_step, samples_per_window
from edge.records import Beat, Pose, PoseFrame


@pytest.mark.parametrize("fps,step,n", [(24, 1, 48), (25, 1, 50), (30, 1, 60), (59.94, 1, 60), (60, 2, 60),
                                         (90, 3, 60), (120, 4, 60)])
def test_tong_sampling(fps, step, n):
    assert sample_step(fps) == step
    assert samples_per_window(fps) == n


def _seq(T, fps=30.0):
    t = np.arange(T) / fps
    kp = np.zeros((T, 17, 3), np.float32)
    kp[..., 0] = 100 + 10 * np.sin(t)[:, None] + np.arange(17)
    kp[..., 1] = 200 + np.arange(17) * 5
    kp[..., 2] = 0.9
    return kp


def test_offline_windows_masks_and_min_valid():
    kp = _seq(300, 60.0)
    kp[40:70] = np.nan                       # a hole of 0.5 s
    w, m, starts = cut_arrays(kp, 60.0, hop_s=0.5)
    assert w.shape[1:] == (60, 17, 3) and m.shape[1] == 60
    first = m[0]
    # samples 20..34 of the first window (frames 40..69 at step 2) are masked
    assert not first[20:35].any() and first[:20].all() and first[35:].all()
    assert np.all(w[0][~first] == 0)
    assert (m.sum(1) >= 18).all()
    kp2 = _seq(300, 60.0)
    kp2[:] = np.nan
    kp2[::10] = _seq(300, 60.0)[::10]        # only 6 real samples per window -> dropped
    assert len(cut_arrays(kp2, 60.0)[0]) == 0


def test_cut_sequence_times_25fps():
    ws = cut_sequence(_seq(100, 25.0), 25.0, hop_s=1.0)
    assert len(ws) == 3
    assert ws[0].mask.sum() == 50 and not ws[0].mask[50:].any()
    assert np.allclose(np.diff(ws[0].times[:50]), 0.04)


def _frame(i, t, ids, fps=30.0, conf=0.9):
    poses = []
    for tid in ids:
        kp = _seq(1)[0] + tid * 50
        kp[:, 2] = conf
        poses.append(Pose(tid, t, kp, np.array([0, 0, 10, 10.0]), conf))
    return PoseFrame(i, t, 640, 480, poses)


def test_live_cutter_hop_tracks_and_gaps():
    cut = WindowCutter(MotionSettings(hop_s=0.5))
    out = []
    for i in range(int(5 * 30)):
        t = i / 30.0
        ids = [1] if 60 <= i < 75 else [1, 2]      # dancer 2 hidden for 0.5 s
        out += cut.push(_frame(i, t, ids))
    w1 = [w for w in out if w.track_id == 1]
    w2 = [w for w in out if w.track_id == 2]
    assert len(w1) == 6                              # starts 0, 0.5, ..., 2.5 (the 3.0 one needs 5 s)
    assert np.allclose([w.t0 for w in w1], np.arange(6) * 0.5, atol=1e-6)
    assert all(w.mask.sum() == 60 for w in w1)
    hidden = [w for w in w2 if w.t0 < 2.4 and w.t1 > 2.1]
    assert hidden and all(w.mask.sum() < 60 for w in hidden)
    assert all(abs(w.t1 - w.t0 - 2.0) < 1e-9 for w in out)


def test_low_confidence_frames_are_masked():
    cut = WindowCutter()
    out = []
    for i in range(75):
        out += cut.push(_frame(i, i / 30.0, [0], conf=0.05 if i % 2 else 0.9))
    assert out and out[0].mask.sum() == 30


def test_eight_beat_primitives():
    cut = WindowCutter(MotionSettings(eight_beats=True))
    beats = [Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0, k // 8) for k in range(20)]
    for b in beats:
        cut.push_beat(b)
    for i in range(int(9 * 30)):
        cut.push(_frame(i, i / 30.0, [3]))
    prims = cut.primitives
    assert [round(p.t0, 3) for p in prims] == [0.0, 4.0]
    assert all(abs(p.t1 - p.t0 - 4.0) < 1e-9 and p.mask.sum() == 60 for p in prims)
