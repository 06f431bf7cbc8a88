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
    with pytest.raises(BadInputError, match="cut.mp4"):   # an MP4 cut before its index: one clear error
        list(VideoFileSource(cut).frames())


def _write(path, codec="libx264", fmt=None, n=60, fps=30, w=160, h=120, rotation=None, options=None, audio_s=0.0,
           bar=True):
    from fractions import Fraction

    with av.open(str(path), "w", format=fmt) as c:
        vs = c.add_stream(codec, rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if options:
            vs.options = options
        if rotation is not None:
            vs.set_display_rotation(rotation)
        a = None
        if audio_s:
            a = c.add_stream("aac", rate=48000)
            a.layout = "mono"
        for i in range(n):
            img = np.full((h, w, 3), (i * 4) % 256, np.uint8)
            if bar:
                img[:, :w // 8] = 255                      # a white bar on the coded left edge
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a is not None:
            for k in range(0, int(48000 * audio_s), 1024):
                f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
                f.sample_rate, f.pts = 48000, k
                for p in a.encode(f):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)


@pytest.mark.parametrize("rotation, bar", [(90, "bottom"), (-90, "top"), (180, "right")])
def test_a_phone_clip_comes_upright(tmp_path, rotation, bar):
    """Coded 160x120 with a display rotation (what phones write for portrait): the frames and the size
    are as FFmpeg's player shows them (a dancer lying on their side would reach the encoder before)."""
    path = tmp_path / "phone.mp4"
    _write(path, n=5, rotation=rotation)
    src = VideoFileSource(path)
    image = next(iter(src.frames())).image
    portrait = rotation % 180 != 0
    assert (src.info.width, src.info.height) == ((120, 160) if portrait else (160, 120))
    assert image.shape[:2] == (src.info.height, src.info.width)
    edges = {"top": image[:10], "bottom": image[-10:], "left": image[:, :10], "right": image[:, -10:]}
    assert min(edges, key=lambda k: -edges[k].mean()) == bar


def test_frame_times_only_go_forwards(tmp_path):
    """MPEG-PS with B-frames as FFmpeg's muxer writes them: two frames stamped before their
    predecessor. They are dropped (and counted) so that the media clock only goes forwards."""
    path = tmp_path / "b.mpg"
    _write(path, codec="mpeg2video", fmt="mpeg", options={"bf": "2"}, bar=False)
    src = VideoFileSource(path)
    t = np.array([f.t for f in src.frames()])
    assert (np.diff(t) > 0).all() and len(t) + src.out_of_order == 60 and src.out_of_order > 0


def test_the_duration_is_the_videos_not_the_longer_audios(tmp_path):
    """MKV keeps no duration per stream: 4 s of video under 20 s of audio read as 20 s, and INT8
    calibration's thinning by index then asked for frames that do not exist."""
    from calibrate.int8 import RecordedFrames

    path = tmp_path / "long_audio.mkv"
    _write(path, n=100, fps=25, audio_s=20.0)
    assert VideoFileSource(path).info.duration == pytest.approx(4.0, abs=0.05)
    frames = RecordedFrames(path, max_frames=50)
    assert len(frames) == 50 and len(list(frames)) == 50
