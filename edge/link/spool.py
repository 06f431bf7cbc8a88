"""Durable, bounded local spool of outgoing batches (SQLite, WAL), so a cloud outage or restart loses nothing.

Every batch is written here *before* it is sent, and deleted only when the cloud's
cumulative Ack covers its last sequence number. After a crash or restart the edge resends
whatever is still here; the cloud deduplicates on (node, epoch, seq), so nothing arrives twice.

Sequence numbers are unique per (node, epoch). ``epoch`` is a random 63-bit number chosen
when the spool file is created, so a deleted or replaced spool starts a fresh sequence space
instead of colliding with sequence numbers the cloud has already seen.

fsync policy (``fsync=``):
  * ``"interval"`` (default): every append commits to the WAL (so a *process* crash, SIGKILL
    included, loses nothing that ``append`` returned), and a background thread
    (``proto.walsync.WalSyncer``) fsyncs the WAL at most every ``fsync_interval`` s (0.2 s).
    A power loss or kernel crash can lose at most the last ~``fsync_interval`` of batches that
    had not been acked yet. Cost: one fsync (~2 ms here) per interval, on neither the camera
    thread nor the link's I/O thread.
  * ``"always"``: SQLite ``synchronous=FULL``: every commit is fsynced before it returns
    (nothing acked or not is ever lost to a power cut; ~2 ms per commit on this disk).
  * ``"never"``: ``synchronous=OFF``; survives a process crash, not a power loss.

Bounds and the policy when full (``max_bytes`` of payload, ``max_batches`` rows):
  * ``on_full="drop_oldest"`` (default): the oldest batches are deleted to make room. Live
    feedback needs the newest windows; the cloud learns of the loss through
    ``WindowBatch.floor_seq`` and does not wait for them. Counted in ``dropped_batches`` /
    ``dropped_windows``.
  * ``on_full="drop_newest"``: the new batch is refused (``append`` returns False), what is
    already spooled is kept. Counted in ``refused_batches`` / ``refused_windows``.
  The defaults (64 MiB, 500,000 batches) hold ~3 h of 10 dancers at 2 windows/s with
  64..128-dim int8 embeddings.
  A full disk (SQLite's "database or disk is full") caps ``max_bytes`` a little below what the
  spool holds then (``DISK_FULL_SLACK``), logs one clear error, and applies the same policy:
  drop_oldest deletes the oldest batches (SQLite reuses their pages, so the file need not grow)
  to store the new ones, where the disk still has room for the deletion's own journal pages;
  otherwise, and under drop_newest, new batches are refused. The cap is lifted again after
  ``DISK_FULL_RETRY_S`` (if the disk is still full the next append caps it again). An ack whose
  deletion the full disk refuses is kept and retried with the next ack or append. The link keeps
  running; under drop_newest everything spooled is kept.

One process at a time: the spool takes an exclusive lock (``PATH.lock``); a second opener gets
``SpoolBusyError`` (two links on one spool would give the same sequence numbers to different windows).
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dancewire.errors import DancewireError
from proto.walsync import WalSyncer

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("interval", "always", "never")
ACKED_STATS_SQL = ("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM spool "
                   "WHERE first_seq <= ? AND last_seq <= ?")
ACKED_DELETE_SQL = "DELETE FROM spool WHERE first_seq <= ? AND last_seq <= ?"
FULL_POLICIES = ("drop_oldest", "drop_newest")


@dataclass
class SpoolStats:
    batches: int = 0
    bytes: int = 0
    appended_batches: int = 0
    dropped_batches: int = 0
    dropped_windows: int = 0
    refused_batches: int = 0
    refused_windows: int = 0


DISK_FULL_SLACK = 256 * 1024   # bytes the spool gives up when the disk is full
DISK_FULL_RETRY_S = 30.0       # then the configured max_bytes is tried again


class SpoolBusyError(DancewireError):
    """Another process (or link) has this spool open."""


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_FULL")


class Spool:
    """An append-only queue of (first_seq, last_seq, payload) rows, trimmed by cumulative acks.

    One thread at a time (the link's I/O thread); the lock only makes `stats()` safe from others.
    """

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 64 * 2**20, max_batches: int = 500_000,
                 on_full: str = "drop_oldest", fsync: str = "interval", fsync_interval: float = 0.2):
        if on_full not in FULL_POLICIES:
            raise ValueError(f"on_full must be one of {FULL_POLICIES}")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}")
        self.max_bytes, self.max_batches = int(max_bytes), int(max_batches)
        self._max_bytes_configured = self.max_bytes
        self._disk_cap_until = 0.0     # while a full disk caps max_bytes: when to try the configured one
        self._ack_pending = 0          # an ack the full disk would not let us delete yet
        self.on_full, self.fsync, self.fsync_interval = on_full, fsync, float(fsync_interval)
        self._lock = threading.Lock()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_lock()   # last: every argument is checked, so nothing can leak the lock
        try:
            self._open(fsync, fsync_interval)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, fsync: str, fsync_interval: float) -> None:
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=" + {"interval": "NORMAL", "always": "FULL", "never": "OFF"}[fsync])
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS spool (
                first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,
                n_items INTEGER NOT NULL, created REAL NOT NULL, payload BLOB NOT NULL);
        """)
        row = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if row is None:
            epoch = secrets.randbits(63) or 1
            self._db.execute("INSERT INTO meta VALUES ('epoch', ?), ('next_seq', 1)", (epoch,))
            self._sync_dir()
        else:
            epoch = int(row[0])
        self.epoch = epoch
        next_seq = int(self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
        top = self._db.execute("SELECT MAX(last_seq) FROM spool").fetchone()[0]
        self._next_seq = max(next_seq, (top or 0) + 1)
        # the first seq numbered since the cloud last confirmed this spool's counter (see `unverified_from`)
        if self._db.execute("SELECT value FROM meta WHERE key='unverified_from'").fetchone() is None:
            self._db.execute("INSERT INTO meta VALUES ('unverified_from', ?)", (self._next_seq,))
        self._stats = SpoolStats()
        self._stats.batches, b = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM spool").fetchone()
        self._stats.bytes = int(b)
        self._syncer = None
        if fsync == "interval":
            self._db.execute("PRAGMA wal_autocheckpoint=0")   # the syncer checkpoints, off this thread
            self._syncer = WalSyncer(self.path, fsync_interval)
        self._last_warn = -1e9

    def _take_lock(self) -> int:
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolBusyError(f"the spool {self.path} is in use by another edge process or link; "
                                 f"stop it first, or give this one its own spool (node id or spool path)") from None
        return fd

    # ------------------------------------------------------------------ sequence numbers
    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def unverified_from(self) -> int | None:
        """The first seq numbered since a cloud last confirmed this spool's counter (None: confirmed).
        Kept across restarts: a spool rolled back, restarted twice before reaching its cloud, still
        compares the cloud's first ack with the seq it rolled back to, not with the last start's."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='unverified_from'").fetchone()
        return None if row is None else int(row[0])

    def verified(self) -> bool:
        """The cloud's ack showed this spool's counter is ahead of what it has taken. False when the
        database cannot write it now (a full disk): the caller tries again later."""
        try:
            with self._lock:
                self._db.execute("DELETE FROM meta WHERE key='unverified_from'")
        except sqlite3.OperationalError as exc:
            log.warning("spool %s: cannot record the cloud's confirmation now (%s); tried again", self.path, exc)
            return False
        if self._syncer is not None:
            self._syncer.mark_dirty()
        return True

    def new_epoch(self) -> int:
        """Start a fresh sequence space (same rows, same seqs): for a spool whose counter fell behind
        what the cloud has already taken (a restored image, a power cut before the fsync). Durable
        before it returns (a Hello in the new epoch follows at once)."""
        with self._lock:
            epoch = secrets.randbits(63) or 1
            self._db.execute("UPDATE meta SET value=? WHERE key='epoch'", (epoch,))
            self._db.execute("DELETE FROM meta WHERE key='unverified_from'")   # a fresh space: nothing to verify
            self.epoch = epoch
        if self._syncer is not None:
            self._syncer.mark_dirty()
            self._syncer.sync_now()
        return epoch

    def discard(self, first_seq: int) -> None:
        """Delete one row that can never be sent (the floor then moves past it)."""
        with self._lock:
            row = self._db.execute("SELECT LENGTH(payload) FROM spool WHERE first_seq=?", (first_seq,)).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM spool WHERE first_seq=?", (first_seq,))
            self._stats.batches -= 1
            self._stats.bytes -= int(row[0])

    # ------------------------------------------------------------------ writing
    def append(self, rows: list[tuple[int, int, int, bytes]]) -> list[bool]:
        """Store rows (first_seq, last_seq, n_items, payload) in one transaction.

        Returns, per row, whether it was stored (False under ``on_full="drop_newest"``, or when a full
        disk leaves no room at all).
        """
        if not rows:
            return []
        with self._lock:
            if self._disk_cap_until and time.monotonic() >= self._disk_cap_until:
                self.max_bytes, self._disk_cap_until = self._max_bytes_configured, 0.0
                log.info("edge spool %s: trying the configured size again after a full disk", self.path)
            if self._ack_pending:
                self._delete_acked(self._ack_pending)
            try:
                stored = self._append(rows)
            except sqlite3.OperationalError as exc:
                if not _disk_full(exc):
                    raise
                # room for this append plus slack: freed rows only help once whole pages come free
                need = sum(len(r[3]) for r in rows) + DISK_FULL_SLACK
                self.max_bytes = max(0, min(self.max_bytes, self._stats.bytes - need))
                self._disk_cap_until = time.monotonic() + DISK_FULL_RETRY_S
                log.error("edge spool %s: the disk is full; the spool is capped at %d bytes (%d batches) and "
                          "%s from now on - free space on the rig", self.path, self.max_bytes, self._stats.batches,
                          "drops its oldest batches" if self.on_full == "drop_oldest" else "refuses new batches")
                try:
                    stored = self._append(rows)
                except sqlite3.OperationalError as exc2:
                    if not _disk_full(exc2):
                        raise
                    stored = [False] * len(rows)          # not even the freed pages were enough
                    self._next_seq = max(self._next_seq, max(r[1] for r in rows) + 1)
                    self._stats.refused_batches += len(rows)
                    self._stats.refused_windows += sum(r[2] for r in rows)
        if self._syncer is not None:
            self._syncer.mark_dirty()
        if not all(stored):
            self._warn("spool full (%d batches, %d bytes): refused %d new batch(es) so far",
                       self._stats.batches, self._stats.bytes, self._stats.refused_batches)
        return stored

    def _append(self, rows: list[tuple[int, int, int, bytes]]) -> list[bool]:
        """One transaction; on failure the counters are restored with the rollback."""
        stored = []
        now = time.time()
        saved_stats, saved_next = SpoolStats(**vars(self._stats)), self._next_seq
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for first, last, n_items, payload in rows:
                size = len(payload)
                self._next_seq = max(self._next_seq, last + 1)  # a refused seq is never reused
                if not self._make_room(size):
                    self._stats.refused_batches += 1
                    self._stats.refused_windows += n_items
                    stored.append(False)
                    continue
                db.execute("INSERT INTO spool VALUES (?, ?, ?, ?, ?)", (first, last, n_items, now, payload))
                self._stats.batches += 1
                self._stats.bytes += size
                self._stats.appended_batches += 1
                stored.append(True)
            db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (self._next_seq,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._stats, self._next_seq = saved_stats, saved_next
            raise
        return stored

    def _make_room(self, size: int) -> bool:
        if size > self.max_bytes:
            return False
        over = (self._stats.batches + 1 > self.max_batches) or (self._stats.bytes + size > self.max_bytes)
        if not over:
            return True
        if self.on_full == "drop_newest":
            return False
        dropped_b = dropped_w = 0
        cur = self._db.execute("SELECT first_seq, n_items, LENGTH(payload) FROM spool ORDER BY first_seq")
        victims = []
        batches, nbytes = self._stats.batches, self._stats.bytes
        for first, n_items, length in cur:
            if batches + 1 <= self.max_batches and nbytes + size <= self.max_bytes:
                break
            victims.append(first)
            batches -= 1
            nbytes -= length
            dropped_b += 1
            dropped_w += n_items
        cur.close()
        if victims:
            self._db.execute("DELETE FROM spool WHERE first_seq <= ?", (victims[-1],))
        self._stats.batches, self._stats.bytes = batches, nbytes
        self._stats.dropped_batches += dropped_b
        self._stats.dropped_windows += dropped_w
        self._warn("spool full: dropped %d oldest batch(es) so far (%d windows)",
                   self._stats.dropped_batches, self._stats.dropped_windows)
        return True

    def _warn(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._last_warn >= 10.0:   # at most one warning per 10 s; the counters have the totals
            self._last_warn = now
            log.warning(msg, *args)

    # ------------------------------------------------------------------ reading / trimming
    def pending(self, after_seq: int, limit: int = 256) -> list[tuple[int, int, bytes]]:
        """Rows holding a seq > after_seq, oldest first: (first_seq, last_seq, payload). A row the
        ack covers only in part is sent again whole (the cloud drops what it has)."""
        with self._lock:
            return self._db.execute(
                "SELECT first_seq, last_seq, payload FROM spool WHERE last_seq > ? ORDER BY first_seq LIMIT ?",
                (after_seq, limit)).fetchall()

    def ack(self, seq: int) -> int:
        """Delete every row whose last_seq <= seq (the cloud has them). Returns rows deleted."""
        with self._lock:
            deleted = self._delete_acked(max(seq, self._ack_pending))
        if deleted and self._syncer is not None:
            self._syncer.mark_dirty()
        return deleted

    def _delete_acked(self, seq: int) -> int:
        """Under the lock. A full disk can refuse even a DELETE (its WAL pages): the ack is kept and
        retried with the next ack or append; the rows stay until then (resending them is harmless)."""
        # seqs grow with first_seq, so bounding first_seq too keeps this a primary-key range scan
        try:
            row = self._db.execute(ACKED_STATS_SQL, (seq, seq)).fetchone()
            if row[0]:
                self._db.execute(ACKED_DELETE_SQL, (seq, seq))
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            if not self._ack_pending:
                log.error("edge spool %s: the disk is full; acked batches stay in the spool until it has room "
                          "- free space on the rig", self.path)
            self._ack_pending = seq
            return 0
        self._ack_pending = 0
        self._stats.batches -= row[0]
        self._stats.bytes -= row[1]
        return int(row[0])

    def floor(self) -> int:
        """Lowest seq still spooled (or the next seq if empty): every lower seq was acked or dropped."""
        with self._lock:
            low = self._db.execute("SELECT MIN(first_seq) FROM spool").fetchone()[0]
        return int(low) if low is not None else self._next_seq

    def __len__(self) -> int:
        return self._stats.batches

    # ------------------------------------------------------------------ durability
    def sync(self) -> bool:
        """fsync the WAL now if there were commits since the last fsync ("interval" policy only)."""
        return self._syncer.sync_now() if self._syncer is not None else False

    def _sync_dir(self) -> None:
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def stats(self) -> dict:
        with self._lock:
            s = dict(self._stats.__dict__)
        s["fsyncs"] = self._syncer.fsyncs if self._syncer is not None else 0
        s.update(epoch=self.epoch, next_seq=self._next_seq, on_full=self.on_full, fsync=self.fsync,
                 max_bytes=self.max_bytes, max_batches=self.max_batches)
        return s

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            if self._syncer is not None:
                self._syncer.close()
            self._db.close()
            self._db = None  # type: ignore[assignment]
            os.close(self._lock_fd)   # releases the lock
