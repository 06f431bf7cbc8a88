"""Aggregation over time: per dancer (with hysteresis), per group (all dancers of a session), per session.

Per dancer: the smoothed style distribution is the weighted mean of the classified windows
whose middle lies within ``horizon_s`` (media time) of the dancer's newest window, weight
exp(-(t_newest - t) / tau_s). It is recomputed from the buffered windows each time, so the
result does not depend on the order in which windows arrive; a window older than the horizon
when it arrives is "late": it still counts per session, but no longer moves the live label.
Duplicates (same node, epoch and seq) are ignored. A newer window (higher seq) whose media time
lies more than ``horizon_s`` before the dancer's newest means its rig restarted into the session
(a rig's clock starts at 0): the live buffer starts afresh instead of taking every window as late.

Hysteresis: the stable label changes to a new style only when that style's smoothed
probability reaches ``enter_threshold`` and beats the current label's by ``switch_margin`` on
``switch_hold`` consecutive updates; the first label needs the threshold and the hold. So a
dancer who keeps dancing the same style keeps one label, and a real change shows after
about ``switch_hold`` windows.

Per group: the mean smoothed distribution over the session's dancers that are active (a
window within ``dancer_timeout_s`` wall seconds), and how many dancers carry each label.
Per session: the distribution averaged over every window (late ones too), the media time
each stable label was held, window/dancer counts and mean scores.
"""
from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cloud.gallery import Gallery
from cloud.records import BeatGridIn, Classification, DancerFeedbackOut, FeedbackOut, WindowIn, WindowResult
from cloud.scores import GaussianScoreHead, routine_match
from cloud.settings import AggregateSettings

DEFAULT_PHRASE_S = 4.0     # eight-count length assumed when a node sends no beats (8 beats at 120 BPM)


def _eightcount_order(key: int) -> tuple[bool, int]:
    """A dancer's eight-count keys in time order: the time buckets before any downbeat (-1 - b),
    then the session's eight-counts."""
    return (key >= 0, key if key >= 0 else -1 - key)


MAX_SEEN = 4096
log = logging.getLogger(__name__)


@dataclass
class DancerState:
    key: str
    node_id: str
    session_id: str
    track_id: int
    buffer: list = field(default_factory=list)          # [(t_mid, seq, probs ndarray)], sorted by t_mid
    newest_t: float = -math.inf
    seen: deque = field(default_factory=lambda: deque(maxlen=MAX_SEEN))
    seen_set: set = field(default_factory=set)
    stable: str = ""
    stable_conf: float = 0.0
    candidate: str = ""
    candidate_count: int = 0
    smoothed: np.ndarray | None = None
    sum_probs: np.ndarray | None = None
    windows: int = 0
    late: int = 0
    label_time: dict = field(default_factory=dict)      # stable label -> media seconds held
    last_label_t: float | None = None
    last_arrival: float = 0.0
    first_arrival: float = 0.0
    last_seq: int = -1
    last_epoch: int | None = None                       # the spool epoch last_seq counts in
    run_epoch: int | None = None                        # the epoch and seq the rig's clock last started
    run_seq: int = 0                                    # again at: windows from before are on the old clock
    old_epochs: list = field(default_factory=list)      # spool epochs this dancer's windows came in before
    routine_votes: dict = field(default_factory=dict)   # routine -> summed neighbour cosine
    last_routine_phrase: int | None = None
    eightcounts: dict = field(default_factory=dict)     # session phrase -> [sum score, n, routine phrase]
    score_sums: dict = field(default_factory=dict)      # score name -> [sum, n]
    latest: dict = field(default_factory=dict)          # latest per-window scores and rhythm


@dataclass
class BeatGrid:
    """One node's beats in a session, on that node's media clock (each rig's clock is its own)."""
    beats: list = field(default_factory=list)           # sorted (t, count)
    downbeats: list = field(default_factory=list)       # sorted downbeat (count 1) times
    downbeats_before: int = 0                           # downbeats older than `downbeats` (not restored)
    last_seq: int = 0                                   # the newest grid's seq
    last_epoch: int | None = None                       # the spool epoch last_seq counts in
    run_seq: int = 0                                    # the seq the rig's clock last started again at
    bpm: float = 0.0                                    # the newest grid's tempo (not saved)

    KEEP = 2000                                         # beats saved with the session's state
    RESTART_S = 10.0                                    # a newer grid this far before the last beat: clock restarted

    def take(self, grid: BeatGridIn) -> bool:
        """Add a grid's beats. A grid newer than the last (higher seq, or another spool epoch: a
        fresh spool numbers from 1 again) that lies well before the beats so far means the rig's
        clock started again (an edge restarted into the session): the old beats go, and the
        eight-count numbers go on from the old count. True then. An older grid of the run before
        that restart is left out: its times are on the old clock."""
        epoch = int(grid.epoch)
        other_epoch = self.last_epoch is not None and epoch != self.last_epoch
        newer = other_epoch or grid.seq > self.last_seq
        if not newer and grid.seq < self.run_seq:
            return False
        restarted = bool(self.beats) and newer and grid.t1 < self.beats[-1][0] - self.RESTART_S
        if restarted:
            self.downbeats_before += len(self.downbeats)
            self.beats, self.downbeats = [], []
            self.run_seq = int(grid.seq)
        elif other_epoch:
            self.run_seq = 0                            # seqs of another spool: no run boundary in them yet
        if (newer or grid.seq == self.last_seq) and grid.bpm > 0:
            self.bpm = float(grid.bpm)
        self.last_seq = int(grid.seq) if other_epoch else max(self.last_seq, int(grid.seq))
        self.last_epoch = epoch
        for t, c in zip(grid.beats, grid.counts or [0] * len(grid.beats)):
            self.add(t, c)
        return restarted

    def add(self, t: float, count: int) -> None:
        item = (float(t), int(count))
        i = bisect.bisect_left(self.beats, item)
        if i < len(self.beats) and abs(self.beats[i][0] - item[0]) < 1e-3:
            return
        self.beats.insert(i, item)
        if count == 1:
            bisect.insort(self.downbeats, float(t))
        if len(self.beats) > 20000:
            del self.beats[:10000]

    def position(self, t: float) -> tuple[int, int]:
        """(eight-count index, beat count 1..8) at media time t; (-1, 0) before the first beat."""
        i = bisect.bisect_right(self.beats, (t, 99)) - 1
        if i < 0:
            return -1, 0
        return self.downbeats_before + bisect.bisect_right(self.downbeats, t) - 1, self.beats[i][1]

    def state(self) -> dict:
        kept = self.beats[-self.KEEP:]
        before = self.downbeats_before + (bisect.bisect_left(self.downbeats, kept[0][0]) if kept else len(self.downbeats))
        return {"beats": kept, "downbeats_before": before,     # so eight-count numbers go on across a restart
                "last_seq": self.last_seq, "last_epoch": self.last_epoch, "run_seq": self.run_seq}

    @classmethod
    def from_state(cls, st: dict) -> BeatGrid:
        g = cls(beats=[(float(t), int(c)) for t, c in st.get("beats", [])])
        g.downbeats = [t for t, c in g.beats if c == 1]
        g.downbeats_before = int(st.get("downbeats_before", 0))
        g.last_seq = int(st.get("last_seq", 0))
        g.last_epoch = None if st.get("last_epoch") is None else int(st["last_epoch"])
        g.run_seq = int(st.get("run_seq", 0))
        return g


@dataclass
class SessionState:
    session_id: str
    node_ids: set = field(default_factory=set)
    grids: dict = field(default_factory=dict)          # node_id -> BeatGrid
    bpm: float = 0.0
    routine: str = ""                                   # assigned routine ("" = the dancers' nearest)
    sum_probs: np.ndarray | None = None
    windows: int = 0
    first_arrival: float = 0.0
    last_arrival: float = 0.0
    last_seen: float = 0.0                              # wall time of its newest window or beat grid


class Aggregator:
    def __init__(self, gallery: Gallery, settings: AggregateSettings | None = None):
        self.s = settings or AggregateSettings()
        self.dancers: dict[str, DancerState] = {}
        self.sessions: dict[str, SessionState] = {}
        self.dirty: set[str] = set()      # dancer keys / "session:<id>" changed since last save
        self.set_gallery(gallery)

    def set_gallery(self, gallery: Gallery) -> None:
        old = getattr(self, "styles", None)
        self.gallery = gallery
        self.styles = list(gallery.styles)
        g = gallery.params.get("gaussian")
        self.gaussian = GaussianScoreHead(g) if g else None
        if old is not None and old != self.styles:
            for d in self.dancers.values():      # re-map stored distributions onto the new styles
                d.buffer = [(t, q, self._remap(p, old)) for t, q, p in d.buffer]
                d.smoothed = self._remap(d.smoothed, old) if d.smoothed is not None else None
                d.sum_probs = self._remap(d.sum_probs, old) if d.sum_probs is not None else None
            for ss in self.sessions.values():
                ss.sum_probs = self._remap(ss.sum_probs, old) if ss.sum_probs is not None else None

    def _remap(self, p: np.ndarray, old: list[str]) -> np.ndarray:
        m = dict(zip(old, p.tolist()))
        return np.array([m.get(s, 0.0) for s in self.styles])

    # ----- input ------------------------------------------------------------------------------
    def session(self, session_id: str) -> SessionState:
        ss = self.sessions.get(session_id)
        if ss is None:
            ss = self.sessions[session_id] = SessionState(session_id, first_arrival=time.time())
        return ss

    def add_beats(self, grid: BeatGridIn) -> None:
        ss = self.session(grid.session_id)
        ss.node_ids.add(grid.node_id)
        ss.last_seen = max(ss.last_seen, time.time())
        if ss.grids.setdefault(grid.node_id, BeatGrid()).take(grid):
            log.info("session %s: %s's clock started again (an edge restart): its beats start afresh",
                     grid.session_id, grid.node_id)
        if grid.bpm > 0:
            ss.bpm = float(grid.bpm)
        self.dirty.add("session:" + grid.session_id)

    def forget_seen(self, windows: list[WindowIn]) -> None:
        """Take these windows as new if they come again (a batch the cloud held and had to drop
        unstored). Their share of the running sums stays: counted twice rather than lost."""
        for w in windows:
            d = self.dancers.get(w.dancer)
            ident = (w.epoch, w.seq)
            if d is not None and ident in d.seen_set:
                d.seen_set.discard(ident)
                d.seen.remove(ident)

    def update(self, w: WindowIn, cls: Classification | None) -> WindowResult | None:
        """Fold one classified window in. Returns None for a duplicate."""
        d = self.dancers.get(w.dancer)
        if d is None:
            d = self.dancers[w.dancer] = DancerState(w.dancer, w.node_id, w.session_id, int(w.track_id),
                                                     first_arrival=w.arrival)
        ident = (w.epoch, w.seq)
        if ident in d.seen_set:
            return None
        if len(d.seen) == d.seen.maxlen:
            d.seen_set.discard(d.seen[0])
        d.seen.append(ident)
        d.seen_set.add(ident)

        ss = self.session(w.session_id)
        ss.node_ids.add(w.node_id)
        ss.windows += 1
        ss.last_arrival = max(ss.last_arrival, w.arrival)
        ss.last_seen = max(ss.last_seen, w.arrival)
        d.windows += 1
        d.last_arrival = max(d.last_arrival, w.arrival)
        t = w.t_mid
        epoch, seq = int(w.epoch), int(w.seq)
        # a straggler from before the rig's clock last started again (an older spool's, or a lower seq
        # than the restart's): its time is on the old clock, so it is late, whatever its time says
        stale = epoch in d.old_epochs or (epoch == d.run_epoch and seq < d.run_seq)
        if not stale:
            if d.last_epoch is not None and epoch != d.last_epoch:
                # another spool (a fresh one numbers from 1 again): its windows come after the old ones
                d.old_epochs = (d.old_epochs + [d.last_epoch])[-8:]
                d.run_epoch, d.run_seq = epoch, 0
                if t < d.newest_t - self.s.horizon_s:
                    self._new_run(d, epoch, seq)    # and much earlier in time: the rig's clock started again
                d.last_seq = seq
            elif d.last_seq >= 0 and seq > d.last_seq and t < d.newest_t - self.s.horizon_s:
                self._new_run(d, epoch, seq)        # newer window, much earlier time: the clock started again
            d.last_epoch = epoch
            d.last_seq = max(d.last_seq, seq)
        late = stale or t < d.newest_t - self.s.horizon_s
        C = len(self.styles)
        res = WindowResult(window=w, cls=cls, late=late)
        grid = ss.grids.get(w.node_id)            # the beats its own rig heard, on its own clock
        res.phrase, res.count = grid.position(t) if grid is not None else (-1, 0)

        if cls is not None and C:
            p = np.array([cls.probs.get(s, 0.0) for s in self.styles])
            d.sum_probs = p.copy() if d.sum_probs is None else d.sum_probs + p
            ss.sum_probs = p.copy() if ss.sum_probs is None else ss.sum_probs + p
            if late:
                d.late += 1
            else:
                bisect.insort(d.buffer, (t, int(w.seq), p), key=lambda e: (e[0], e[1]))
                if t > d.newest_t:
                    self._advance_label_time(d, t)
                    d.newest_t = t
                lo = d.newest_t - self.s.horizon_s
                while d.buffer and d.buffer[0][0] < lo:
                    d.buffer.pop(0)
                self._smooth_and_label(d)
            for n in cls.nearest[:1]:
                r = self.gallery.video_routine.get(n.ref_id, "")
                if r:
                    d.routine_votes[r] = d.routine_votes.get(r, 0.0) + max(n.score, 0.0)
        elif t > d.newest_t and not stale:
            d.newest_t = t

        self._scores(d, ss, w, res, t)
        res.stable_style = d.stable
        res.stable_confidence = d.stable_conf
        if d.smoothed is not None:
            res.smoothed = dict(zip(self.styles, d.smoothed.tolist()))
        self.dirty.add(d.key)
        self.dirty.add("session:" + w.session_id)
        return res

    def _new_run(self, d: DancerState, epoch: int, seq: int) -> None:
        """The dancer's rig restarted into the session (its media clock is back near 0) at window
        (epoch, seq): the live buffer starts afresh, so new windows move the label again instead of all
        counting as late. The label stays until the new windows change it; the dancer's totals are kept."""
        d.run_epoch, d.run_seq = epoch, seq
        log.info("dancer %s: the rig's clock started again (an edge restart); live smoothing starts afresh", d.key)
        d.buffer.clear()
        d.newest_t = -math.inf
        d.last_label_t = None
        d.candidate, d.candidate_count = "", 0
        d.last_routine_phrase = None

    def _advance_label_time(self, d: DancerState, t: float) -> None:
        if d.stable and d.last_label_t is not None and t > d.last_label_t:
            d.label_time[d.stable] = d.label_time.get(d.stable, 0.0) + (t - d.last_label_t)
        d.last_label_t = t

    def _smooth_and_label(self, d: DancerState) -> None:
        if not d.buffer:
            return
        ts = np.array([e[0] for e in d.buffer])
        ps = np.stack([e[2] for e in d.buffer])
        wts = np.exp(-(d.newest_t - ts) / max(self.s.tau_s, 1e-6))
        sm = (wts[:, None] * ps).sum(0) / wts.sum()
        d.smoothed = sm
        best = int(np.argmax(sm))
        cand, pc = self.styles[best], float(sm[best])
        if not d.stable:
            if pc >= self.s.enter_threshold:
                d.candidate_count = d.candidate_count + 1 if d.candidate == cand else 1
                d.candidate = cand
                if d.candidate_count >= self.s.switch_hold:
                    d.stable, d.candidate, d.candidate_count = cand, "", 0
            else:
                d.candidate, d.candidate_count = "", 0
        elif cand != d.stable:
            ps_ = float(sm[self.styles.index(d.stable)]) if d.stable in self.styles else 0.0
            if pc >= self.s.enter_threshold and pc >= ps_ + self.s.switch_margin:
                d.candidate_count = d.candidate_count + 1 if d.candidate == cand else 1
                d.candidate = cand
                if d.candidate_count >= self.s.switch_hold:
                    d.stable, d.candidate, d.candidate_count = cand, "", 0
            else:
                d.candidate, d.candidate_count = "", 0
        else:
            d.candidate, d.candidate_count = "", 0
        d.stable_conf = float(sm[self.styles.index(d.stable)]) if d.stable in self.styles else 0.0

    def _scores(self, d: DancerState, ss: SessionState, w: WindowIn, res: WindowResult, t: float) -> None:
        scores: dict[str, float] = {}
        emb = w.embedding
        fits = len(emb) == self.gallery.dim       # another encoder's window is stored unscored, not a crash
        if self.gaussian is not None and fits:
            mu, sigma = self.gaussian.predict(emb)
            scores["gaussian_mu"], scores["gaussian_sigma"] = float(mu[0]), float(sigma[0])
        tables = self.gallery.routine_tables
        votes = {r: v for r, v in d.routine_votes.items() if r in tables}   # a reload may drop a routine
        routine = ss.routine or (max(votes, key=votes.get) if votes else "")
        table = tables.get(routine) if fits else None
        if table is not None:
            if d.latest.get("routine") != routine:
                d.last_routine_phrase = None      # another routine's phrase says nothing about this one
                if d.latest.get("routine"):       # nor do its eight-count scores: they are not mixed in
                    d.eightcounts.clear()
                    for k in ("routine_similarity", "routine_cosine", "eightcount_similarity"):
                        d.score_sums.pop(k, None)
            p, c, sc = routine_match(table, emb, d.last_routine_phrase)
            d.last_routine_phrase = p
            # a session eight-count index (>= 0), or, before any downbeat, a 4 s time bucket b kept as
            # -1 - b so the two kinds never share a key
            key = res.phrase if res.phrase >= 0 else -1 - int(t // DEFAULT_PHRASE_S)
            acc = d.eightcounts.setdefault(key, [0.0, 0, p])
            acc[0] += sc
            acc[1] += 1
            acc[2] = p
            if len(d.eightcounts) > 512:
                for k in sorted(d.eightcounts, key=_eightcount_order)[:256]:
                    del d.eightcounts[k]
            scores.update(routine_similarity=sc, routine_cosine=c, routine_phrase=float(p),
                          eightcount_similarity=acc[0] / acc[1])
        ba = w.rhythm.get("beat_alignment")
        if ba is not None and math.isfinite(ba):
            scores["beat_alignment"] = float(ba)
        for k, v in scores.items():
            if k in ("routine_phrase",):
                continue
            s = d.score_sums.setdefault(k, [0.0, 0])
            s[0] += v
            s[1] += 1
        d.latest = {"scores": scores, "rhythm": dict(w.rhythm), "t": t, "routine": routine}
        res.scores = scores

    # ----- output -----------------------------------------------------------------------------
    def feedback(self, results: list[WindowResult]) -> list[FeedbackOut]:
        """One Feedback per (node, session): each dancer's latest result in this batch."""
        latest: dict[tuple[str, str], dict[int, WindowResult]] = {}
        for r in results:
            if r is None:
                continue
            w = r.window
            per = latest.setdefault((w.node_id, w.session_id), {})
            cur = per.get(w.track_id)
            if cur is None or (w.t1, w.seq) >= (cur.window.t1, cur.window.seq):
                per[w.track_id] = r
        out = []
        for (node, session), per in latest.items():
            dancers = []
            for tid, r in sorted(per.items()):
                cls = r.cls
                dancers.append(DancerFeedbackOut(
                    track_id=int(tid), seq=int(r.window.seq), t0=r.window.t0, t1=r.window.t1,
                    styles=dict(r.smoothed) if r.smoothed else (dict(cls.probs) if cls else {}),
                    style=r.stable_style, confidence=r.stable_confidence,
                    nearest=list(cls.nearest) if cls else [], nearest_groups=list(cls.nearest_groups) if cls else [],
                    scores=dict(r.scores)))
            out.append(FeedbackOut(node, session, dancers))
        return out

    def dancer_summary(self, key: str) -> dict | None:
        d = self.dancers.get(key)
        if d is None:
            return None
        now = time.time()
        mean = (d.sum_probs / d.sum_probs.sum()).tolist() if d.sum_probs is not None and d.sum_probs.sum() > 0 else []
        overall = self.styles[int(np.argmax(d.sum_probs))] if mean else ""
        return {
            "dancer": d.key, "node": d.node_id, "session": d.session_id, "track": d.track_id,
            "style": d.stable, "confidence": d.stable_conf,
            "smoothed": dict(zip(self.styles, d.smoothed.tolist())) if d.smoothed is not None else {},
            "overall_style": overall, "overall": dict(zip(self.styles, mean)),
            "label_seconds": dict(d.label_time), "windows": d.windows, "late": d.late,
            "active": (now - d.last_arrival) <= self.s.dancer_timeout_s, "last_arrival": d.last_arrival,
            "last_seq": d.last_seq, "t": d.newest_t if math.isfinite(d.newest_t) else None,
            "routine": d.latest.get("routine", ""),
            "eightcounts": [{"phrase": k if k >= 0 else None, "t0": None if k >= 0 else (-1 - k) * DEFAULT_PHRASE_S,
                             "score": v[0] / v[1], "windows": v[1], "routine_phrase": v[2]}
                            for k, v in sorted(d.eightcounts.items(), key=lambda kv: _eightcount_order(kv[0]))][-32:],
            "mean_scores": {k: v[0] / v[1] for k, v in d.score_sums.items() if v[1]},
            "latest": d.latest,
        }

    def group_summary(self, session_id: str) -> dict:
        now = time.time()
        members = [d for d in self.dancers.values() if d.session_id == session_id]
        active = [d for d in members if now - d.last_arrival <= self.s.dancer_timeout_s and d.smoothed is not None]
        labels: dict[str, int] = {}        # the group now: the active dancers' stable labels, as style/probs
        for d in active:
            if d.stable:
                labels[d.stable] = labels.get(d.stable, 0) + 1
        probs = {}
        style = ""
        if active:
            m = np.mean([d.smoothed for d in active], axis=0)
            probs = dict(zip(self.styles, m.tolist()))
            style = self.styles[int(np.argmax(m))]
        return {"session": session_id, "dancers": len(members), "active": len(active), "style": style,
                "probs": probs, "labels": labels}

    def session_summary(self, session_id: str) -> dict:
        ss = self.sessions.get(session_id)
        if ss is None:
            return {}
        members = [d for d in self.dancers.values() if d.session_id == session_id]
        label_time: dict[str, float] = {}
        score_sums: dict[str, list] = {}
        for d in members:
            for k, v in d.label_time.items():
                label_time[k] = label_time.get(k, 0.0) + v
            for k, (s, n) in d.score_sums.items():
                acc = score_sums.setdefault(k, [0.0, 0])
                acc[0] += s
                acc[1] += n
        overall = {}
        if ss.sum_probs is not None and ss.sum_probs.sum() > 0:
            overall = dict(zip(self.styles, (ss.sum_probs / ss.sum_probs.sum()).tolist()))
        return {"session": session_id, "nodes": sorted(ss.node_ids), "windows": ss.windows, "dancers": len(members),
                "overall": overall, "style": max(overall, key=overall.get) if overall else "",
                "label_seconds": label_time, "bpm": ss.bpm, "routine": ss.routine,
                "mean_scores": {k: s / n for k, (s, n) in score_sums.items() if n},
                "first_arrival": ss.first_arrival, "last_arrival": ss.last_arrival,
                "group": self.group_summary(session_id)}

    # ----- persistence ------------------------------------------------------------------------
    def dancer_state(self, key: str) -> dict:
        d = self.dancers[key]
        named = lambda p: dict(zip(self.styles, p.tolist())) if p is not None else None  # noqa: E731
        return {
            "key": d.key, "node_id": d.node_id, "session_id": d.session_id, "track_id": d.track_id,
            "buffer": [[t, q, named(p)] for t, q, p in d.buffer], "newest_t": d.newest_t if math.isfinite(d.newest_t) else None,
            "seen": [list(x) for x in list(d.seen)[-512:]], "stable": d.stable, "stable_conf": d.stable_conf,
            "candidate": d.candidate, "candidate_count": d.candidate_count, "smoothed": named(d.smoothed),
            "sum_probs": named(d.sum_probs), "windows": d.windows, "late": d.late, "label_time": d.label_time,
            "last_label_t": d.last_label_t, "last_arrival": d.last_arrival, "first_arrival": d.first_arrival,
            "last_seq": d.last_seq, "last_epoch": d.last_epoch, "run_epoch": d.run_epoch, "run_seq": d.run_seq,
            "old_epochs": d.old_epochs, "routine_votes": d.routine_votes, "last_routine_phrase": d.last_routine_phrase,
            "eightcounts": {str(k): v for k, v in d.eightcounts.items()}, "score_sums": d.score_sums,
            "latest": d.latest,
        }

    def session_state(self, session_id: str) -> dict:
        ss = self.sessions[session_id]
        return {"session_id": ss.session_id, "node_ids": sorted(ss.node_ids),
                "grids": {node: g.state() for node, g in ss.grids.items()},
                "bpm": ss.bpm, "routine": ss.routine,
                "sum_probs": dict(zip(self.styles, ss.sum_probs.tolist())) if ss.sum_probs is not None else None,
                "windows": ss.windows, "first_arrival": ss.first_arrival, "last_arrival": ss.last_arrival,
                "last_seen": ss.last_seen}

    def _vec(self, named: dict | None) -> np.ndarray | None:
        if named is None:
            return None
        return np.array([float(named.get(s, 0.0)) for s in self.styles])

    def restore_dancer(self, st: dict) -> None:
        d = DancerState(st["key"], st["node_id"], st["session_id"], int(st["track_id"]))
        d.buffer = [(float(t), int(q), self._vec(p)) for t, q, p in st.get("buffer", [])]
        d.newest_t = st["newest_t"] if st.get("newest_t") is not None else -math.inf
        for x in st.get("seen", []):
            d.seen.append(tuple(x))
            d.seen_set.add(tuple(x))
        for name in ("stable", "stable_conf", "candidate", "candidate_count", "windows", "late", "label_time",
                     "last_label_t", "last_arrival", "first_arrival", "last_seq", "last_epoch", "run_epoch",
                     "run_seq", "old_epochs", "routine_votes",
                     "last_routine_phrase", "score_sums", "latest"):
            if name in st:
                setattr(d, name, st[name])
        d.smoothed = self._vec(st.get("smoothed"))
        d.sum_probs = self._vec(st.get("sum_probs"))
        d.eightcounts = {int(k): v for k, v in st.get("eightcounts", {}).items()}
        self.dancers[d.key] = d

    def restore_session(self, st: dict) -> None:
        ss = SessionState(st["session_id"], set(st.get("node_ids", [])))
        ss.grids = {node: BeatGrid.from_state(g) for node, g in st.get("grids", {}).items()}
        if "beats" in st and not ss.grids:        # saved before beats were kept per node
            ss.grids = {node: BeatGrid.from_state(st) for node in ss.node_ids}
        ss.bpm = float(st.get("bpm", 0.0))
        ss.routine = st.get("routine", "")
        ss.sum_probs = self._vec(st.get("sum_probs"))
        ss.windows = int(st.get("windows", 0))
        ss.first_arrival = float(st.get("first_arrival", 0.0))
        ss.last_arrival = float(st.get("last_arrival", 0.0))
        ss.last_seen = float(st.get("last_seen", max(ss.first_arrival, ss.last_arrival)))
        self.sessions[ss.session_id] = ss

    def forget_before(self, cutoff: float) -> tuple[int, int]:
        """Retention: drop the dancers last seen before `cutoff` (wall seconds), then the sessions
        last seen before it that no dancer held here belongs to (the store deletes the same).
        Returns how many dancers and sessions went."""
        old = [k for k, d in self.dancers.items() if max(d.last_arrival, d.first_arrival) < cutoff]
        for k in old:
            del self.dancers[k]
            self.dirty.discard(k)
        held = {d.session_id for d in self.dancers.values()}
        gone = [sid for sid, ss in self.sessions.items()
                if sid not in held and max(ss.last_seen, ss.first_arrival) < cutoff]
        for sid in gone:
            del self.sessions[sid]
            self.dirty.discard("session:" + sid)
        return len(old), len(gone)

    def take_dirty(self) -> tuple[list[dict], list[dict]]:
        """States changed since the last call: (dancer states, session states)."""
        dancers, sessions = [], []
        for key in self.dirty:
            if key.startswith("session:"):
                sid = key[len("session:"):]
                if sid in self.sessions:
                    sessions.append(self.session_state(sid))
            elif key in self.dancers:
                dancers.append(self.dancer_state(key))
        self.dirty.clear()
        return dancers, sessions
