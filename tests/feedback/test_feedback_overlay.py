"""Rig feedback: overlay on real frames with real keypoints, MP4 recording, --show guard, MJPEG page."""
from __future__ import annotations

import json
import time
import urllib.request

import av
import cv2
import numpy as np
import pytest

from dancewire.errors import BadInputError, DeviceError
from edge.feedback.overlay import COCO17_EDGES, draw_overlay, track_color
from edge.feedback.page import BOUNDARY, OverlayPage
from edge.feedback.recorder import OverlayRecorder
from edge.feedback.sink import FeedbackSink
from edge.feedback.window import OverlayWindow, gui_available
from edge.records import Beat, Pose, PoseFrame
from edge.sources.video import VideoFileSource

# OpenPose BODY_25 index for each COCO-17 joint.
BODY25_TO_COCO17 = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]


def _real_frame_and_pose(shared_data, index: int = 3):
    """A real video frame and the OpenPose keypoints published for that exact frame."""
    video = shared_data / "video" / "footskate_reducer_dance.mp4"
    frame = list(VideoFileSource(video, max_frames=index + 1).frames())[index]
    doc = json.loads((shared_data / "reference" / "footskate_openpose_dance"
                      / f"dance_{index:012d}_keypoints.json").read_text())
    poses = []
    for i, person in enumerate(doc["people"]):
        kp = np.asarray(person["pose_keypoints_2d"], float).reshape(-1, 3)[BODY25_TO_COCO17]
        seen = kp[:, 2] > 0
        box = np.r_[kp[seen, :2].min(0), kp[seen, :2].max(0)]
        poses.append(Pose(track_id=i + 7, t=frame.t, kp17=kp, box=box, score=float(kp[seen, 2].mean())))
    h, w = frame.image.shape[:2]
    return frame, PoseFrame(frame.index, frame.t, w, h, poses)


def _color_near(img, xy, color, radius=2, tol=40) -> bool:
    x, y = int(round(xy[0])), int(round(xy[1]))
    patch = img[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1].astype(int)
    return bool((np.abs(patch - np.asarray(color)).max(axis=2) <= tol).any())


def test_overlay_draws_skeleton_on_real_frame(shared_data, tmp_path):
    frame, pf = _real_frame_and_pose(shared_data)
    pose = pf.poses[0]
    beat = Beat(t=frame.t - 0.02, known_at=frame.t, count=3, bpm=118.0)
    fb = {pose.track_id: {"style": "hiphop", "prob": 0.82, "similarity": 0.74, "on_beat": 0.68}}
    out = draw_overlay(frame.image, pf, beat, fb, latency_ms=42.0)
    cv2.imwrite(str(tmp_path / "overlay.png"), out)     # kept for a look when debugging
    assert out.shape == frame.image.shape and out is not frame.image
    assert np.array_equal(frame.image, list(VideoFileSource(
        shared_data / "video" / "footskate_reducer_dance.mp4", max_frames=4).frames())[3].image)  # input untouched
    color = track_color(pose.track_id)
    visible = [j for j in range(17) if pose.kp17[j, 2] >= 0.3]
    assert len(visible) >= 12
    hits = [j for j in visible if _color_near(out, pose.kp17[j, :2], color)]
    assert len(hits) == len(visible), f"joints without drawn pixels: {sorted(set(visible) - set(hits))}"
    # bone midpoints are drawn too
    for a, b in COCO17_EDGES:
        if a in visible and b in visible:
            assert _color_near(out, (pose.kp17[a, :2] + pose.kp17[b, :2]) / 2, color, radius=3)
    # far from the dancer and the HUD, the frame is unchanged
    diff = np.abs(out.astype(int) - frame.image.astype(int)).max(axis=2)
    assert diff[300:400, 1000:1100].max() == 0
    # beat pulse top right, label above the head, latency bottom left: all changed pixels
    H, W = out.shape[:2]
    assert diff[: H // 6, W - W // 8:].mean() > 20
    assert diff[H - H // 12:, : W // 4].mean() > 5


def test_overlay_without_beat_or_feedback_and_many_dancers(shared_data):
    frame, pf = _real_frame_and_pose(shared_data)
    pose = pf.poses[0]
    shifted = Pose(track_id=pose.track_id + 1, t=pose.t,
                   kp17=pose.kp17 + np.array([350.0, 0.0, 0.0]), box=pose.box + 350, score=pose.score)
    low = pose.kp17.copy()
    low[:, 2] = 0.05                                    # nothing confident: no skeleton drawn
    faint = Pose(track_id=99, t=pose.t, kp17=low, box=pose.box, score=0.05)
    pf2 = PoseFrame(pf.index, pf.t, pf.width, pf.height, [pose, shifted, faint])
    out = draw_overlay(frame.image, pf2, None, None, None)
    assert _color_near(out, shifted.kp17[5, :2], track_color(shifted.track_id))
    assert track_color(pose.track_id) != track_color(shifted.track_id)
    # the faint pose alone: its hips, knees and ankles are drawn nowhere (its label sits at its box top)
    alone = draw_overlay(frame.image, PoseFrame(pf.index, pf.t, pf.width, pf.height, [faint]), None, None, None)
    for j in range(11, 17):
        x, y = (int(round(v)) for v in low[j, :2])
        assert np.array_equal(alone[y - 4:y + 5, x - 4:x + 5], frame.image[y - 4:y + 5, x - 4:x + 5]), j
    empty = draw_overlay(frame.image, None)
    assert empty.shape == frame.image.shape
    with pytest.raises(ValueError):
        draw_overlay(frame.image[..., 0], pf)


def test_recorder_writes_decodable_mp4_with_right_frame_count(tmp_path, shared_data):
    frame, pf = _real_frame_and_pose(shared_data)
    small = cv2.resize(frame.image, (321, 181))         # odd size: padded to even for yuv420p
    out_path = tmp_path / "out.mp4"
    n = 17
    with OverlayRecorder(out_path, fps=25) as rec:
        for i in range(n):
            rec.write(draw_overlay(small, None, Beat(i / 25, i / 25, i % 8 + 1, 120.0)), t=i / 25)
    assert rec.frames_written == n
    with av.open(str(out_path)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        assert stream.codec_context.name in ("h264", "mpeg4")
    assert len(frames) == n
    assert (frames[0].width, frames[0].height) == (322, 182)
    times = [float(f.time) for f in frames]
    assert times == sorted(times) and times[-1] == pytest.approx((n - 1) / 25, abs=0.002)
    with pytest.raises(BadInputError):
        OverlayRecorder(tmp_path / "out.txt")
    with pytest.raises(BadInputError):
        OverlayRecorder(tmp_path / "missing" / "out.mp4")


def test_show_without_gui_is_a_clear_device_error(monkeypatch):
    ok, reason = gui_available()
    if ok:
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DeviceError, match="--record OUT.mp4.*page"):
        OverlayWindow()


def test_page_serves_jpeg_and_mjpeg(shared_data):
    frame, pf = _real_frame_and_pose(shared_data)
    img = draw_overlay(frame.image, pf)
    with OverlayPage(port=0) as page:
        assert page.port != 0 and page.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(page.url + "healthz", timeout=5) as r:
            assert r.read() == b"ok"
        page.publish(img)
        with urllib.request.urlopen(page.url + "frame.jpg", timeout=5) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            data = r.read()
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == img.shape
        assert np.abs(decoded.astype(int) - img.astype(int)).mean() < 6
        with urllib.request.urlopen(page.url, timeout=5) as r:
            assert b"/stream.mjpg" in r.read()
        with urllib.request.urlopen(page.url + "stream.mjpg", timeout=5) as r:
            assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            assert r.readline().strip() == f"--{BOUNDARY}".encode()
            headers = {}
            while (line := r.readline().strip()):
                k, v = line.decode().split(":", 1)
                headers[k.strip().lower()] = v.strip()
            body = r.read(int(headers["content-length"]))
        assert headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"


def test_page_port_in_use_is_a_device_error():
    with OverlayPage(port=0) as page:
        with pytest.raises(DeviceError, match="cannot serve"):
            OverlayPage(port=page.port).start()


def test_sink_records_and_serves(tmp_path, shared_data):
    frame, pf = _real_frame_and_pose(shared_data)
    with FeedbackSink(record=tmp_path / "s.mp4", page_port=0, fps=10) as sink:
        sink.on_beat(Beat(frame.t, frame.t, 1, 100.0))
        sink.on_feedback({pf.poses[0].track_id: {"style": "house", "prob": 0.5}})
        for i in range(3):
            out = sink.write(frame.image, pf, latency_ms=30.0, t=i / 10)
        assert out is not None and sink.page is not None
        with urllib.request.urlopen(sink.page.url + "frame.jpg", timeout=5) as r:
            assert r.read()[:2] == b"\xff\xd8"
    with av.open(str(tmp_path / "s.mp4")) as c:
        assert len(list(c.decode(video=0))) == 3
    assert FeedbackSink().write(frame.image, pf) is None


def test_labels_of_dancers_close_together_do_not_overlap(shared_data):
    from edge.feedback.overlay import _label, _overlaps
    frame, _ = _real_frame_and_pose(shared_data)
    img = frame.image.copy()
    taken: list = []
    for i in range(5):                                   # five labels wanting the same spot
        _label(img, [f"#{i} house 70%", "sim 0.60  on-beat 50%"], (470, 90), 0.6, track_color(i), 1, taken)
    assert len(taken) == 5
    assert not any(_overlaps(a, b) for k, a in enumerate(taken) for b in taken[k + 1:])
    H, W = img.shape[:2]
    assert all(0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H for x0, y0, x1, y1 in taken)


def test_the_stream_sends_the_newest_frame_after_its_rate_limit():
    """At 10 fps against a 200 fps overlay, each sent frame was taken before the 100 ms wait: about 20
    frames old. Now the wait comes first and the newest frame is sent."""
    import threading
    import time

    page = OverlayPage(port=0, max_fps=10).start()
    cur, stop = {"i": 0}, threading.Event()

    def producer():
        while not stop.is_set():
            cur["i"] += 1
            page.publish(np.full((16, 16, 3), cur["i"] % 250, np.uint8))
            time.sleep(0.005)

    threading.Thread(target=producer, daemon=True).start()
    lags, buf = [], b""
    try:
        with urllib.request.urlopen(page.url + "stream.mjpg", timeout=5) as r:
            while len(lags) < 12:
                buf += r.read1(65536)
                while (a := buf.find(b"\xff\xd8")) >= 0 and (b := buf.find(b"\xff\xd9", a + 2)) >= 0:
                    jpg, buf = buf[a:b + 2], buf[b + 2:]
                    shown = int(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_GRAYSCALE).mean() + 0.5)
                    lags.append((cur["i"] - shown) % 250)
    finally:
        stop.set()
        page.stop()
    assert np.median(lags[2:]) < 8, lags


def test_the_sink_draws_at_the_time_it_is_given():
    """write(image, None, t=9) 8 s after a beat: the beat disc is dark, as draw_overlay at t=9 draws it
    (the sink ignored t and drew every frame at the beat's own time, fully lit)."""
    img = np.zeros((360, 640, 3), np.uint8)
    beat = Beat(t=1.0, known_at=1.0, count=3, bpm=120.0)
    with FeedbackSink(page_port=0) as sink:
        sink.on_beat(beat)
        out = sink.write(img, None, None, t=9.0)
    assert np.array_equal(out, draw_overlay(img, None, beat, t=9.0))
    assert not np.array_equal(out, draw_overlay(img, None, beat, t=1.0))


def test_closing_the_sink_stops_the_page_even_when_the_recorder_fails(tmp_path):
    sink = FeedbackSink(record=tmp_path / "r.mp4", page_port=0)
    url = sink.page.url

    def broken():
        raise OSError("disk gone")

    sink.recorder.close = broken
    with pytest.raises(OSError, match="disk gone"):
        sink.close()
    with pytest.raises(OSError):                       # the page is down too
        urllib.request.urlopen(url + "healthz", timeout=2)


@pytest.mark.parametrize("case", ["huge", "nan box", "non-contiguous"])
def test_the_overlay_survives_wild_estimates(case):
    kp = np.zeros((17, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(20, 60, 17), np.linspace(20, 100, 17), 1.0
    box = np.array([10, 10, 50, 80], float)
    if case == "huge":
        kp[0, :2] = 1e12                               # over OpenCV's 32-bit coordinates
    if case == "nan box":
        kp[:, 2], box[:] = 0.0, np.nan                 # no confident joint, no box either
    pf = PoseFrame(0, 1.0, 640, 480, [Pose(1, 1.0, kp, box, 0.9)])
    img = np.zeros((480, 1280, 3), np.uint8)[:, ::2] if case == "non-contiguous" else np.zeros((480, 640, 3), np.uint8)
    out = draw_overlay(img, pf, feedback={1: {"style": "salsa", "prob": 0.7}})
    assert out.shape == (480, 640, 3)
    if case == "huge":                                 # the other joints are still drawn, in the track's colour
        assert all(_color_near(out, kp[j, :2], track_color(1)) for j in range(1, 17))
    if case == "non-contiguous":
        with pytest.raises(ValueError, match="contiguous"):
            draw_overlay(img, pf, copy=False)


def test_a_full_disk_stops_the_recording_not_the_process(tmp_path):
    """The first mux on a full disk raised out of the sink (ending the session), and closing then
    flushed into the failed muxer: PyAV segfaulted, so the stats and the link's flush were lost too.
    Run in a child process: a segfault there is a failed assertion, not a lost test run."""
    import subprocess
    import sys

    target = tmp_path / "rec.mp4"
    target.symlink_to("/dev/full")
    code = (
        "import numpy as np\n"
        "from edge.feedback.recorder import OverlayRecorder\n"
        f"rec = OverlayRecorder({str(target)!r}, fps=30)\n"
        "img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)\n"
        "for i in range(60):\n"
        "    rec.write(img, t=i / 30)\n"
        "rec.close(); rec.close()\n"
        "print('failed:', bool(rec.failed), 'frames:', rec.frames_written)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "failed: True" in proc.stdout


def test_a_frame_a_pixel_larger_than_the_first_is_recorded(tmp_path):
    rec = OverlayRecorder(tmp_path / "r.mp4", fps=30)
    rec.write(np.zeros((480, 640, 3), np.uint8), t=0.0)
    rec.write(np.zeros((481, 641, 3), np.uint8), t=1 / 30)      # padding by -1 raised ValueError
    rec.close()
    with av.open(str(tmp_path / "r.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2


def test_the_rig_page_refuses_other_sites_and_lets_stalled_clients_go():
    """Any website the rig's browser visited could press "this is 1" (a cross-site POST needs no
    preflight) and, through DNS rebinding, read the dancers' video; and a client that never read
    the stream held its server thread for ever."""
    import socket
    import threading
    import urllib.error

    pressed = []
    with OverlayPage(port=0, on_count_one=lambda: pressed.append(1)) as page:
        page.publish(np.zeros((48, 64, 3), np.uint8))

        def call(path, method="GET", headers=None):
            req = urllib.request.Request(page.url + path, method=method, headers=headers or {})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert call("count/one", "POST") == 403 and not pressed                        # another site's form
        assert call("count/one", "POST", {"X-Dancewire": "1"}) == 200 and pressed == [1]  # the page's button
        assert call("frame.jpg", headers={"Host": f"evil.example:{page.port}"}) == 403
        assert call("frame.jpg", headers={"Host": f"192.168.1.20:{page.port}"}) == 200     # a studio tablet
        assert call("frame.jpg") == 200
        def handlers():
            return sum("process_request" in t.name for t in threading.enumerate())

        idle = [socket.create_connection(("127.0.0.1", page.port)) for _ in range(5)]   # send nothing at all
        deadline = time.time() + 5
        while handlers() < 5 and time.time() < deadline:
            time.sleep(0.05)
        assert handlers() >= 5
        deadline = time.time() + 20
        while handlers() and time.time() < deadline:
            time.sleep(0.2)
        assert handlers() == 0                                                         # timed out, let go
        for s in idle:
            s.close()
