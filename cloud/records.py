"""Cloud-side typed records: what comes in (windows, beat grids), what goes out (results, feedback).

The wire (``proto``) is decoded into these by the service's adapter; every layer below it
(gallery, classifier, scores, aggregator, store, API) speaks only these records, so it can be
built, tested and benchmarked without a network.

Times: ``t0``/``t1`` are media seconds on the node's clock. ``arrival`` is the cloud's wall
clock (unix seconds) when the window arrived; ``stamps`` maps a cloud stage to the
``time.perf_counter()`` at which it finished with the record (latency statistics read them).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np


def _part(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2F")


def dancer_key(node_id: str, session_id: str, track_id: int) -> str:
    """A dancer is a track on one node within one session: "node/session/track", with '%' and '/'
    in the ids escaped as in URLs (so node "a/b" + session "c" and node "a" + session "b/c" stay two
    dancers; ids without them, as every id before, keep their key)."""
    return f"{_part(node_id)}/{_part(session_id)}/{int(track_id)}"


@dataclass
class WindowIn:
    """One dancer over one window, as the edge sent it (embedding L2-normalised float32)."""
    node_id: str
    session_id: str
    track_id: int
    seq: int
    t0: float
    t1: float
    embedding: np.ndarray
    rhythm: dict[str, float] = field(default_factory=dict)
    pose_quality: float = 1.0
    epoch: int = 0
    arrival: float = field(default_factory=time.time)
    stamps: dict[str, float] = field(default_factory=dict)

    @property
    def dancer(self) -> str:
        return dancer_key(self.node_id, self.session_id, self.track_id)

    @property
    def t_mid(self) -> float:
        return 0.5 * (self.t0 + self.t1)


@dataclass
class BeatGridIn:
    """The music heard by a node over [t0, t1]: beats (with their 1..8 count) and onsets."""
    node_id: str
    session_id: str
    seq: int
    t0: float
    t1: float
    bpm: float
    confidence: float
    beats: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    onsets: list[float] = field(default_factory=list)
    epoch: int = 0             # the spool epoch `seq` counts in (a fresh spool numbers from 1 again)


@dataclass
class Reference:
    """One enrolled reference window. Labels: style (genre), routine (choreography), group.

    ``video`` names the reference recording the window was cut from (Tong's video level);
    ``phrase`` is the eight-count index within the routine (-1 if unknown); ``score`` a
    labelled performance score (NaN if none).
    """
    ref_id: str
    style: str
    routine: str = ""
    group: str = ""
    video: str = ""
    t0: float = 0.0
    t1: float = 0.0
    phrase: int = -1
    score: float = math.nan


@dataclass
class Neighbor:
    """A nearest reference at one of Tong's levels: a reference video, or a group.

    ``score`` is a cosine similarity in [-1, 1]: for a video, the best cosine between the
    window and any of that video's reference windows; for a group, the best cosine of any of
    its videos among the top-k neighbours.
    """
    ref_id: str
    label: str
    score: float


@dataclass
class Classification:
    """Style probabilities for one window and its nearest references."""
    probs: dict[str, float]              # style -> calibrated probability (sums to 1)
    style: str                           # argmax of probs
    confidence: float                    # probs[style]
    nearest: list[Neighbor]              # nearest reference videos (label: "group/routine")
    nearest_groups: list[Neighbor]       # nearest groups (label: group name)
    top_cosine: float                    # cosine of the nearest reference window
    knn_probs: dict[str, float] = field(default_factory=dict)
    proto_probs: dict[str, float] = field(default_factory=dict)


@dataclass
class WindowResult:
    """Everything the cloud says about one window, after aggregation."""
    window: WindowIn
    cls: Classification | None
    stable_style: str = ""               # per-dancer label after hysteresis ("" until one is stable)
    stable_confidence: float = 0.0       # smoothed probability of the stable label
    smoothed: dict[str, float] = field(default_factory=dict)   # per-dancer smoothed probabilities
    scores: dict[str, float] = field(default_factory=dict)     # see cloud.scores for each name's meaning
    phrase: int = -1                     # eight-count index in the session (from the node's beats), -1 unknown
    count: int = 0                       # beat count 1..8 at the window's middle, 0 unknown
    late: bool = False                   # arrived after newer windows had moved past its horizon

    def to_json(self) -> dict:
        w = self.window
        out = {
            "type": "window", "node": w.node_id, "session": w.session_id, "dancer": w.dancer,
            "track": int(w.track_id), "seq": int(w.seq), "t0": round(w.t0, 3), "t1": round(w.t1, 3),
            "arrival": w.arrival, "rhythm": {k: _r(v) for k, v in w.rhythm.items()},
            "pose_quality": _r(w.pose_quality),
            "stable_style": self.stable_style, "stable_confidence": _r(self.stable_confidence),
            "smoothed": {k: _r(v) for k, v in self.smoothed.items()},
            "scores": {k: _r(v) for k, v in self.scores.items()},
            "phrase": self.phrase, "count": self.count, "late": self.late,
        }
        if self.cls is not None:
            out.update({
                "style": self.cls.style, "confidence": _r(self.cls.confidence),
                "probs": {k: _r(v) for k, v in self.cls.probs.items()},
                "nearest": [asdict(n) | {"score": _r(n.score)} for n in self.cls.nearest],
                "nearest_groups": [asdict(n) | {"score": _r(n.score)} for n in self.cls.nearest_groups],
            })
        return out


@dataclass
class DancerFeedbackOut:
    track_id: int
    seq: int
    t0: float
    t1: float
    styles: dict[str, float]
    style: str
    confidence: float
    nearest: list[Neighbor]
    nearest_groups: list[Neighbor]
    scores: dict[str, float]


@dataclass
class FeedbackOut:
    """Results for one node's session, sent back to the rig (the service converts it to proto)."""
    node_id: str
    session_id: str
    dancers: list[DancerFeedbackOut]
    t_us: int = field(default_factory=lambda: int(time.time() * 1e6))


def _r(v, nd: int = 4):
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v):
        return None
    return round(v, nd)
