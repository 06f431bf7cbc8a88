"""Background fsync of a SQLite WAL file: the "interval" durability policy of the edge spool and the cloud ledger.

With ``PRAGMA synchronous=NORMAL`` in WAL mode, a commit reaches the operating system (so it
survives the process being killed) but is not fsynced. ``WalSyncer`` fsyncs the WAL file at
most every ``interval`` seconds when commits happened since, in its own thread, so the I/O
thread that commits is never stalled by a slow disk (an fsync takes ~2 ms here, up to ~10).
After a power loss, commits older than ``interval`` + one fsync are on disk.

It also takes over SQLite's WAL checkpoints (the owner sets ``PRAGMA wal_autocheckpoint=0``):
an automatic checkpoint runs inside a commit and fsyncs twice, a stall of several ms in the
committing thread; here a PASSIVE checkpoint runs every ``checkpoint_every`` s on this
thread's own connection, which in WAL mode does not block the writer.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class WalSyncer:
    def __init__(self, db_path: str | os.PathLike, interval: float = 0.2, checkpoint_every: float = 1.0):
        self.db_path = Path(db_path)
        self.wal = Path(str(db_path) + "-wal")
        self.interval = float(interval)
        self.checkpoint_every = float(checkpoint_every)
        self.fsyncs = 0
        self.checkpoints = 0
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"walsync-{self.wal.name}", daemon=True)
        self._thread.start()

    def mark_dirty(self) -> None:
        """Call after each commit."""
        self._dirty.set()

    def sync_now(self) -> bool:
        """fsync now if anything was committed since the last fsync."""
        if not self._dirty.is_set():
            return False
        with self._lock:
            self._dirty.clear()
            if self._fd is None:
                if not self.wal.exists():
                    return False
                self._fd = os.open(self.wal, os.O_RDONLY)
            os.fsync(self._fd)
            self.fsyncs += 1
            return True

    def _run(self) -> None:
        conn = sqlite3.connect(str(self.db_path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        last_ckpt = time.monotonic()
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.sync_now()
                    if time.monotonic() - last_ckpt >= self.checkpoint_every:
                        last_ckpt = time.monotonic()
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.checkpoints += 1
                except (OSError, sqlite3.Error) as exc:   # pragma: no cover - disk trouble: keep trying, say so
                    log.error("fsync/checkpoint of %s failed: %s", self.db_path, exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sync_now()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
