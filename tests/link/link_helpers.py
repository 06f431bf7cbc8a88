"""Helpers for the link tests (a unique module name: test folders have no __init__.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dancewire.paths import REPO_ROOT


class CloudProcess:
    """`python -m cloud.ingest` in its own process, recording every window in its ledger DB."""

    def __init__(self, port: int, state: Path, keydir: Path | None, encoder_hash: str = "enc-1"):
        self.port, self.state, self.keydir, self.encoder_hash = port, state, keydir, encoder_hash
        self.proc: subprocess.Popen | None = None
        self.log = state.with_suffix(".log")

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> "CloudProcess":
        cmd = [sys.executable, "-m", "cloud.ingest", "--bind", self.endpoint, "--encoder-hash", self.encoder_hash,
               "--state", str(self.state), "--record", "--feedback"]
        if self.keydir is None:
            cmd.append("--insecure-dev")
        else:
            cmd += ["--server-key", str(self.keydir / "cloud.key_secret"), "--allow-dir", str(self.keydir / "allowed")]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), DANCEWIRE_LOG_LEVEL="20")
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, like a crash."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def received(self) -> list[tuple[str, int]]:
        import sqlite3

        db = sqlite3.connect(str(self.state))
        try:
            return db.execute("SELECT node, seq FROM received ORDER BY seq").fetchall()
        finally:
            db.close()


def embeddings(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def wait_until(cond, timeout: float = 10.0, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
