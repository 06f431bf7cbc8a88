"""`dancewire edge analyze` as a user runs it: one JSON Lines stream from a real video, and bad
input ending with one clear line and exit code 2 (never a traceback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from dancewire.errors import DancewireError


def _analyze(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dancewire", "edge", "analyze", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def models_built():
    from edge.models.registry import model_path

    try:
        model_path("pose_detector")
        model_path("pose_landmarks")
    except DancewireError as exc:
        pytest.skip(f"pose models not built: {exc}")


@pytest.mark.slow
def test_real_video_gives_one_stream_of_frames_music_windows_and_summary(tmp_path, shared_data, models_built):
    video = shared_data / "video" / "qengineering_Dance.mp4"
    out = tmp_path / "out.jsonl"
    proc = _analyze(video, "--out", out, "--max-frames", 100)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds[-1] == "summary" and kinds.count("summary") == 1
    summary = records[-1]
    frames = [r for r in records if r["type"] == "frame"]
    assert len(frames) == summary["frames"] == 100
    w, h = summary["width"], summary["height"]
    times = [f["t"] for f in frames]
    assert times == sorted(times) and times[1] - times[0] == pytest.approx(1 / summary["video_fps"], abs=2e-3)
    with_dancer = [f for f in frames if f["dancers"]]
    assert len(with_dancer) == summary["frames_with_dancer"] >= 90
    for f in with_dancer:
        for d in f["dancers"]:
            kp = np.asarray(d["keypoints"])
            assert kp.shape == (17, 3) and isinstance(d["id"], int)
            x0, y0, x1, y1 = d["box"]
            assert -0.25 * w < x0 < x1 < 1.25 * w and -0.25 * h < y0 < y1 < 1.25 * h
            good = kp[kp[:, 2] > 0.5]
            assert good.size and (good[:, 0] > -0.1 * w).all() and (good[:, 0] < 1.1 * w).all()
    # COCO order: the nose above the ankles for an upright dancer, in original-frame pixels
    kp = np.asarray(with_dancer[0]["dancers"][0]["keypoints"])
    assert kp[0, 1] < kp[15, 1] and kp[0, 1] < kp[16, 1]

    # the video's own music: causal onsets and beats on the same clock
    onsets = [r for r in records if r["type"] == "onset"]
    beats = [r for r in records if r["type"] == "beat"]
    assert len(onsets) >= 5 and all(o["known_at"] >= o["t"] - 1e-6 for o in onsets)
    assert all(1 <= b["count"] <= 8 and b["bpm"] > 0 for b in beats)
    assert max(o["t"] for o in onsets) <= times[-1] + 0.5
    windows = [r for r in records if r["type"] == "window"]
    assert windows and all(r["t1"] - r["t0"] <= 2.05 for r in windows)
    emb = np.asarray([r["embedding"] for r in windows])
    assert emb.shape[1] <= 128 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    primitives = [r for r in records if r["type"] == "primitive"]
    assert summary["records"] == {"onset": len(onsets), "beat": len(beats), "window": len(windows),
                                  "primitive": len(primitives)}
    assert summary["processing_fps"] > 0 and "landmarks" in summary["latency_ms"]
    assert summary["encoder"]["encoder_hash"]


def _one_clear_line(proc, pattern: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dancewire: error:"), proc.stderr
    assert pattern in lines[0], lines[0]


def test_bad_inputs_end_with_one_clear_line(tmp_path, models_built):
    _one_clear_line(_analyze(tmp_path / "missing.mp4", "--out", tmp_path / "o.jsonl"), "not found")

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(1).bytes(20000))
    _one_clear_line(_analyze(garbage, "--out", tmp_path / "o.jsonl"), "cannot read video")

    wav = tmp_path / "music-only.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    _one_clear_line(_analyze(wav, "--out", tmp_path / "o.jsonl"), "no video stream")

    _one_clear_line(_analyze(garbage, "--out", tmp_path / "no-such-dir" / "o.jsonl"), "cannot write")

    _one_clear_line(_analyze(tmp_path / "music-only.wav", "--out", tmp_path / "o.jsonl", "--max-frames", 0),
                    "max_frames must be at least 1")

    # a failed run leaves the previous output as it was, and no temporary file beside it
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text('{"type": "summary", "frames": 100}\n')
    _one_clear_line(_analyze(garbage, "--out", earlier), "cannot read video")
    assert earlier.read_text() == '{"type": "summary", "frames": 100}\n'
    assert sorted(p.name for p in tmp_path.iterdir() if "earlier" in p.name) == ["earlier.jsonl"]


@pytest.mark.slow
def test_other_music_is_cut_to_the_video_and_music_beside_it_is_refused(tmp_path, shared_data, models_built):
    """--audio with a song longer than the clip: its events stop where the frames stop (the whole
    13 s song was analysed under a 2.6 s clip), and the summary says how much of the video had music.
    Music placed wholly beside the video is one clear line; music under part of it is a warning."""
    video = shared_data / "video" / "controlvideo_moonwalk.mp4"
    song = shared_data / "audio" / "mdb_drums" / "full_mix" / "MusicDelta_Rock_MIX.wav"
    short = shared_data / "audio" / "beatnet" / "808kick120bpm.mp3"          # 10 s
    out = tmp_path / "out.jsonl"
    proc = _analyze(video, "--audio", song, "--out", out)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    last_frame = max(r["t"] for r in records if r["type"] == "frame")
    events = [r for r in records if r["type"] in ("onset", "beat")]
    assert events and max(e["t"] for e in events) <= last_frame + 0.1
    assert records[-1]["music_coverage"] == pytest.approx(1.0, abs=0.02)
    assert records[-1]["audio"]["duration_s"] < last_frame + 0.2

    clicks = tmp_path / "clicks-22k.wav"                                     # a 22.05 kHz click track
    with av.open(str(clicks), "w") as c:
        st = c.add_stream("pcm_s16le", rate=22050, layout="mono")
        x = np.zeros(22050 * 4, np.int16)
        for k in range(8):
            x[k * 11025:k * 11025 + 200] = 20000
        frame = av.AudioFrame.from_ndarray(x[None], format="s16", layout="mono")
        frame.sample_rate = 22050
        for p in [*st.encode(frame), *st.encode()]:
            c.mux(p)
    assert _analyze(video, "--audio", clicks, "--out", out).returncode == 0
    summary = json.loads(out.read_text().splitlines()[-1])
    assert summary["audio"]["resampled_from"] == 22050 and summary["music_coverage"] == pytest.approx(1.0, abs=0.02)

    for offset in ("-100", "100"):
        _one_clear_line(_analyze(video, "--audio", short, f"--audio-offset={offset}", "--out", out),
                        "does not overlap the video")
    proc = _analyze(video, "--audio", short, "--audio-offset=-9", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "music heard under only 39% of the video" in proc.stderr
    assert json.loads(out.read_text().splitlines()[-1])["music_coverage"] == pytest.approx(0.39, abs=0.02)


def test_a_video_whose_own_audio_track_holds_nothing_is_analysed_without_music(tmp_path, models_built):
    """An audio stream with no packets ended `analyze` (and `edge run --source`) with 'no decodable
    audio': the video's own track is not music asked for, so it goes on without it."""
    clip = tmp_path / "empty-audio.mkv"
    with av.open(str(clip), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        for i in range(30):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 8, np.uint8), format="bgr24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    out = tmp_path / "o.jsonl"
    proc = _analyze(clip, "--out", out, "--no-encoder")
    assert proc.returncode == 0, proc.stderr
    summary = [json.loads(line) for line in out.read_text().splitlines()][-1]
    assert summary["type"] == "summary" and summary["frames"] == 30


def test_frames_a_source_drops_are_reported_by_analyze_and_edge_run(tmp_path, models_built):
    """An MPEG-PS with B-frames stamps two frames out of order and the source drops them: analyze's
    summary said dropped_frames 0, and `edge run --stats` had no word of any source's drops."""
    from fractions import Fraction

    clip = tmp_path / "bframes.mpg"
    with av.open(str(clip), "w", format="mpeg") as c:
        vs = c.add_stream("mpeg2video", rate=Fraction(30))
        vs.width, vs.height, vs.pix_fmt, vs.options = 160, 120, "yuv420p", {"bf": "2"}
        for i in range(60):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 4 % 256, np.uint8), format="bgr24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    from edge.sources.video import VideoFileSource

    src = VideoFileSource(clip)
    kept = sum(1 for _ in src.frames())
    assert src.out_of_order > 0
    out = tmp_path / "o.jsonl"
    assert _analyze(clip, "--out", out, "--no-encoder").returncode == 0
    summary = json.loads(out.read_text().splitlines()[-1])
    assert summary["frames"] == kept and summary["dropped_frames"] == src.out_of_order
    stats = tmp_path / "stats.json"
    proc = subprocess.run([sys.executable, "-m", "dancewire", "edge", "run", "--source", str(clip), "--no-cloud",
                           "--stats", str(stats)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, DANCEWIRE_HOME=str(tmp_path / "home")))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(stats.read_text())["sources"]["video"]["out_of_order"] == src.out_of_order
