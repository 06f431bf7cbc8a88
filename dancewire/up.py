"""`dancewire up`: the main job on one machine — cloud (SQLite) + edge + dashboard.

It makes the CURVE keys on first use (cloud keypair, an edge keypair on the cloud's
allow-list), starts `dancewire cloud serve` and `dancewire edge run` as child processes,
prints the dashboard URL, and on Ctrl-C stops the edge first (it flushes its spool to the
cloud), then the cloud. Camera and microphone are used when present; otherwise the edge
runs the clearly labelled demo source. The two processes only talk over ZeroMQ and HTTP,
exactly as they do when the cloud is elsewhere.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dancewire.config import port_arg
from dancewire.errors import DancewireError
from dancewire.paths import SEED_DIR, state_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="the main job: cloud + edge + dashboard on this machine")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="replay this video at real time instead of the camera")
    src.add_argument("--demo", action="store_true", help="force the demo source")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--api-port", type=server_port, default=8765)
    p.add_argument("--zmq-port", type=server_port, default=5555)
    p.add_argument("--page", type=port_arg, default=8089, help="port of the rig's local feedback page (0: off)")
    p.set_defaults(func=run)


def server_port(text: str) -> int:
    """A port `up` serves on: 1..65535 (0 would bind a random port the edge cannot know)."""
    port = port_arg(text)
    if port == 0:
        raise argparse.ArgumentTypeError("port 0 is not a port to serve on (1..65535)")
    return port


def ensure_keys(allow_dir: str = "") -> dict[str, Path]:
    """Cloud and edge keypairs in the state dir; the edge's public key on the cloud's allow-list
    (`allow_dir`, the cloud's setting of that name: "" is the keys folder's own)."""
    from proto import keys

    folder = keys.keys_dir()
    paths = {}
    for name in ("cloud", "edge-local"):
        if not (folder / f"{name}.key_secret").exists():
            keys.generate(name)
        paths[name] = folder / f"{name}.key"
    allowed = Path(allow_dir) if allow_dir else keys.allowed_dir()
    listed = allowed / "edge-local.key"
    # listed, but not the key the edge now has (its keypair made again): the cloud refused it for ever
    if not listed.exists() or keys.load_public(listed) != keys.load_public(paths["edge-local"]):
        listed.unlink(missing_ok=True)
        keys.allow(paths["edge-local"], folder=allowed)
    return {"server_public": paths["cloud"], "server_secret": folder / "cloud.key_secret",
            "edge_secret": folder / "edge-local.key_secret"}


def ensure_gallery(exe: list[str], gallery: Path) -> None:
    """A fresh cloud gets the seed gallery (AIST++ genres) so styles are classified out of the box.
    It is enrolled into a temporary file that replaces `gallery` only once every seed file is in,
    so an interrupted or failed first run leaves no half gallery for later runs to keep."""
    import numpy as np

    if gallery.exists():
        return
    seeds = sorted(SEED_DIR.glob("*.npz"))
    if not seeds:
        raise DancewireError(f"no seed gallery files in {SEED_DIR} (a broken install?): reinstall dancewire, or "
                             f"enrol a gallery with `dancewire cloud enroll` into {gallery}")
    partial = gallery.with_name(gallery.name + ".partial.npz")
    partial.unlink(missing_ok=True)
    try:
        for i, f in enumerate(seeds):
            try:
                style = str(np.load(f)["genre"][0])
            except (OSError, ValueError, KeyError, IndexError) as exc:
                raise DancewireError(f"seed gallery file {f} is damaged ({exc}); restore it from git") from None
            fit = [] if i == len(seeds) - 1 else ["--no-fit"]          # fit once, on the whole gallery
            proc = subprocess.run(exe + ["cloud", "enroll", str(f), "--style", style, "--group", "AIST++",
                                         "--gallery", str(partial), *fit],   # videos: the file's performances
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise DancewireError(f"enrolling the seed gallery file {f.name} failed: {tail}")
        partial.replace(gallery)
    finally:
        partial.unlink(missing_ok=True)
    print(f"dancewire: enrolled the seed gallery ({SEED_DIR}) into {gallery}", flush=True)


def _camera_present() -> bool:
    """The camera the edge will open (its `source.camera` setting, from env or file), not index 0."""
    from edge.settings import load_edge_settings
    from edge.sources.camera import camera_available

    camera = load_edge_settings(None, []).source.camera
    return camera_available(int(camera) if camera.isdigit() else camera)


def _mic_present() -> bool:
    try:
        import sounddevice as sd
        return any(d["max_input_channels"] > 0 for d in sd.query_devices())
    except (OSError, ImportError):          # no PortAudio library, or PortAudio found no devices
        return False


def _check_ports(ports: dict[str, int]) -> None:
    """Each port `up` will serve on must be free now: a port taken by another program (a second
    `dancewire up`, another web server) would fail the cloud or edge later, and an HTTP server there
    could even answer the health check in the cloud's place."""
    import socket

    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if port in seen:
            raise DancewireError(f"{seen[port]} and {flag} are both {port}: each needs its own port")
        seen[port] = flag
        with socket.socket() as sock:
            # as servers bind: a TIME-WAIT left by the last run's own connections is no listener
            # (without it, Ctrl-C and run again was refused for a minute)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise DancewireError(f"port {port} is in use ({exc.strerror}): another `dancewire up`, or another "
                                     f"program; stop it or pass {flag} with a free port") from None


def _wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DancewireError(f"the cloud exited during start-up (code {proc.returncode}); see the log above")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise DancewireError(f"the cloud did not answer at {url} within {timeout:.0f} s")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _say(msg: str) -> None:
    try:
        print(f"dancewire: {msg}", flush=True)
    except OSError:              # the terminal is gone (SIGHUP): stopping goes on all the same
        pass


def _still_stopping(signum, frame) -> None:
    _say("still stopping the edge and the cloud...")


def _die_with_parent() -> None:
    """In each child: SIGTERM when `up` itself dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(args) -> int:
    # Ctrl-C, SIGTERM (kill, systemd stop) and SIGHUP (the terminal closed, SSH lost) all take the
    # stopping path below, even when the shell that started us ignores SIGINT (a background job):
    # the edge and cloud run in sessions of their own, so nothing else would stop them.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    ports = {"--api-port": args.api_port, "--zmq-port": args.zmq_port}
    _check_ports(ports | ({"--page": args.page} if args.page else {}))
    from cloud.settings import load_settings
    cloud_settings = load_settings(None, [])
    k = ensure_keys(cloud_settings.allow_dir)
    exe = [sys.executable, "-m", "dancewire", *["-v"] * args.verbose]
    api = f"http://127.0.0.1:{args.api_port}"
    zmq_ep = f"tcp://127.0.0.1:{args.zmq_port}"
    cloud_cmd = exe + ["cloud", "serve", "--set", f"api_port={args.api_port}",
                       "--set", f"zmq_bind={zmq_ep}", "--set", f"server_key={k['server_secret']}"]
    edge_cmd = exe + ["edge", "run", "--set", f"link.endpoint={zmq_ep}",
                      "--set", f"link.client_key={k['edge_secret']}", "--set", f"link.server_key={k['server_public']}",
                      "--stats", str(state_dir() / "last-edge-run.json")]
    if args.source:
        edge_cmd += ["--source", str(args.source)]
    elif args.demo or not _camera_present():
        # the session says so wherever it is shown (dashboard, API, store): its dancers are not real
        edge_cmd += ["--demo", "--session", f"DEMO-{time.strftime('%Y%m%d-%H%M%S')}"]
        why = "forced by --demo" if args.demo else "no camera found"
        print(f"dancewire: {why}: running the DEMO source (generated music and dancers; session DEMO-...)",
              flush=True)
    elif not _mic_present():
        edge_cmd += ["--no-mic"]
        print("dancewire: no microphone found: camera only (no music analysis)", flush=True)
    if args.page:
        edge_cmd += ["--page", str(args.page)]

    ensure_gallery(exe, Path(cloud_settings.gallery_path))
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        cloud = subprocess.Popen(cloud_cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        procs.append(cloud)
        _wait_http(f"{api}/api/health", 60, cloud)
        edge = subprocess.Popen(edge_cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        procs.append(edge)
        from cloud.cli import resolve_token
        token = resolve_token(cloud_settings)
        print(f"dancewire: dashboard  {api}/dashboard/#token={token}", flush=True)
        if args.page:
            print(f"dancewire: rig page   http://127.0.0.1:{args.page}/", flush=True)
        print("dancewire: Ctrl-C stops everything", flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        edge_done = False
        while deadline is None or time.monotonic() < deadline:
            if cloud.poll() is not None:
                raise DancewireError(f"the cloud exited with code {cloud.returncode}")
            if not edge_done and edge.poll() is not None:
                if edge.returncode != 0 or not args.source:
                    raise DancewireError(f"the edge exited with code {edge.returncode}")
                edge_done = True        # the video ended: its results stay on the dashboard
                print(f"dancewire: the edge finished {args.source}; the cloud and dashboard stay up "
                      "(Ctrl-C stops)", flush=True)
            time.sleep(0.3)
    except KeyboardInterrupt:
        _say("stopping (edge first, so it hands its spool to the cloud)")
    finally:
        for sig in STOP_SIGNALS:           # a second Ctrl-C must not abandon the cloud half-way
            signal.signal(sig, _still_stopping)
        for p in reversed(procs):          # edge, then cloud
            _stop(p)
    return 0


def _stop(p: subprocess.Popen, timeout: float = 15.0) -> None:
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
