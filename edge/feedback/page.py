"""A tiny local page for the rig: the overlay as an MJPEG stream over HTTP (stdlib only).

``GET /`` a page with the live picture and a "this is 1" button, ``GET /stream.mjpg`` the MJPEG
stream (multipart/x-mixed-replace), ``GET /frame.jpg`` the latest frame, ``GET /healthz`` "ok",
``POST /count/one`` "the beat now is count 1" (resets the eight-count; 404 when the rig has no music;
it needs the header ``X-Dancewire: 1``, which the page's button sends and another site cannot).
Requests naming a Host other than localhost or an IP address are refused (DNS rebinding).
It binds to 127.0.0.1 by default: the rig's own screen or an SSH tunnel, not the network.
"""
from __future__ import annotations

import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from dancewire.errors import DeviceError

log = logging.getLogger(__name__)

BOUNDARY = "dancewireframe"
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>dancewire rig</title>
<style>body{margin:0;background:#111;color:#ddd;font:14px sans-serif}
img{display:block;max-width:100vw;max-height:90vh;margin:auto}p{text-align:center;margin:4px}
button{font:bold 20px sans-serif;padding:10px 28px;border-radius:8px;border:0;background:#0af;color:#111}</style></head>
<body><img src="/stream.mjpg" alt="live overlay">
<p><button onclick="fetch('/count/one',{method:'POST',headers:{'X-Dancewire':'1'}})" title="the beat you hear now is count 1">this is 1</button>
&nbsp; dancewire rig &middot; live overlay</p></body></html>
"""


class OverlayPage:
    """Serves the latest published frame. `publish` is cheap for the caller: one JPEG encode."""

    MAX_STREAMS = 8      # MJPEG streams at once (each holds a thread)

    def __init__(self, host: str = "127.0.0.1", port: int = 8089, jpeg_quality: int = 80,
                 max_fps: float = 30.0, on_count_one=None):
        self.host, self.port = host, int(port)
        self.on_count_one = on_count_one        # called (from a server thread) on POST /count/one
        self.jpeg_quality = int(jpeg_quality)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._jpeg: bytes | None = None
        self._seq = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._streams = threading.BoundedSemaphore(self.MAX_STREAMS)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- producer side
    def publish(self, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            log.warning("JPEG encoding failed; frame not published")
            return
        with self._cond:
            self._jpeg = buf.tobytes()
            self._seq += 1
            self._cond.notify_all()

    def _wait_frame(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._stopping, timeout=timeout)
            return self._seq, self._jpeg

    # ---- server
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "OverlayPage":
        page = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, fmt, *args):  # quiet: route to debug logging
                log.debug("page %s: " + fmt, self.client_address[0], *args)

            def _send(self, status, ctype, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            timeout = 10.0     # a client that sends nothing (or never reads) lets its thread go

            def _foreign(self) -> bool:
                """Refused (403): a Host that is a name other than localhost (a DNS-rebinding page
                could read the dancers' video through it); IP addresses are the studio's own devices."""
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
                if host in ("localhost", "") or all(c.isdigit() or c in ".:" for c in host) and any(c.isdigit() for c in host):
                    return False
                self._send(HTTPStatus.FORBIDDEN, "text/plain", b"forbidden host")
                return True

            def do_GET(self):
                if self._foreign():
                    return
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(HTTPStatus.OK, "text/html; charset=utf-8", _PAGE.encode())
                elif path == "/healthz":
                    self._send(HTTPStatus.OK, "text/plain", b"ok")
                elif path == "/frame.jpg":
                    _, jpeg = page._wait_frame(0, timeout=2.0)
                    if jpeg is None:
                        self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no frame yet")
                    else:
                        self._send(HTTPStatus.OK, "image/jpeg", jpeg)
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found")

            def do_POST(self):
                if self._foreign():
                    return
                path = self.path.split("?", 1)[0]
                # the page's own fetch sends X-Dancewire; another site's form or fetch cannot without a
                # CORS preflight, which this server never grants (it reset the eight-count from any site)
                if path == "/count/one" and self.headers.get("X-Dancewire") != "1":
                    self._send(HTTPStatus.FORBIDDEN, "text/plain", b"missing X-Dancewire header")
                elif path == "/count/one" and page.on_count_one is not None:
                    page.on_count_one()
                    self._send(HTTPStatus.OK, "text/plain", b"count reset: this beat is 1")
                else:
                    self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found")

            def _stream(self):
                if not page._streams.acquire(blocking=False):
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"too many streams")
                    return
                try:
                    self._frames()
                finally:
                    page._streams.release()

            def _frames(self):
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seq, last_sent = 0, 0.0
                try:
                    while not page._stopping:
                        wait = page.min_interval - (time.monotonic() - last_sent)
                        if wait > 0:
                            time.sleep(wait)       # first the rate limit, then the newest frame
                        seq, jpeg = page._wait_frame(seq, timeout=1.0)
                        if jpeg is None:
                            continue
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode())
                        self.wfile.write(jpeg)
                        self.wfile.write(b"\r\n")
                        self.wfile.flush()
                        last_sent = time.monotonic()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass   # the browser went away, or stopped reading

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise DeviceError(f"cannot serve the rig page on {self.host}:{self.port}: {exc.strerror or exc}; "
                              "choose another port") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="rig-page", daemon=True)
        self._thread.start()
        log.info("rig page at %s", self.url)
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> "OverlayPage":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
