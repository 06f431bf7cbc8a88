"""The audio track of a video or audio file through PyAV, as AudioBlocks on the media clock.

Decoded with libavcodec, converted by `av.AudioResampler` to float32 at the analysis rate,
averaged over channels to mono, and cut into blocks of `block_size` samples. A block's `t` is the media time of its
first sample: the decoded frame's pts relative to the container's start (the same origin
as the video frames of edge/sources/video.py), continued by sample counting while the frames
follow on; where the file's timeline has a hole, the next block starts at its frame's pts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dancewire.errors import BadInputError
from edge.records import AudioBlock, stamp

log = logging.getLogger(__name__)
GAP_S = 0.005   # a frame this far off the sample count starts a new block at its own time


@dataclass(frozen=True)
class AudioInfo:
    path: str
    codec: str
    sample_rate: int          # the stream's own rate
    channels: int
    duration: float | None


def _open(path: Path):
    import av

    if not path.exists():
        raise BadInputError(f"audio/video file not found: {path}")
    if path.is_dir():
        raise BadInputError(f"{path} is a folder, not a media file")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise BadInputError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None


def has_audio(path: str | Path) -> bool:
    """True when the file opens and has at least one audio stream."""
    try:
        container = _open(Path(path))
    except BadInputError:
        return False
    try:
        return bool(container.streams.audio)
    finally:
        container.close()


class AudioFileSource:
    """Yields mono float32 AudioBlocks at `sample_rate` from a file's first audio stream."""

    def __init__(self, path: str | Path, sample_rate: int = 44100, block_size: int = 1024, optional: bool = False):
        """`optional`: a video's own track, not audio asked for: if it holds nothing decodable, say
        so and give no blocks (the video goes on without music) instead of raising."""
        self.path = Path(path)
        self.optional = bool(optional)
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        if self.block_size <= 0:
            raise ValueError("block_size must be > 0")
        container = _open(self.path)
        try:
            if not container.streams.audio:
                raise BadInputError(f"{self.path} has no audio stream")
            st = container.streams.audio[0]
            ctx = st.codec_context
            duration = float(st.duration * st.time_base) if st.duration else (
                container.duration / 1e6 if container.duration else None)
            self.info = AudioInfo(str(self.path), ctx.name, int(ctx.sample_rate or 0),
                                  int(ctx.channels or 0), duration)
        finally:
            container.close()
        self.corrupt_packets = 0

    def blocks(self) -> Iterator[AudioBlock]:
        import av

        container = _open(self.path)
        try:
            stream = container.streams.audio[0]
            start = container.start_time / 1e6 if container.start_time is not None else 0.0
            # keep the channel layout and average the channels ourselves: libswresample's
            # downmix scales the sum by 1/sqrt(2), which can clip and differs from the mic's mean.
            # Packed, not planar: PyAV's to_ndarray crashes the process on 8+ planar channels (7.1)
            resampler = av.AudioResampler(format="flt", layout=None, rate=self.sample_rate)
            buf = np.zeros(0, np.float32)
            buf_t: float | None = None       # media time of buf[0]
            produced = 0

            def emit(final: bool):
                nonlocal buf, buf_t
                while buf.size >= self.block_size or (final and buf.size):
                    n = min(self.block_size, buf.size)
                    block = AudioBlock(t=float(buf_t), samples=buf[:n].copy(), sample_rate=self.sample_rate)
                    stamp(block.stamps, "capture")
                    yield block
                    buf = buf[n:]
                    buf_t += n / self.sample_rate

            def take(frames):
                """Buffer resampled frames; a frame whose pts is off the sample count by more than
                GAP_S (a hole in the file's timeline, skipped packets) ends the block before it,
                and the next block starts at its own time, as video frames do."""
                nonlocal buf, buf_t, produced
                for f in frames:
                    channels = len(f.layout.channels)
                    packed = f.to_ndarray().reshape(-1, channels)  # (n, channels) interleaved
                    x = packed[:, 0] if channels == 1 else packed.mean(axis=1)
                    x = np.ascontiguousarray(x, dtype=np.float32)
                    if x.size == 0:
                        continue
                    # the frame's pts (in 1/rate) relative to the container start
                    t = float(f.pts * f.time_base) - start if f.pts is not None and f.time_base else None
                    if buf_t is None:
                        buf_t = max(t, 0.0) if t is not None else 0.0
                    elif t is not None and abs(t - (buf_t + buf.size / self.sample_rate)) > GAP_S:
                        yield from emit(True)
                        buf, buf_t = np.zeros(0, np.float32), max(t, 0.0)
                    buf = np.concatenate([buf, x]) if buf.size else x
                    produced += x.size

            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError as exc:
                    self.corrupt_packets += 1
                    log.warning("%s: skipping corrupt audio packet (%s)", self.path.name, exc)
                    continue
                for frame in frames:
                    yield from take(resampler.resample(frame))
                yield from emit(False)
            yield from take(resampler.resample(None))
            yield from emit(True)
            if produced == 0:
                if not self.optional:
                    raise BadInputError(f"{self.path}: no decodable audio")
                log.warning("%s: its audio track holds no decodable audio: going on without music", self.path.name)
        except av.error.FFmpegError as exc:
            raise BadInputError(f"cannot decode audio of {self.path}: {exc}") from None
        finally:
            container.close()


def on_timeline(blocks: list[AudioBlock]) -> tuple[np.ndarray, float]:
    """Blocks as one array on the media clock, from the first block's time: where a block starts
    more than GAP_S after the previous one ends (a hole in a file, a dropped mic block) the hole
    is silence, and where it starts that much before, the overlap is cut; every later sample
    stays at its own time."""
    if not blocks:
        raise BadInputError("no audio")
    t0, rate = blocks[0].t, blocks[0].sample_rate
    slack = GAP_S * rate
    parts, end = [], 0                      # samples placed so far
    for b in blocks:
        start = round((b.t - t0) * rate)
        x = b.samples
        if start > end + slack:
            parts.append(np.zeros(start - end, np.float32))
            end = start
        elif start < end - slack:
            x = x[end - start:]
        parts.append(x)
        end += len(x)
    return np.concatenate(parts).astype(np.float32, copy=False), float(t0)


def read_audio(path: str | Path, sample_rate: int = 44100) -> tuple[np.ndarray, float]:
    """Whole track as one mono float32 array on the media clock and the media time of its first sample."""
    return on_timeline(list(AudioFileSource(path, sample_rate, block_size=1 << 16).blocks()))
