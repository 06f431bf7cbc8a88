"""Video files through PyAV: frames on the media clock, with clear errors for bad files.

Frames come upright, as a player shows them: a display rotation in the file (what phones write
for portrait clips) is applied, and `VideoInfo` gives the upright size. Their times only go
forwards: a frame stamped at or before the previous one (B-frames in a broken mux, a damaged
file) is dropped and counted in `out_of_order`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from dancewire.errors import BadInputError
from edge.records import Frame, stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    duration: float | None       # of the video stream itself (not the longer audio's)
    has_audio: bool
    rotation: int = 0            # degrees counterclockwise the coded frames are turned to be upright


def _open(path: Path):
    import av

    if not path.exists():
        raise BadInputError(f"video not found: {path}")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise BadInputError(f"cannot read video {path}: {exc.__class__.__name__}: {exc}") from None


class VideoFileSource:
    """Decodes a video file's frames as BGR images, `t` = pts - container start (seconds)."""

    def __init__(self, path: str | Path, max_frames: int | None = None):
        if max_frames is not None and max_frames < 1:
            raise BadInputError(f"max_frames must be at least 1, got {max_frames}")
        self.path = Path(path)
        self.max_frames = max_frames
        container = _open(self.path)
        try:
            if not container.streams.video:
                raise BadInputError(f"{self.path} has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if not ctx.width or not ctx.height:
                raise BadInputError(f"{self.path}: zero-size video frames ({ctx.width}x{ctx.height})")
            rate = stream.average_rate or stream.guessed_rate
            duration = float(stream.duration * stream.time_base) if stream.duration else _video_span(self.path)
            rotation = _first_rotation(self.path)
            w, h = (int(ctx.height), int(ctx.width)) if rotation % 180 else (int(ctx.width), int(ctx.height))
            self.info = VideoInfo(str(self.path), w, h, float(rate) if rate else 0.0, duration,
                                  bool(container.streams.audio), rotation)
        finally:
            container.close()
        self.corrupt_packets = 0
        self.out_of_order = 0

    def frames(self) -> Iterator[Frame]:
        import av

        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = container.start_time / 1e6 if container.start_time is not None else 0.0
            index = 0
            last_t = -1.0
            fallback_dt = 1.0 / self.info.fps if self.info.fps else 1.0 / 30
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError as exc:
                    self.corrupt_packets += 1
                    log.warning("%s: skipping corrupt packet (%s)", self.path.name, exc)
                    continue
                for vf in decoded:
                    if vf.width == 0 or vf.height == 0:
                        raise BadInputError(f"{self.path}: zero-size frame at index {index}")
                    t = float(vf.pts * vf.time_base) - start if vf.pts is not None else index * fallback_dt
                    t = max(t, 0.0)
                    if t <= last_t:
                        self.out_of_order += 1
                        if self.out_of_order in (1, 10, 100) or self.out_of_order % 1000 == 0:
                            log.warning("%s: dropped a frame stamped %.3f s, not after the previous one (%.3f s); "
                                        "%d so far", self.path.name, t, last_t, self.out_of_order)
                        continue
                    last_t = t
                    frame = Frame(index=index, t=t, image=_upright(_to_bgr(vf), self.info.rotation))
                    stamp(frame.stamps, "capture")
                    yield frame
                    index += 1
                    if self.max_frames is not None and index >= self.max_frames:
                        return
            if index == 0:
                raise BadInputError(f"{self.path}: no decodable video frames")
        except av.error.FFmpegError as exc:
            raise BadInputError(f"cannot decode video {self.path}: {exc}") from None
        finally:
            container.close()


def _video_span(path: Path) -> float | None:
    """The video stream's own duration from its packets' times, when its header gives none (MKV):
    the container's duration is that of its longest stream, often the audio."""
    lo = hi = None
    try:
        with _open(path) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.pts is None:
                    continue
                t0 = float(packet.pts * packet.time_base)
                t1 = t0 + float((packet.duration or 0) * packet.time_base)
                lo, hi = (t0, t1) if lo is None else (min(lo, t0), max(hi, t1))
    except Exception:            # a damaged file: no duration rather than no source; frames() reports it
        pass
    return hi - lo if lo is not None and hi > lo else None


def _first_rotation(path: Path) -> int:
    """The display rotation of the first decodable frame, degrees counterclockwise (0, 90, 180, -90)."""
    try:
        with _open(path) as container:
            for vf in container.decode(container.streams.video[0]):
                return int(round(getattr(vf, "rotation", 0) or 0)) % 360 // 90 * 90 % 360
    except Exception:
        pass
    return 0


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """As FFmpeg's player turns it (display matrix rotation, counterclockwise)."""
    if rotation == 90:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if rotation == 180:
        return cv2.rotate(image, cv2.ROTATE_180)
    if rotation == 270:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    return image


def _to_bgr(vf) -> np.ndarray:
    """YUV420 -> BGR with OpenCV (about twice as fast as PyAV's own conversion here)."""
    if vf.format.name == "yuv420p" and vf.width % 2 == 0 and vf.height % 2 == 0:
        return cv2.cvtColor(vf.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    return vf.to_ndarray(format="bgr24")
