"""The cloud process: ingest -> classify -> aggregate -> (live push) -> store -> feedback, plus the API.

``CloudService.process(windows, beats)`` is the whole per-batch path on cloud records; the
ZeroMQ ingest (``cloud.ingest``, the link's) calls ``on_hello``/``on_windows`` with wire
messages, which ``cloud.wire`` converts. Results are pushed to live dashboards as soon as
they are aggregated, then written to the store in one transaction with the aggregator's
state; the returned feedback (and the ingest's ack) follows the commit, so an acked window
is never lost. While the store cannot write, batches are held in memory and answered, and
the wire handler raises ``RetryLater``: the ingest sends the feedback but acks nothing, so the
edges keep those windows in their spools until a batch is stored again (a cloud restart in
between loses nothing; the resent windows are processed afresh).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from cloud.aggregate import Aggregator
from cloud.classify import Classifier
from cloud.gallery import Gallery
from cloud.index import single_thread_blas
from cloud.live import LatencyStats, LiveHub
from cloud.records import BeatGridIn, FeedbackOut, WindowIn, WindowResult
from cloud.settings import CloudSettings
from cloud.store import Store, StoreUnavailable
from dancewire.errors import BadInputError, RetryLater

log = logging.getLogger(__name__)


class CloudService:
    def __init__(self, settings: CloudSettings | None = None, *, store: Store | None = None,
                 gallery: Gallery | None = None, index_kind: str = "auto"):
        self.settings = s = settings or CloudSettings()
        single_thread_blas()
        self.store = store or Store(s.db_url)
        self.index_kind = index_kind
        self.gallery = gallery if gallery is not None else Gallery.load_or_empty(s.gallery_path)
        self.classifier = self._make_classifier(self.gallery)
        self.aggregator = Aggregator(self.gallery, s.aggregate)
        self.hub = LiveHub()
        self.latency = LatencyStats()
        self.lock = threading.RLock()
        self.node_info: dict[str, dict] = {}
        self.counters = {"windows": 0, "batches": 0, "duplicates": 0, "late": 0, "beat_grids": 0,
                         "unclassified": 0, "feedback": 0, "errors": 0, "store_failures": 0,
                         "store_dropped_batches": 0, "store_rejected_batches": 0, "dashboard_bad_acks": 0,
                         "prune_failures": 0}
        self._unwritten: deque = deque()        # (args, kwargs) of write_batch calls the store refused
        self._store_error_logged = -1e9         # monotonic time of the last "store cannot write" line
        self.started = time.time()
        self._latency_pending: list[tuple[float, str, float]] = []   # kept in the store with the next batch
        self._latency_lock = threading.Lock()
        self._restore()
        self._last_prune = 0.0

    def _make_classifier(self, gallery: Gallery) -> Classifier:
        cache = Path(self.settings.gallery_path).with_suffix(".hnsw") if len(gallery) > self.settings.classify.exact_max \
            else None
        return Classifier(gallery, self.settings.classify, index_kind=self.index_kind, index_cache=cache)

    def _restore(self) -> None:
        dancers, sessions = self.store.load_states()
        for st in sessions:
            self.aggregator.restore_session(st)
        for st in dancers:
            self.aggregator.restore_dancer(st)
        for n in self.store.nodes():
            self.node_info[n["node_id"]] = n["info"]
        if dancers or sessions:
            log.info("restored %d dancers, %d sessions from the store", len(dancers), len(sessions))

    def reload_gallery(self, gallery: Gallery | None = None) -> None:
        """Swap in the gallery file (or `gallery`). One that names no encoder, where the current one
        does, is refused: the ingest takes only embeddings of the gallery's encoder, so it would
        turn every edge away. A gallery made by another encoder is taken, and the edges that
        still run the old one are refused at their next batch (their spools keep the windows)."""
        g = gallery if gallery is not None else Gallery.load_or_empty(self.settings.gallery_path)
        if self.gallery.encoder.get("hash") and not g.encoder.get("hash"):
            raise BadInputError(f"the gallery {self.settings.gallery_path} names no encoder (empty or not made by "
                                f"`dancewire cloud enroll`); keeping the current one")
        old = self.gallery.encoder.get("hash")
        c = self._make_classifier(g)
        with self.lock:
            self.gallery, self.classifier = g, c
            self.aggregator.set_gallery(g)
        self.hub.publish({"type": "styles", "styles": list(g.styles)})   # open dashboards redraw their bars
        if old and g.encoder.get("hash") != old:
            log.warning("gallery reloaded with encoder %s (was %s): edges running the old encoder are refused",
                        g.encoder.get("hash"), old)

    # ----- the per-batch path ------------------------------------------------------------------
    def process(self, windows: list[WindowIn], beats: list[BeatGridIn] = ()) -> list[FeedbackOut]:
        with self.lock:
            t_recv = time.perf_counter()
            for w in windows:
                w.stamps.setdefault("received", t_recv)
            for b in beats:
                self.aggregator.add_beats(b)
            self.counters["beat_grids"] += len(beats)
            classes = [None] * len(windows)
            if windows and self.classifier.ready:
                emb = np.stack([np.asarray(w.embedding, np.float32) for w in windows])
                if emb.shape[1] == self.gallery.dim:
                    classes = self.classifier.classify(emb)
                else:
                    log.warning("embedding dim %d != gallery dim %d: windows stored unclassified",
                                emb.shape[1], self.gallery.dim)
            t_cls = time.perf_counter()
            results: list[WindowResult | None] = []
            for w, c in zip(windows, classes):
                w.stamps["classified"] = t_cls
                r = self.aggregator.update(w, c)
                results.append(r)
                if r is None:
                    self.counters["duplicates"] += 1
                    continue
                self.counters["windows"] += 1
                self.counters["late"] += int(r.late)
                self.counters["unclassified"] += int(c is None)
            t_agg = time.perf_counter()
            self._publish(results, beats)
            t_pub = time.perf_counter()
            dancer_states, session_states = self.aggregator.take_dirty()
            fresh = [w for w, r in zip(windows, results) if r is not None]
            with self._latency_lock:
                pending, self._latency_pending = self._latency_pending, []
            pending += [(w.arrival, "publish", 1000 * (t_pub - w.stamps["received"])) for w in fresh]
            self._write(fresh, results, dancer_states, session_states, beats,
                        store_embeddings=self.settings.store_embeddings, latency=pending)
            t_store = time.perf_counter()
            feedback = self.aggregator.feedback(results)
            self.counters["batches"] += 1
            self.counters["feedback"] += len(feedback)
            t_done = time.perf_counter()
        for w, r in zip(windows, results):
            if r is None:
                continue
            t0 = w.stamps["received"]
            self.latency.add("classify", 1000 * (t_cls - t0) / max(len(windows), 1))
            self.latency.add("aggregate", 1000 * (t_agg - t_cls) / max(len(windows), 1))
            self.latency.add("publish", 1000 * (t_pub - t0))
            self.latency.add("store", 1000 * (t_store - t0))
            self.latency.add("total", 1000 * (t_done - t0))
        self._maybe_prune()
        return feedback

    def _publish(self, results: list[WindowResult | None], beats: list[BeatGridIn]) -> None:
        if not self.hub.clients:
            return
        for b in beats:
            self.hub.publish({"type": "beats", "node": b.node_id, "session": b.session_id, "t0": b.t0, "t1": b.t1,
                              "epoch": b.epoch, "seq": b.seq, "bpm": b.bpm, "beats": [[round(t, 3), c] for t, c in zip(b.beats, b.counts)]})
        seen = set()
        for r in results:
            if r is None:
                continue
            msg = r.to_json()
            msg["sent"] = time.time()
            self.hub.publish(msg)
            seen.add(r.window.dancer)
        for key in seen:
            summary = self.aggregator.dancer_summary(key)
            if summary:
                self.hub.publish({"type": "dancer", **summary})
        for sid in {r.window.session_id for r in results if r is not None}:
            self.hub.publish({"type": "group", **self.aggregator.group_summary(sid)})

    MAX_UNWRITTEN = 10_000   # batches held in memory while the store cannot write

    def _write(self, windows: list, results: list, dancer_states: list = (), session_states: list = (),
               beats: list = (), **kwargs) -> None:
        """Store a batch, after any the store could not take before (oldest first). While the store
        is unavailable (disk full, database down) batches wait here, bounded: the windows are
        classified and answered all the same, and one error line (every 10 s) says why. A batch
        with nothing new (windows the edges send again while they wait for an ack) is not held."""
        if windows or dancer_states or session_states or beats or kwargs.get("latency"):
            self._unwritten.append(((windows, results, dancer_states, session_states, beats), kwargs))
        recovering = len(self._unwritten) > 1
        while self._unwritten:
            a, k = self._unwritten[0]
            try:
                self.store.write_batch(*a, **k)
            except StoreUnavailable as exc:
                self.counters["store_failures"] += 1
                if len(self._unwritten) > self.MAX_UNWRITTEN:
                    (dropped, *_), _ = self._unwritten.popleft()
                    # never acked, so its edges send it again: taken afresh then, not as a duplicate
                    self.aggregator.forget_seen(dropped)
                    self.counters["store_dropped_batches"] += 1
                now = time.monotonic()
                if now - self._store_error_logged > 10.0:
                    self._store_error_logged = now
                    log.error("%s; %d batch(es) held in memory, retried with the next one (%d dropped so far)",
                              exc, len(self._unwritten), self.counters["store_dropped_batches"])
                return
            except Exception:
                # this batch itself cannot be stored (a value the database refuses): drop it, so it
                # does not hold up every batch after it, and say so
                self.counters["store_rejected_batches"] += 1
                log.exception("cloud store refused a batch (dropped; %d so far); the next ones are written",
                              self.counters["store_rejected_batches"])
            self._unwritten.popleft()
        if recovering:
            log.info("cloud store writes again; every held batch is stored")

    def _maybe_prune(self) -> None:
        """Retention, hourly. A failure is logged and tried again in a minute; it never reaches the
        batch that happened to be due (that batch is stored and its ack must stand or fall on that)."""
        days = self.settings.retention_days
        if days > 0 and time.time() - self._last_prune > 3600:
            self._last_prune = now = time.time()
            try:
                counts = self.store.prune(days, now=now)
            except Exception as exc:
                self.counters["prune_failures"] += 1
                self._last_prune = time.time() - 3600 + 60
                log.error("retention: pruning failed (%s); tried again in a minute", exc)
                return
            with self.lock:         # what the store no longer holds goes from memory too
                dancers, sessions = self.aggregator.forget_before(now - days * 86400.0)
            if any(counts.values()) or dancers or sessions:
                log.info("retention: pruned %s; forgot %d dancers and %d sessions held in memory",
                         counts, dancers, sessions)

    def dashboard_ack(self, arrival: float, shown: float, received_at: float | None = None) -> None:
        """A dashboard drew the window that arrived at `arrival` (wall seconds) at `shown` (its clock).
        Values that are not finite numbers are ignored (a browser's message is untrusted input)."""
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (arrival, shown)):
            self.counters["dashboard_bad_acks"] += 1
            return
        ms = 1000 * (shown - arrival)
        self.latency.add("dashboard", ms)
        self.latency.add("dashboard_rtt", 1000 * ((received_at or time.time()) - arrival))
        with self._latency_lock:
            self._latency_pending.append((arrival, "dashboard", ms))

    def set_routine(self, session_id: str, routine: str) -> bool:
        """Compare a session's dancers with `routine` from now on, kept across a restart (the session's
        saved state carries it). False for a session the cloud has never seen."""
        with self.lock:
            if session_id not in self.aggregator.sessions and self.store.session(session_id) is None:
                return False
            self.aggregator.session(session_id).routine = routine
            self._write([], [], session_states=[self.aggregator.session_state(session_id)])
        return True

    # ----- the wire (link's ingest handler) ------------------------------------------------------
    def on_hello(self, node_id: str, hello) -> None:
        from cloud.wire import hello_info
        info = hello_info(hello)
        with self.lock:
            self.node_info[node_id] = info
            self.store.write_batch([], [], node_info={node_id: info})

    def on_windows(self, node_id: str, session: str, batch, epoch: int):
        """The ingest's handler: a batch of new windows and grids from `node_id`'s connection in spool
        `epoch`. Raises RetryLater while the store holds batches unwritten (whatever else fails)."""
        from cloud.wire import feedback_to_pb, signed64, windows_from_pb
        windows, beats = windows_from_pb(node_id, session, batch, epoch=signed64(epoch))
        feedback = []
        try:
            feedback = [feedback_to_pb(f) for f in self.process(windows, beats)]
        finally:
            with self.lock:
                held = len(self._unwritten)
            if held:   # answered, not durable: the ingest must not ack it (the edges resend)
                raise RetryLater(f"the cloud store cannot write now ({held} batch(es) held in memory)", feedback)
        return feedback

    def encoder_hashes(self) -> set[str]:
        h = self.gallery.encoder.get("hash")
        return {h} if h else set()

    # ----- reporting ---------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """Prometheus text exposition (version 0.0.4)."""
        lines = []

        def metric(name, kind, help_, samples):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
                lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

        c = self.counters
        metric("dancewire_cloud_windows_total", "counter", "Windows classified and stored.", [({}, c["windows"])])
        metric("dancewire_cloud_batches_total", "counter", "Window batches processed.", [({}, c["batches"])])
        metric("dancewire_cloud_duplicate_windows_total", "counter", "Windows ignored as duplicates.",
               [({}, c["duplicates"])])
        metric("dancewire_cloud_late_windows_total", "counter", "Windows that arrived behind the smoothing horizon.",
               [({}, c["late"])])
        metric("dancewire_cloud_unclassified_windows_total", "counter", "Windows stored without a classification.",
               [({}, c["unclassified"])])
        metric("dancewire_cloud_beat_grids_total", "counter", "Beat grids received.", [({}, c["beat_grids"])])
        metric("dancewire_cloud_store_failures_total", "counter", "Store writes refused (disk full, database down).",
               [({}, c["store_failures"])])
        metric("dancewire_cloud_store_rejected_batches_total", "counter",
               "Batches the database refused as values (dropped, logged).", [({}, c["store_rejected_batches"])])
        metric("dancewire_cloud_store_held_batches", "gauge", "Batches held in memory until the store writes again.",
               [({}, len(self._unwritten))])
        metric("dancewire_cloud_gallery_references", "gauge", "References in the gallery.", [({}, len(self.gallery))])
        metric("dancewire_cloud_live_clients", "gauge", "Connected live dashboards.", [({}, self.hub.clients)])
        metric("dancewire_cloud_live_messages_total", "counter", "Messages pushed to live dashboards.",
               [({}, self.hub.published)])
        metric("dancewire_cloud_live_dropped_total", "counter", "Live messages dropped for slow dashboards.",
               [({}, self.hub.dropped)])
        now = time.time()
        with self.lock:                     # the ingest thread adds dancers meanwhile
            active = sum(1 for d in self.aggregator.dancers.values()
                         if now - d.last_arrival <= self.settings.aggregate.dancer_timeout_s)
        metric("dancewire_cloud_active_dancers", "gauge", "Dancers with a window in the last timeout.", [({}, active)])
        metric("dancewire_cloud_nodes", "gauge", "Nodes known to the cloud.", [({}, len(self.node_info))])
        summ = self.latency.summary()
        samples = []
        for stage, st in sorted(summ.items()):
            for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
                samples.append(({"stage": stage, "quantile": q}, st[key] / 1000.0))
        metric("dancewire_cloud_latency_seconds", "summary", "Cloud stage latency per window (see /api/latency).",
               samples)
        lines.extend(f'dancewire_cloud_latency_seconds_count{{stage="{k}"}} {v["count"]}' for k, v in sorted(summ.items()))
        lines.extend(f'dancewire_cloud_latency_seconds_sum{{stage="{k}"}} {v["sum_ms"] / 1000.0}'
                     for k, v in sorted(summ.items()))
        metric("dancewire_cloud_uptime_seconds", "gauge", "Seconds since the service started.",
               [({}, round(now - self.started, 3))])
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.store.close()
