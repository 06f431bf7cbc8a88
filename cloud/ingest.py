"""Cloud ingest: a ROUTER socket that authenticates edges, validates every frame, deduplicates,
hands new windows to a pluggable handler, and answers with Feedback and cumulative Acks.

Per frame, in order (a reject is counted by reason, logged with a rate limit, and answered
with an ``Error`` when the sender can be told; the server never crashes on input):

1. envelope: two ZeroMQ frames (routing id, payload), payload <= ``Limits.max_frame_bytes``;
2. ``codec.decode``: protobuf parse, protocol version, schema and size limits;
3. ``Hello``: the encoder hash must be one of the gallery's (``encoder_hashes``), else a fatal
   ``Error(ENCODER_MISMATCH)`` that names both hashes; dim and dtype are remembered.
   ``encoder_hashes`` may be a function, asked on every Hello and batch: when the cloud reloads
   a gallery made by another encoder, edges still sending the old one's embeddings get the same
   fatal error on their next batch (their spools keep the windows) instead of being classified
   against references they cannot be compared with;
4. ``WindowBatch``: needs a Hello on this connection (else ``HELLO_REQUIRED``, which makes the
   edge introduce itself again: that is how a restarted cloud resumes), the Hello's node id,
   dtype and embedding size, finite values;
5. dedup on (node_id, epoch, seq) in the ledger; only new windows reach the handler.

A batch refused for what it holds (schema: NaN, a zero vector, another dtype or size than the
Hello's; or too many windows, grids or characters, spooled by an older edge) on a connection with a
Hello can never be taken: its seqs are recorded as taken (``refused_items``,
logged) so the cumulative ack moves past it, instead of the edge resending it and all after it.

Everything received in one poll (up to ``max_group`` frames, ``max_group_batches`` batches) is
processed as a group: the ledger commit covers the group, and Feedback and Acks are sent only after
it (group commit). An Ack therefore always means "durably taken". Heartbeats are echoed at once.

Handler: any object with ``on_windows(node_id, session, batch, epoch) -> list[pb.Feedback] | None``
(or a plain function with that signature), optionally ``on_hello(node_id, hello)``. ``batch`` is
a ``pb.WindowBatch`` holding only new windows and beat grids; ``epoch`` is the spool epoch of the
Hello on the batch's own connection (another connection of the same node may be in another). A handler exception is logged
and counted (``handler_errors``); the batch is still acked, so one poison batch cannot stall a node.
A handler that cannot make a batch durable now raises ``RetryLater`` (with the feedback it has):
the feedback is sent, nothing of the group is acked or recorded as taken (``deferred_groups``),
and the edges send the windows again from their spools.

Exactly-once for handler effects: writes the handler makes through ``server.ledger.conn``
(the ledger's SQLite connection) commit in the same transaction as the dedup record. Effects
elsewhere happen at least once across a cloud crash; key them on (node_id, seq).

Ledger fsync policy: SQLite WAL, ``synchronous=NORMAL``; a process crash (SIGKILL) loses nothing
committed; a background thread fsyncs the WAL at most every 0.2 s (``proto.walsync``), so a power
loss of the cloud host can lose at most that much of the ledger. ``fsync="always"`` fsyncs every
group commit (~2 ms each here). The windows themselves are in the cloud store, whose SQLite runs at
``synchronous=NORMAL`` without a background fsync (``cloud.store``): across a power loss of the
cloud host, windows acked since the store's last checkpoint can be lost while the ledger still has
them as taken. ``DANCEWIRE_SQLITE_SYNC=FULL`` on the store closes that gap at one fsync per batch.

Security: CURVE with ``zmq.auth.thread.ThreadAuthenticator``; only edge public keys in the
allow-list folder (``proto.keys.allowed_dir()``) get in. Refused keys (``auth_failures``) and
other failed handshakes (``handshake_failures``) are counted from the socket monitor. Plaintext only with ``insecure_dev=True``, which wins over any keys given.
The folder is watched (once a second): a key added by ``dancewire keys allow`` gets in without a
restart, and an edge whose key ``dancewire keys revoke`` removed is told so (a fatal
``Error(UNAUTHORIZED)``, ``revoked``) and forgotten; its data and Hellos on the connection it
still holds are refused from then on, and it cannot connect again.

Run standalone (tests, benchmarks): ``python -m cloud.ingest --bind tcp://127.0.0.1:5555 ...``.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from dancewire.errors import DancewireError, RetryLater
from dancewire.paths import state_dir
from proto import codec
from proto import dancewire_pb2 as pb
from proto.walsync import WalSyncer

log = logging.getLogger(__name__)

ZAP_DOMAIN = "dancewire"


# --------------------------------------------------------------------------- ledger

@dataclass
class _SeqState:
    hw: int = 0                                  # every seq <= hw has been taken
    above: set = field(default_factory=set)      # taken seqs > hw (after a gap)
    dirty: bool = False
    added: set = field(default_factory=set)
    removed: set = field(default_factory=set)


class SqliteLedger:
    """Which (node_id, epoch, seq) have been taken, persisted in SQLite, mirrored in memory.

    ``take(node, epoch, seqs, floor)`` returns a mask of new seqs and updates the state;
    ``commit()`` writes all changes of the group in one transaction (opened lazily by the
    first write, so handler writes through ``conn`` join it).
    """

    def __init__(self, path: str | os.PathLike, fsync: str = "interval", fsync_interval: float = 0.2):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync, self.fsync_interval = fsync, float(fsync_interval)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=" + ("FULL" if fsync == "always" else "NORMAL"))
        self.conn.executescript("""
            CREATE TABLE IF NOT EXISTS ingest_ledger (
                node TEXT NOT NULL, epoch INTEGER NOT NULL, hw INTEGER NOT NULL, updated REAL NOT NULL,
                PRIMARY KEY (node, epoch));
            CREATE TABLE IF NOT EXISTS ingest_ledger_above (
                node TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
                PRIMARY KEY (node, epoch, seq));
        """)
        self._states: dict[tuple[str, int], _SeqState] = {}
        self._in_txn = False
        self._syncer = None
        if fsync == "interval":
            self.conn.execute("PRAGMA wal_autocheckpoint=0")   # the syncer checkpoints, off the ingest thread
            self._syncer = WalSyncer(self.path, fsync_interval)

    @staticmethod
    def _key_epoch(epoch: int) -> int:
        return epoch - (1 << 64) if epoch >= (1 << 63) else epoch  # SQLite integers are signed 64-bit

    def state(self, node: str, epoch: int) -> _SeqState:
        key = (node, epoch)
        st = self._states.get(key)
        if st is None:
            e = self._key_epoch(epoch)
            row = self.conn.execute("SELECT hw FROM ingest_ledger WHERE node=? AND epoch=?", (node, e)).fetchone()
            st = _SeqState(hw=int(row[0]) if row else 0)
            st.above = {r[0] for r in self.conn.execute(
                "SELECT seq FROM ingest_ledger_above WHERE node=? AND epoch=?", (node, e))}
            self._states[key] = st
        return st

    def begin(self) -> None:
        if not self._in_txn:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True

    def take(self, node: str, epoch: int, seqs: list[int], floor: int = 0) -> list[bool]:
        st = self.state(node, epoch)
        if floor and floor - 1 > st.hw:
            st.hw = floor - 1
            st.dirty = True
            for s in [s for s in st.above if s <= st.hw]:
                st.above.discard(s)
                st.removed.add(s)
        fresh = []
        for s in seqs:
            if s <= st.hw or s in st.above:
                fresh.append(False)
                continue
            fresh.append(True)
            st.dirty = True
            if s == st.hw + 1:
                st.hw = s
            else:
                st.above.add(s)
                st.added.add(s)
        while st.above and (st.hw + 1) in st.above:
            st.hw += 1
            st.above.discard(st.hw)
            st.removed.add(st.hw)
        return fresh

    def commit(self) -> None:
        dirty = [(k, st) for k, st in self._states.items() if st.dirty]
        if not dirty and not self._in_txn:
            return
        self.begin()
        now = time.time()
        try:
            for (node, epoch), st in dirty:
                e = self._key_epoch(epoch)
                self.conn.execute("INSERT INTO ingest_ledger VALUES (?, ?, ?, ?) ON CONFLICT(node, epoch) "
                                  "DO UPDATE SET hw=excluded.hw, updated=excluded.updated", (node, e, st.hw, now))
                gone = st.removed - st.added
                new = st.added - st.removed
                if gone:
                    self.conn.executemany("DELETE FROM ingest_ledger_above WHERE node=? AND epoch=? AND seq=?",
                                          [(node, e, s) for s in gone])
                if new:
                    self.conn.executemany("INSERT OR IGNORE INTO ingest_ledger_above VALUES (?, ?, ?)",
                                          [(node, e, s) for s in new])
                st.dirty = False
                st.added.clear()
                st.removed.clear()
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._in_txn = False
        if self._syncer is not None:
            self._syncer.mark_dirty()

    def rollback(self) -> None:
        if self._in_txn:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._in_txn = False
        self._states.clear()   # reload from disk on next use

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.close()
        self.conn.close()


# --------------------------------------------------------------------------- server

@dataclass
class _Conn:
    node_id: str
    epoch: int
    dim: int
    dtype: int
    embedding_bytes: int
    user_id: str
    hello: pb.Hello
    last_seen: float


class _RateLog:
    """Log the 1st, 10th, 100th ... occurrence of each key, and at most once per `period` s after."""

    def __init__(self, period: float = 10.0):
        self.period = period
        self.last: dict[str, float] = {}

    def __call__(self, key: str, count: int, msg: str, *args) -> None:
        now = time.monotonic()
        if count in (1, 10, 100, 1000) or now - self.last.get(key, 0.0) >= self.period:
            self.last[key] = now
            log.warning(msg + " [%s #%d]", *args, key, count)


def _as_handler(handler: Any) -> tuple[Callable | None, Callable | None]:
    if handler is None:
        return None, None
    on_windows = getattr(handler, "on_windows", None)
    if on_windows is None and callable(handler):
        on_windows = handler
    return on_windows, getattr(handler, "on_hello", None)


class IngestServer:
    """The cloud's ROUTER endpoint. See the module docstring for the pipeline."""

    def __init__(self, bind: str = "tcp://*:5555", handler: Any = None,
                 encoder_hashes: Iterable[str] | Callable[[], Iterable[str]] = (), *,
                 state_path: str | os.PathLike | None = None, ledger: SqliteLedger | None = None,
                 server_key: str | os.PathLike | None = None, allow_dir: str | os.PathLike | None = None,
                 insecure_dev: bool = False, limits: codec.Limits = codec.LIMITS, sndhwm: int = 10_000,
                 rcvhwm: int = 1000, max_group: int = 512, max_group_batches: int = 32, node_timeout_s: float = 10.0,
                 max_connections: int = 10_000, fsync: str = "interval", check_finite: bool = True):
        self.bind_addr = bind
        fixed = None if callable(encoder_hashes) else frozenset(encoder_hashes)
        self._hashes: Callable[[], Iterable[str]] = encoder_hashes if fixed is None else (lambda: fixed)
        if not self.encoder_hashes:
            raise DancewireError("the ingest server needs the gallery's encoder hash (encoder_hashes)")
        self._on_windows, self._on_hello = _as_handler(handler)
        self.limits = limits
        # a group reads at most max_group frames, and stops at max_group_batches batches: its acks wait
        # for every batch's handler, and 512 of them at 20 ms (a remote database) outlasted the edges'
        # ack timeout. rcvhwm is per connection: frames one edge may have queued here (an edge keeps
        # at most 256 batches in flight)
        self.sndhwm, self.rcvhwm, self.max_group, self.max_group_batches = sndhwm, rcvhwm, max_group, max_group_batches
        self.node_timeout_s, self.max_connections = node_timeout_s, max_connections
        self.check_finite = check_finite
        self.ledger = ledger or SqliteLedger(Path(state_path) if state_path else state_dir() / "ingest.sqlite",
                                             fsync=fsync)
        self._curve = self._load_keys(server_key, allow_dir, insecure_dev)
        self.counters: collections.Counter = collections.Counter()
        self.rejects: collections.Counter = collections.Counter()
        self._ratelog = _RateLog()
        self._conns: dict[bytes, _Conn] = {}
        self._err_budget: dict[bytes, list] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.endpoint: str | None = None
        self._ctx: zmq.Context | None = None
        self._auth = None
        self._sock = self._monitor = None
        self._setup_error: Exception | None = None
        self._allowed: set[str] | None = None     # allowed edge keys (z85), CURVE mode only
        self._allow_seen: tuple = ()               # the allow-list folder's files when last read
        self._busy_s = 0.0
        self._group_hellos: set[bytes] = set()         # connections that sent a Hello in the current group

    @property
    def encoder_hashes(self) -> set[str]:
        """The encoders whose embeddings the gallery can take now."""
        return set(self._hashes())

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _load_keys(server_key, allow_dir, insecure_dev):
        from proto import keys

        if insecure_dev:            # the flag wins over a configured key, as on the edge's side
            log.warning("ingest in PLAINTEXT development mode: no encryption, no authentication%s",
                        f" (key ignored: {server_key})" if server_key is not None else "")
            return None
        if server_key is None:
            raise DancewireError("the ingest server needs CURVE keys (server_key=cloud .key_secret, allow-list "
                                 "folder); plaintext only with the development flag insecure_dev / --insecure-dev")
        public, secret = keys.load_keypair(keys.resolve(server_key, secret=True))
        folder = Path(allow_dir) if allow_dir else keys.allowed_dir()
        if not folder.is_dir():
            raise DancewireError(f"allow-list folder {folder} does not exist")
        return public, secret, folder

    def _setup(self) -> None:
        self._ctx = zmq.Context()
        sock = self._sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm, sock.rcvhwm = self.sndhwm, self.rcvhwm
        sock.router_mandatory = 0
        sock.maxmsgsize = codec.socket_max_bytes(self.limits)   # a 200 MB frame is never buffered
        # ZMTP heartbeats only to reap dead TCP connections; liveness is the edge's Heartbeat/echo
        sock.heartbeat_ivl, sock.heartbeat_timeout = 10_000, 30_000
        if self._curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            public, secret, folder = self._curve
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._allow_seen = self._allow_files()
            self._allowed = self._read_allowlist()
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.zap_domain = ZAP_DOMAIN.encode()
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                | zmq.EVENT_DISCONNECTED)
        sock.bind(self.bind_addr)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _allow_files(self) -> tuple:
        """(name, mtime, size) of each key file in the allow-list folder: what a reload depends on."""
        try:
            return tuple(sorted((p.name, st.st_mtime_ns, st.st_size) for p in self._curve[2].glob("*.key")
                                for st in (p.stat(),)))
        except OSError:
            return self._allow_seen

    def _read_allowlist(self) -> set[str]:
        """Configure the authenticator from the allow-list folder; the allowed keys (z85)."""
        from proto import keys

        folder = self._curve[2]
        allowed = {keys.load_public(p).decode() for p in sorted(folder.glob("*.key"))}
        self._auth.configure_curve(domain=ZAP_DOMAIN, location=str(folder))
        return allowed

    def _watch_allowlist(self) -> None:
        """Once a second: if `dancewire keys allow/revoke` changed the folder, reload it and forget
        the connections whose key is gone (each told with a fatal UNAUTHORIZED error)."""
        files = self._allow_files()
        if files == self._allow_seen:
            return
        self._allow_seen = files
        try:
            allowed = self._read_allowlist()
        except (OSError, ValueError, DancewireError) as exc:
            log.error("allow-list %s not reloaded (the previous one stays): %s", self._curve[2], exc)
            return
        self._allowed = allowed
        self.counters["allowlist_reloads"] += 1
        log.info("allow-list reloaded: %d edge keys", len(allowed))
        out: list = []
        for rid in [r for r, c in self._conns.items() if c.user_id not in allowed]:
            conn = self._conns[rid]
            self.counters["revoked"] += 1
            log.warning("edge %s: its key %s was revoked; disconnected", conn.node_id, conn.user_id)
            self._reject(rid, "unauthorized", f"the key of node {conn.node_id!r} was revoked on the cloud", out,
                         fatal=True)
            del self._conns[rid]
        self._send(out)

    # ------------------------------------------------------------------ running
    def start(self) -> "IngestServer":
        """Serve in a background thread; returns once bound (see ``endpoint``)."""
        self._thread = threading.Thread(target=self._serve_in_thread, name="ingest", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._setup_error is not None:
            self._thread.join(5)
            self._thread = None
            exc = self._setup_error
            raise DancewireError(f"the ingest cannot listen on {self.bind_addr}: {exc}") from exc
        return self

    def _serve_in_thread(self) -> None:
        try:
            self.serve_forever()
        except Exception as exc:
            if not self._ready.is_set():          # start() raises it
                self._setup_error = exc
                self._ready.set()
            else:
                raise

    def serve_forever(self) -> None:
        try:
            self._setup()
        except Exception:
            self._abandon_setup()
            raise
        self._ready.set()
        log.info("ingest listening on %s (%s)", self.endpoint, "CURVE" if self._curve else "PLAINTEXT dev mode")
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        last_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                t0 = time.perf_counter()
                if self._monitor in events:
                    self._monitor_events()
                if self._sock in events:
                    self._process_group()
                now = time.monotonic()
                if now - last_sweep > 1.0:
                    self._sweep(now)
                    if self._allowed is not None:
                        self._watch_allowlist()
                    last_sweep = now
                self._busy_s += time.perf_counter() - t0
        finally:
            self._teardown()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _abandon_setup(self) -> None:
        """A setup that failed (address in use, bad keys): release what it took."""
        for close in (self.ledger.close,
                      lambda: self._monitor is not None and self._monitor.close(0),
                      lambda: self._sock is not None and self._sock.close(0),
                      lambda: self._auth is not None and self._auth.stop(),
                      lambda: self._ctx is not None and self._ctx.term()):
            try:
                close()
            except Exception:
                log.exception("releasing a failed ingest set-up")

    def _teardown(self) -> None:
        try:
            self.ledger.close()
        except Exception:
            log.exception("closing the ledger")
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(0)
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def __enter__(self) -> "IngestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ per group
    def _process_group(self) -> None:
        sock = self._sock
        out: list[tuple[bytes, bytes]] = []            # replies to send after commit
        acks: dict[bytes, _Conn] = {}                  # routing id -> conn to ack
        work: list[tuple[bytes, _Conn, pb.WindowBatch]] = []
        self._group_hellos = set()
        for _ in range(self.max_group):
            if len(work) >= self.max_group_batches:
                break
            try:
                rid = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.counters["frames"] += 1
            if not sock.rcvmore:
                self._reject(None, "bad_multipart", "a message with one frame")
                continue
            frame = sock.recv(copy=False)
            if sock.rcvmore:
                while sock.rcvmore:
                    sock.recv()
                self._reject(rid, "bad_multipart", "a message with more than two frames", out)
                continue
            try:
                self._handle(rid, frame, out, acks, work)
            except Exception as exc:      # no frame may end the loop that serves every edge
                self.counters["frame_errors"] += 1
                log.exception("ingest: a frame could not be handled (refused; the next ones are served)")
                self._reject(rid, "bad_frame", f"{type(exc).__name__}: {exc}", out)
        if not work and not acks and not out:
            return
        # group commit: ledger + handler effects, then replies
        deferred: RetryLater | None = None
        try:
            for rid, conn, batch in work:
                try:
                    fbs = self._call_handler(conn, batch)
                except RetryLater as exc:
                    deferred, fbs = exc, exc.feedback
                for fb in fbs:
                    try:
                        out.append((rid, codec.encode(fb, self.limits)))
                    except codec.WireError as exc:
                        self.counters["feedback_too_large"] += 1
                        log.error("feedback for %s not sent: %s", conn.node_id, exc)
            if deferred is None:
                self.ledger.commit()
        except Exception:
            log.exception("ingest commit failed; nothing of this group is acked (the edges will resend)")
            self.counters["commit_failures"] += 1
            self.ledger.rollback()
            return
        if deferred is not None:
            self.ledger.rollback()                     # nothing of this group counts as taken
            self.counters["deferred_groups"] += 1
            self._ratelog("deferred", self.counters["deferred_groups"],
                          "ingest: %s; feedback sent, nothing acked (the edges keep the windows and resend)", deferred)
            # a Hello is still answered, with what is durably taken: an edge connecting while the store is
            # down (or another edge's batch is deferred) waited for ever in hello_sent
            for rid in self._group_hellos & acks.keys():
                conn = acks[rid]
                out.append((rid, codec.encode(pb.Ack(epoch=conn.epoch, seq=self.ledger.state(conn.node_id, conn.epoch).hw))))
            self._send(out)
            return
        for rid, conn in acks.items():
            st = self.ledger.state(conn.node_id, conn.epoch)
            out.append((rid, codec.encode(pb.Ack(epoch=conn.epoch, seq=st.hw))))
        self._send(out)

    def _send(self, out: list[tuple[bytes, bytes]]) -> None:
        for rid, data in out:
            try:
                self._sock.send_multipart((rid, data), zmq.NOBLOCK)
            except zmq.Again:
                self.counters["reply_dropped_hwm"] += 1
        self.counters["replies"] += len(out)

    def _call_handler(self, conn: _Conn, batch: pb.WindowBatch) -> list[pb.Feedback]:
        if self._on_windows is None:
            return []
        try:
            self.ledger.begin()   # handler writes via ledger.conn join the group transaction
            result = self._on_windows(conn.node_id, batch.session_id, batch, conn.epoch)
        except RetryLater:
            raise
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("ingest handler failed on a batch from %s (acked anyway)", conn.node_id)
            return []
        if result is None:
            return []
        if isinstance(result, pb.Feedback):
            return [result]
        return list(result)

    def _handle(self, rid: bytes, frame: zmq.Frame, out: list, acks: dict, work: list) -> None:
        data = frame.bytes
        try:
            kind, body = codec.decode(data, self.limits)
        except codec.WireError as exc:
            self._reject(rid, exc.reason, str(exc), out)
            # a batch refused for what it holds (not a frame over the byte limit, never parsed)
            if exc.reason == "schema" or (exc.reason == "too_large" and len(data) <= self.limits.max_frame_bytes):
                self._taken_as_refused(rid, data, acks)
            return
        except Exception as exc:  # pragma: no cover - codec promises WireError only; never crash anyway
            self._reject(rid, "bad_frame", f"{type(exc).__name__}: {exc}", out)
            return
        self.counters["rx_" + kind] += 1
        if kind == "batch":
            self._handle_batch(rid, body, out, acks, work)
        elif kind == "heartbeat":
            conn = self._conns.get(rid)
            if conn is not None:
                conn.last_seen = time.monotonic()
            # answered now, not after the group's handlers: the echo measures the link, not the store
            self._send([(rid, codec.encode(pb.Heartbeat(t_us=time.time_ns() // 1000, echo_us=body.t_us)))])
        elif kind == "hello":
            self._handle_hello(rid, frame, body, out, acks)
        elif kind == "error":     # proto3 enums take any number: a newer edge's code has no name here
            name = pb.Error.Code.Name(body.code) if body.code in pb.Error.Code.values() else f"code {body.code}"
            log.warning("edge reported an error: %s %s", name, body.message)
        else:
            self._reject(rid, "unexpected", f"an edge may not send {kind!r}", out)

    def _handle_hello(self, rid: bytes, frame: zmq.Frame, hello: pb.Hello, out: list, acks: dict) -> None:
        if not self._encoder_ok(rid, hello.node_id, hello.encoder_hash, out):
            return
        try:
            user_id = frame.get("User-Id") or ""
        except (zmq.ZMQError, UnicodeDecodeError):
            user_id = ""
        if self._allowed is not None and user_id not in self._allowed:
            self._reject(rid, "unauthorized", f"the key of node {hello.node_id!r} was revoked on the cloud", out,
                         fatal=True)
            self._conns.pop(rid, None)
            return
        if rid not in self._conns and len(self._conns) >= self.max_connections:
            self._sweep(time.monotonic(), force_oldest=True)
        conn = _Conn(hello.node_id, hello.epoch, hello.embedding_dim, hello.embedding_dtype,
                     hello.embedding_dim * codec.ITEMSIZE[hello.embedding_dtype], user_id, hello, time.monotonic())
        self._conns[rid] = conn
        self.counters["hellos_accepted"] += 1
        log.info("edge %s connected (epoch %x, encoder %s, dim %d %s, key %s)", hello.node_id, hello.epoch,
                 hello.encoder_hash, hello.embedding_dim, codec.DTYPE_NAMES.get(hello.embedding_dtype), user_id or "-")
        if self._on_hello is not None:
            try:
                self._on_hello(hello.node_id, hello)
            except Exception:
                log.exception("on_hello handler failed")
        acks[rid] = conn   # the Ack to a Hello tells the edge where to resume
        self._group_hellos.add(rid)

    def _handle_batch(self, rid: bytes, batch: pb.WindowBatch, out: list, acks: dict, work: list) -> None:
        conn = self._conns.get(rid)
        if conn is None:
            self._reject(rid, "hello_required", "data before Hello on this connection", out)
            return
        conn.last_seen = time.monotonic()
        if not self._encoder_ok(rid, conn.node_id, conn.hello.encoder_hash, out):   # the gallery may have changed
            return
        if batch.node_id != conn.node_id:
            self._reject(rid, "schema", f"batch node_id {batch.node_id!r} differs from Hello's {conn.node_id!r}", out)
            return
        if batch.windows:
            problem = None
            if batch.dtype != conn.dtype:
                problem = "batch dtype differs from the Hello's"
            elif len(batch.windows[0].embedding) != conn.embedding_bytes:   # codec checked they are all equal
                problem = (f"embedding of {len(batch.windows[0].embedding)} bytes, Hello said dim {conn.dim} "
                           f"({conn.embedding_bytes} bytes)")
            elif self.check_finite:   # as decoded: an fp16 NaN, or an int8 scale that overflows float32
                with np.errstate(over="ignore", invalid="ignore"):
                    emb = codec.batch_embeddings(batch).astype(np.float64)
                if not np.isfinite(emb).all():
                    problem = "embedding holds NaN or infinity (as decoded)"
                elif not (np.abs(emb).max(axis=1) > 0).all():
                    problem = "embedding is a zero vector (as decoded): it has no direction"
            if problem is not None:
                self._reject(rid, "schema", problem, out)
                self._take_refused(conn, batch, acks, rid)
                return
        seqs = [w.seq for w in batch.windows] + [g.seq for g in batch.beats]
        fresh = self.ledger.take(conn.node_id, conn.epoch, seqs, batch.floor_seq)
        n_new = sum(fresh)
        n_win = len(batch.windows)
        self.counters["windows"] += sum(fresh[:n_win])
        self.counters["beat_grids"] += n_new - sum(fresh[:n_win])
        self.counters["duplicates"] += len(seqs) - n_new
        acks[rid] = conn
        if n_new == 0:
            return
        if n_new != len(seqs):
            keep = pb.WindowBatch(node_id=batch.node_id, session_id=batch.session_id, dtype=batch.dtype,
                                  floor_seq=batch.floor_seq)
            keep.windows.extend(w for w, f in zip(batch.windows, fresh[:n_win]) if f)
            keep.beats.extend(g for g, f in zip(batch.beats, fresh[n_win:]) if f)
            batch = keep
        work.append((rid, conn, batch))

    def _taken_as_refused(self, rid: bytes, data: bytes, acks: dict) -> None:
        """A batch the codec refused for what it holds, on a connection with a Hello: read without the
        checks only for its seqs, which are then taken as refused (see `_take_refused`)."""
        conn = self._conns.get(rid)
        if conn is None:
            return
        env = pb.Envelope()
        try:
            env.ParseFromString(data)
        except Exception:
            return
        if env.WhichOneof("body") == "batch" and env.batch.node_id == conn.node_id:
            self._take_refused(conn, env.batch, acks, rid)

    def _take_refused(self, conn: _Conn, batch: pb.WindowBatch, acks: dict, rid: bytes) -> None:
        """A batch this cloud will never take (what it holds: its values or its fields' sizes; not its
        frame's size or its connection): its seqs
        count as taken, so the cumulative ack moves past them and the edge's spool lets them go. Kept,
        the edge resent it and everything after it on every ack timeout, for ever (a batch spooled by
        an older edge before a check it fails existed, or before its encoder changed)."""
        seqs = [s for s in [w.seq for w in batch.windows] + [g.seq for g in batch.beats] if 0 < s <= codec.MAX_SEQ]
        if not seqs:
            return
        self.ledger.take(conn.node_id, conn.epoch, seqs)
        self.counters["refused_items"] += len(seqs)
        log.error("ingest: %d item(s) of %s (seqs %d..%d) refused for what they hold and dropped: they can never "
                  "be taken", len(seqs), conn.node_id, min(seqs), max(seqs))
        acks[rid] = conn

    def _encoder_ok(self, rid: bytes, node_id: str, encoder_hash: str, out: list) -> bool:
        """Is `encoder_hash` one the gallery takes now? Else a fatal ENCODER_MISMATCH, and the connection is forgotten."""
        hashes = self.encoder_hashes
        if encoder_hash in hashes:
            return True
        expected = ",".join(sorted(hashes))
        msg = (f"encoder hash {encoder_hash!r} of node {node_id!r} does not match the cloud "
               f"gallery's encoder {expected!r}; embeddings from it are not comparable and are refused")
        self._reject(rid, "encoder_mismatch", msg, out, fatal=True, expected=expected, got=encoder_hash)
        self._conns.pop(rid, None)
        return False

    def _reject(self, rid: bytes | None, reason: str, message: str, out: list | None = None, fatal: bool = False,
                expected: str = "", got: str = "") -> None:
        self.rejects[reason] += 1
        self.counters["rejected"] += 1
        node = self._conns[rid].node_id if rid is not None and rid in self._conns else "?"
        self._ratelog(reason, self.rejects[reason], "ingest rejected a frame from %s: %s", node, message)
        if rid is None or out is None:
            return
        # answer, at most 20 errors a second to one peer (garbage floods get counted, not echoed)
        now = time.monotonic()
        budget = self._err_budget.setdefault(rid, [now, 0])
        if now - budget[0] >= 1.0:
            budget[0], budget[1] = now, 0
        if budget[1] >= 20 and not fatal:
            return
        budget[1] += 1
        code = codec.REASON_CODES.get(reason, pb.Error.SCHEMA)
        out.append((rid, codec.encode(codec.make_error(code, message, fatal, expected, got, self.limits))))

    def _sweep(self, now: float, force_oldest: bool = False) -> None:
        stale = [rid for rid, c in self._conns.items() if now - c.last_seen > self.node_timeout_s]
        if force_oldest and not stale and self._conns:
            stale = [min(self._conns, key=lambda r: self._conns[r].last_seen)]
        for rid in stale:
            conn = self._conns.pop(rid)
            log.info("edge %s silent for %.0f s: forgotten", conn.node_id, now - conn.last_seen)
        for rid in [r for r, b in self._err_budget.items() if now - b[0] > 10.0]:
            del self._err_budget[rid]

    def _monitor_events(self) -> None:
        while True:
            try:
                evt = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except (zmq.Again, zmq.ZMQError):
                return
            event = evt["event"]
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.counters["auth_failures"] += 1
                self._ratelog("auth", self.counters["auth_failures"],
                              "ingest refused a connection: its CURVE key is not on the allow-list")
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self.counters["handshake_failures"] += 1
                self._ratelog("handshake", self.counters["handshake_failures"],
                              "ingest: a connection failed its handshake (%s): wrong security mechanism "
                              "(plaintext vs CURVE), wrong server key, or not a ZeroMQ peer", zmq.Event(event).name)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.counters["handshakes"] += 1
            elif event == zmq.EVENT_DISCONNECTED:
                self.counters["disconnects"] += 1

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict:
        now = time.monotonic()
        nodes = sorted({c.node_id for c in self._conns.values() if now - c.last_seen <= 3.0})
        return {"endpoint": self.endpoint, "secure": self._curve is not None, "nodes_online": nodes,
                "connections": len(self._conns), "busy_s": round(self._busy_s, 3),
                "rejects": dict(self.rejects), **dict(self.counters)}


# --------------------------------------------------------------------------- standalone

def main(argv: list[str] | None = None) -> int:
    """Standalone ingest (tests, benchmarks). The full cloud is `dancewire cloud serve`."""
    p = argparse.ArgumentParser(prog="python -m cloud.ingest", description=main.__doc__)
    p.add_argument("--bind", default="tcp://127.0.0.1:5555")
    p.add_argument("--encoder-hash", action="append", required=True)
    p.add_argument("--state", type=Path, default=None, help="ledger SQLite file")
    p.add_argument("--server-key", default=None, help="the cloud's .key_secret (or a key name)")
    p.add_argument("--allow-dir", type=Path, default=None)
    p.add_argument("--insecure-dev", action="store_true", help="PLAINTEXT, development only")
    p.add_argument("--record", action="store_true",
                   help="test handler: record every window (node, seq) in the ledger DB, same transaction")
    p.add_argument("--feedback", action="store_true", help="test handler: answer each batch with Feedback")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    p.add_argument("--stats-every", type=float, default=0.0, help="log stats every N s")
    p.add_argument("--stats-json", type=Path, default=None, help="write stats (and CPU seconds) here on exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=int(os.environ.get("DANCEWIRE_LOG_LEVEL", logging.INFO)),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    server: IngestServer | None = None

    def handler(node_id: str, session: str, batch: pb.WindowBatch, epoch: int):
        if args.record:
            server.ledger.conn.executemany("INSERT INTO received VALUES (?, ?)",
                                           [(node_id, w.seq) for w in batch.windows])
        if args.feedback:
            return [echo_feedback(batch)]
        return None

    server = IngestServer(args.bind, handler, args.encoder_hash, state_path=args.state, server_key=args.server_key,
                          allow_dir=args.allow_dir, insecure_dev=args.insecure_dev)
    if args.record:
        server.ledger.conn.execute("CREATE TABLE IF NOT EXISTS received (node TEXT, seq INTEGER)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    server.start()
    print(f"ready {server.endpoint}", flush=True)     # for a parent waiting on stdout: no probe connection
    if args.stats_every:
        def report():
            while not stop.wait(args.stats_every):
                log.info("stats %s", server.stats())
        threading.Thread(target=report, daemon=True).start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
    if args.stats_json:
        import json

        args.stats_json.write_text(json.dumps({**server.stats(), "cpu_s": time.process_time()}))
    return 0


def echo_feedback(batch: pb.WindowBatch, labels: tuple[str, ...] = ("break", "house", "krump", "hiphop")) -> pb.Feedback:
    """A stand-in classifier for tests and benchmarks: style probabilities from the first embedding values."""
    fb = pb.Feedback(session_id=batch.session_id, t_us=time.time_ns() // 1000)
    if not batch.windows:
        return fb
    emb = codec.batch_embeddings(batch)
    k = min(len(labels), emb.shape[1])
    logits = emb[:, :k] * 10.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for w, p in zip(batch.windows, probs):
        d = fb.dancers.add(track_id=w.track_id, seq=w.seq, t0_ms=w.t0_ms, t1_ms=w.t1_ms,
                           style=labels[int(p.argmax())], confidence=float(p.max()))
        for label, v in zip(labels, p):
            d.styles.add(label=label, p=float(v))
    return fb


if __name__ == "__main__":
    sys.exit(main())
