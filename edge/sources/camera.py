"""A live camera through OpenCV (V4L2 device index/path, or a GStreamer pipeline string)."""
from __future__ import annotations

import logging
from typing import Iterator

import cv2

from dancewire.errors import DeviceError
from edge.records import Frame, stamp
from edge.sources.clock import RigClock

log = logging.getLogger(__name__)


class CameraSource:
    """Reads frames as fast as the camera delivers them, stamped on the rig clock at capture.

    `device` is an int (V4L2 index), a /dev/video* path, or a GStreamer pipeline ending in appsink.
    """

    def __init__(self, device: int | str = 0, width: int | None = None, height: int | None = None,
                 fps: float | None = None, clock: RigClock | None = None):
        self.clock = clock or RigClock()
        if isinstance(device, str) and "appsink" in device:
            cap = cv2.VideoCapture(device, cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
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
    cap = cv2.VideoCapture(device, cv2.CAP_V4L2) if not isinstance(device, str) or "appsink" not in device \
        else cv2.VideoCapture(device, cv2.CAP_GSTREAMER)
    ok = cap.isOpened()
    cap.release()
    return ok
