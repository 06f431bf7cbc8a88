"""Clap test: wrists meeting at known times + clap transients at known times + a known lag.

The keypoints follow a clap's shape (fast approach, contact, slower rebound; pixel noise;
the body sways), the audio is room noise with a mains hum, clap bursts (0.3 ms attack,
12 ms decay) and a few non-clap hits; the recovered lag must be within a frame (1/30 s),
and in fact within a few milliseconds.
"""
from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from calibrate import av_offset as avo
from dancewire.errors import BadInputError, DancewireError

FPS = 30.0


def clap_keypoints(clap_times, fps=FPS, duration=None, seed=0, noise_px=1.5, floor=38.0, v_in=520.0,
                   v_out=300.0, rest=0.0, apart=260.0, centre=(640.0, 380.0)):
    """Wrist tracks (times, left, right, scores) with the hands meeting at `clap_times`."""
    rng = np.random.default_rng(seed)
    duration = duration or clap_times[-1] + 1.0
    t = np.arange(0.0, duration, 1.0 / fps)
    d = np.full_like(t, apart)
    for tc in clap_times:
        m = (t >= tc - (apart - floor) / v_in) & (t < tc)
        d[m] = np.minimum(d[m], floor + v_in * (tc - t[m]))
        d[(t >= tc) & (t < tc + rest)] = floor
        m = (t >= tc + rest) & (t < tc + rest + (apart - floor) / v_out)
        d[m] = np.minimum(d[m], floor + v_out * (t[m] - tc - rest))
    mid = np.stack([centre[0] + 20 * np.sin(t * 1.3), centre[1] + 10 * np.sin(t * 0.7)], 1)
    ang = 0.15 * np.sin(t * 0.5)
    u = np.stack([np.cos(ang), np.sin(ang)], 1)
    left = mid + u * d[:, None] / 2 + rng.normal(0, noise_px, (len(t), 2))
    right = mid - u * d[:, None] / 2 + rng.normal(0, noise_px, (len(t), 2))
    scores = np.full((len(t), 2), 0.9)
    return t, left, right, scores


def clap_audio(clap_times, lag, sr=48000, duration=None, seed=0, distractors=()):
    """Room noise + hum, a clap burst at each clap time + lag, and louder longer non-clap hits."""
    rng = np.random.default_rng(seed + 1)
    duration = duration or clap_times[-1] + 1.0
    n = int(duration * sr)
    x = rng.normal(0, 0.003, n) + 0.02 * np.sin(2 * np.pi * 110 * np.arange(n) / sr)

    def burst(t0, amp, decay):
        i0 = int(np.floor(t0 * sr))
        k = np.arange(int(0.12 * sr)) - (t0 * sr - i0)
        kk = np.maximum(k, 0)
        env = np.where(k >= 0, (1 - np.exp(-kk / (0.0003 * sr))) * np.exp(-kk / (decay * sr)), 0)
        seg = amp * env * np.convolve(rng.normal(0, 1, len(k)), [1, -0.9], mode="same")
        j = min(n, i0 + len(k))
        x[i0:j] += seg[:j - i0]

    for tc in clap_times:
        burst(tc + lag, rng.uniform(0.3, 0.6), 0.012)
    for td in distractors:
        burst(td, 0.4, 0.05)
    return x.astype(np.float32), sr


def _claps(n=8, seed=3):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.uniform(0.9, 1.3, n)) + 0.5


@pytest.mark.parametrize("lag", [0.087, -0.045, 0.0])
def test_recovers_known_lag_within_a_frame(lag):
    claps = _claps()
    t, left, right, scores = clap_keypoints(claps)
    samples, sr = clap_audio(claps, lag, distractors=(0.2, 4.05, 7.7))
    res = avo.estimate_offset(t, left, right, samples, sr, scores=scores)
    assert res.n_claps == len(claps)
    assert abs(res.audio_lag_s - lag) < 1.0 / FPS
    assert abs(res.audio_lag_s - lag) < 0.006           # sub-frame: a few ms
    assert res.spread_s < 0.010
    seen = np.array([c["t_video"] for c in res.claps])
    assert np.abs(seen - claps).max() < 0.012           # each clap timed below frame resolution


def test_hand_meetings_subframe_and_rest():
    claps = _claps(10)
    for rest, tol in ((0.0, 0.0005), (0.1, 0.0005)):
        t, l, r, s = clap_keypoints(claps, noise_px=0.0, rest=rest)
        found = avo.hand_meetings(t, l, r, s)
        assert len(found) == len(claps)
        assert np.abs(found - claps).max() < tol, (rest, found - claps)


def test_low_confidence_frames_and_missing_wrists_are_ignored():
    claps = _claps()
    t, l, r, s = clap_keypoints(claps)
    s[::7] = 0.05                       # some frames unreliable
    l[5:9] = np.nan                      # a short dropout far from any clap
    found = avo.hand_meetings(t, l, r, s)
    assert len(claps) - 1 <= len(found) <= len(claps)
    assert all(np.min(np.abs(claps - f)) < 0.02 for f in found)          # each found one is a clap, on time


def test_too_few_claps_is_a_clear_error():
    claps = _claps(2)
    t, l, r, s = clap_keypoints(claps)
    samples, sr = clap_audio(claps, 0.05)
    with pytest.raises(BadInputError, match="need at least 3"):
        avo.estimate_offset(t, l, r, samples, sr, scores=s)


def test_music_everywhere_is_refused_not_matched_by_chance():
    """Hand meetings unrelated to the sound, in a track full of onsets (music): no calibration."""
    rng = np.random.default_rng(7)
    claps = _claps(6)
    t, l, r, s = clap_keypoints(claps)
    hits = np.sort(rng.uniform(0.1, claps[-1] + 0.9, 30))        # ~3 onsets per second
    samples, sr = clap_audio(np.array([]), 0.0, duration=claps[-1] + 1.0, distractors=hits)
    with pytest.raises(BadInputError, match="chance|matching claps"):
        avo.estimate_offset(t, l, r, samples, sr, scores=s)


def test_matching_ignores_unrelated_onsets():
    video = np.array([1.0, 2.1, 3.3, 4.2, 5.6])
    audio = np.sort(np.r_[video + 0.06, [0.3, 1.45, 2.5, 3.05, 4.9]])
    pairs = avo.match_claps(video, audio)
    assert [round(a - v, 3) for v, a in pairs] == [0.06] * 5


def test_store_and_load_per_rig(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path))
    assert avo.load_offset("studio-a") == 0.0           # never calibrated: no correction
    res = avo.AvOffsetResult(audio_lag_s=0.0871, spread_s=0.004, median_lag_s=0.087, n_claps=8)
    path = avo.save_offset(res, "studio-a", source="clip.mp4")
    assert path == tmp_path / "calibration" / "studio-a.json"
    doc = json.loads(path.read_text())
    assert doc["av_offset"]["audio_lag_s"] == pytest.approx(0.0871)
    assert doc["av_offset"]["audio_correction_s"] == pytest.approx(-0.0871)
    # the rhythm metrics add it to audio times: a beat heard at 1.0871 s happened at 1.0 s
    assert 1.0871 + avo.load_offset("studio-a") == pytest.approx(1.0)
    assert avo.load_offset("studio-b") == 0.0
    doc["other"] = {"kept": True}
    path.write_text(json.dumps(doc))
    avo.save_offset(avo.AvOffsetResult(0.05, 0.003, 0.05, 6), "studio-a")
    doc = json.loads(path.read_text())
    assert doc["other"] == {"kept": True} and avo.load_offset("studio-a") == pytest.approx(-0.05)
    with pytest.raises(DancewireError, match="bad rig name"):
        avo.load_offset("../etc")
    monkeypatch.setenv("DANCEWIRE_RIG", "jetson 7")
    assert avo.default_rig() == "jetson-7"


# ----------------------------------------------------------------------------- a real file

def _write_clap_clip(path, claps, lag, fps=30, size=(320, 240), sr=48000, hole=None, codec="aac"):
    """H.264 + AAC clip: two white dots (the wrists) meeting at `claps`, claps heard `lag` later.
    `hole` (t0, t1): audio never written there (lost packets: a hole in the file's timeline)."""
    t, left, right, _ = clap_keypoints(claps, fps=fps, noise_px=0.0, centre=(size[0] / 2, size[1] / 2),
                                       apart=200.0, floor=24.0, v_in=420.0, v_out=240.0)
    samples, _ = clap_audio(claps, lag, sr=sr, duration=t[-1] + 1.0 / fps)
    import cv2
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"crf": "10"}
        aus = c.add_stream(codec, rate=sr)
        aus.layout = "mono"
        for i in range(len(t)):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            for p in (left[i], right[i]):
                cv2.circle(img, (int(round(p[0] * 16)), int(round(p[1] * 16))), 6 * 16, (255, 255, 255), -1,
                           cv2.LINE_AA, shift=4)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
        step = 1024
        for k in range(0, len(samples), step):
            if hole is not None and hole[0] * sr <= k < hole[1] * sr:
                continue
            chunk = samples[k:k + step]
            if codec == "aac":
                af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            else:
                af = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16).reshape(1, -1), format="s16",
                                                layout="mono")
            af.sample_rate, af.pts = sr, k
            for pkt in aus.encode(af):
                c.mux(pkt)
        for pkt in aus.encode():
            c.mux(pkt)


def _dot_wrists(image):
    """Stand-in pose estimator for the synthetic clip: the two dots' centroids (left/right halves
    of the pair, split at their mean x) as COCO-17 wrists."""
    g = image[..., 1].astype(np.float64)
    ys, xs = np.nonzero(g > 40)
    if len(xs) < 10:
        return []
    w = g[ys, xs]
    mid = np.average(xs, weights=w)
    kp = np.zeros((17, 3))
    for idx, sel in ((avo.LEFT_WRIST, xs >= mid), (avo.RIGHT_WRIST, xs < mid)):
        if sel.sum() < 5:
            return []
        kp[idx] = [np.average(xs[sel], weights=w[sel]), np.average(ys[sel], weights=w[sel]), 0.9]
    kp[0] = [mid, 10, 0.9]
    kp[15] = [mid, 230, 0.9]
    return [kp]


def test_video_file_end_to_end_keeps_audio_and_video_on_one_clock(tmp_path):
    claps = _claps(6)
    path = tmp_path / "claps.mp4"
    lag = 0.066
    _write_clap_clip(path, claps, lag)
    samples, rate, t0 = avo.decode_audio(path)
    assert rate == 48000 and abs(t0) < 0.05
    heard = avo.clap_onsets(samples, rate, t0)
    for c in claps:                                   # AAC priming is undone by the timestamps
        assert np.min(np.abs(heard - (c + lag))) < 0.003
    res = avo.analyze_video(path, estimate=_dot_wrists)
    assert res.n_claps == len(claps)
    assert abs(res.audio_lag_s - lag) < 0.008


def test_a_hole_in_the_audio_track_keeps_later_claps_on_time(tmp_path):
    """0.3 s of audio packets missing at 3 s: the claps after the hole were timed 0.3 s early, and the
    six of them agreed with each other, so a lag of -233 ms was taken (true +66 ms)."""
    claps = _claps(8)
    path = tmp_path / "hole.mkv"
    _write_clap_clip(path, claps, 0.066, hole=(3.0, 3.3), codec="pcm_s16le")
    res = avo.analyze_video(path, estimate=_dot_wrists)
    assert res.n_claps == len(claps) and abs(res.audio_lag_s - 0.066) < 0.008


def test_video_without_audio_is_a_clear_error(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(BadInputError, match="no audio"):
        avo.analyze_video(path, estimate=_dot_wrists)


def test_live_clap_test_records_through_the_rigs_configured_camera_and_microphone(monkeypatch):
    """No camera or microphone here, so both are stand-ins; what is checked is that the clap test
    opens the devices the edge's settings name (as `edge run` does) and keeps the microphone's
    own clock stamps (mic_offset_s included), so the stored offset is the rig's."""
    from edge.records import AudioBlock, Frame
    from edge.settings import load_edge_settings
    import time

    from edge.sources import camera, mic

    opened = {}

    class Cam:
        def frames(self):
            for i in range(40):
                time.sleep(0.005)                       # the microphone keeps recording meanwhile
                yield Frame(i, i / 20.0, np.zeros((8, 8, 3), np.uint8))

    class Mic:
        def __init__(self, settings, clock=None):
            opened["mic"] = (settings.mic_device, settings.mic_sample_rate, settings.mic_offset_s)
            self.sample_rate, self.overflows, self._stop = settings.mic_sample_rate, 0, False

        def start(self):
            return self

        def blocks(self):
            k = 0
            while not self._stop:
                if k != 5:                              # block 5 is dropped (a full input queue)
                    yield AudioBlock(t=0.25 + k * 0.01, samples=np.full(441, k, np.float32), sample_rate=44100)
                k += 1
                time.sleep(0.001)

        def stop(self):
            self._stop = True

    def cam_from_settings(s, clock=None):
        opened["camera"] = s.camera
        return Cam()

    monkeypatch.setattr(camera.CameraSource, "from_settings", staticmethod(cam_from_settings))
    monkeypatch.setattr(mic, "MicSource", Mic)
    settings = load_edge_settings(None, ["source.camera=/dev/video2", "audio.mic_device=USB",
                                         "audio.mic_sample_rate=44100", "audio.mic_offset_s=0.25"])
    frames, samples, rate, t0 = avo.record_live(1.0, settings)
    assert opened == {"camera": "/dev/video2", "mic": ("USB", 44100, 0.25)}
    assert len(frames) == 21 and rate == 44100 and t0 == 0.25
    assert len(samples) >= 3 * 441 and len(samples) % 441 == 0
    assert np.array_equal(samples[:441 * 3:441], [0, 1, 2])   # the blocks in order
    # the dropped block is silence and the next keeps its time (it was placed 10 ms early)
    assert not samples[441 * 5:441 * 6].any() and np.all(samples[441 * 6:441 * 7] == 6)


def test_a_stray_sound_that_ties_with_the_claps_does_not_hide_them():
    """10 claps 0.5 s apart heard 60 ms later, and a cough at 0.046 s: the densest windows tie at
    -0.45 s and +0.06 s, and their median (-0.19 s) matched nothing."""
    video = 0.5 + 0.5 * np.arange(10)
    audio = np.sort(np.r_[video + 0.06, 0.046])
    pairs = avo.match_claps(video, audio)
    assert len(pairs) == 10 and all(abs(a - v - 0.06) < 1e-9 for v, a in pairs)


@pytest.mark.parametrize("interval", [0.45, 0.4])
def test_quick_claps_are_each_timed_in_their_own_dip(interval):
    """Claps 0.4-0.45 s apart: the fit took in the neighbouring claps' low parts (up to 98 ms off,
    accepted with a spread of 0.03 ms); within each dip's own basin the error is a few ms."""
    claps = 0.5 + interval * np.arange(int(6 / interval))
    t, left, right, scores = clap_keypoints(claps, noise_px=1.5)
    seen = avo.hand_meetings(t, left, right, scores)
    assert len(seen) == len(claps)
    assert np.abs(seen - claps).max() < 0.012


def test_claps_too_fast_to_time_are_refused():
    claps = 0.5 + 0.3 * np.arange(15)
    with pytest.raises(BadInputError, match="too fast"):
        avo.offset_from_events(claps, claps + 0.05)


@pytest.mark.parametrize("drop", ["none", "first seen", "last heard"])
def test_steady_claps_that_fit_two_lags_are_refused(drop):
    """Claps every 0.6 s heard 330 ms late fit -270 ms nearly as well (one clap unseen or one sound
    cut off makes them tie), and the tie went to the lag nearer zero: a whole clap interval off, stored
    with a spread of 4 ms."""
    claps = 1.0 + 0.6 * np.arange(8)
    heard = claps + 0.33
    video, audio = {"none": (claps, heard), "first seen": (claps[1:], heard), "last heard": (claps, heard[:-1])}[drop]
    with pytest.raises(BadInputError, match="fit them about as well"):
        avo.offset_from_events(video, audio, audio_duration=8.0)
    # a second apart (the advice), the other lag is out of range: measured
    slow = 1.0 + 1.1 * np.arange(8)
    assert avo.offset_from_events(slow, slow + 0.33, audio_duration=10.0).audio_lag_s == pytest.approx(0.33)


def test_a_damaged_calibration_file_is_a_clear_error_and_calibrating_again_mends_it(tmp_path, monkeypatch):
    """'[1]' or '{"av_offset": null}' raised AttributeError in `edge run`'s start-up, and a file that
    did not parse could not be replaced by calibrating again (it said to do just that)."""
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path))
    path = avo.calibration_path("studio-a")
    path.parent.mkdir(parents=True)
    res = avo.AvOffsetResult(audio_lag_s=0.04, spread_s=0.004, median_lag_s=0.04, n_claps=8)
    for text in ('{"rig": "studio-a", "av_off', "[1]", '{"av_offset": null}', '{"av_offset": {"audio_lag_s": "n/a"}}'):
        path.write_text(text)
        with pytest.raises(DancewireError, match="calibrat"):
            avo.load_offset("studio-a")
        avo.save_offset(res, "studio-a")
        assert avo.load_offset("studio-a") == pytest.approx(-0.04)
        assert path.with_name(path.name + ".bad").read_text() == text      # kept aside, not lost


def test_a_rig_name_the_host_gives_is_made_valid_and_a_bad_one_is_refused_before_the_test(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path))
    monkeypatch.setenv("DANCEWIRE_RIG", "über-rig")
    assert avo.default_rig() == "ber-rig" and avo.calibration_path()          # was '-ber-rig', refused
    monkeypatch.setenv("DANCEWIRE_RIG", "---")
    assert avo.default_rig() == "rig"
    from dancewire.cli import main

    def never(*a, **kw):
        raise AssertionError("the clap test ran before the rig name was checked")

    monkeypatch.setattr(avo, "pose_estimator", never)
    assert main(["calibrate", "av-offset", "clip.mp4", "--rig", "studio/a"]) == 2
    assert "bad rig name" in capsys.readouterr().err


def test_a_clips_offset_is_stored_for_a_rig_only_when_named(tmp_path, monkeypatch, capsys):
    """A clip's offset is that of whatever recorded it (a phone: about 0); stored by default it
    became the live rig's correction."""
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path))
    from dancewire.cli import main

    res = avo.AvOffsetResult(audio_lag_s=0.02, spread_s=0.003, median_lag_s=0.02, n_claps=8)
    monkeypatch.setattr(avo, "pose_estimator", lambda backend="onnxruntime": None)
    monkeypatch.setattr(avo, "analyze_video", lambda *a, **kw: res)
    assert main(["calibrate", "av-offset", "clip.mp4"]) == 0
    assert "not stored" in capsys.readouterr().out and not (tmp_path / "calibration").exists()
    assert main(["calibrate", "av-offset", "clip.mp4", "--rig", "studio-a"]) == 0
    assert avo.load_offset("studio-a") == pytest.approx(-0.02)
