"""Video sources: real decoding with media timestamps, and one clear error per kind of bad file."""

import av
import numpy as np
import pytest

from dancewire.errors import BadInputError
from edge.sources.video import VideoFileSource


def _write_video(path, n=12, w=64, h=48, fps=24):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.full((h, w, 3), i * 20 % 255, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_generated_video_frames_have_media_times(tmp_path):
    path = tmp_path / "v.mp4"
    _write_video(path)
    src = VideoFileSource(path)
    frames = list(src.frames())
    assert len(frames) == 12
    assert src.info.width == 64 and src.info.height == 48 and not src.info.has_audio
    times = np.array([f.t for f in frames])
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert np.allclose(np.diff(times), 1 / 24, atol=1e-3)
    assert frames[0].image.shape == (48, 64, 3) and "capture" in frames[0].stamps


def test_real_video_decodes(shared_data):
    src = VideoFileSource(shared_data / "video" / "qengineering_Dance.mp4", max_frames=30)
    frames = list(src.frames())
    assert len(frames) == 30 and src.info.has_audio
    assert frames[0].image.shape == (src.info.height, src.info.width, 3)


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(BadInputError, match="cannot read video"):
        VideoFileSource(bad)


def test_missing_file_and_audio_only_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        VideoFileSource(tmp_path / "nope.mp4")
    wav = tmp_path / "a.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(BadInputError, match="no video stream"):
        VideoFileSource(wav)


def test_truncated_real_video_is_an_error_not_a_traceback(tmp_path, shared_data):
    data = (shared_data / "video" / "qengineering_Dance.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    try:
        src = VideoFileSource(cut)
        frames = list(src.frames())
    except BadInputError as exc:
        assert str(exc)
    else:  # some containers stay readable up to the cut: then every frame must be intact
        assert all(f.image.size for f in frames)
