"""A live camera through OpenCV (V4L2 device index/path, or a GStreamer pipeline string)."""
from __future__ import annotations

import logging
from typing import Iterator

import cv2

from dancewire.errors import DeviceError
from edge.records import Frame, stamp
from edge.sources.clock import RigClock

log = logging.getLogger(__name__)


def _capture(device: int | str) -> cv2.VideoCapture:
    """A V4L2 index ("0" counts as 0) or /dev/video* path, or a GStreamer pipeline ending in appsink."""
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if isinstance(device, str) and "appsink" in device:
        return cv2.VideoCapture(device, cv2.CAP_GSTREAMER)
    return cv2.VideoCapture(device, cv2.CAP_V4L2)


class CameraSource:
    """Reads frames as fast as the camera delivers them, stamped on the rig clock at capture.

    `device` is an int (V4L2 index), a /dev/video* path, or a GStreamer pipeline ending in appsink.
    """

    def __init__(self, device: int | str = 0, width: int | None = None, height: int | None = None,
                 fps: float | None = None, clock: RigClock | None = None):
        self.clock = clock or RigClock()
        cap = _capture(device)
        if not cap.isOpened():
            raise DeviceError(f"cannot open camera {device!r} (no such device, or busy); "
                              "use --source FILE or --demo")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                            (cv2.CAP_PROP_FPS, fps)):
            if value:
                cap.set(prop, value)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)   # never let the driver queue stale frames
        self._cap = cap
        self.device = device
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)

    @classmethod
    def from_settings(cls, s, clock: RigClock | None = None) -> "CameraSource":
        """The camera `edge.settings.SourceSettings` name, at its size and rate (0: the camera's own)."""
        return cls(s.camera, s.width or None, s.height or None, s.fps or None, clock=clock)

    def frames(self) -> Iterator[Frame]:
        index = 0
        try:
            while True:
                ok, image = self._cap.read()
                t = self.clock.now()
                if not ok or image is None:
                    raise DeviceError(f"camera {self.device!r} stopped delivering frames")
                frame = Frame(index=index, t=t, image=image)
                stamp(frame.stamps, "capture")
                yield frame
                index += 1
        finally:
            self._cap.release()


def camera_available(device: int | str = 0) -> bool:
    """Whether the camera opens (OpenCV's own warnings about a missing device are silenced)."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)   # the answer is the return value
    cap = _capture(device)
    ok = cap.isOpened()
    cap.release()
    return ok
