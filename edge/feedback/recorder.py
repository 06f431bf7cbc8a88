"""`--record OUT.mp4`: write annotated BGR frames to an H.264 MP4 with PyAV.

Frames are stamped with their media time when it is given (live sources drop frames, so a
constant-rate count would drift from the audio); otherwise one frame per 1/fps.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from dancewire.errors import BadInputError

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1000)    # millisecond timestamps


class OverlayRecorder:
    """Writes frames to `path`; the frame size is fixed by the first frame (odd sizes are padded)."""

    def __init__(self, path: str | Path, fps: float = 30.0, codec: str = "libx264", crf: int = 23):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.codec, self.crf = codec, int(crf)
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self._last_pts = -1
        self.failed: str | None = None     # why recording stopped (a full disk); later frames are not written
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov", ".mkv"):
            raise BadInputError(f"--record wants a video file name such as out.mp4, got {self.path.name}")
        if not self.path.parent.exists():
            raise BadInputError(f"cannot record to {self.path}: folder {self.path.parent} does not exist")

    def _open(self, width: int, height: int) -> None:
        import av

        # MP4/MOV fragmented: what is written stays playable if the recording is cut short (a full disk,
        # a kill) instead of waiting for an index written at close
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} \
            if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
        try:
            self._container = av.open(str(self.path), "w", options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise BadInputError(f"cannot write {self.path}: {exc}") from None
        rate = Fraction(self.fps).limit_denominator(1001)
        try:
            stream = self._container.add_stream(self.codec, rate=rate)
        except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError):
            log.warning("codec %s unavailable, recording with mpeg4", self.codec)
            stream = self._container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        if stream.codec_context.name == "libx264":
            # no B-frames: no reordering delay, so frame times stay the media times in a fragmented MP4
            stream.options = {"crf": str(self.crf), "preset": "veryfast", "bf": "0"}
        self._stream = stream
        self._size = (width, height)

    def write(self, image: np.ndarray, t: float | None = None) -> None:
        """Append one BGR uint8 frame at media time `t` (seconds) or at the next 1/fps step."""
        import av

        if self.failed is not None:
            return
        h, w = image.shape[:2]
        if self._container is None:
            self._open(w + (w & 1), h + (h & 1))
        W, H = self._size
        if (w, h) != (W, H):
            if abs(w - W) > 1 or abs(h - H) > 1:
                import cv2
                image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
            else:                         # a pixel off either way: cut, then pad to the stream's size
                image = image[:H, :W]
                image = np.pad(image, ((0, H - image.shape[0]), (0, W - image.shape[1]), (0, 0)), mode="edge")
        if t is None:
            pts = round(self.frames_written * 1000.0 / self.fps)
        else:
            pts = round(float(t) * 1000.0)
        pts = max(pts, self._last_pts + 1)      # strictly increasing, even for repeated times
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts, frame.time_base = pts, TIME_BASE
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            # a full disk: recording stops (what is written stays playable), the session goes on
            self.failed = f"{exc.__class__.__name__}: {exc}"
            log.error("recording to %s stopped after %d frames: %s", self.path, self.frames_written, self.failed)
            return
        self._last_pts = pts
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            if self.failed is None:       # flushing into a muxer that failed crashed PyAV (a segfault)
                for packet in self._stream.encode():
                    self._container.mux(packet)
        except Exception as exc:          # noqa: BLE001 - any muxer error here only ends the file early
            self.failed = f"{exc.__class__.__name__}: {exc}"
            log.error("recording to %s could not be finished: %s", self.path, self.failed)
        finally:
            try:
                self._container.close()
            except Exception as exc:      # noqa: BLE001 - the file is as complete as the disk let it be
                log.error("closing the recording %s: %s", self.path, exc)
            self._container = None
            log.info("recorded %d frames to %s", self.frames_written, self.path)

    def __enter__(self) -> "OverlayRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
