"""`dancewire edge run`: the edge graph live on the rig.

Threads and flows (each queue bounded and leaky, so latency never builds up):

    video thread  (camera | paced file | demo dancers) ──LeakyQueue──> main loop: EdgeGraph.on_frame
    audio thread  (mic | paced file audio | demo music) ──> AudioAnalyzer ──events──┘   │
                                                             windows ──> EdgeLink (I/O thread) ──> cloud
                                                             live poses ──> FeedbackSink (overlay)
    cloud Feedback ──> EdgeLink I/O thread ──> overlay state (style, similarity)

Latency: every frame is stamped at capture (for a paced file, when it is released at real time:
glass time), after each stage, and when its overlay is drawn ("feedback"). A window's cloud
round trip is measured from the capture of the window's last frame to the Feedback for it.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np

from dancewire.errors import BadInputError, DeviceError
from edge.latency import KEEP, WINDOW_STAGES, LatencyRecorder
from edge.pipeline import EdgeGraph
from edge.queues import Closed, LeakyQueue
from edge.records import Beat, PoseFrame, stamp
from edge.settings import EdgeSettings
from edge.sources.clock import RigClock
from proto import codec

log = logging.getLogger(__name__)


class _Producer(threading.Thread):
    """Runs `fn(stop_event)` on a daemon thread; remembers the exception that ended it."""

    def __init__(self, name: str, fn):
        super().__init__(name=name, daemon=True)
        self.fn, self.error = fn, None
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            self.fn(self.stop_event)
        except Exception as exc:  # reported by the main loop
            self.error = exc
            log.debug("%s stopped", self.name, exc_info=True)


def overlay_info(d) -> dict:
    """What the rig draws for one pb.DancerFeedback: the stable label with its own probability, or,
    before there is one, the likeliest style; the nearest reference's similarity."""
    near = d.nearest[0].score if d.nearest else None
    if d.style:
        return {"style": d.style, "prob": d.confidence, "similarity": near}
    best = max(d.styles, key=lambda s: s.p, default=None)
    return {"style": best.label if best else "", "prob": best.p if best else None, "similarity": near}


class LiveRunner:
    def __init__(self, settings: EdgeSettings, graph: EdgeGraph, *, link=None, sink=None,
                 clock: RigClock | None = None, session: str = ""):
        self.settings, self.graph, self.link, self.sink = settings, graph, link, sink
        self.clock = clock or RigClock()
        self.session = session
        self.frames: LeakyQueue = LeakyQueue(settings.source.frame_queue, "frames")
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.latency = LatencyRecorder()
        self.cloud_latency: deque[float] = deque(maxlen=KEEP)   # ms, the newest ones
        self._cloud_n = 0
        self._window_capture: dict[tuple[int, int], float] = {}   # (track, seq) -> capture stamp
        self._lock = threading.Lock()
        self.counters = {"frames_in": 0, "frames_done": 0, "windows_sent": 0, "feedback": 0, "beats": 0}
        self.producers: list[_Producer] = []
        self.source_counters: dict[str, Callable[[], dict]] = {}   # what each source dropped, in `stats()`
        self.canvas: np.ndarray | None = None
        self.end_of_stream = threading.Event()
        self.timeline: deque[tuple[float, float]] = deque(maxlen=200_000)   # (rig time s, glass-to-feedback ms)
        self._grid_beats: list[Beat] = []
        self._grid_onsets: list[float] = []
        self._grid_t0: float | None = None

    BEAT_GRID_S = 2.0   # a beat-grid summary goes to the cloud this often (media time)

    # ---------------------------------------------------------------- producers
    def add_video(self, frames_iter_factory, paced: bool) -> None:
        def produce(stop: threading.Event) -> None:
            for frame in frames_iter_factory():
                if stop.is_set():
                    return
                if paced:
                    self.clock.sleep_until(frame.t)
                    stamp(frame.stamps, "capture")     # glass time: the moment it is 'seen'
                self.counters["frames_in"] += 1
                self.frames.put(frame)
            self.end_of_stream.set()
        self.producers.append(_Producer("video", produce))

    def add_demo_dancers(self, dancers) -> None:
        self.canvas = dancers.canvas()

        def produce(stop: threading.Event) -> None:
            while not stop.is_set():
                pf = dancers.next_frame()
                self.clock.sleep_until(pf.t)
                stamp(pf.stamps, "capture")
                self.counters["frames_in"] += 1
                self.frames.put(pf)
        self.producers.append(_Producer("demo-dancers", produce))

    def add_audio(self, blocks_iter_factory, paced: bool) -> None:
        def produce(stop: threading.Event) -> None:
            for block in blocks_iter_factory():
                if stop.is_set():
                    return
                if paced:   # a block exists once its last sample has been 'heard'
                    self.clock.sleep_until(block.t + len(block.samples) / block.sample_rate)
                    stamp(block.stamps, "capture")
                events = self.graph.on_audio(block)
                if events:
                    self.events.put(events)
        self.producers.append(_Producer("audio", produce))

    # ---------------------------------------------------------------- feedback from the cloud
    def on_feedback(self, fb) -> None:
        now = time.perf_counter()
        with self._lock:
            self.counters["feedback"] += 1
            for d in fb.dancers:
                cap = self._window_capture.pop((d.track_id, d.seq), None)
                if cap is not None:
                    self.cloud_latency.append((now - cap) * 1e3)
                    self._cloud_n += 1
        if self.sink is not None:
            self.sink.on_feedback({d.track_id: overlay_info(d) for d in fb.dancers})

    # ---------------------------------------------------------------- main loop
    def run(self, duration: float | None = None) -> None:
        # media time 0 = now: model loading and the cloud connection happened before it, so a paced
        # file does not start seconds "late" and flood the leaky queue with frames it then drops
        self.clock.restart()
        for p in self.producers:
            p.start()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while deadline is None or time.monotonic() < deadline:
                self._check_producers()        # a dead mic or camera ends the run with its error
                self._drain_events()
                try:
                    item = self.frames.get(timeout=0.2)
                except TimeoutError:
                    if self.end_of_stream.is_set() and not len(self.frames):
                        break
                    continue
                except Closed:
                    break
                self._step(item)
        finally:
            for p in self.producers:
                p.stop_event.set()
            self._drain_events()
            if self._grid_beats or self._grid_onsets:      # the last, partial beat grid
                self._send_beat_grid(max([b.t for b in self._grid_beats] + self._grid_onsets))
            self._send(self.graph.flush().windows)

    def _check_producers(self) -> None:
        for p in self.producers:
            if p.error is not None:
                raise p.error

    def _drain_events(self) -> None:
        while True:
            try:
                events = self.events.get_nowait()
            except queue.Empty:
                return
            self.graph.deliver_audio(events)
            for ev in events:
                if isinstance(ev, Beat):
                    self.counters["beats"] += 1
                    self._grid_beats.append(ev)
                    if self.sink is not None:
                        self.sink.on_beat(ev)
                else:
                    self._grid_onsets.append(ev.t)
                if self._grid_t0 is None:
                    self._grid_t0 = ev.t
                elif ev.t - self._grid_t0 >= self.BEAT_GRID_S:
                    self._send_beat_grid(ev.t)

    def _send_beat_grid(self, t1: float) -> None:
        """Onset/beat-grid summary of the last BEAT_GRID_S seconds, on the reliable path."""
        if self.link is not None and (self._grid_beats or self._grid_onsets):
            bpm = self._grid_beats[-1].bpm if self._grid_beats else 0.0
            self.link.submit(codec.make_beat_grid(0, self._grid_t0, t1, [(b.t, b.count) for b in self._grid_beats],
                                                  self._grid_onsets, bpm=bpm), session_id=self.session)
        self._grid_beats, self._grid_onsets, self._grid_t0 = [], [], t1

    def _step(self, item) -> None:
        if isinstance(item, PoseFrame):            # demo: keypoint-level input
            step = self.graph.on_poses(item)
            image = self.canvas
        else:
            step = self.graph.on_frame(item)
            image = item.image
        live = step.live
        self._send(step.windows)                  # the cloud's answer should not wait for drawing
        if self.sink is not None and step.windows:
            # the dancer's own on-beat share (DanceMVP beat alignment rate of the latest window)
            self.sink.on_feedback({r.window.track_id: {"on_beat": r.rhythm.get("beat_alignment")}
                                   for r in step.windows if r.rhythm.get("beat_alignment") is not None})
        stamp(live.stamps, "motion")              # windows cut, encoded, scored and sent; then the drawing
        if self.sink is not None and self.sink.active and image is not None:
            total = (time.perf_counter() - live.stamps["capture"]) * 1e3 if "capture" in live.stamps else None
            self.sink.write(image, live, total, live.t)
            if self.sink.wants_stop:
                raise KeyboardInterrupt
        stamp(live.stamps, "feedback")
        self.latency.add(live.stamps)
        if "capture" in live.stamps:
            self.timeline.append((self.clock.now(), (live.stamps["feedback"] - live.stamps["capture"]) * 1e3))
        self.counters["frames_done"] += 1

    def _send(self, windows) -> None:
        if not windows or self.link is None:
            return
        first = self.link.submit(list(windows), session_id=self.session)
        now = time.perf_counter()
        if first is None:
            return
        with self._lock:
            for i, r in enumerate(windows):
                stamp(r.stamps, "send")
                self.latency.add(r.stamps, total="window_total", only=WINDOW_STAGES)
                self._window_capture[(r.window.track_id, first + i)] = r.stamps.get("capture", now)
            if len(self._window_capture) > 10_000:     # feedback never came for the oldest
                for key in list(self._window_capture)[:5_000]:
                    del self._window_capture[key]
        self.counters["windows_sent"] += len(windows)

    def stats(self) -> dict:
        lat = self.latency.summary()
        with self._lock:
            cloud = np.asarray(self.cloud_latency)
        out = {
            "session": self.session,
            "counters": dict(self.counters),
            "dropped_frames": self.frames.dropped,
            "latency_ms": lat,
            "edge_feedback_ms": lat.get("total"),
            "cloud_feedback_ms": ({"p50": float(np.percentile(cloud, 50)), "p95": float(np.percentile(cloud, 95)),
                                   "p99": float(np.percentile(cloud, 99)), "n": self._cloud_n}
                                  if cloud.size else None),
        }
        out["sources"] = {name: counters() for name, counters in self.source_counters.items()}
        if self.link is not None:
            out["link"] = self.link.stats()
        return out


def open_link(settings: EdgeSettings, encoder, session: str, insecure_dev: bool = False, on_feedback=None):
    from edge.link.client import EdgeLink

    ls = settings.link
    return EdgeLink(ls.endpoint, encoder_hash=encoder.sha256, embedding_dim=encoder.dim,
                    node_id=ls.node_id or None, session_id=session, dtype=ls.dtype,
                    encoder_model_id=encoder.model_id, spool_max_bytes=ls.spool_max_mb * 2**20,
                    spool_on_full=ls.spool_on_full, client_key=ls.client_key, server_key=ls.server_key,
                    insecure_dev=insecure_dev or ls.insecure_dev, on_feedback=on_feedback).start()


def run_live(settings: EdgeSettings, args) -> int:
    from edge.feedback.sink import FeedbackSink
    from edge.sources.demo import DEMO_LABEL, DemoDancers, DemoMusic, DemoSettings

    session = args.session or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    if args.stats:     # checked now, not after the session; and no earlier run's stats left to be read as this one's
        stats_path = Path(args.stats)
        try:
            if stats_path.is_dir():
                raise IsADirectoryError(21, "is a directory")
            stats_path.parent.mkdir(parents=True, exist_ok=True)
            stats_path.unlink(missing_ok=True)
        except OSError as exc:
            raise BadInputError(f"--stats {stats_path}: {exc.strerror or exc}") from None
    clock = RigClock()
    demo = bool(args.demo)
    if not demo and args.source is None:
        from edge.sources.camera import camera_available
        cam = settings.source.camera
        if not camera_available(cam):
            raise DeviceError(f"no camera at {cam!r}; use --source FILE or --demo")
    graph = EdgeGraph.build(settings, video=not demo, audio=not args.no_mic)
    demo_s = DemoSettings(sample_rate=settings.audio.sample_rate)
    has_music = graph.audio is not None
    sink = FeedbackSink(record=args.record, show=args.show, page_port=args.page,
                        fps=demo_s.fps if demo else 30.0,
                        on_count_one=(lambda: graph.count_one(clock.now())) if has_music else None)
    runner = LiveRunner(settings, graph, sink=sink, clock=clock, session=session)
    if demo:
        print(f"edge: {DEMO_LABEL}", flush=True)
        runner.add_demo_dancers(DemoDancers(demo_s))
        if not args.no_mic:
            runner.add_audio(DemoMusic(demo_s).blocks, paced=True)
    elif args.source is not None:
        from edge.sources.audio_file import AudioFileSource, has_audio
        from edge.sources.video import VideoFileSource

        src = VideoFileSource(args.source)
        runner.add_video(src.frames, paced=True)
        runner.source_counters["video"] = lambda: {"out_of_order": src.out_of_order, "corrupt_packets": src.corrupt_packets}
        if not args.no_mic and has_audio(args.source):
            asrc = AudioFileSource(args.source, settings.audio.sample_rate, optional=True)
            runner.add_audio(asrc.blocks, paced=True)
            runner.source_counters["audio"] = lambda: {"corrupt_packets": asrc.corrupt_packets}
    else:
        from edge.sources.camera import CameraSource
        from edge.sources.mic import MicSource

        cam = CameraSource.from_settings(settings.source, clock=clock)
        runner.add_video(cam.frames, paced=False)
        from calibrate.av_offset import load_offset
        graph.audio_offset = load_offset()          # the rig's measured A/V offset (clap test)
        if not args.no_mic:
            mic = MicSource(settings.audio, clock=clock)
            runner.add_audio(mic.blocks, paced=False)
            runner.source_counters["mic"] = lambda: {"dropped_blocks": mic.dropped, "overflows": mic.overflows,
                                                     "resyncs": mic.resyncs, "fallback_stamps": mic.fallback_stamps}

    link = None
    if not args.no_cloud:
        link = open_link(settings, graph.motion.encoder, session, args.insecure_dev, runner.on_feedback)
        runner.link = link
    print(f"edge: session {session}", flush=True)

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        runner.run(args.duration)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        # a second Ctrl-C (or a SIGTERM) while stopping must not cut the clean-up short: the recording
        # and the stats first (quick), then the link's flush (up to 5 s)
        old_int = signal.signal(signal.SIGINT, _still_stopping)
        signal.signal(signal.SIGTERM, _still_stopping)
        try:
            sink.close()
            stats = runner.stats()
            if args.stats:
                _write_stats(Path(args.stats), stats)
            if link is not None:
                link.close(flush_timeout=5.0)
                stats = runner.stats()          # with the link's final counters
                if args.stats:
                    _write_stats(Path(args.stats), stats)
            graph.close()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, previous)
        edge_p95 = (stats["edge_feedback_ms"] or {}).get("p95")
        print(f"edge: stopped: {stats['counters']['frames_done']} frames, {stats['dropped_frames']} dropped, "
              f"{stats['counters']['windows_sent']} windows sent, edge feedback p95 "
              f"{edge_p95 and round(edge_p95, 1)} ms", flush=True)
    return 0


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def _still_stopping(*_):
    print("edge: still stopping (saving the recording and stats, flushing the link)", flush=True)


def _write_stats(path: Path, stats: dict) -> None:
    """Atomically (a reader never sees half a file); a path that cannot be written is one log line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stats, indent=2, default=float))
        os.replace(tmp, path)
    except OSError as exc:
        log.error("edge: stats not written to %s: %s", path, exc)
