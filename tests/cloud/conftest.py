"""Fixtures for the cloud tests: real embeddings (the shipped motion encoder), stores on both
backends (SQLite and a throwaway PostgreSQL cluster), and a running cloud server."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from port_helpers import free_port

sys.path.insert(0, str(Path(__file__).parent))
import real_embeddings  # noqa: E402
from real_embeddings import make_gallery  # noqa: E402

from cloud.gallery import Gallery  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql")
HOLDOUT = ("DANCE_C_8", "DANCE_R_9", "DANCE_W_8")   # one unseen sequence per ballroom style


@pytest.fixture(scope="session")
def ballroom(shared_data) -> list[dict]:
    """Ballroom sequences (real mocap, 3 styles) with real encoder embeddings per 2 s window."""
    seqs = real_embeddings.load_ballroom(shared_data / "keypoints" / "ballroom_tang2018")
    for s in seqs:
        s["times"], s["emb"] = real_embeddings.sequence_embeddings(s)
    return seqs


@pytest.fixture(scope="session")
def ballroom_gallery(ballroom) -> tuple[Gallery, list[dict]]:
    """(gallery of all sequences but the holdout ones, the holdout sequences), calibrated.

    Each reference performance is also enrolled as a routine of its own (eight-counts of 4 s),
    so the holdout dancers get routine similarity scores against their nearest routine."""
    from cloud.enroll import fit_gallery
    from cloud.settings import ClassifySettings

    g = make_gallery([s for s in ballroom if s["name"] not in HOLDOUT], routine_of=lambda s: s["name"])
    fit_gallery(g, ClassifySettings())
    return g, [s for s in ballroom if s["name"] in HOLDOUT]


# ----- PostgreSQL ---------------------------------------------------------------------------------

def _pg_bindir() -> Path | None:
    if not PG_BIN.exists():
        return None
    versions = sorted((p for p in PG_BIN.iterdir() if (p / "bin" / "initdb").exists()),
                      key=lambda p: int(p.name) if p.name.isdigit() else 0)
    return versions[-1] / "bin" if versions else None


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on a free loopback port; yields a base URL, removed afterwards."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'dancewire[postgres]')")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:            # postgres refuses to run as root: use the postgres system user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' system user to run the server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="dancewire-pg-"))
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir()
    if owner is not None:
        for p in (tmp, sock):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    port = free_port()
    log = tmp / "server.log"
    try:
        subprocess.run(run_as + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                 "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                 "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')[-500:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


_db_counter = [0]


def new_pg_database(base: str) -> str:
    import psycopg
    _db_counter[0] += 1
    name = f"t{os.getpid()}_{_db_counter[0]}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.sqlite3'}"
    base = request.getfixturevalue("postgres_server")
    return new_pg_database(base)


# ----- a running server ---------------------------------------------------------------------------

class RunningServer:
    def __init__(self, service, token: str):
        import uvicorn

        from cloud.api import create_app, ws_impl

        self.service, self.token = service, token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(service, token)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    ws=ws_impl()))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def make_server():
    servers = []

    def make(service, token="test-token"):
        srv = RunningServer(service, token)
        servers.append(srv)
        return srv
    yield make
    for s in servers:
        s.stop()
