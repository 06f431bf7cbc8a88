"""Draw the rig's live feedback on a BGR frame with OpenCV.

What is drawn:
* every dancer's COCO-17 skeleton in a colour fixed by its track ID, with an ID tag;
* per dancer, the style label and probability and the similarity sent back by the cloud,
  and the on-beat percentage;
* a beat pulse (a disc that flashes on each beat and fades) and the eight-count (eight
  boxes, the current count lit) with the tempo;
* the end-to-end latency.

Inputs are the typed records: `edge.records.PoseFrame`, the latest `edge.records.Beat`, a
feedback dict ``{track_id: {"style": str, "prob": float, "similarity": float, "on_beat": float}}``
(``on_beat`` is a fraction in [0, 1]; any key may be missing) and a latency in ms.
"""
from __future__ import annotations

import colorsys
import math
import threading
from dataclasses import dataclass
from typing import Mapping

import cv2
import numpy as np

from edge.records import Beat, Pose, PoseFrame

# COCO-17 skeleton: face, arms, torso, legs (indices into edge.records.COCO17).
COCO17_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4),
    (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 6), (5, 11), (6, 12), (11, 12),
    (11, 13), (13, 15), (12, 14), (14, 16),
)

FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_FONT = 0.4
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A saturated BGR colour per track ID; neighbouring IDs get far-apart hues."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


@dataclass
class OverlayStyle:
    min_score: float = 0.3          # joints below this confidence are not drawn
    pulse_decay_s: float = 0.18     # beat flash fades with this time constant
    show_boxes: bool = False
    scale: float | None = None      # text/line scale; None: from the frame height


def _text(img, text: str, org: tuple[int, int], scale: float, color=WHITE, thickness: int = 1) -> None:
    """Text with a dark halo so it stays readable on any background.

    The text is rendered once into a small mask; the halo is that mask dilated (a thicker
    stroke would not do: OpenCV 5's font engine makes heavier strokes wider, so they would
    not line up with the letters). Both are alpha-blended into the frame."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    r = 1 if scale < 0.8 else 2
    x, y = int(org[0]), int(org[1])
    px0, py0 = x - r - 1, y - th - r - 1                # patch in frame coordinates
    px1, py1 = x + tw + r + 2, y + base + r + 2
    H, W = img.shape[:2]
    cx0, cy0, cx1, cy1 = max(px0, 0), max(py0, 0), min(px1, W), min(py1, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    mask = np.zeros((py1 - py0, px1 - px0), np.uint8)
    cv2.putText(mask, text, (x - px0, y - py0), FONT, scale, 255, thickness, cv2.LINE_AA)
    halo = cv2.dilate(mask, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    sl = (slice(cy0 - py0, cy1 - py0), slice(cx0 - px0, cx1 - px0))
    a_text = mask[sl].astype(np.float32)[..., None] / 255.0
    a_halo = halo[sl].astype(np.float32)[..., None] / 255.0
    roi = img[cy0:cy1, cx0:cx1].astype(np.float32) * (1.0 - a_halo)
    roi = roi * (1.0 - a_text) + np.asarray(color, np.float32) * a_text
    img[cy0:cy1, cx0:cx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(img, lines: list[str], anchor: tuple[int, int], scale: float, color, thick: int,
           taken: list[tuple[int, int, int, int]] | None = None) -> None:
    """A small panel with coloured border, text lines stacked upwards from `anchor` (bottom-left).

    ``taken``: panels already drawn this frame; this one moves up (or, at the top, down)
    until it overlaps none of them, and is added to the list."""
    if not lines:
        return
    sizes = [cv2.getTextSize(s, FONT, scale, thick)[0] for s in lines]
    pad = int(6 * scale) + 2 + 2 * thick        # room for the text outline
    line_h = max(h for _, h in sizes) + int(8 * scale) + 2
    w = max(w for w, _ in sizes) + 2 * pad
    h = line_h * len(lines) + 4
    H, W = img.shape[:2]
    x0 = int(min(max(anchor[0], 0), max(W - w, 0)))
    y1 = int(min(max(anchor[1], h), H))
    if taken is not None:
        start, step = y1, -(h + 2)
        for _ in range(2 * len(taken) + 2):
            if not any(_overlaps((x0, y1 - h, x0 + w, y1), r) for r in taken):
                break
            y1 += step
            if y1 < h:                          # off the top: search downwards instead
                step, y1 = h + 2, start + h + 2
        y1 = int(min(y1, H))
        taken.append((x0, y1 - h, x0 + w, y1))
    y0 = y1 - h
    roi = img[max(y0, 0):y1, x0:x0 + w]
    if roi.size:
        roi[:] = (roi * 0.35).astype(np.uint8)     # darken behind the text
    cv2.rectangle(img, (x0, max(y0, 0)), (x0 + w - 1, y1 - 1), color, max(1, thick))
    for i, s in enumerate(lines):
        _text(img, s, (x0 + pad, y0 + line_h * (i + 1) - int(4 * scale)), scale, WHITE, thick)


def _drawable(kp: np.ndarray, min_score: float, shape: tuple[int, ...]) -> np.ndarray:
    """(17,) bool: joints confident enough, finite and not absurdly far outside the frame (OpenCV
    takes 32-bit coordinates; a wild estimate is not drawn rather than crash the overlay)."""
    reach = 4.0 * max(shape[0], shape[1], 1)
    xy = kp[:, :2]
    with np.errstate(invalid="ignore"):
        return np.isfinite(xy).all(1) & (np.abs(xy) <= reach).all(1) & (kp[:, 2] >= min_score)


def draw_skeleton(img: np.ndarray, pose: Pose, color, thickness: int, min_score: float) -> None:
    kp = np.asarray(pose.kp17, dtype=np.float64)
    ok = _drawable(kp, min_score, img.shape)
    kp = np.where(ok[:, None], kp, 0.0)
    pts = np.round(kp[:, :2]).astype(np.int64)
    for a, b in COCO17_EDGES:
        if ok[a] and ok[b]:
            cv2.line(img, tuple(map(int, pts[a])), tuple(map(int, pts[b])), color, thickness, cv2.LINE_AA)
    radius = max(2, int(thickness * 1.4))
    for j in np.flatnonzero(ok):
        cv2.circle(img, tuple(map(int, pts[j])), radius, color, -1, cv2.LINE_AA)
        cv2.circle(img, tuple(map(int, pts[j])), radius, BLACK, 1, cv2.LINE_AA)


def _dancer_lines(track_id: int, info: Mapping | None) -> list[str]:
    lines = [f"#{track_id}"]
    if not info:
        return lines
    style = info.get("style")
    if style:
        prob = info.get("prob")
        lines[0] += f" {style}" + (f" {100 * float(prob):.0f}%" if prob is not None else "")
    sim = info.get("similarity")
    on_beat = info.get("on_beat")
    second = []
    if sim is not None:
        second.append(f"sim {float(sim):.2f}")
    if on_beat is not None:
        second.append(f"on-beat {100 * float(on_beat):.0f}%")
    if second:
        lines.append("  ".join(second))
    return lines


def draw_beat(img: np.ndarray, beat: Beat | None, t: float, scale: float, pulse_decay_s: float = 0.18) -> None:
    """Beat pulse and eight-count, top right."""
    H, W = img.shape[:2]
    thick = max(1, int(round(scale * 2)))
    r_max = int(22 * scale) + 6
    cx, cy = W - r_max - int(10 * scale) - 4, r_max + int(10 * scale) + 4
    since = (t - beat.t) if beat is not None else math.inf
    pulse = math.exp(-since / pulse_decay_s) if 0 <= since < 10 * pulse_decay_s else 0.0
    # ring always visible; the disc flashes on the beat
    cv2.circle(img, (cx, cy), r_max, WHITE, thick, cv2.LINE_AA)
    if pulse > 0.02:
        r = max(3, int(r_max * (0.55 + 0.45 * pulse)))
        level = int(80 + 175 * pulse)
        cv2.circle(img, (cx, cy), r, (0, level, 255), -1, cv2.LINE_AA)
    # eight-count boxes to the left of the pulse
    box = int(14 * scale) + 6
    gap = max(2, int(4 * scale))
    x_end = cx - r_max - int(10 * scale) - 4
    x0 = x_end - 8 * box - 7 * gap
    y0 = cy - box // 2
    count = int(beat.count) if beat is not None else 0
    for i in range(8):
        x = x0 + i * (box + gap)
        lit = (i + 1) == count
        fill = (0, 200, 255) if lit else (60, 60, 60)
        cv2.rectangle(img, (x, y0), (x + box, y0 + box), fill, -1)
        cv2.rectangle(img, (x, y0), (x + box, y0 + box), WHITE, 1)
        if lit:
            digit = 0.45 * scale + 0.1
            (dw, dh), _ = cv2.getTextSize(str(count), FONT, digit, 1)
            cv2.putText(img, str(count), (x + (box - dw) // 2, y0 + (box + dh) // 2), FONT, digit, BLACK, 1,
                        cv2.LINE_AA)
    if beat is not None:
        caption = f"count {count}/8   {beat.bpm:.0f} BPM"
    else:
        caption = "no beat yet"
    font = max(MIN_FONT, 0.55 * scale)
    (tw, _), _ = cv2.getTextSize(caption, FONT, font, 1)
    cx_text = int(min(x0, W - tw - 6))
    _text(img, caption, (max(cx_text, 2), y0 + box + int(20 * font) + 6), font, WHITE, max(1, thick // 2))


def draw_overlay(image: np.ndarray, poses: PoseFrame | None, beat: Beat | None = None,
                 feedback: Mapping[int, Mapping] | None = None, latency_ms: float | None = None, *,
                 t: float | None = None, style: OverlayStyle | None = None, copy: bool = True) -> np.ndarray:
    """The annotated frame (a copy unless ``copy=False``). ``t`` defaults to the PoseFrame's time."""
    style = style or OverlayStyle()
    img = np.ascontiguousarray(image).copy() if copy else image
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) == 0:
        raise ValueError(f"expected a BGR uint8 image (H, W, 3), got {img.shape} {img.dtype}")
    if not img.flags.c_contiguous:
        raise ValueError("draw_overlay(copy=False) draws in place and needs a C-contiguous image "
                         "(a slice such as image[:, ::2] is not); pass copy=True")
    H, W = img.shape[:2]
    # one size knob from the frame: 1.2 on 1280x720, ~0.6 on a 288x512 portrait clip
    scale = style.scale or float(np.clip(min(H / 720.0, W / 560.0) * 1.2, 0.5, 3.0))
    thick = max(2, int(round(2.5 * scale)))
    text_thick = max(1, int(round(scale * 1.2)))
    font = max(MIN_FONT, 0.5 * scale)      # Hershey text below ~0.4 is not legible
    feedback = feedback or {}
    if t is None:
        t = poses.t if poses is not None else (beat.t if beat is not None else 0.0)

    taken: list[tuple[int, int, int, int]] = []
    for pose in (poses.poses if poses is not None else []):
        color = track_color(pose.track_id)
        draw_skeleton(img, pose, color, thick, style.min_score)
        kp = np.asarray(pose.kp17, dtype=np.float64)
        ok = _drawable(kp, style.min_score, img.shape)
        box = np.asarray(pose.box, np.float64)
        box_ok = bool(np.isfinite(box).all() and (np.abs(box) <= 4.0 * max(H, W)).all())
        if style.show_boxes and box_ok:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(img, (x0, y0), (x1, y1), color, 1)
        if ok.any():
            top = kp[ok][:, 1].min()
            left = kp[ok][:, 0].min()
        elif box_ok:
            left, top = float(box[0]), float(box[1])
        else:
            continue                      # nothing to place the label by
        info = feedback.get(pose.track_id, feedback.get(str(pose.track_id)))
        _label(img, _dancer_lines(pose.track_id, info), (int(left), int(top - 8 * scale)),
               font, color, text_thick, taken)

    draw_beat(img, beat, t, scale, style.pulse_decay_s)

    hud = [f"dancers {len(poses.poses) if poses is not None else 0}"]
    if latency_ms is not None:
        hud.append(f"latency {latency_ms:.0f} ms")
    _label(img, ["   ".join(hud)], (int(8 * scale), H - int(8 * scale)), max(MIN_FONT, 0.55 * scale),
           WHITE, text_thick)
    return img


class Overlay:
    """Keeps the latest beat and cloud feedback so each frame can be drawn with one call.
    Feedback arrives on the link's I/O thread; `draw` reads a snapshot taken under the lock."""

    def __init__(self, style: OverlayStyle | None = None):
        self.style = style or OverlayStyle()
        self.beat: Beat | None = None
        self.feedback: dict[int, dict] = {}
        self.latency_ms: float | None = None
        self._lock = threading.Lock()

    def on_beat(self, beat: Beat) -> None:
        self.beat = beat

    def on_feedback(self, track_id: int, **fields) -> None:
        with self._lock:
            self.feedback[int(track_id)] = {**self.feedback.get(int(track_id), {}), **fields}

    def draw(self, image: np.ndarray, poses: PoseFrame | None, latency_ms: float | None = None,
             t: float | None = None) -> np.ndarray:
        if latency_ms is not None:
            self.latency_ms = latency_ms
        with self._lock:
            feedback = dict(self.feedback)      # values are replaced, never changed in place
        return draw_overlay(image, poses, self.beat, feedback, self.latency_ms, t=t, style=self.style)
