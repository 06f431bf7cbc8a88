"""Windows: Tong's sampling, masks, minimum valid samples, live hop, eight-beat primitives."""
from __future__ import annotations

import numpy as np
import pytest

from edge.motion import rhythm
from edge.motion.settings import MotionSettings
from edge.motion.stage import MotionStage
from edge.motion.windows import (
    WindowCutter,
    cut_arrays,
    cut_sequence,
    nominal_fps,
    sample_step,
    samples_per_window,
)
from edge.records import Beat, Onset, Pose, PoseFrame


@pytest.mark.parametrize("fps,step,n", [(24, 1, 48), (25, 1, 50), (29.97, 1, 59), (30, 1, 60), (50, 1, 60),
                                         (58.0, 1, 60), (59.94, 2, 59), (60, 2, 60), (90, 3, 60), (120, 4, 60)])
def test_tong_sampling(fps, step, n):
    """s = max(1, floor(f / 30)); an NTSC 59.94 fps camera samples like a 60 fps one (with a
    strict floor it took every frame, and its windows covered 1 s instead of 2)."""
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
    assert len(w1) == 7                              # starts 0, 0.5, ..., 3.0: its last sample is the last frame
    assert np.allclose([w.t0 for w in w1], np.arange(7) * 0.5, atol=1e-6)
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


def _moving(T, fps, seed=0, jitter=0.0):
    """A dancer whose joints swing and stop once a beat (120 bpm), optionally with keypoint jitter."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / fps
    kp = np.zeros((T, 17, 3), np.float32)
    kp[..., :2] = rng.uniform(100, 300, (17, 2))[None] + 30 * np.cos(2 * np.pi * t)[:, None, None] * np.array([1.0, 0.3])
    kp[..., :2] += rng.normal(0, jitter, kp[..., :2].shape) if jitter else 0.0
    kp[..., 2] = 0.9
    return t, kp


def _live(t, kp, fps=None, settings=None):
    cut = WindowCutter(settings or MotionSettings(), fps=fps)
    out = []
    for i, (ti, k) in enumerate(zip(t, kp)):
        out += cut.push(PoseFrame(i, float(ti), 640, 480, [Pose(1, float(ti), k, np.zeros(4), 0.9)]))
    return out + cut.flush(), cut


@pytest.mark.parametrize("fps", [25.0, 30.0, 50.0, 60.0])
def test_live_and_offline_windows_agree_down_to_the_last_one(fps):
    """The same stream cut live and offline gives the same windows, the one ending on the last frame
    included (live used to wait for one frame past a window's last sample, which never comes). At
    25 fps a 0.5 s hop is 12.5 frames: live started every other window between two frames, and
    rounding took some frames twice and skipped others."""
    t, kp = _moving(int(4 * fps), fps)
    live, _ = _live(t, kp, fps=None)                         # frame rate measured from frame times
    offline = cut_sequence(kp, fps)
    assert len(live) == len(offline) > 0
    for a, b in zip(live, offline):
        assert a.t0 == pytest.approx(b.t0, abs=1e-6) and a.t1 == pytest.approx(b.t1, abs=1e-6)
        assert np.array_equal(a.mask, b.mask) and np.allclose(a.kp[a.mask], b.kp[b.mask])


def test_a_window_spans_its_samples_and_its_metrics_count_only_the_music_it_covers():
    """At 50 fps Tong's rule takes every frame, so 60 samples cover 1.2 s, not 2: the window ends
    there, and a dancer who stops on every beat covers every beat in it (it scored 0.5 when the
    metrics counted the music of a 2 s span)."""
    fps = 50.0
    beats = [Beat(0.3 + 0.5 * k, 0.3 + 0.5 * k, k % 8 + 1, 120.0) for k in range(24)]
    t, kp = _moving(int(12 * fps), fps)
    t, kp = t[:-10], kp[10:]                                 # stops 0.2 s earlier: on the beats at 0.3 + 0.5k
    live, _ = _live(t, kp, fps=fps)
    assert live and all(w.t1 - w.t0 == pytest.approx(1.2) for w in live)
    assert all(w.t1 - w.t0 == pytest.approx(1.2) for w in cut_sequence(kp, fps))
    cov = [rhythm.window_metrics(w.kp, w.times, w.mask, (), beats, 0.0, MotionSettings(), w.t0, w.t1)["beat_coverage"]
           for w in live]
    assert np.mean([c for c in cov if c is not None]) > 0.95


def test_a_measured_frame_rate_snaps_to_the_cameras_rate():
    """A 60 fps stream stamped in milliseconds (mkv, webm) measures 58.8 fps: as measured, Tong's step
    was 1 and its windows covered 1 s. Snapped, it samples every 2nd frame over 2 s, and jitter of the
    camera clock does not flip the step between windows."""
    assert nominal_fps(58.82) == 59.94 and nominal_fps(25.02) == 25.0 and nominal_fps(40.0) == 40.0
    t, kp = _moving(6 * 60, 60.0)
    for times in (np.round(t * 1000) / 1000, t + np.random.default_rng(1).normal(0, 3e-4, len(t))):
        live, cut = _live(times, kp)
        assert sample_step(cut.fps) == 2
        assert live and all(round(float(np.median(np.diff(w.times[w.mask]))) * 60) == 2 for w in live)
        assert all(w.t1 - w.t0 > 1.9 for w in live)


def _beats_in(p, beats):
    return sum(1 for b in beats if p.t0 - 1e-9 <= b.t < p.t1 - 1e-9)


def test_eight_beat_primitives_skip_broken_phrases():
    """A primitive is eight consecutive beats. A missed downbeat (the count jumps 8 -> 2) or a tracker
    restart after a silence used to give a primitive of 15 beats or one spanning the silence."""
    missed = [Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0) for k in range(33) if k != 8]
    restart = ([Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0) for k in range(12)]
               + [Beat(16 + 0.5 * k, 16 + 0.5 * k, k % 8 + 1, 120.0) for k in range(17)])
    silent = [Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0) for k in range(17) if not 9 <= k <= 12]   # counts kept, beats gone
    for beats, starts in ((missed, [8.0, 12.0]), (restart, [0.0, 16.0, 20.0]), (silent, [0.0])):
        cut = WindowCutter(MotionSettings(eight_beats=True))
        for b in beats:
            cut.push_beat(b)
        for i in range(26 * 30):
            cut.push(_frame(i, i / 30.0, [3]))
        assert [round(p.t0, 3) for p in cut.primitives] == starts
        assert all(_beats_in(p, beats) == 8 and p.t1 - p.t0 == pytest.approx(4.0) for p in cut.primitives)


def test_session_intensity_does_not_grow_with_the_frame_rate():
    """The session's intensity is differenced with Tong's step, like the windows': with 1 px of
    keypoint jitter it came out 21% higher at 60 fps than at 30 when it differenced every frame."""
    ratio = {}
    for fps in (30.0, 60.0):
        t, kp = _moving(int(12 * fps), fps, jitter=1.0)
        stage = MotionStage(MotionSettings(eight_beats=False), encoder=False, fps=fps)
        res = []
        for i, (ti, k) in enumerate(zip(t, kp)):
            res += stage.push(PoseFrame(i, float(ti), 640, 480, [Pose(1, float(ti), k, np.zeros(4), 0.9)]))
        ratio[fps] = stage.session_summary()[1]["intensity"] / np.mean([r.rhythm["intensity"] for r in res])
    assert ratio[30.0] == pytest.approx(1.0, abs=0.03) and ratio[60.0] == pytest.approx(1.0, abs=0.03)


def _stops_on_beats(T, fps, phase):
    """A dancer whose joints stop on the beats at phase + 0.5 k (speed |sin 2 pi (t - phase)|)."""
    rng = np.random.default_rng(0)
    t = np.arange(T) / fps
    kp = np.zeros((T, 17, 3), np.float32)
    kp[..., :2] = rng.uniform(100, 300, (17, 2))[None] + 30 * np.cos(2 * np.pi * (t - phase))[:, None, None] * np.array([1.0, 0.3])
    kp[..., 2] = 0.9
    return t, kp


@pytest.mark.parametrize("phase", [0.0, 0.25])
def test_a_dancer_on_every_beat_covers_them_whatever_their_phase(phase):
    """A beat on a window's edge (or on an eight-beat primitive's, always two downbeats) was counted
    as one to cover though no speed minimum can be found there: a perfect dancer covered 0.61 of the
    beats when they fell on window edges and 0.78 of every primitive's."""
    fps = 30.0
    t, kp = _stops_on_beats(int(20 * fps), fps, phase)
    beats = [Beat(phase + 0.5 * k, phase + 0.5 * k, k % 8 + 1, 120.0) for k in range(40)]
    cut = WindowCutter(MotionSettings(eight_beats=True))
    for b in beats:
        cut.push_beat(b)
    live = []
    for i, (ti, k) in enumerate(zip(t, kp)):
        live += cut.push(PoseFrame(i, float(ti), 640, 480, [Pose(1, float(ti), k, np.zeros(4), 0.9)]))
    assert live and cut.primitives
    for w in live + cut.primitives:
        m = rhythm.window_metrics(w.kp, w.times, w.mask, (), beats, 0.0, MotionSettings(), w.t0, w.t1)
        assert m["music_beats"] >= 3 and m["beat_coverage"] == pytest.approx(1.0), (w.t0, w.t1, m)
        assert m["align_recall"] > 0.95 and m["beat_hit_rate"] == 1.0, (w.t0, w.t1, m)


def test_music_while_the_dancer_is_out_of_view_is_not_counted_as_missed():
    """Ten seconds out of view (no poses) or unconfident: the session summary and the window scored
    those beats as missed (coverage 0.68 for a perfect dancer), and took a speed across the hole."""
    fps = 30.0
    t, kp = _stops_on_beats(int(30 * fps), fps, 0.25)
    beats = [Beat(0.25 + 0.5 * k, 0.25 + 0.5 * k, k % 8 + 1, 120.0) for k in range(60)]
    away = (t >= 10) & (t < 20)
    for absent in ("gone", "unconfident"):
        sr = rhythm.SessionRhythm(MotionSettings())
        for ti, k, a in zip(t, kp, away):
            if a and absent == "gone":
                continue
            sr.push(ti, k, valid=not a)
        m = sr.summary(beats=beats)
        assert m["beat_coverage"] == pytest.approx(1.0) and m["align_recall"] > 0.95, (absent, m)
        assert m["music_beats"] < 45                                  # of 60: those out of view are not asked for
    mask = np.ones(60, bool)
    mask[20:56] = False                                               # a window with a 1.2 s hole
    m = rhythm.window_metrics(kp[:60], t[:60], mask, (), beats, 0.0, MotionSettings(), 0.0, 2.0)
    assert m["beat_coverage"] == pytest.approx(1.0)


def test_where_the_beat_tracker_lost_the_beat_onsets_do_not_stand_in_for_beats():
    """The tracker lost the beat for 6 s while onsets went on: windows over the gap scored the onsets
    as beats (9 'beats' in 2 s), and windows half over it counted the dancer's moves there as extra
    (coverage 2.0). Only the part of a window the grid covers is scored."""
    fps = 30.0
    t, kp = _stops_on_beats(int(24 * fps), fps, 0.25)
    stage = MotionStage(MotionSettings(eight_beats=False), encoder=False, fps=fps)
    for k in range(48):
        bt = 0.25 + 0.5 * k
        if not 10 <= bt < 16:
            stage.push_audio(Beat(bt, bt, k % 8 + 1, 120.0))
        for e in range(2):                                            # onsets on every eighth note
            stage.push_audio(Onset(bt + 0.25 * e, bt + 0.25 * e))
    res = []
    for i in range(len(t)):
        res += stage.push(PoseFrame(i, float(t[i]), 640, 480, [Pose(1, float(t[i]), kp[i], np.zeros(4), 0.9)]))
    for r in res:
        m, w = r.rhythm, r.window
        if 10.5 <= w.t0 and w.t1 <= 16.0:
            assert m["music_beats"] == 0 and m["beat_coverage"] is None, (w.t0, m)
        elif m["music_beats"]:
            assert m["beat_coverage"] == pytest.approx(1.0) and m["beat_hit_rate"] == 1.0, (w.t0, m)
    # before any beat is known, onsets stand in (a song the tracker has not locked on yet)
    fresh = MotionStage(MotionSettings(eight_beats=False), encoder=False, fps=fps)
    for k in range(8):
        fresh.push_audio(Onset(0.25 + 0.5 * k, 0.25 + 0.5 * k))
    out = []
    for i in range(int(2.5 * fps)):
        out += fresh.push(PoseFrame(i, float(t[i]), 640, 480, [Pose(1, float(t[i]), kp[i], np.zeros(4), 0.9)]))
    assert out and out[0].rhythm["music_beats"] > 0


def test_the_live_stage_forgets_old_music_and_keeps_no_session():
    """The live graph's stage kept every onset and beat and a session curve per track id ever seen."""
    fps = 30.0
    t, kp = _stops_on_beats(int(150 * fps), fps, 0.25)
    stage = MotionStage(MotionSettings(eight_beats=False), encoder=False, fps=fps, keep_session=False)
    for i in range(len(t)):
        if i % 15 == 0:
            stage.push_audio(Beat(t[i], t[i], 1, 120.0))
            stage.push_audio(Onset(t[i], t[i]))
        tid = 1 + i // int(5 * fps)                                   # a new track id every 5 s
        stage.push(PoseFrame(i, float(t[i]), 640, 480, [Pose(tid, float(t[i]), kp[i], np.zeros(4), 0.9)]))
    assert not stage.session
    assert stage.beats[0].t > t[-1] - stage.KEEP_S - 11 and len(stage.onsets) < 2 * (stage.KEEP_S + 11)
    with pytest.raises(RuntimeError):
        stage.session_summary()


def test_a_dancer_who_leaves_keeps_the_windows_begun_while_in_view():
    """A track unseen for max_track_gap_s was deleted with its pending windows, even those holding
    enough real samples (the offline cut of the same stream keeps them)."""
    fps = 30.0
    t, kp = _moving(int(8 * fps), fps)
    gone = t > 3.77
    live = []
    cut = WindowCutter(MotionSettings(eight_beats=False), fps=fps)
    for i, ti in enumerate(t):
        poses = [] if gone[i] else [Pose(1, float(ti), kp[i], np.zeros(4), 0.9)]
        live += cut.push(PoseFrame(i, float(ti), 640, 480, poses + [Pose(2, float(ti), kp[i], np.zeros(4), 0.9)]))
    mine = [w for w in live if w.track_id == 1]
    kp_gone = kp.copy()
    kp_gone[gone] = np.nan
    offline = cut_sequence(kp_gone, fps)
    assert [(round(w.t0, 3), int(w.mask.sum())) for w in mine] == [(round(w.t0, 3), int(w.mask.sum())) for w in offline]
    assert mine[-1].t0 == pytest.approx(3.0)


def test_offline_windows_mask_unconfident_poses_as_live_does():
    """Enrolment cuts windows offline; it used to keep poses the live cutter masks (mean confidence
    under min_joint_conf), so the gallery's windows were not the ones the edge sends."""
    fps = 30.0
    t, kp = _moving(int(4 * fps), fps)
    kp[40:50, :, 2] = 0.05
    live, _ = _live(t, kp, fps=fps)
    offline = cut_sequence(kp, fps)
    assert len(live) == len(offline) and any(not w.mask.all() for w in offline[:2])
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(live, offline))
