"""EdgeLink: the edge's side of the wire. A DEALER socket talks to the cloud's ROUTER.

Delivery is at-least-once, made exactly-once by the cloud's deduplication:

1. ``submit(...)`` (any thread; never blocks) gives the batch its sequence numbers and queues
   it in memory; the I/O thread writes it to the durable spool (``edge.link.spool``) before
   it is ever sent.
2. On every connection the link first sends ``Hello`` (node, encoder hash, dim, dtype, spool
   epoch). The cloud answers with an ``Ack`` holding its cumulative sequence number for this
   node and epoch; the link drops what the cloud already has and (re)sends the rest in order.
   If the cloud has seqs this spool never numbered (the spool was rolled back or restored), the
   link goes on under a fresh epoch rather than reuse them.
3. The cloud acks cumulatively after it has committed a batch; the link then deletes the
   acked batches from the spool. No ack progress for ``ack_timeout_s`` -> resend from the ack.
4. Heartbeats: the link sends one every ``heartbeat_s``, streaming or not; the cloud echoes it
   at once (the round trip, ``rtt_ms``, on the link's monotonic clock). Nothing heard for ``heartbeat_misses * heartbeat_s`` -> the socket is closed and
   a new one is made after an exponential backoff (``reconnect_min_s`` .. ``reconnect_max_s``).
   libzmq's own reconnect (same bounds) runs underneath.
5. The socket uses ``ZMQ_IMMEDIATE`` and non-blocking sends under a send high-water mark, and
   at most ``max_inflight`` unacked batches are on the wire: a slow or absent cloud only makes
   the spool grow; the camera loop never waits on the network or the disk (``submit`` only
   encodes and checks its batch).
6. A batch is checked as the cloud will check it when it is submitted: one the cloud would refuse
   is counted (``submit_invalid``), takes no sequence number and is never sent, rather than being
   resent forever. An unexpected error in the I/O loop costs the connection, not the thread.

Security: CURVE with the node's keypair (``client_key``: a ``.key_secret`` file or a key name)
and the cloud's public key (``server_key``: a ``.key`` file or name); by default ``edge`` and
``cloud`` in the keys folder (``dancewire keys ...``). Plaintext only with ``insecure_dev=True``, which wins over any keys given.
"""
from __future__ import annotations

import collections
import logging
import os
import socket as _socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import zmq
from zmq.utils.monitor import recv_monitor_message

from dancewire.errors import DancewireError
from dancewire.paths import state_dir
from edge.link.spool import Spool
from proto import codec
from proto import dancewire_pb2 as pb

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_CLIENT_KEY = "edge"     # this node's keypair in proto.keys.keys_dir()
DEFAULT_SERVER_KEY = "cloud"    # the cloud's public key in proto.keys.keys_dir()


class LinkError(DancewireError):
    """The cloud refused this edge, or the link is misconfigured."""


class EncoderMismatchError(LinkError):
    """The cloud's gallery was built with another encoder than this edge's."""


class AuthRejectedError(LinkError):
    """The cloud rejected this edge's CURVE key (not on its allow-list)."""


_MONITOR_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                   | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                   | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def _now_us() -> int:
    """Heartbeat stamps: the cloud echoes them back, so only this clock reads them (a wall-clock
    step would give a bogus round trip)."""
    return time.monotonic_ns() // 1000


class EdgeLink:
    """Reliable, authenticated uplink of window embeddings; downlink of Feedback.

    ``submit(item)`` accepts an ``edge.records.WindowResult``, a ``pb.WindowEmbedding`` (its
    seq is overwritten), a ``pb.BeatGrid``, or a list of these (sent as one message: the
    dancers of one hop). It returns the first sequence number given, or None when the
    in-memory queue is full (only if the disk stalls; counted as ``submit_dropped``).
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, encoder_hash: str, embedding_dim: int,
                 node_id: str | None = None, session_id: str = "", dtype: str = "int8",
                 encoder_model_id: str = "", spool_path: str | os.PathLike | None = None,
                 spool_max_bytes: int = 64 * 2**20, spool_max_batches: int = 500_000,
                 spool_on_full: str = "drop_oldest", fsync: str = "interval", fsync_interval: float = 0.2,
                 client_key: str | os.PathLike | None = None, server_key: str | os.PathLike | bytes | None = None,
                 insecure_dev: bool = False, heartbeat_s: float = 1.0, heartbeat_misses: int = 3,
                 reconnect_min_s: float = 0.1, reconnect_max_s: float = 5.0, ack_timeout_s: float = 2.0,
                 rejected_retry_s: float = 30.0,
                 max_inflight: int = 256, sndhwm: int = 1000, submit_queue: int = 10_000,
                 feedback_queue: int = 1000, on_feedback: Callable[[pb.Feedback], Any] | None = None,
                 capabilities: Iterable[str] = ("feedback", "beats", "int8", "fp16"),
                 limits: codec.Limits = codec.LIMITS):
        if not encoder_hash:
            raise LinkError("EdgeLink needs the encoder hash of the motion encoder in use")
        self.endpoint = endpoint
        self.node_id = node_id or _socket.gethostname()
        self.session_id = session_id
        self.encoder_hash, self.encoder_model_id = encoder_hash, encoder_model_id
        self.embedding_dim = int(embedding_dim)
        self.dtype = codec.dtype_code(dtype)
        self.capabilities = tuple(capabilities)
        self.limits = limits
        self.heartbeat_s, self.heartbeat_misses = float(heartbeat_s), int(heartbeat_misses)
        self.reconnect_min_s, self.reconnect_max_s = float(reconnect_min_s), float(reconnect_max_s)
        self.ack_timeout_s, self.max_inflight, self.sndhwm = float(ack_timeout_s), int(max_inflight), int(sndhwm)
        self.rejected_retry_s = float(rejected_retry_s)   # a refused edge asks again this often
        self.on_feedback = on_feedback

        self._curve = self._load_keys(client_key, server_key, insecure_dev)
        path = Path(spool_path) if spool_path else state_dir() / "spool" / f"{self.node_id}.sqlite"
        self.spool = Spool(path, max_bytes=spool_max_bytes, max_batches=spool_max_batches,
                           on_full=spool_on_full, fsync=fsync, fsync_interval=fsync_interval)
        self.epoch = self.spool.epoch

        # submit side (any thread); queued rows are encoded (first_seq, last_seq, n_items, payload)
        self._submit_lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._queue_max = int(submit_queue)
        self._seq_next = self.spool.next_seq
        self._last_stored = self._seq_next - 1   # the newest seq the spool took (refused ones never get acked)
        self._draining = False                  # rows taken off the queue, not yet known stored or refused
        self._hello_acked = False      # until the first Hello-Ack, which may show the spool rolled back
        self._verify_pending = False   # that Ack's confirmation is not yet in the spool (a full disk)
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False

        # feedback side
        self._fb_cond = threading.Condition()
        self._feedback: collections.deque = collections.deque(maxlen=int(feedback_queue))

        # I/O thread state
        self._state_cond = threading.Condition()
        self.state = "idle"            # idle | connecting | hello_sent | ready | rejected | closed
        self._fatal: LinkError | None = None
        self._acked = 0                # cumulative seq acked by the cloud
        self._sent_upto = 0            # highest last_seq sent on this connection
        self._inflight: collections.deque = collections.deque()  # last_seq of sent, unacked batches
        self._stopping = False
        self._flush_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._counters = collections.Counter()
        self.last_error: str = ""
        self.rtt_ms: float | None = None
        self._backoff = self.reconnect_min_s

    # ------------------------------------------------------------------ public API
    def start(self) -> "EdgeLink":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"edge-link-{self.node_id}", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> "EdgeLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, item: Any, session_id: str | None = None) -> int | None:
        """Queue windows / beat grids for delivery; never blocks. Returns the first seq, or None if dropped.

        Each batch is encoded and checked here, as the cloud will check it: one the cloud would refuse
        is counted (``submit_invalid``, ``last_error``) and takes no sequence number."""
        items = list(item) if isinstance(item, (list, tuple)) else [item]
        if not items:
            return None
        if self._stopping:
            raise LinkError("link is closed")
        session = self.session_id if session_id is None else session_id
        chunks = self._chunks(items)
        first_seq = None
        with self._submit_lock:
            if self._stopping:          # again under the lock: close() may have begun meanwhile
                raise LinkError("link is closed")
            if len(self._queue) + len(chunks) > self._queue_max:
                self._counters["submit_dropped"] += len(items)
                return None
            for chunk in chunks:
                try:
                    row = self._encode_batch(self._seq_next, chunk, session)
                except Exception as exc:  # bad input from the caller: count it, keep going
                    self._counters["submit_invalid"] += len(chunk)
                    self.last_error = f"could not encode a submitted batch: {exc}"
                    log.error("link: refused a submitted batch of %d item(s): %s", len(chunk), exc)
                    continue
                self._seq_next = row[1] + 1
                self._queue.append(row)
                self._counters["submitted"] += len(chunk)
                if first_seq is None:
                    first_seq = row[0]
            if not self._wake_pending:  # under the lock: close() closes the fd under it too
                self._wake_pending = True
                os.eventfd_write(self._wake_fd, 1)
        return first_seq

    def _chunks(self, items: list) -> list[list]:
        """Split into batches within the wire's per-batch limits on windows and on beat grids."""
        chunks: list[list] = []
        n_win = n_grid = 0
        for item in items:
            grid = isinstance(item, pb.BeatGrid)
            if not chunks or (n_grid if grid else n_win) >= (self.limits.max_beat_grids_per_batch if grid
                                                               else self.limits.max_windows_per_batch):
                chunks.append([])
                n_win = n_grid = 0
            chunks[-1].append(item)
            n_grid += grid
            n_win += not grid
        return chunks

    def feedback(self, timeout: float | None = 0.0) -> pb.Feedback | None:
        """The oldest unread Feedback, waiting up to `timeout` s (None: forever)."""
        with self._fb_cond:
            if not self._feedback and timeout != 0.0:
                self._fb_cond.wait_for(lambda: bool(self._feedback), timeout)
            return self._feedback.popleft() if self._feedback else None

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until the cloud accepted our Hello. Raises the cloud's refusal (e.g. EncoderMismatchError)."""
        with self._state_cond:
            self._state_cond.wait_for(lambda: self.state == "ready" or self._fatal is not None, timeout)
            if self._fatal is not None:
                raise self._fatal
            return self.state == "ready"

    def wait_acked(self, timeout: float = 10.0) -> bool:
        """Wait until every item submitted so far that the spool took is acked by the cloud (items the
        spool refused, its disk full or `drop_newest`, never will be: waiting for them never ended)."""
        with self._submit_lock:
            target = self._seq_next - 1

        def done() -> bool:
            need = self._ack_target(target)
            return need is not None and self._acked >= need

        with self._state_cond:
            self._state_cond.wait_for(lambda: done() or self._fatal is not None, timeout)
            return done()

    def _ack_target(self, target: int) -> int | None:
        """The ack that covers every seq <= target the spool took; None while some are not spooled yet."""
        with self._submit_lock:
            if self._draining or (self._queue and self._queue[0][0] <= target):
                return None
            return min(target, self._last_stored)

    @property
    def acked_seq(self) -> int:
        return self._acked

    @property
    def error(self) -> LinkError | None:
        return self._fatal

    def stats(self) -> dict:
        with self._submit_lock:
            queued = len(self._queue)
            next_seq = self._seq_next
        return {"node_id": self.node_id, "state": self.state, "endpoint": self.endpoint, "epoch": self.epoch,
                "next_seq": next_seq, "acked_seq": self._acked, "queued": queued,
                "inflight": len(self._inflight), "rtt_ms": self.rtt_ms, "last_error": self.last_error,
                "spool": self.spool.stats(), **dict(self._counters)}

    def close(self, flush_timeout: float = 5.0) -> None:
        """Write everything submitted to the spool, wait up to `flush_timeout` s for acks, stop.
        Whatever is not acked stays in the spool and is sent by the next EdgeLink on that spool."""
        if self._thread is None:
            if not self._stopping:
                with self._submit_lock:
                    self._stopping = True
                self._drain_submits()
                self.spool.close()
                with self._submit_lock:
                    os.close(self._wake_fd)
            return
        self._flush_deadline = time.monotonic() + max(0.0, flush_timeout)
        with self._submit_lock:         # a submit past this point raises; one before it is drained
            self._stopping = True
            os.eventfd_write(self._wake_fd, 1)
        self._thread.join()
        self._thread = None
        with self._submit_lock:
            os.close(self._wake_fd)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _load_keys(client_key, server_key, insecure_dev: bool):
        """CURVE keys: paths or names in the keys folder; None = the defaults ``edge`` and ``cloud`` there."""
        from proto import keys

        if insecure_dev:            # the flag wins over configured keys, as on the cloud's side
            named = [str(k) for k in (client_key, server_key) if k is not None and not isinstance(k, bytes)]
            log.warning("edge link in PLAINTEXT development mode: no encryption, no authentication%s",
                        f" (keys ignored: {', '.join(named)})" if named else "")
            return None
        try:
            secret_file = keys.resolve(client_key or DEFAULT_CLIENT_KEY, secret=True)
            server_file = None if isinstance(server_key, bytes) else keys.resolve(server_key or DEFAULT_SERVER_KEY)
        except keys.KeysError as exc:
            raise LinkError(f"the link needs CURVE keys: {exc}. Make this node's with `dancewire keys generate "
                            f"{DEFAULT_CLIENT_KEY}` and copy the cloud's public cloud.key into the keys folder "
                            f"(plaintext only with the development flag --insecure-dev)") from None
        public, secret = keys.load_keypair(secret_file)
        server = server_key if isinstance(server_key, bytes) else keys.load_public(server_file)
        return public, secret, server

    def _open_socket(self) -> None:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = self.sndhwm
        sock.rcvhwm = self.sndhwm
        sock.immediate = 1
        sock.maxmsgsize = codec.socket_max_bytes(self.limits)
        sock.reconnect_ivl = int(self.reconnect_min_s * 1000)
        sock.reconnect_ivl_max = int(self.reconnect_max_s * 1000)
        # no ZMTP heartbeats: the link's own Heartbeat/echo (sent only when idle) watches the peer
        if self._curve is not None:
            public, secret, server = self._curve
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
        self._monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        sock.connect(self.endpoint)
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._poller.register(self._wake_fd, zmq.POLLIN)
        now = time.monotonic()
        self._set_state("connecting")
        self._hello_due = now
        self._last_recv = now
        self._last_send = self._last_hb = now
        self.rtt_ms = None              # measured afresh on this connection
        self._reset_flow()
        self._counters["connects"] += 1

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            if self._monitor is not None:
                self._monitor.close(linger=0)
            self._sock.close(linger=0)
        self._sock = self._monitor = None
        self._poller = zmq.Poller()
        self._poller.register(self._wake_fd, zmq.POLLIN)

    def _reset_flow(self) -> None:
        self._sent_upto = self._acked
        self._inflight.clear()
        self._last_ack_progress = time.monotonic()

    def _set_state(self, state: str) -> None:
        with self._state_cond:
            if state != self.state:
                log.debug("link %s: %s -> %s", self.node_id, self.state, state)
            self.state = state
            self._state_cond.notify_all()

    # ------------------------------------------------------------------ I/O thread
    def _run(self) -> None:
        self._ctx = zmq.Context()
        self._poller = zmq.Poller()
        self._next_connect = time.monotonic()
        try:
            while not self._step():
                pass
        finally:
            try:
                self._drain_submits()
            except Exception as exc:    # the spool refuses even now: say what is lost, close all the same
                with self._submit_lock:
                    lost = sum(r[2] for r in self._queue)
                    self._queue.clear()
                self._counters["lost_at_close"] += lost
                log.error("link %s: %d submitted item(s) could not be spooled at close (%s): lost",
                          self.node_id, lost, exc)
            self._close_socket()
            self.spool.close()
            self._ctx.term()
            self._set_state("closed")

    def _step(self) -> bool:
        """One turn of the I/O loop; True when the link is done. An unexpected error costs the
        connection (a new one after the backoff), never the thread: what is spooled stays."""
        try:
            now = time.monotonic()
            if self._sock is None and now >= self._next_connect and not (self._stopping and self._flushed()):
                self._open_socket()
            events = dict(self._poller.poll(self._poll_timeout_ms()))
            if self._wake_fd in events:
                try:
                    os.eventfd_read(self._wake_fd)
                except BlockingIOError:
                    pass
            self._drain_submits()
            if self._sock is not None and self._sock in events:
                self._recv_all()
            if self._monitor is not None and self._monitor in events:
                self._monitor_events()
            if self._sock is not None:
                self._timers()
                self._pump()
        except Exception as exc:
            self._counters["io_errors"] += 1
            self.last_error = f"I/O error: {exc.__class__.__name__}: {exc}"
            if self._counters["io_errors"] in (1, 10, 100) or self._counters["io_errors"] % 1000 == 0:
                log.exception("link %s: I/O error (%d so far); reconnecting in %.1f s", self.node_id,
                              self._counters["io_errors"], self._backoff)
            self._reconnect_later()
        return self._stopping and (self._flushed() or time.monotonic() >= self._flush_deadline)

    def _flushed(self) -> bool:
        with self._submit_lock:
            target = self._seq_next - 1
        need = self._ack_target(target)
        return self._fatal is not None or (need is not None and self._acked >= need)

    def _poll_timeout_ms(self) -> int:
        if self._stopping:
            return 10
        if self._sock is None:
            return max(1, min(100, int((self._next_connect - time.monotonic()) * 1000) + 1))
        return 50

    def _drain_submits(self) -> None:
        with self._submit_lock:
            if not self._queue:
                self._wake_pending = False
                return
            rows = list(self._queue)
            self._queue.clear()
            self._wake_pending = False
            self._draining = True
        try:
            stored = self.spool.append(rows)
        except BaseException:
            # the append rolled back: the rows go back in front, in order, and are tried again next turn
            with self._submit_lock:
                self._queue.extendleft(reversed(rows))
                self._draining = False
            raise
        with self._submit_lock:
            self._last_stored = max([self._last_stored] + [r[1] for r, ok in zip(rows, stored) if ok])
            self._draining = False
        with self._state_cond:          # a wait for refused seqs may be over now
            self._state_cond.notify_all()
        self._counters["spooled_batches"] += sum(stored)

    def _encode_batch(self, first: int, items: list, session: str) -> tuple[int, int, int, bytes]:
        batch = pb.WindowBatch(node_id=self.node_id, session_id=session, dtype=self.dtype)
        seq = first
        for item in items:
            if isinstance(item, pb.WindowEmbedding):
                w = batch.windows.add()
                w.CopyFrom(item)
                w.seq = seq
            elif isinstance(item, pb.BeatGrid):
                g = batch.beats.add()
                g.CopyFrom(item)
                g.seq = seq
            else:
                batch.windows.append(codec.window_from_result(item, seq, self.dtype))
            seq += 1
        for w in batch.windows:
            if len(w.embedding) != self.embedding_dim * codec.ITEMSIZE[self.dtype]:
                raise ValueError(f"embedding of {len(w.embedding)} bytes, expected dim {self.embedding_dim}")
        codec.validate(batch, self.limits)   # what the cloud would refuse is refused here, not spooled
        payload = batch.SerializeToString()
        codec.frame_batch(payload, codec.MAX_SEQ, self.limits)  # over the frame limit with any floor: raises
        return first, seq - 1, len(items), payload

    def _send(self, body_frame: bytes) -> bool:
        try:
            self._sock.send(body_frame, zmq.NOBLOCK)
        except zmq.Again:
            self._counters["send_would_block"] += 1
            return False
        self._last_send = time.monotonic()
        return True

    def _send_hello(self) -> None:
        hello = codec.make_hello(self.node_id, self.encoder_hash, self.embedding_dim, self.dtype,
                                 encoder_model_id=self.encoder_model_id, epoch=self.epoch,
                                 session_id=self.session_id, capabilities=self.capabilities)
        now = time.monotonic()
        if self._send(codec.encode(hello, self.limits)):
            self._counters["hellos"] += 1
            if self.state != "rejected":
                self._set_state("hello_sent")
            self._hello_due = now + max(1.0, self.heartbeat_s)
        else:
            self._hello_due = now + 0.05

    def _timers(self) -> None:
        now = time.monotonic()
        if self.state in ("connecting", "hello_sent") and now >= self._hello_due:
            self._send_hello()
        elif self.state == "rejected" and now >= self._hello_due:
            self._send_hello()   # the cloud's gallery or allow-list may have changed; ask again, slowly
            self._hello_due = now + self.rejected_retry_s
        if self.state in ("hello_sent", "ready"):
            # on a schedule, not only when idle: liveness is judged on what comes back, and a cloud
            # that answers nothing to a stream of batches (its store down) was declared dead
            if now - self._last_hb >= self.heartbeat_s:
                if self._send(codec.encode(pb.Heartbeat(t_us=_now_us()), self.limits)):
                    self._last_hb = now
                    self._counters["heartbeats_sent"] += 1
            if now - self._last_recv > self.heartbeat_s * self.heartbeat_misses:
                self._counters["peer_timeouts"] += 1
                log.warning("link %s: no word from the cloud for %.1f s; reconnecting in %.1f s",
                            self.node_id, now - self._last_recv, self._backoff)
                self._reconnect_later()
                return
        if self.state == "ready" and self._inflight and now - self._last_ack_progress > self.ack_timeout_s:
            self._counters["ack_timeouts"] += 1
            log.info("link %s: no ack progress for %.1f s; resending from seq %d",
                     self.node_id, now - self._last_ack_progress, self._acked + 1)
            self._reset_flow()

    def _reconnect_later(self) -> None:
        self._close_socket()
        self._set_state("connecting")
        self._next_connect = time.monotonic() + self._backoff
        self._backoff = min(self.reconnect_max_s, self._backoff * 2)

    def _pump(self) -> None:
        if self.state != "ready" or self._fatal is not None:
            return
        while len(self._inflight) < self.max_inflight:
            if self._sent_upto >= self.spool.next_seq - 1:
                return
            rows = self.spool.pending(self._sent_upto, min(64, self.max_inflight - len(self._inflight)))
            if not rows:
                return
            floor = self.spool.floor()
            for first, last, payload in rows:
                try:   # never above the row's own seqs (a row dropped meanwhile raised the floor past it)
                    frame = codec.frame_batch(payload, min(floor, first), self.limits)
                except codec.WireError as exc:
                    # spooled by an older version, over today's frame limit with this floor: it can never
                    # go (raised here, it cost the connection on every try); dropped, the floor moves past it
                    self.spool.discard(first)
                    self._counters["unsendable_batches"] += 1
                    self._sent_upto = max(self._sent_upto, last)
                    log.error("link %s: spooled batch seq %d..%d cannot be sent (%s): dropped", self.node_id,
                              first, last, exc)
                    continue
                if not self._send(frame):
                    return
                if not self._inflight:
                    self._last_ack_progress = time.monotonic()
                self._inflight.append(last)
                self._sent_upto = last
                self._counters["sent_batches"] += 1

    def _recv_all(self) -> None:
        while self._sock is not None:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._last_recv = time.monotonic()
            if len(frames) != 1:
                self._counters["rx_rejected"] += 1
                continue
            try:
                kind, body = codec.decode(frames[0], self.limits)
            except codec.WireError as exc:
                self._counters["rx_rejected"] += 1
                log.warning("link: unusable frame from the cloud: %s", exc)
                continue
            self._counters["rx_" + kind] += 1
            getattr(self, "_on_" + kind, self._on_unexpected)(body)

    def _on_ack(self, ack: pb.Ack) -> None:
        if ack.epoch != self.epoch:
            self._counters["rx_foreign_ack"] += 1
            return
        if self.state in ("connecting", "hello_sent", "rejected"):
            # the Ack to a Hello: accepted (also after a refusal, once the cloud changed its mind)
            unverified = self.spool.unverified_from
            if not self._hello_acked and unverified is not None and ack.seq >= unverified:
                self._fresh_epoch(ack.seq, unverified)
                return
            self._verify_pending = unverified is not None and not self.spool.verified()
            self._hello_acked = True
            with self._state_cond:
                self._fatal = None
            self._backoff = self.reconnect_min_s
            self._apply_ack(ack.seq)
            self._reset_flow()          # resend everything the cloud does not have, in order
            self._set_state("ready")
            log.info("link %s: connected to %s, cloud has seq <= %d", self.node_id, self.endpoint, ack.seq)
            return
        self._apply_ack(ack.seq)

    def _fresh_epoch(self, cloud_seq: int, unverified: int) -> None:
        """The cloud has taken seqs this spool numbered only since it last confirmed the counter (at
        `unverified`, kept across restarts): the spool's counter fell back (a power cut before the
        WAL's fsync, a restored image or copy). The seqs given since would be taken as duplicates and
        lost, so everything spooled goes on under a fresh epoch (fsynced before its Hello)."""
        old_epoch = self.epoch
        self.spool.ack(unverified - 1)              # older rows: the cloud's cumulative ack covers them
        self.epoch = self.spool.new_epoch()
        self._counters["fresh_epochs"] += 1
        log.warning("link %s: the cloud already has seq <= %d of epoch %d, but this spool only numbered up to %d "
                    "before this start (spool rolled back or restored); resending under a fresh epoch %d",
                    self.node_id, cloud_seq, old_epoch, unverified - 1, self.epoch)
        with self._state_cond:
            self._acked = 0
        self._set_state("connecting")
        self._hello_due = time.monotonic()      # Hello with the new epoch, then send from its ack
        self._reset_flow()

    def _apply_ack(self, seq: int) -> None:
        if self._verify_pending:        # the confirmation a full disk refused: again with each ack
            self._verify_pending = not self.spool.verified()
        if seq > self._acked:
            self.spool.ack(seq)
            self._last_ack_progress = time.monotonic()
            while self._inflight and self._inflight[0] <= seq:
                self._inflight.popleft()
            if self._sent_upto < seq:
                self._sent_upto = seq
            with self._state_cond:
                self._acked = seq
                self._state_cond.notify_all()

    def _on_heartbeat(self, hb: pb.Heartbeat) -> None:
        if hb.echo_us:
            self.rtt_ms = (_now_us() - hb.echo_us) / 1000.0     # our own clock both ends (monotonic)

    def _on_feedback(self, fb: pb.Feedback) -> None:
        with self._fb_cond:
            self._feedback.append(fb)
            self._fb_cond.notify_all()
        if self.on_feedback is not None:
            try:
                self.on_feedback(fb)
            except Exception:
                log.exception("feedback callback failed")

    def _on_error(self, err: pb.Error) -> None:
        name = pb.Error.Code.Name(err.code) if err.code in pb.Error.Code.values() else f"code {err.code}"
        self.last_error = f"{name}: {err.message}"
        if err.code == pb.Error.HELLO_REQUIRED:
            # the cloud restarted or lost us: introduce ourselves again, then resend from the ack
            if self.state == "ready":
                log.info("link %s: cloud asks for Hello again (restarted?)", self.node_id)
                self._set_state("connecting")
                self._hello_due = time.monotonic()
                self._reset_flow()
            return
        if err.fatal:
            cls = {pb.Error.ENCODER_MISMATCH: EncoderMismatchError,
                   pb.Error.UNAUTHORIZED: AuthRejectedError}.get(err.code, LinkError)
            msg = f"cloud refused this edge ({name}): {err.message}"
            if err.code == pb.Error.UNAUTHORIZED:
                msg += " (dancewire keys allow FILE on the cloud lets it in again)"
            if err.code == pb.Error.ENCODER_MISMATCH:
                msg = (f"encoder mismatch: this edge runs encoder {self.encoder_hash!r} but the cloud's gallery "
                       f"expects {err.expected!r}. Export/use the cloud's encoder on the edge or re-enrol the "
                       f"gallery with this one. ({err.message})")
            log.error("link %s: %s", self.node_id, msg)
            with self._state_cond:
                self._fatal = cls(msg)
            self._set_state("rejected")
            self._hello_due = time.monotonic() + self.rejected_retry_s
            return
        log.warning("link %s: cloud reported %s", self.node_id, self.last_error)

    def _on_unexpected(self, body: Any) -> None:
        self._counters["rx_unexpected"] += 1

    _on_hello = _on_batch = _on_unexpected

    def _monitor_events(self) -> None:
        while self._monitor is not None:
            try:
                evt = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            event = evt["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._counters["handshakes"] += 1
                with self._state_cond:
                    if isinstance(self._fatal, AuthRejectedError):  # the key was allowed meanwhile
                        self._fatal = None
                if self.state != "rejected":
                    # a (re)connection: the cloud may be a new process; introduce ourselves, then resend
                    self._set_state("connecting")
                    self._hello_due = time.monotonic()
                    self._reset_flow()
                self._last_recv = time.monotonic()
            elif event == zmq.EVENT_DISCONNECTED:
                self._counters["disconnects"] += 1
                if self.state != "rejected":
                    self._set_state("connecting")
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    key = "auth_failures"
                    self.last_error = ("CURVE handshake refused by the cloud: this node's key is not on its "
                                       "allow-list (dancewire keys allow FILE on the cloud)")
                else:
                    key = "handshake_failures"
                    self.last_error = ("handshake with the cloud failed: wrong server key, security mode "
                                       "(CURVE vs --insecure-dev) or not a dancewire cloud at " + self.endpoint)
                self._counters[key] += 1
                if self._counters[key] in (1, 10, 100) or self._counters[key] % 1000 == 0:
                    log.error("link %s: %s", self.node_id, self.last_error)
                with self._state_cond:
                    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and self._fatal is None:
                        self._fatal = AuthRejectedError(self.last_error)
                    self._state_cond.notify_all()
                # libzmq does not retry after a refused handshake: a new socket, after the backoff
                # (the key may be allowed later; the allow-list is reloadable)
                self._reconnect_later()
                return
