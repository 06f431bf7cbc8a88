"""`--show`: the overlay in an OpenCV window, where OpenCV has a GUI and there is a display.

The project depends on opencv-python-headless, which has no GUI at all; on such an install
(and on a machine without a display) opening the window is a clear `DeviceError` that points
to ``--record OUT.mp4`` or the local page instead.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from dancewire.errors import DeviceError

_ALTERNATIVES = "use --record OUT.mp4, or the local page (--page) in a browser"


def gui_available() -> tuple[bool, str]:
    """(True, "") when cv2 windows can be opened here, else (False, reason)."""
    import cv2

    gui = ""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() == "NONE":
        return False, "this OpenCV build has no GUI (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display ($DISPLAY is not set)"
    return True, ""


class OverlayWindow:
    """One cv2 window. `show` returns False once the user pressed q or Esc (or closed it);
    the key 1 calls `on_count_one` ("the beat now is count 1")."""

    def __init__(self, title: str = "dancewire", on_count_one=None):
        import cv2

        ok, reason = gui_available()
        if not ok:
            raise DeviceError(f"--show cannot open a window: {reason}; {_ALTERNATIVES}")
        self.title = title
        self.on_count_one = on_count_one
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise DeviceError(f"--show cannot open a window ({str(exc).strip().splitlines()[-1]}); "
                              f"{_ALTERNATIVES}") from None
        self._open = True

    def show(self, image: np.ndarray) -> bool:
        import cv2

        if not self._open:
            return False
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            visible = False
        if key == ord("1") and self.on_count_one is not None:
            self.on_count_one()
        if key in (ord("q"), 27) or not visible:
            self.close()
            return False
        return True

    def close(self) -> None:
        import cv2

        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def __enter__(self) -> "OverlayWindow":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
