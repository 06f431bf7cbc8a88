"""Unit tests of the vision parts that need no model: anchors, NMS, decoding, ROI geometry,
tracker, one-euro filter, cleaning, quality filters, settings.

The two small `Engine`s below return crafted tensors (one anchor fired with known offsets; a
landmark at the brightest crop pixel) so that the decoding and the crop geometry can be
checked against exact expected values. The real models run in test_vision_real.py."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge.engines.base import Engine, TensorSpec
from edge.records import Pose, PoseFrame
from edge.vision.blazepose_detector import BlazePoseDetector, iou_matrix, ssd_anchors, weighted_nms
from edge.vision.blazepose_landmarks import (BLAZEPOSE_TO_COCO17, BlazePoseLandmarks, Roi,
                                             roi_from_points)
from edge.vision.cleaning import PoseCleaner
from edge.vision.quality import QualityFilter
from edge.vision.settings import VisionSettings
from edge.vision.smoothing import OneEuroFilter, PoseSmoother
from edge.vision.tracker import ByteTracker


# ---------------------------------------------------------------------------- detector

def test_anchor_count_and_layout():
    a = ssd_anchors()
    assert a.shape == (2254, 4)
    # stride 8: 28x28 cells x 2 anchors first, centres at (x + 0.5) / 28
    assert np.allclose(a[0], [0.5 / 28, 0.5 / 28, 1, 1])
    assert np.allclose(a[2], [1.5 / 28, 0.5 / 28, 1, 1])
    # last layers: stride 32 -> 7x7 cells x 6 anchors
    assert np.allclose(a[-1], [6.5 / 7, 6.5 / 7, 1, 1])
    assert (a[:, 2:] == 1).all()


def test_weighted_nms_merges_overlaps_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.6, 0.8])
    kps = np.array([[[0, 0]], [[10, 0]], [[55, 55]]], float)
    b, s, k = weighted_nms(boxes, scores, kps, iou_threshold=0.3)
    assert len(b) == 2
    assert s.tolist() == [0.9, 0.8]                       # score of the best of each group
    assert np.allclose(b[0], [0.4, 0, 10.4, 10])          # (0.9 * 0 + 0.6 * 1) / 1.5
    assert np.allclose(k[0, 0], [4.0, 0])                 # (0.9 * 0 + 0.6 * 10) / 1.5
    assert np.allclose(b[1], boxes[2])


def test_weighted_nms_keeps_disjoint_and_empty():
    b, s, k = weighted_nms(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4, 2)))
    assert b.shape == (0, 4) and s.shape == (0,) and k.shape == (0, 4, 2)
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    b, s, _ = weighted_nms(boxes, np.array([0.5, 0.7]), np.zeros((2, 1, 2)))
    assert s.tolist() == [0.7, 0.5] and np.allclose(b, boxes[::-1])


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert np.allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


class FakeDetector(Engine):
    """Scores one anchor high, with a chosen raw box and keypoints."""

    def __init__(self, anchor: int, raw: np.ndarray, nchw: bool = True):
        self.anchor, self.raw, self.nchw = anchor, raw, nchw
        self.seen = []

    @property
    def inputs(self):
        shape = (None, 3, 224, 224) if self.nchw else (1, 224, 224, 3)
        return [TensorSpec("image", shape, np.dtype(np.float32))]

    @property
    def outputs(self):
        return [TensorSpec("boxes", (None, 2254, 12), np.dtype(np.float32)),
                TensorSpec("scores", (None, 2254, 1), np.dtype(np.float32))]

    def run(self, feeds):
        x = feeds["image"]
        self.seen.append(x)
        n = len(x)
        boxes = np.zeros((n, 2254, 12), np.float32)
        scores = np.full((n, 2254, 1), -10.0, np.float32)
        boxes[:, self.anchor] = self.raw
        scores[:, self.anchor] = 3.0
        return {"boxes": boxes, "scores": scores}


@pytest.mark.parametrize("nchw", [True, False])
def test_detector_decodes_anchor_offsets_and_removes_letterbox(nchw):
    anchors = ssd_anchors()
    i = 1568 + 2 * (7 * 14 + 7)                 # stride-16 layer, cell (7, 7): centre (112, 112) px
    assert np.allclose(anchors[i, :2] * 224, [120, 120])
    raw = np.zeros(12, np.float32)
    raw[:4] = [4, -8, 40, 60]                   # x, y offsets and w, h in 224-px units
    raw[4:6] = [0, 20]                          # keypoint 0 relative to the anchor
    engine = FakeDetector(i, raw, nchw)
    det = BlazePoseDetector(engine)
    image = np.full((100, 200, 3), 50, np.uint8)     # 2:1 -> scale 1.12, 56 px of border top and bottom
    (d,) = det(image)
    x = engine.seen[0]
    assert x.shape == ((1, 3, 224, 224) if nchw else (1, 224, 224, 3))
    chan_last = x[0].transpose(1, 2, 0) if nchw else x[0]
    assert np.isclose(chan_last[0, 0, 0], -1.0)       # black border -> -1
    assert np.isclose(chan_last[112, 112, 0], 50 / 127.5 - 1, atol=1e-5)
    s = 224 / 200
    cx, cy = (120 + 4) / s, (120 - 8 - 56) / s
    assert np.allclose(d.box, [cx - 20 / s, cy - 30 / s, cx + 20 / s, cy + 30 / s], atol=1e-3)
    assert np.allclose(d.keypoints[0], [120 / s, (120 + 20 - 56) / s], atol=1e-3)
    assert d.score == pytest.approx(1 / (1 + math.exp(-3)))


def test_detector_tiles_wide_frames():
    engine = FakeDetector(0, np.zeros(12, np.float32))
    det = BlazePoseDetector(engine, tiles=True, tile_ratio=2.0, tile_overlap=0.25)
    regions = det.regions(1900, 500)
    assert regions[0] == (0, 0, 500, 500) and regions[-1] == (1400, 0, 1900, 500)
    assert all(r[2] - r[0] == 500 for r in regions)
    starts = [r[0] for r in regions]
    assert max(np.diff(starts)) <= 375                # at least 25 % overlap
    assert det.regions(1280, 720) == [(0, 0, 1280, 720)]
    det(np.zeros((500, 1900, 3), np.uint8))
    assert len(engine.seen[0]) == len(regions)        # all tiles in one batch


# ---------------------------------------------------------------------------- ROI geometry

def test_roi_from_points_rotation_and_size():
    up = roi_from_points(np.array([100, 200]), np.array([100, 100]), scale=1.25)
    assert up.rotation == pytest.approx(0.0)
    assert up.size == pytest.approx(2 * 100 * 1.25)
    assert (up.cx, up.cy) == (100, 200)
    right = roi_from_points(np.array([0, 0]), np.array([50, 0]), scale=1.0)
    assert right.rotation == pytest.approx(math.pi / 2)
    # the crop's "up" (top centre) maps to the side the second point is on
    top_centre = np.array([128, 0, 1.0]) @ right.to_frame(256).T
    assert np.allclose(top_centre, [50, 0], atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_roi_round_trip(seed):
    rng = np.random.default_rng(seed)
    roi = Roi(*rng.uniform(50, 400, 2), rng.uniform(40, 300), rng.uniform(-math.pi, math.pi))
    crop_pts = rng.uniform(0, 256, (10, 2))
    a, b = roi.to_frame(256), roi.from_frame(256)
    frame_pts = crop_pts @ a[:, :2].T + a[:, 2]
    back = frame_pts @ b[:, :2].T + b[:, 2]
    assert np.allclose(back, crop_pts, atol=1e-9)
    assert np.allclose(np.linalg.norm(frame_pts[0] - frame_pts[1]),
                       np.linalg.norm(crop_pts[0] - crop_pts[1]) * roi.size / 256)


class FakeLandmarks(Engine):
    """Returns landmarks at the brightest crop pixel, to check the crop and its inverse."""

    def __init__(self):
        self.batches = []

    @property
    def inputs(self):
        return [TensorSpec("image", (None, 3, 256, 256), np.dtype(np.float32))]

    @property
    def outputs(self):
        return [TensorSpec("landmarks", (None, 195), np.dtype(np.float32)),
                TensorSpec("pose_flag", (None, 1), np.dtype(np.float32))]

    def run(self, feeds):
        x = feeds["image"]
        self.batches.append(len(x))
        out = np.zeros((len(x), 39, 5), np.float32)
        for i, img in enumerate(x):
            y, xx = np.unravel_index(np.argmax(img[0]), img[0].shape)   # red channel
            out[i, :, 0], out[i, :, 1] = xx + 0.5, y + 0.5
            out[i, :, 3:] = 5.0
        return {"landmarks": out.reshape(len(x), 195), "pose_flag": np.full((len(x), 1), 0.9, np.float32)}


def test_landmark_crop_and_inverse_in_one_batch():
    image = np.zeros((480, 640, 3), np.uint8)
    image[300:303, 200:203, 2] = 255          # a red dot (BGR) near (201, 301)
    image[100:103, 500:503, 2] = 255          # and one near (501, 101)
    rois = [Roi(210, 290, 120, 0.4), Roi(480, 120, 150, -1.0)]
    engine = FakeLandmarks()
    results = BlazePoseLandmarks(engine)(image, rois)
    assert engine.batches == [2]               # both people in one batch
    # each crop's brightest pixel maps back onto its dot (within the resampling blur)
    assert np.allclose(results[0].points[0], [201.5, 301.5], atol=1.5)
    assert np.allclose(results[1].points[0], [501.5, 101.5], atol=1.5)
    assert results[0].visibility[0] == pytest.approx(1 / (1 + math.exp(-5)))
    assert results[0].flag == pytest.approx(0.9)
    kp = results[0].coco17()
    assert kp.shape == (17, 3)


def test_coco17_mapping_indices():
    assert BLAZEPOSE_TO_COCO17.tolist() == [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


# ---------------------------------------------------------------------------- tracker

def _box(cx, cy, w=40, h=100):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_tracker_keeps_ids_through_crossing_and_occlusion():
    """A walks right, B walks left; they cross. While they overlap B's box is weak (low score,
    ByteTrack's second association) and for 6 frames B is hidden behind A altogether."""
    tracker = ByteTracker(buffer_frames=30)
    ids_a, ids_b = set(), set()
    b_seen_after = False
    for f in range(60):
        xa, xb = 100 + 5 * f, 400 - 5 * f
        boxes, scores = [_box(xa, 200)], [0.95]
        hidden = 27 <= f < 33
        overlapped = abs(xa - xb) <= 40
        if not hidden:
            boxes.append(_box(xb, 205))
            scores.append(0.3 if overlapped else 0.9)
        out = dict((di, tid) for tid, di in tracker.update(np.array(boxes), np.array(scores)))
        assert 0 in out, f"frame {f}: A not tracked"
        ids_a.add(out[0])
        if f < 27:
            assert 1 in out, f"frame {f}: B not tracked"            # weak boxes keep B alive
        if f >= 27 and not hidden and not overlapped:
            assert 1 in out, f"frame {f}: B not recovered"          # back from the lost pool
            b_seen_after = True
        if 1 in out:
            ids_b.add(out[1])
    assert b_seen_after
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_tracker_recovers_a_dancer_who_stopped_while_hidden():
    """Moving right, hidden for 20 frames, back where they vanished: the Kalman prediction has
    drifted 100 px away, the last observed box still matches."""
    tracker = ByteTracker(buffer_frames=30)
    for f in range(20):
        assert tracker.update(np.array([_box(100 + 5 * f, 200)]), np.array([0.9])) == [(1, 0)]
    for _ in range(20):
        assert tracker.update(np.zeros((0, 4)), np.zeros(0)) == []
    assert tracker.update(np.array([_box(195, 200)]), np.array([0.9])) == [(1, 0)]
    assert tracker.update(np.array([_box(195, 200)]), np.array([0.9])) == [(1, 0)]   # and it stays put


@pytest.mark.parametrize("seed", range(3))
def test_a_lost_track_never_takes_the_box_of_a_dancer_still_tracked_there(seed):
    """B stands at x=300 for 10 frames and leaves; A walks there and stops. B's lost track fits A's
    box by its last box better than A's own overshooting prediction: pooled, the two ids swapped
    on A about every third frame for the whole buffer and beyond."""
    rng = np.random.default_rng(seed)
    tracker = ByteTracker(buffer_frames=45, min_hits=3)
    ids_a = []
    for f in range(200):
        boxes = [np.array(_box(min(60 + 8 * f, 300), 300, 120, 330)) + rng.normal(0, 2, 4)]
        if f < 10:
            boxes.append(np.array(_box(300, 300, 120, 330)) + rng.normal(0, 2, 4))
        out = {di: tid for tid, di in tracker.update(np.array(boxes), np.full(len(boxes), 0.95))}
        ids_a.append(out.get(0))
    assert set(ids_a) == {1}
    assert [t.track_id for t in tracker.tracks] == [1]      # B's lost track expired


def test_tracker_new_tracks_need_confirmation_and_expire():
    tracker = ByteTracker(buffer_frames=3, min_hits=2)
    assert tracker.update(np.array([_box(100, 100)]), np.array([0.9])) == [(1, 0)]   # first frame: at once
    out = tracker.update(np.array([_box(100, 100), _box(300, 100)]), np.array([0.9, 0.9]))
    assert out == [(1, 0)]                               # the newcomer is not confirmed yet
    out = tracker.update(np.array([_box(100, 100), _box(300, 100)]), np.array([0.9, 0.9]))
    assert out == [(1, 0), (2, 1)]
    for _ in range(5):
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert tracker.tracks == []                          # lost longer than the buffer
    out = tracker.update(np.array([_box(100, 100)]), np.array([0.9]))
    assert out == []                                     # a new id (3), unconfirmed for one frame
    assert tracker.update(np.array([_box(100, 100)]), np.array([0.9])) == [(3, 0)]


def test_tracker_ignores_low_scores_for_new_tracks():
    tracker = ByteTracker()
    assert tracker.update(np.array([_box(100, 100)]), np.array([0.4])) == []
    assert tracker.tracks == []


# ---------------------------------------------------------------------------- smoothing

def test_one_euro_reduces_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30
    for sigma, ratio in ((2.0, 0.8), (0.5, 0.5)):        # 1 % and 0.25 % of a 200-px body
        noise = rng.normal(0, sigma, len(t))
        f = OneEuroFilter(min_cutoff=0.05, beta=80, d_cutoff=1.0)
        still = np.array([f(ti, np.array([100 + n]), 1 / 200)[0] for ti, n in zip(t, noise)])
        assert np.std(still[30:] - 100) < ratio * np.std(noise[30:])
    f = OneEuroFilter(min_cutoff=0.05, beta=80, d_cutoff=1.0)
    ramp = 100 + 200 * t                      # one body scale (200 px) per second
    moving = np.array([f(ti, np.array([r]), 1 / 200)[0] for ti, r in zip(t, ramp)])
    lag = np.abs(moving[60:] - ramp[60:]).mean()
    slow = OneEuroFilter(min_cutoff=0.05, beta=0.0)
    still_lag = np.abs(np.array([slow(ti, np.array([r]))[0] for ti, r in zip(t, ramp)])[60:] - ramp[60:]).mean()
    assert lag < 15 and lag < 0.1 * still_lag  # speed opens the cutoff


def test_one_euro_is_scale_invariant_with_object_scale():
    rng = np.random.default_rng(1)
    t = np.arange(50) / 25
    x = np.cumsum(rng.normal(0, 3, 50))
    a, b = OneEuroFilter(), OneEuroFilter()
    ya = [a(ti, np.array([xi]), 1 / 100)[0] for ti, xi in zip(t, x)]
    yb = [b(ti, np.array([3 * xi]), 1 / 300)[0] for ti, xi in zip(t, x)]
    assert np.allclose(3 * np.array(ya), yb)


def test_pose_smoother_per_track_and_reset():
    sm = PoseSmoother(score_alpha=0.1, reset_s=0.3)
    kp = np.zeros((17, 3))
    kp[:, 2] = 1.0
    sm(1, 0.0, kp, 100)
    kp2 = kp.copy()
    kp2[:, 2] = 0.0
    out = sm(1, 0.04, kp2, 100)
    assert np.allclose(out[:, 2], 0.9)           # low-passed score
    other = sm(2, 0.04, kp2, 100)                # another track starts fresh
    assert np.allclose(other[:, 2], 0.0)
    out = sm(1, 1.0, kp2, 100)                   # long gap: filters restart
    assert np.allclose(out[:, 2], 0.0)


# ---------------------------------------------------------------------------- cleaning

def _pose(tid, t, x0, jump=None):
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = x0 + np.arange(17) * 3
    kp[:, 1] = 100 + np.arange(17) * 10
    kp[:, 2] = 0.9
    if jump is not None:
        kp[jump, 0] += 400
    box = np.array([kp[:, 0].min(), kp[:, 1].min(), kp[:, 0].max(), kp[:, 1].max()], np.float32)
    return Pose(tid, t, kp, box, 0.99)


def _run_cleaner(cleaner, frames):
    live, final = [], []
    for i, poses in enumerate(frames):
        pf = PoseFrame(i, i / 25, 640, 480, poses)
        live.append(cleaner.live(pf))
        final.extend(cleaner.pop_final())
    final.extend(cleaner.flush())
    return live, final


def test_cleaning_rejects_a_jump_and_fills_it_by_spline():
    cleaner = PoseCleaner(jump_max=0.35, max_rejects=2, max_gap=4, delay=5, context=4)
    frames = [[_pose(1, i / 25, 100 + 4 * i, jump=9 if i == 10 else None)] for i in range(20)]
    live, final = _run_cleaner(cleaner, frames)
    # live: the wrist (9) in frame 10 is held at its frame-9 position with score 0, reported filled
    p = live[10].poses[0]
    assert p.filled is not None and p.filled[9] and p.filled.sum() == 1
    assert p.kp17[9, 2] == 0.0 and p.kp17[9, 0] == pytest.approx(100 + 4 * 9 + 27)
    # final: the gap is interpolated onto the true straight line, flagged, score restored
    assert [f.index for f in final] == list(range(20))
    q = final[10].poses[0]
    assert q.filled[9] and q.filled.sum() == 1
    assert q.kp17[9, 0] == pytest.approx(100 + 4 * 10 + 27, abs=1e-3)
    assert q.kp17[9, 2] == pytest.approx(0.9)
    assert all(not f.poses[0].filled.any() for i, f in enumerate(final) if i != 10)
    assert cleaner.rejected_total == 1 and cleaner.filled_total == 1


def test_cleaning_reinserts_a_missed_pose_and_leaves_long_gaps():
    cleaner = PoseCleaner(max_gap=3, delay=4)
    frames = []
    for i in range(30):
        missing = i in (5, 6) or 15 <= i < 22            # a 2-frame gap and a 7-frame gap
        frames.append([] if missing else [_pose(1, i / 25, 100 + 2 * i)])
    _, final = _run_cleaner(cleaner, frames)
    by_index = {f.index: f for f in final}
    for i in (5, 6):
        (p,) = by_index[i].poses
        assert p.filled.all()
        assert p.kp17[0, 0] == pytest.approx(100 + 2 * i, abs=1e-3)
    for i in range(15, 22):
        assert by_index[i].poses == []                   # too long: not invented


def test_cleaning_releases_a_frame_as_soon_as_it_is_final():
    """A clean stream is not delayed; a gap holds frames from its start until it closes,
    and a gap that never closes holds them `delay` frames at most."""
    cleaner = PoseCleaner(max_gap=4, delay=5)
    released_at = {}
    for i in range(30):
        missing = i in (10, 11) or i >= 20                # a 2-frame gap, then the dancer leaves
        cleaner.live(PoseFrame(i, i / 25, 640, 480, [] if missing else [_pose(1, i / 25, 100 + 2 * i)]))
        for f in cleaner.pop_final():
            released_at[f.index] = i
    assert all(released_at[i] == i for i in range(10))             # no delay while clean
    assert [released_at[i] for i in (10, 11)] == [12, 12]          # held until the dancer is back
    assert all(released_at[i] == i for i in range(12, 20))
    assert released_at[20] == 25                                   # never back: `delay` frames late


def test_cleaning_accepts_a_real_move_after_two_rejections():
    """Ban: after two rejected frames the joint is compared with the previous raw frame."""
    cleaner = PoseCleaner(jump_max=0.35, max_rejects=2, max_gap=4, delay=5)
    frames = []
    for i in range(12):
        p = _pose(1, i / 25, 100)
        if i >= 4:
            p.kp17[9, 0] += 400                           # the wrist really moved and stays there
        frames.append([p])
    live, _ = _run_cleaner(cleaner, frames)
    flags = [bool(f.poses[0].filled is not None and f.poses[0].filled[9]) for f in live]
    assert flags[4] and flags[5] and not any(flags[6:])


@pytest.mark.parametrize("step", [2, 3])
def test_cleaning_counts_the_frames_it_gets_not_the_cameras_index(step):
    """A rig slower than its camera: the leaky queue drops frames, so Frame.index skips `step` at a
    time. A dancer missed in one or two processed frames is re-inserted all the same."""
    for miss in ({10}, {10, 11}):
        cleaner = PoseCleaner(max_gap=4, delay=5)
        final = []
        for k in range(30):
            i = k * step
            pf = PoseFrame(i, i / 30, 640, 480, [] if k in miss else [_pose(1, i / 30, 100 + 2 * k)])
            cleaner.live(pf)
            final.extend(cleaner.pop_final())
        final.extend(cleaner.flush())
        by_index = {f.index: f for f in final}
        assert all(len(by_index[k * step].poses) == 1 and by_index[k * step].poses[0].filled.all() for k in miss)


def test_cleaning_holds_the_last_accepted_joint_through_a_long_run_of_rejections():
    """A wrist flipping between two far places for 20 frames: the final stream holds the last accepted
    position with score 0, as the live one does (the 9-sample history ran out and the raw jump leaked)."""
    cleaner = PoseCleaner()
    frames = []
    for i in range(40):
        p = _pose(1, i / 25, 100)
        if 10 <= i < 30:
            p.kp17[9, :2] = (600, 100) if i % 2 else (100, 450)
        frames.append([p])
    live, final = _run_cleaner(cleaner, frames)
    want = _pose(1, 0, 100).kp17[9, :2]
    for f in final[10:30]:
        assert f.poses[0].kp17[9, :2] == pytest.approx(want) and f.poses[0].kp17[9, 2] == 0.0
    assert all(f.poses[0].kp17[9, :2] == pytest.approx(want) for f in live[10:30])


def test_cleaning_forgets_tracks_that_are_gone():
    cleaner = PoseCleaner()
    for i in range(600):                                   # a new track every 10 frames, 60 of them
        cleaner.live(PoseFrame(i, i / 30, 640, 480, [_pose(1 + i // 10, i / 30, 100)]))
        cleaner.pop_final()
    assert len(cleaner._live) <= 2 and len(cleaner._hist) <= 2 and len(cleaner._held) <= 2


# ---------------------------------------------------------------------------- quality

def test_quality_filter_drops_weak_poses():
    good, weak = _pose(1, 0, 100), _pose(2, 0, 300)
    weak.kp17[:, 2] = 0.3
    pf = QualityFilter(0.15, 0.5)(PoseFrame(0, 0.0, 640, 480, [good, weak]))
    assert [p.track_id for p in pf.poses] == [1]


def test_settings_load_from_overrides():
    from dancewire.config import load

    s = load(VisionSettings, overrides=["detector_period=5", "clean=false", "jump_max=0.5"])
    assert s.detector_period == 5 and s.clean is False and s.jump_max == 0.5


def test_stage_rejects_bad_frames_with_a_clear_error():
    from dancewire.errors import BadInputError
    from edge.records import Frame
    from edge.vision.stage import PoseStage

    stage = PoseStage(VisionSettings(), FakeDetector(0, np.zeros(12, np.float32)), FakeLandmarks())
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 5, 3), np.uint8), None):
        with pytest.raises(BadInputError, match="BGR uint8"):
            stage(Frame(0, 0.0, bad))


# ---------------------------------------------------------------------------- non-finite engine outputs

class _OneDancerDetector(FakeDetector):
    """One good anchor at the frame centre and, with `bad`, a second one with a non-finite box."""

    def __init__(self, bad: float | None = None):
        raw = np.zeros(12, np.float32)
        raw[:4] = [0, 0, 40, 80]
        raw[4:8] = [0, 0, 0, -35]
        super().__init__(1568 + 2 * (7 * 14 + 7), raw)
        self.bad = bad

    def run(self, feeds):
        out = super().run(feeds)
        if self.bad is not None:
            out["boxes"][:, 1568 + 2 * (3 * 14 + 3), :] = self.bad
            out["scores"][:, 1568 + 2 * (3 * 14 + 3)] = 3.0
        return out


class _FigureLandmarks(FakeLandmarks):
    """The same upright figure in every crop; `nan_at`: the call whose first visibility is NaN."""

    def __init__(self, nan_at: int | None = None):
        super().__init__()
        self.nan_at, self.calls = nan_at, 0

    def run(self, feeds):
        n = len(feeds["image"])
        out = np.zeros((n, 39, 5), np.float32)
        out[:, :33, 0] = 128 + np.random.default_rng(0).uniform(-30, 30, 33)
        out[:, :33, 1] = np.linspace(40, 220, 33)
        out[:, 33], out[:, 34, :2] = (128, 128, 0, 0, 0), (128, 128 - 102.4)
        out[:, :, 3:] = 5.0
        if self.calls == self.nan_at:
            out[0, 15, 3] = np.nan                        # one wrist's visibility logit (an fp16 overflow)
        self.calls += 1
        return {"landmarks": out.reshape(n, 195), "pose_flag": np.full((n, 1), 0.95, np.float32)}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_detector_box_is_no_detection(bad):
    """An anchor with a good score and a NaN (or inf) box survived NMS: its keypoints made the ROI
    maths raise ValueError on every frame, and the pose stage stopped."""
    from edge.records import Frame
    from edge.vision.settings import VisionSettings
    from edge.vision.stage import PoseStage

    stage = PoseStage(VisionSettings(), _OneDancerDetector(bad), _FigureLandmarks())
    image = np.full((480, 640, 3), 90, np.uint8)
    poses = [len(stage(Frame(i, i / 30, image)).poses) for i in range(5)]
    assert poses[-1] == 1


def test_one_nan_score_from_the_landmark_model_does_not_lose_the_dancer():
    """One NaN visibility stayed in the score low-pass for good, and the quality filter then dropped
    every pose of the dancer for as long as they stayed in view."""
    from edge.records import Frame
    from edge.vision.settings import VisionSettings
    from edge.vision.stage import PoseStage

    stage = PoseStage(VisionSettings(), _OneDancerDetector(), _FigureLandmarks(nan_at=5))
    image = np.full((480, 640, 3), 90, np.uint8)
    live, final = [], []
    for i in range(40):
        live.append(len(stage(Frame(i, i / 30, image)).poses))
        final += stage.cleaned()
    final += stage.flush()
    assert sum(live[10:]) == 30 and sum(len(f.poses) for f in final[10:]) == len(final[10:])


def test_a_thin_frame_runs_the_detector_on_a_bounded_number_of_tiles():
    det = BlazePoseDetector(FakeDetector(0, np.zeros(12, np.float32)), tiles=True)
    assert len(det.regions(600, 3)) == det.MAX_TILES == len(det.regions(3, 600))   # were 267
    r = det.regions(600, 3)
    assert r[0][0] == 0 and r[-1][2] == 600                      # still covering the frame
