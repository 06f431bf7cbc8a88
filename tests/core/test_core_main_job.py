"""The main job (`dancewire up`): cloud + edge + dashboard on the demo source, stopped by Ctrl-C (SIGINT)
or SIGTERM with nothing lost."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from port_helpers import free_ports

from dancewire.errors import ModelCacheError
from dancewire.paths import REPO_ROOT, SEED_DIR


def _port_args() -> list[str]:
    api, zmq = free_ports(2)
    return ["--api-port", str(api), "--zmq-port", str(zmq)]


def test_seed_gallery_matches_the_shipped_encoder():
    from edge.motion.export import sha256

    encoder = REPO_ROOT / "edge" / "motion" / "weights" / "encoder.onnx"
    seeds = sorted(SEED_DIR.glob("*.npz"))
    assert len(seeds) == 4
    for f in seeds:
        data = np.load(f)
        assert str(data["encoder_hash"]) == sha256(encoder), f"{f.name} is stale: run `dancewire encoder seed-gallery`"
        emb = data["embeddings"].astype(np.float32)
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)


def test_seed_gallery_enrols_one_video_per_performance_and_is_fitted(tmp_path):
    """What `dancewire up` enrols on a fresh cloud: each performance is one video (its camera views
    together), so the classifier's mixture and calibration are fitted by leave-one-video-out."""
    from cloud.gallery import Gallery
    from dancewire.up import ensure_gallery

    gallery = tmp_path / "gallery.npz"
    ensure_gallery([sys.executable, "-m", "dancewire"], gallery)
    g = Gallery.load(gallery)
    videos = {r.video for r in g.refs}
    assert len({r.ref_id for r in g.refs}) == len(g.refs)
    assert not any("#view" in v for v in videos)
    per_style = {st: {r.video for r in g.refs if r.style == st} for st in g.styles}
    assert all(len(v) >= 2 for v in per_style.values()), per_style
    rep = g.params["calibration"]
    assert rep and rep["method"] == "leave-one-video-out" and rep["samples"] == len(g.refs)
    assert rep["nll_after"] <= rep["nll_before"]


def _ignoring_sigint():
    """What a non-interactive shell does to a background job: `dancewire up` must still stop on Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_runs_demo_end_to_end_and_loses_nothing(tmp_path, stop):
    from edge.models.registry import model_path

    try:
        model_path("pose_detector")
    except ModelCacheError as exc:  # the edge needs the pose models even for the demo's CLI start-up checks
        pytest.skip(f"pose models not built: {exc}")
    env = dict(os.environ, DANCEWIRE_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "dancewire", "up", "--demo", "--page", "0",
           *_port_args()]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignoring_sigint)
    lines = []
    try:
        for line in proc.stdout:                      # runs until it says it is up
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        time.sleep(20)
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout = "".join(lines) + out
    assert proc.returncode == 0, stdout
    assert "DEMO" in stdout and "/dashboard/#token=" in stdout and "stopping (edge first" in stdout

    stats = json.loads((tmp_path / "last-edge-run.json").read_text())
    sent = stats["counters"]["windows_sent"]
    assert sent > 20, stats["counters"]
    assert stats["link"]["acked_seq"] == stats["link"]["next_seq"] - 1     # every window acked
    assert stats["counters"]["feedback"] > 0 and stats["cloud_feedback_ms"]["n"] > 0

    from cloud.store import Store
    store = Store(f"sqlite:///{tmp_path / 'cloud.sqlite3'}")
    try:
        assert store.count("windows") == sent                                # exactly once
        results = store.results()
        styles = {r["style"] for r in results}
        assert styles & {"Break", "House", "Krump", "Middle Hip-hop"}
        assert {r["session_id"][:5] for r in results} == {"DEMO-"}          # labelled wherever it is shown
        # the edge's music analysis reaches the cloud: beat grids, and each window's beat alignment
        assert store.count("beats") >= 5 and stats["counters"]["beats"] > 20
        aligned = [r for r in results if "beat_alignment" in (r["scores"] or {})]
        assert len(aligned) > len(results) / 2, results[:3]
    finally:
        store.close()


@pytest.mark.slow
def test_up_with_a_video_keeps_the_dashboard_after_the_video_ends(tmp_path):
    import av

    from edge.models.registry import model_path

    try:
        model_path("pose_detector")
    except ModelCacheError as exc:
        pytest.skip(f"pose models not built: {exc}")
    video = tmp_path / "short.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=24)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(24):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 10, np.uint8), format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    env = dict(os.environ, DANCEWIRE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "dancewire", "up", "--source", str(video), "--duration", "12", "--page", "0",
           *_port_args()]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the edge finished" in proc.stdout and "error" not in proc.stderr.lower()
    stats = json.loads((tmp_path / "home" / "last-edge-run.json").read_text())
    assert stats["counters"]["frames_done"] == 24 and stats["dropped_frames"] == 0


def test_a_failed_seed_enrolment_leaves_no_half_gallery(tmp_path, monkeypatch):
    """A damaged seed file (or a Ctrl-C) during the first `up`: one clear error, no gallery file
    and no partial one, so the next `up` enrols the whole seed gallery again."""
    import shutil

    from dancewire import up
    from dancewire.errors import DancewireError

    seeds = tmp_path / "seed"
    seeds.mkdir()
    first = sorted(SEED_DIR.glob("*.npz"))[0]
    shutil.copy(first, seeds / first.name)
    (seeds / "zz-damaged.npz").write_bytes(b"not an npz")
    monkeypatch.setattr(up, "SEED_DIR", seeds)
    gallery = tmp_path / "gallery.npz"
    with pytest.raises(DancewireError, match="zz-damaged.npz is damaged"):
        up.ensure_gallery([sys.executable, "-m", "dancewire"], gallery)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]
    (seeds / "zz-damaged.npz").unlink()
    up.ensure_gallery([sys.executable, "-m", "dancewire"], gallery)
    assert gallery.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["gallery.npz", "seed"]


def test_up_with_a_port_in_use_says_which_and_starts_nothing(tmp_path):
    """Another program on the API port: one clear error naming the port and the flag, before any
    cloud or edge starts (an HTTP server there used to answer the cloud's health check)."""
    import socket

    env = dict(os.environ, DANCEWIRE_HOME=str(tmp_path / "home"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _, zmq = free_ports(2)
        proc = subprocess.run([sys.executable, "-m", "dancewire", "up", "--demo", "--page", "0",
                               "--api-port", str(port), "--zmq-port", str(zmq), "--duration", "5"],
                              env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"port {port} is in use" in proc.stderr and "--api-port" in proc.stderr, proc.stderr
    assert "dashboard" not in proc.stdout
    home = tmp_path / "home"
    assert not home.exists() or not any(home.iterdir()), list(home.iterdir())   # no keys, no gallery


def _signalled(cmd: list[str], env: dict, ready: str, settle: float, signals: list[tuple[int, float]]):
    """Run `cmd`, wait for a line holding `ready` and `settle` s more, send each signal (waiting its
    pause after it); (process, its whole output) once it has ended."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if ready in line:
                break
        time.sleep(settle)
        for sig, pause in signals:
            proc.send_signal(sig)
            time.sleep(pause)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, out


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.slow
def test_a_closed_terminal_and_a_second_ctrl_c_stop_everything(tmp_path):
    """SIGHUP (the terminal closed) killed `up` and left both children running; a second Ctrl-C while
    stopping left the cloud running on both ports. Then, at once, `up` starts again on the same ports
    (a TIME-WAIT from the last run's health check was taken for a port in use for a minute)."""
    from edge.models.registry import model_path

    try:
        model_path("pose_detector")
    except ModelCacheError as exc:
        pytest.skip(f"pose models not built: {exc}")
    env = dict(os.environ, DANCEWIRE_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    ports = _port_args()
    cmd = [sys.executable, "-m", "dancewire", "up", "--demo", "--page", "0", *ports]
    proc, out = _signalled(cmd, env, "Ctrl-C stops everything", 3, [(signal.SIGHUP, 0.1), (signal.SIGINT, 0)])
    assert proc.returncode == 0, out
    api, zmq = int(ports[1]), int(ports[3])
    assert not _listening(api) and not _listening(zmq), "a child outlived `dancewire up`"
    again = subprocess.run(cmd + ["--duration", "3"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "is in use" not in again.stderr, again.stderr


def test_the_port_check_takes_a_time_wait_for_free_and_a_listener_for_busy():
    import socket

    from dancewire.errors import DancewireError
    from dancewire.up import _check_ports

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as uvicorn and libzmq bind
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(DancewireError, match=f"port {port} is in use"):
            _check_ports({"--api-port": port})
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()                               # the server closes first: its side is in TIME-WAIT
        client.close()
    _check_ports({"--api-port": port})             # no listener: free, as uvicorn and libzmq find it


def test_up_refuses_port_zero_and_one_port_for_two_servers(tmp_path):
    """--zmq-port 0 bound a random port the edge could not know (it ran an hour sending into nothing,
    rc 0); the same port for the page and the API passed the check and failed later."""
    env = dict(os.environ, DANCEWIRE_HOME=str(tmp_path / "home"))
    api, zmq = free_ports(2)
    for args, says in ((["--zmq-port", "0", "--api-port", str(api)], "port 0"),
                       (["--page", str(api), "--api-port", str(api), "--zmq-port", str(zmq)], "each needs its own port")):
        proc = subprocess.run([sys.executable, "-m", "dancewire", "up", "--demo", *args, "--duration", "5"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert "dashboard" not in proc.stdout


def test_an_edge_keypair_made_again_is_allowed_again(tmp_path, monkeypatch):
    """`up` only checked that allowed/edge-local.key existed: after the edge's keypair was made again
    the old public key stayed on the allow-list and the cloud refused the edge for ever (rc 0)."""
    from dancewire.up import ensure_keys
    from proto import keys

    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path))
    ensure_keys()
    folder = keys.keys_dir()
    first = keys.load_public(folder / "edge-local.key")
    for f in folder.glob("edge-local.key*"):
        f.unlink()
    ensure_keys()
    now = keys.load_public(folder / "edge-local.key")
    assert now != first and keys.load_public(keys.allowed_dir() / "edge-local.key") == now


def test_no_seed_gallery_is_a_clear_error(tmp_path, monkeypatch):
    import dancewire.up as up
    from dancewire.errors import DancewireError

    monkeypatch.setattr(up, "SEED_DIR", tmp_path / "no-seeds")
    with pytest.raises(DancewireError, match="no seed gallery files"):
        up.ensure_gallery([sys.executable, "-m", "dancewire"], tmp_path / "gallery.npz")


def test_a_stats_path_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    """--stats pointing at a folder ran the whole session and then ended in a traceback (hiding the
    run's own error, and leaving the previous run's stats in place)."""
    folder = tmp_path / "stats"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-m", "dancewire", "edge", "run", "--demo", "--no-cloud", "--duration", "1",
                           "--stats", str(folder)], env=dict(os.environ, DANCEWIRE_HOME=str(tmp_path / "home")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--stats" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_second_ctrl_c_while_the_edge_stops_keeps_the_recording_and_the_stats(tmp_path):
    """The edge put SIGINT/SIGTERM back before its slow link flush: a second Ctrl-C there skipped closing
    the recording (an mp4 without its index, unreadable) and writing the stats."""
    import av

    rec, stats = tmp_path / "rec.mp4", tmp_path / "stats.json"
    env = dict(os.environ, DANCEWIRE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "dancewire", "edge", "run", "--demo", "--insecure-dev",
           "--set", "link.endpoint=tcp://127.0.0.1:1", "--record", str(rec), "--stats", str(stats)]
    # the second Ctrl-C 1 s into the link's 5 s flush
    proc, out = _signalled(cmd, env, "edge: session", 4, [(signal.SIGINT, 1.0), (signal.SIGINT, 0)])
    assert proc.returncode == 0, out
    assert json.loads(stats.read_text())["counters"]["frames_done"] > 0
    with av.open(str(rec)) as c:
        assert sum(1 for _ in c.decode(video=0)) > 10
