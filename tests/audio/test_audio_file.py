"""AudioFileSource (PyAV) and `dancewire audio analyze`: media clock, resampling, errors, JSONL."""
from __future__ import annotations

import json

import numpy as np
import pytest
from audio_signals import SR, drum_track, match, write_wav

from dancewire.errors import BadInputError
from edge.sources.audio_file import AudioFileSource, has_audio, read_audio


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    x, beats, onsets = drum_track(120.0, seconds=8.0)
    path = write_wav(tmp_path_factory.mktemp("wav") / "drums.wav", x)
    return path, x, beats, onsets


def test_blocks_are_contiguous_on_the_media_clock(wav):
    path, x, _, _ = wav
    src = AudioFileSource(path, SR, block_size=1000)
    assert src.info.sample_rate == SR and src.info.channels == 1
    blocks = list(src.blocks())
    assert blocks[0].t == pytest.approx(0.0, abs=1e-6)
    n = 0
    for b in blocks:
        assert b.t == pytest.approx(n / SR, abs=1e-6)
        assert b.samples.dtype == np.float32 and b.samples.ndim == 1 and b.sample_rate == SR
        n += b.samples.size
    assert n == x.size
    y = np.concatenate([b.samples for b in blocks])
    assert np.max(np.abs(y - np.clip(x, -1, 1))) < 1e-3        # 16-bit round trip


def test_a_hole_in_the_file_timeline_keeps_later_audio_on_time(tmp_path, wav):
    """A recording whose audio timestamps skip 1 s at 4 s (dropped packets in a phone recording):
    the blocks after the hole start at their own pts, as video frames do, and the analyzer's clock
    follows. Counting samples from the first packet put every later onset 1 s early."""
    import fractions

    import av

    from edge.audio.analyzer import AudioAnalyzer
    from edge.records import Onset

    _, x, _, onsets = wav
    path = tmp_path / "hole.mka"
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        st = out.add_stream("pcm_s16le", rate=SR, layout="mono")
        st.time_base = fractions.Fraction(1, 1000)
        for i in range(0, len(pcm) - 1024, 1024):
            fr = av.AudioFrame.from_ndarray(pcm[i:i + 1024].reshape(1, -1), format="s16", layout="mono")
            fr.sample_rate = SR
            fr.pts, fr.time_base = i + (SR if i >= 4 * SR else 0), fractions.Fraction(1, SR)
            for p in st.encode(fr):
                p.pts = p.dts = round(fr.pts * 1000 / SR)
                p.time_base = fractions.Fraction(1, 1000)
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    blocks = list(AudioFileSource(path, SR, block_size=1024).blocks())
    ends = [b.t + len(b.samples) / SR for b in blocks]
    jumps = [b.t - e for b, e in zip(blocks[1:], ends) if abs(b.t - e) > 0.005]
    assert len(jumps) == 1 and jumps[0] == pytest.approx(1.0, abs=0.003)
    an = AudioAnalyzer()
    found = np.array([e.t for b in blocks for e in an.process(b) if isinstance(e, Onset)])
    truth = onsets[(onsets > 4.3) & (onsets < 7.5)] + 1.0
    assert match(truth, found, 0.02) >= len(truth) - 1


def test_resampled_and_stereo_file(tmp_path, wav):
    _, x, _, _ = wav
    from edge.audio.analyzer import StreamResampler

    r = StreamResampler(SR, 48000)
    x48 = np.concatenate([r(x), r.flush()])
    path = write_wav(tmp_path / "stereo48.wav", x48, sr=48000, channels=2)
    src = AudioFileSource(path, SR, block_size=512)
    assert src.info.sample_rate == 48000 and src.info.channels == 2
    y, t0 = read_audio(path, SR)
    assert t0 == pytest.approx(0.0, abs=1e-6)
    assert abs(y.size - x.size) <= 2
    # the downmix of (x, 0.8 x) is 0.9 x
    k = min(y.size, x.size)
    corr = np.dot(y[:k], x[:k]) / np.dot(x[:k], x[:k])
    assert corr == pytest.approx(0.9, abs=0.02)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        AudioFileSource(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(BadInputError):
        list(AudioFileSource(junk).blocks())
    assert has_audio(junk) is False
    with pytest.raises(BadInputError, match="folder"):
        AudioFileSource(tmp_path)


def test_truncated_file_decodes_what_is_there(tmp_path, wav):
    path, x, _, _ = wav
    cut = tmp_path / "cut.wav"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    y = np.concatenate([b.samples for b in AudioFileSource(cut).blocks()])
    assert x.size // 2 - 1024 <= y.size <= x.size // 2 + 1024        # what is there, all of it
    np.testing.assert_allclose(y, x[:y.size], atol=1e-3)


def test_video_without_audio_is_a_bad_input(shared_data):
    video = shared_data / "video" / "controlvideo_moonwalk.mp4"
    assert has_audio(video) is False
    with pytest.raises(BadInputError, match="no audio stream"):
        AudioFileSource(video)


def test_video_audio_track_on_the_video_clock(shared_data):
    video = shared_data / "video" / "qengineering_Dance.mp4"
    src = AudioFileSource(video, SR)
    assert src.info.sample_rate == 48000
    blocks = list(src.blocks())
    assert 0.0 <= blocks[0].t < 0.1
    total = sum(b.samples.size for b in blocks) / SR
    assert 9.0 < total < 10.5
    for a, b in zip(blocks, blocks[1:]):
        assert b.t == pytest.approx(a.t + a.samples.size / SR, abs=1e-6)


def test_madmom_sample_onsets(shared_data):
    """Regression guard for the benchmark figure (the full benchmark is benchmarks/audio_accuracy.py)."""
    import mir_eval

    from edge.audio.analyzer import AudioAnalyzer
    from edge.records import Onset

    base = shared_data / "audio" / "madmom"
    ref = np.loadtxt(base / "sample.onsets")
    an = AudioAnalyzer()
    ev = []
    for b in AudioFileSource(base / "sample.wav", SR).blocks():
        ev += an.process(b)
    est = np.array([e.t for e in ev if isinstance(e, Onset)])
    f, _, _ = mir_eval.onset.f_measure(ref, est, window=0.05)
    assert f >= 0.9


# ---------------------------------------------------------------------- CLI
def test_cli_analyze_writes_jsonl(tmp_path, wav):
    from dancewire.cli import main

    path, _, beats, onsets = wav
    out = tmp_path / "out.jsonl"
    assert main(["audio", "analyze", str(path), "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs[-1]["type"] == "summary"
    on = [r for r in recs if r["type"] == "onset"]
    be = [r for r in recs if r["type"] == "beat"]
    assert {"t", "known_at"} <= set(on[0]) and {"t", "known_at", "count", "bpm"} <= set(be[0])
    assert all(1 <= r["count"] <= 8 for r in be)
    assert all(r["known_at"] >= r["t"] for r in on)
    assert match(onsets, np.array([r["t"] for r in on]), 0.01) >= len(onsets) - 1
    assert abs(recs[-1]["bpm"] - 120) < 2
    # same records as the analyzer API fed by the same source (the live code path)
    from edge.audio.analyzer import AudioAnalyzer

    an = AudioAnalyzer()
    api = []
    for b in AudioFileSource(path, SR, 1024).blocks():
        api += [e.to_json() for e in an.process(b)]
    assert api == recs[:-1]
    # the file appears whole (not grown in place), with the mode a plain open gives
    import os
    import stat
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_cli_settings_override_and_errors(tmp_path, wav, capsys):
    from dancewire.cli import main

    path, _, _, _ = wav
    out = tmp_path / "o.jsonl"
    assert main(["audio", "analyze", str(path), "--out", str(out), "--set", "onset_threshold=5.0"]) == 0
    few = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["type"] == "onset" for r in few) < 10
    assert few[-1]["settings"]["onset_threshold"] == 5.0
    assert main(["audio", "analyze", str(tmp_path / "nope.wav"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["audio", "analyze", str(path), "--out", str(out), "--set", "onset_method=bogus"]) == 2
    assert main(["audio", "analyze", str(path), "--out", str(out), "--set", "no_such_field=1"]) == 2


@pytest.mark.parametrize("channels", [2, 8])
def test_many_channels_are_averaged_and_never_crash(tmp_path, channels):
    """7.1 (8 channels) and more: PyAV's planar to_ndarray crashed the process (SIGSEGV), so the
    read runs in a child process here, to fail as a test rather than take pytest down."""
    import subprocess
    import sys

    import soundfile as sf

    path = tmp_path / f"{channels}ch.wav"
    x = np.tile(np.arange(channels, dtype=np.float32) / (2 * channels), (SR, 1))   # channel k: k / 2n
    sf.write(path, x, SR, subtype="FLOAT")
    code = ("import sys, numpy as np; from edge.sources.audio_file import read_audio; "
            f"y, t0 = read_audio({str(path)!r}, {SR}); print(y.size, float(np.median(y)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-500:]}"
    n, median = r.stdout.split()
    assert int(n) == SR and float(median) == pytest.approx((channels - 1) / (4 * channels), abs=1e-6)
