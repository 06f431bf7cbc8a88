"""The edge graph: stages wired together with explicit flows.

    frames ──> PoseStage ──> (live PoseFrame: overlay) ──> cleaned PoseFrames ──> MotionStage ──> WindowResults
    audio  ──> AudioAnalyzer ──> Onset/Beat ──────────────────────────────────────^

`EdgeGraph` is shared by `dancewire edge analyze` (offline, as fast as it can) and
`dancewire edge run` (live, paced, threads and leaky queues in `edge.live`): only the source
and the pacing differ. Every record carries its stage stamps for the latency suite.
"""
from __future__ import annotations

import heapq
import logging
import queue
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from dancewire.errors import BadInputError
from edge.latency import WINDOW_STAGES, LatencyRecorder
from edge.records import AudioBlock, Beat, Frame, Onset, PoseFrame, WindowResult
from edge.settings import EdgeSettings

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    live: PoseFrame | None = None                               # this frame's poses, at once
    cleaned: list[PoseFrame] = field(default_factory=list)      # final, gap-filled frames
    windows: list[WindowResult] = field(default_factory=list)
    primitives: list[WindowResult] = field(default_factory=list)  # eight-beat primitives (analysis records)


class EdgeGraph:
    """Owns the stages; `on_frame`, `on_poses` and `on_audio` move records through them."""

    def __init__(self, settings: EdgeSettings, *, pose=None, audio=None, motion=None):
        self.settings = settings
        self.pose, self.audio, self.motion = pose, audio, motion
        self.latency = LatencyRecorder()
        self.frames = 0
        self.frames_with_dancer = 0
        self.dancers: set[int] = set()
        self._count_one: queue.SimpleQueue[float] = queue.SimpleQueue()
        self.audio_offset = 0.0     # music at audio time a is heard at media time a + offset

    @classmethod
    def build(cls, settings: EdgeSettings, *, video: bool = True, audio: bool = True,
              encoder: bool = True, primitives: bool = False, fps: float | None = None) -> "EdgeGraph":
        """`primitives`: also cut and encode eight-beat primitives and keep the session's rhythm
        (`edge analyze` writes both; the live graph sends only windows, so it does neither). `fps`: the video's frame
        rate when the source knows it (a file); otherwise the windows measure it from frame times."""
        from edge.audio.analyzer import AudioAnalyzer
        from edge.motion.encoder import MotionEncoder
        from edge.motion.stage import MotionStage
        from edge.vision.stage import PoseStage

        eng = settings.engine
        pose = PoseStage.from_settings(settings.vision, eng.backend, eng.threads, eng.precision) if video else None
        enc = MotionEncoder(settings=settings.motion) if encoder else False
        mset = settings.motion if primitives else replace(settings.motion, eight_beats=False)
        # the graph shifts the audio itself (on_audio); only `analyze` summarises the session
        motion = MotionStage(mset, encoder=enc, fps=fps, keep_session=primitives)
        analyzer = AudioAnalyzer(settings.audio) if audio else None
        for engine in ([pose.detector_engine, pose.landmarks_engine] if pose else []) + ([enc.engine] if enc else []):
            engine.warm_up()          # before the first frame, not on it
        return cls(settings, pose=pose, audio=analyzer, motion=motion)

    def validate(self, frame: Frame) -> None:
        if frame.image is None or frame.image.size == 0 or min(frame.image.shape[:2]) == 0:
            raise BadInputError(f"zero-size frame at index {frame.index} (t={frame.t:.3f}s)")

    def on_frame(self, frame: Frame) -> StepOutput:
        self.validate(frame)
        live = self.pose(frame)
        self.latency.add(live.stamps)
        out = StepOutput(live=live)
        for pf in self.pose.cleaned():
            out.cleaned.append(pf)
            out.windows.extend(self._motion(pf))
        return self._primitives(out)

    def on_poses(self, pf: PoseFrame) -> StepOutput:
        """Keypoint-level input (the demo source): everything after the pose stage runs."""
        return self._primitives(StepOutput(live=pf, cleaned=[pf], windows=self._motion(pf)))

    def _primitives(self, out: StepOutput) -> StepOutput:
        if self.motion is not None:
            out.primitives = self.motion.primitives()
        return out

    def _motion(self, pf: PoseFrame) -> list[WindowResult]:
        self.frames += 1
        if pf.poses:
            self.frames_with_dancer += 1
            self.dancers.update(p.track_id for p in pf.poses)
        if self.motion is None:
            return []
        results = self.motion.push(pf)
        for r in results:
            self.latency.add(r.stamps, total="window_total", only=WINDOW_STAGES)
        return results

    def count_one(self, t: float) -> None:
        """The rig says: the beat at media time `t` is 1. Any thread; the analyzer applies it
        on its own thread before the next block."""
        self._count_one.put(float(t))

    def on_audio(self, block: AudioBlock) -> list[Onset | Beat]:
        """Audio stage only (the live runner calls it on the audio thread)."""
        while not self._count_one.empty():
            self.audio.reset_count(self._count_one.get_nowait())
        if self.audio_offset:
            block.t += self.audio_offset
        return self.audio.process(block)

    def deliver_audio(self, events: list[Onset | Beat]) -> None:
        """Hand music events to the motion stage (on the thread that runs `on_frame`)."""
        if self.motion is not None and events:
            self.motion.push_audio_events(events)

    def flush(self) -> StepOutput:
        out = StepOutput()
        if self.pose is not None:
            for pf in self.pose.flush():
                out.cleaned.append(pf)
                out.windows.extend(self._motion(pf))
        if self.motion is not None:
            out.windows.extend(self.motion.flush())
        return self._primitives(out)

    def encoder_info(self) -> dict | None:
        enc = self.motion.encoder if self.motion is not None else None
        if not enc:
            return None
        return {"model_id": enc.model_id, "encoder_hash": enc.sha256, "dim": enc.dim}

    def close(self) -> None:
        if self.pose is not None:
            self.pose.close()


def merge_by_time(*streams: Iterator) -> Iterator:
    """Interleave records of several sources in media-time order (each stream is already ordered)."""
    return heapq.merge(*streams, key=lambda r: r.t)


def analyze(settings: EdgeSettings, video: str | Path, out, *, audio: str | Path | None = None,
            audio_offset: float = 0.0, max_frames: int | None = None, encoder: bool = True) -> dict:
    """Run the graph over a file as fast as possible; write frame/onset/beat/window/primitive records + summary."""
    from edge.sources.audio_file import AudioFileSource
    from edge.sources.video import VideoFileSource

    source = VideoFileSource(video, max_frames=max_frames)
    audio_path = audio if audio is not None else (video if source.info.has_audio else None)
    # the music is cut where the frames end: --max-frames, else the video's own length
    duration = (max_frames / source.info.fps) if (max_frames is not None and source.info.fps) else source.info.duration
    audio_src = heard = None
    if audio_path is not None:
        audio_src = AudioFileSource(audio_path, settings.audio.sample_rate, optional=audio is None)
        music = audio_src.info.duration
        if music is not None and duration is not None and not (audio_offset < duration and audio_offset + music > 0):
            raise BadInputError(f"the music ({music:.1f} s, placed at {audio_offset:+.1f} s by --audio-offset) does "
                                f"not overlap the video (0 to {duration:.1f} s): nothing could be scored")
        heard = _Span()
    graph = EdgeGraph.build(settings, audio=audio_path is not None, encoder=encoder, primitives=True,
                            fps=source.info.fps or None)
    streams = [source.frames()]
    if audio_src is not None:
        streams.append(heard.track(_until(_heard(audio_src.blocks(), audio_offset), duration)))

    counts = {"onset": 0, "beat": 0, "window": 0, "primitive": 0}
    start = time.perf_counter()
    video_end = 0.0
    try:
        for item in merge_by_time(*streams):
            if isinstance(item, Frame):
                video_end = item.t
                step = graph.on_frame(item)
                _write_step(out, step, counts)
            else:
                events = graph.on_audio(item)
                graph.deliver_audio(events)
                for ev in events:
                    out.write(ev.to_json())
                    counts["onset" if isinstance(ev, Onset) else "beat"] += 1
        if graph.audio is not None:
            events = graph.audio.flush()
            graph.deliver_audio(events)
            for ev in events:
                out.write(ev.to_json())
                counts["onset" if isinstance(ev, Onset) else "beat"] += 1
        _write_step(out, graph.flush(), counts)
    finally:
        graph.close()
    wall = time.perf_counter() - start
    summary = {
        "type": "summary",
        "video": str(video),
        "width": source.info.width, "height": source.info.height, "video_fps": round(source.info.fps, 3),
        "frames": graph.frames,
        "frames_with_dancer": graph.frames_with_dancer,
        "dancers": sorted(graph.dancers),
        "processing_fps": round(graph.frames / wall, 2) if wall > 0 else None,
        "wall_s": round(wall, 3),
        "dropped_frames": source.out_of_order,            # frames out of time order (see edge.sources.video)
        "corrupt_packets": source.corrupt_packets + (audio_src.corrupt_packets if audio_src else 0),
        "latency_ms": {k: {q: round(v, 3) for q, v in d.items()} for k, d in graph.latency.summary().items()},
        "records": counts,
        "audio": graph.audio.summary() if graph.audio is not None else None,
        "audio_offset_s": audio_offset,
        "music_coverage": heard.coverage(video_end) if heard is not None else None,
        "rhythm": graph.motion.session_summary() if graph.motion is not None else {},
        "encoder": graph.encoder_info(),
    }
    if summary["audio"] is not None and audio_src.info.sample_rate != settings.audio.sample_rate:
        summary["audio"]["resampled_from"] = audio_src.info.sample_rate   # the file source resampled it
    if summary["music_coverage"] is not None and summary["music_coverage"] < 0.5:
        log.warning("music heard under only %.0f%% of the video (music at %s with --audio-offset %+.2f, video 0 to "
                    "%.2f s): windows without music have no rhythm metrics", 100 * summary["music_coverage"],
                    heard.describe(), audio_offset, video_end)
    out.write(summary)
    return summary


class _Span:
    """The media-time span of the music blocks that pass through `track` (what `analyze` heard)."""

    def __init__(self):
        self.start: float | None = None
        self.end: float | None = None

    def track(self, blocks: Iterator[AudioBlock]) -> Iterator[AudioBlock]:
        for b in blocks:
            self.start = b.t if self.start is None else self.start
            self.end = b.t + len(b.samples) / b.sample_rate
            yield b

    def coverage(self, video_end: float) -> float | None:
        """Share of the video's time [0, video_end] with music under it (None for a single frame)."""
        if video_end <= 0:
            return None
        if self.start is None:
            return 0.0
        return round(max(0.0, min(self.end, video_end) - max(self.start, 0.0)) / video_end, 4)

    def describe(self) -> str:
        return "no time at all" if self.start is None else f"{self.start:+.2f} to {self.end:+.2f} s"


def _write_step(out, step: StepOutput, counts: dict) -> None:
    for pf in step.cleaned:
        out.write(pf.to_json())
    for r in step.windows:
        out.write(r.to_json())
        counts["window"] += 1
    for r in step.primitives:
        out.write(r.to_json("primitive"))
        counts["primitive"] += 1


def _heard(blocks: Iterator[AudioBlock], offset: float) -> Iterator[AudioBlock]:
    """The music on the video's clock: audio time a is heard at media time a + offset. Shifted
    before merging with the frames, so with a negative offset a window's music still reaches the
    analyzer before its frames close it (the live graph shifts in `on_audio`; it has no merge)."""
    for b in blocks:
        b.t += offset
        yield b


def _until(blocks: Iterator[AudioBlock], duration: float | None) -> Iterator[AudioBlock]:
    for b in blocks:
        if duration is not None and b.t > duration:
            return
        yield b
