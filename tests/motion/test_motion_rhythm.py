"""Rhythm metrics: definitions on hand-made events, a synthetic dancer, and the real ballroom dances."""
from __future__ import annotations

import numpy as np
import pytest

from dancewire.errors import ModelCacheError
from edge.motion import rhythm
from edge.motion.settings import MotionSettings
from edge.records import Beat, Onset


def test_metric_definitions():
    music = np.array([1.0, 2.0, 3.0, 4.0])
    motion = np.array([1.05, 2.3, 3.0])
    assert rhythm.beat_alignment_rate(motion, music, 0.2) == pytest.approx(2 / 3)
    assert rhythm.beat_coverage(motion, music) == pytest.approx(3 / 4)
    assert rhythm.beat_hit_rate(motion, music, 0.2) == pytest.approx(2 / 3)
    s = rhythm.beat_align_score(motion, music, sigma=0.1)
    e = np.exp(-np.array([0.05, 0.3, 0.0, 1.0]) ** 2 / 0.02)
    assert s["align_recall"] == pytest.approx(e.mean())
    p = np.exp(-np.array([0.05, 0.3, 0.0]) ** 2 / 0.02).mean()
    assert s["align_precision"] == pytest.approx(p)
    assert s["align_f1"] == pytest.approx(2 * p * e.mean() / (p + e.mean()))
    assert rhythm.beat_alignment_rate([], music) is None and rhythm.beat_coverage(motion, []) is None


def _dancer(beat_period=0.5, T=20.0, fps=30.0, phase=0.0):
    """A dancer whose limbs swing and stop on every beat (speed minima at k * period + phase)."""
    t = np.arange(int(T * fps)) / fps
    kp = np.zeros((len(t), 17, 3))
    kp[..., 0] = 300 + np.arange(17) * 3
    kp[..., 1] = 100 + np.arange(17) * 20
    kp[..., 2] = 1.0
    swing = 40 * np.cos(np.pi * (t - phase) / beat_period)       # |speed| ~ |sin|: zero at the beats
    kp[:, 5:11, 0] += swing[:, None]
    kp[:, 11:, 0] -= swing[:, None]
    return t, kp


def test_synthetic_dancer_on_and_off_beat():
    t, kp = _dancer()
    beats = [Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0) for k in range(40)]
    on = rhythm.window_metrics(kp, t, None, beats=beats)
    off = rhythm.window_metrics(kp, t, None, beats=beats, offset=0.25)
    assert on["align_f1"] > 0.9 and on["beat_hit_rate"] > 0.9
    assert 0.8 < on["beat_coverage"] < 1.2
    assert off["align_f1"] < 0.2 and off["beat_hit_rate"] < 0.2
    # intensity peaks sit between the beats: onsets there align, onsets on the beats do not
    mid = [Onset(0.5 * k + 0.25, 0.0) for k in range(40)]
    assert rhythm.window_metrics(kp, t, None, onsets=mid)["beat_alignment"] > 0.9


def test_window_metrics_travel_in_the_wire_fields():
    """The edge's metric names are the wire's RhythmMetrics fields, so the cloud reads them by name."""
    from proto import codec

    t, kp = _dancer()
    beats = [Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0) for k in range(40)]
    onsets = [Onset(0.5 * k + 0.25, 0.0) for k in range(40)]
    m = rhythm.window_metrics(kp, t, None, beats=beats, onsets=onsets)
    back = codec.rhythm_from_pb(codec.rhythm_to_pb(m))
    for name in ("intensity", "beat_alignment", "beat_coverage", "beat_hit_rate", "align_recall",
                 "align_precision", "align_f1"):
        assert name in codec.RHYTHM_FIELDS and back[name] == pytest.approx(m[name], rel=1e-6)


def test_session_summary_matches_offline():
    t, kp = _dancer()
    sr = rhythm.SessionRhythm(MotionSettings())
    for ti, k in zip(t, kp):
        sr.push(ti, k)
    beats = [Beat(0.5 * k, 0.5 * k, 1, 120.0) for k in range(40)]
    s = sr.summary(beats=beats)
    assert s["align_f1"] > 0.9 and s["duration_s"] > 19
    offline = rhythm.window_metrics(kp, t, None, beats=beats)             # the same stream offline
    for key in ("align_f1", "align_precision", "align_recall"):
        assert s[key] == pytest.approx(offline[key], abs=1e-3), key


@pytest.mark.data
@pytest.mark.slow
def test_real_ballroom_dance_scores_higher_with_its_own_music(shared_data):
    """Each ballroom mocap dance that has its song against that song (aligned by config.json's
    start_position at 25 fps), with the music's onsets and beats found by the edge's own causal
    analyzer, versus the same music shifted by half a beat either way: the beat-align F1 averaged
    over the dances must be higher when aligned."""
    from edge.motion import datasets as ds

    rows, styles = [], set()
    for d in ds.ballroom_dirs(shared_data):
        start = ds.ballroom_audio_start(d)
        if start is None or not (d / "audio.mp3").exists():
            continue
        seq = ds.load_ballroom(d)[0]
        times = np.arange(len(seq.kp)) / seq.fps
        # the analyzer hears 8 s of the song before the dance starts (tempo lock), then the dance
        onsets, beats = ds.music_events(d / "audio.mp3", start=start - 8.0, end=start + times[-1] + 1.0)
        period = float(np.median(np.diff([b.t for b in beats])))
        row = []
        for shift in (0.0, 0.5 * period, -0.5 * period):
            m = rhythm.window_metrics(seq.kp, times, None, onsets, beats, offset=-start + shift)
            row.append(m["align_f1"])
        rows.append(row)
        styles.add(seq.genre)
    r = np.array(rows)
    assert len(r) >= 14 and len(styles) == 3
    aligned, plus, minus = r.mean(0)
    assert aligned > plus and aligned > minus, f"aligned {aligned:.3f} vs +half {plus:.3f}, -half {minus:.3f}"


@pytest.mark.data
@pytest.mark.slow
def test_real_video_dance_scores_higher_with_its_own_music(shared_data, tmp_path):
    """The shared video with music, through the whole edge graph (`edge analyze`: pose models, cleaning,
    the causal audio analyzer): the dancer against the video's own music versus the same music
    shifted by half a beat (`--audio VIDEO --audio-offset S`, both ways)."""
    from edge.models.registry import model_path
    from edge.pipeline import analyze
    from edge.settings import EdgeSettings

    try:
        model_path("pose_landmarks")
    except ModelCacheError as exc:
        pytest.skip(f"pose models not built: {exc}")
    video = shared_data / "video" / "qengineering_Dance.mp4"

    class Sink:
        def __init__(self):
            self.records = []

        def write(self, rec):
            self.records.append(rec)

    def session_f1(offset: float) -> tuple[float, float]:
        out = Sink()
        summary = analyze(EdgeSettings(), video, out, audio=video, audio_offset=offset, encoder=False)
        (dancer,) = summary["rhythm"].values()
        beats = np.array([r["t"] for r in out.records if r["type"] == "beat"])
        # each window was scored against the beats heard inside it (a negative offset delays the
        # music on the file's clock: it must still reach the analyzer before the window closes)
        wins = [r for r in out.records if r["type"] == "window"]
        short = [w for w in wins if w["rhythm"]["music_beats"] < np.sum((beats >= w["t0"]) & (beats <= w["t1"])) - 1]
        assert wins and len(short) <= 1, (offset, [(w["t0"], w["rhythm"]["music_beats"]) for w in short])
        bpms = [r["bpm"] for r in out.records if r["type"] == "beat"]
        return dancer["align_f1"], float(np.median(bpms))

    aligned, bpm = session_f1(0.0)
    half = 30.0 / bpm
    plus, _ = session_f1(half)
    minus, _ = session_f1(-half)
    session_f1(-1.5)            # music 1.5 s late on the file's clock: longer than a window takes to close
    assert aligned > plus and aligned > minus, f"aligned {aligned:.3f} vs +half {plus:.3f}, -half {minus:.3f}"
