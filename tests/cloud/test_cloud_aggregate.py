"""Aggregator: hysteresis (stable labels), out-of-order and late windows, duplicates, state round trip."""
from __future__ import annotations

import json
import random

import numpy as np

from cloud.aggregate import Aggregator
from cloud.classify import Classifier
from cloud.gallery import Gallery
from cloud.records import BeatGridIn, Classification, Reference, WindowIn
from cloud.settings import AggregateSettings

STYLES = ["a", "b", "c"]


def gallery3() -> Gallery:
    x = np.eye(3, 8, dtype=np.float32)
    return Gallery(x, [Reference(f"r{i}", s, video=f"v{i}") for i, s in enumerate(STYLES)])


def cls(p) -> Classification:
    probs = dict(zip(STYLES, p))
    best = max(probs, key=probs.get)
    return Classification(probs, best, probs[best], [], [], 0.9)


def window(seq, t, track=0, session="s"):
    return WindowIn("n", session, track, seq, t - 2.0, t, np.ones(8, np.float32) / np.sqrt(8))


def noisy(rng, style, strength=0.55):
    p = rng.dirichlet([1, 1, 1]) * (1 - strength)
    p[STYLES.index(style)] += strength
    return p


def test_label_does_not_flicker_while_style_is_kept():
    rng = np.random.default_rng(0)
    agg = Aggregator(gallery3())
    labels, raw = [], []
    for k in range(200):                       # 100 s of "a", every window noisy
        p = noisy(rng, "a", 0.3)
        r = agg.update(window(k, 2 + 0.5 * k), cls(p))
        labels.append(r.stable_style)
        raw.append(r.cls.style)
    stable = [lab for lab in labels if lab]
    assert len(set(stable)) == 1 and stable[0] == "a"
    assert labels.index("a") <= 5
    raw_changes = sum(x != y for x, y in zip(raw, raw[1:]))
    assert raw_changes > 30                    # the per-window argmax flickers a lot...
    # ...the stable label never does


def test_label_follows_a_real_change():
    rng = np.random.default_rng(1)
    agg = Aggregator(gallery3())
    out = []
    for k in range(120):
        style = "a" if k < 60 else "b"
        out.append(agg.update(window(k, 2 + 0.5 * k), cls(noisy(rng, style))).stable_style)
    switch = out.index("b")
    assert 60 < switch <= 60 + 16               # within 8 s of media time
    assert set(out[switch:]) == {"b"}
    assert agg.dancer_summary("n/s/0")["label_seconds"]["a"] > 25


def test_out_of_order_windows_give_the_same_result():
    rng = np.random.default_rng(2)
    ps = [noisy(rng, "c") for _ in range(40)]
    ws = [(window(k, 2 + 0.5 * k), cls(p)) for k, p in enumerate(ps)]
    a = Aggregator(gallery3())
    for w, c in ws:
        a.update(w, c)
    shuffled = ws[:30] + random.Random(0).sample(ws[30:], 10)
    b = Aggregator(gallery3())
    for w, c in shuffled:
        b.update(w, c)
    da, db = a.dancers["n/s/0"], b.dancers["n/s/0"]
    np.testing.assert_allclose(da.smoothed, db.smoothed, atol=1e-12)
    assert da.stable == db.stable == "c"


def test_late_and_duplicate_windows():
    agg = Aggregator(gallery3(), AggregateSettings(horizon_s=8.0))
    for k in range(40):
        agg.update(window(100 + k, 2 + 0.5 * k), cls([0.1, 0.8, 0.1]))
    before = agg.dancers["n/s/0"].smoothed.copy()
    late = agg.update(window(50, 3.0), cls([0.9, 0.05, 0.05]))        # sent earlier, 18 s behind the newest
    assert late.late
    np.testing.assert_allclose(agg.dancers["n/s/0"].smoothed, before)  # the live label ignores it...
    s = agg.dancer_summary("n/s/0")
    assert s["late"] == 1 and s["windows"] == 41                       # ...the session counts it
    assert agg.update(window(105, 4.5), cls([0.1, 0.8, 0.1])) is None  # duplicate seq


def test_group_and_session_aggregates():
    agg = Aggregator(gallery3())
    for k in range(20):
        agg.update(window(2 * k, 2 + 0.5 * k, track=0), cls([0.8, 0.1, 0.1]))
        agg.update(window(2 * k + 1, 2 + 0.5 * k, track=1), cls([0.1, 0.1, 0.8]))
    g = agg.group_summary("s")
    assert g["dancers"] == 2 and g["labels"] == {"a": 1, "c": 1}
    assert abs(g["probs"]["a"] - g["probs"]["c"]) < 0.05
    s = agg.session_summary("s")
    assert s["windows"] == 40 and s["dancers"] == 2
    assert abs(sum(s["overall"].values()) - 1) < 1e-9


def test_beats_give_eight_count_positions():
    agg = Aggregator(gallery3())
    beats = [0.5 * k for k in range(32)]
    agg.add_beats(BeatGridIn("n", "s", 0, 0, 16, 120, 0.9, beats, [k % 8 + 1 for k in range(32)]))
    r = agg.update(window(1, 5.3), cls([0.4, 0.3, 0.3]))              # middle at 4.3 s: beat 8 (4.0 s) -> count 1
    assert r.count == 1 and r.phrase == 1
    r = agg.update(window(2, 7.0), cls([0.4, 0.3, 0.3]))              # middle 6.0 s: count 5 of phrase 1
    assert r.count == 5 and r.phrase == 1


def test_each_rig_keeps_its_own_beats():
    """Two rigs in one session hear the music on clocks of their own: a dancer on rig A keeps A's
    eight-count and count when rig B's beats arrive (they were merged into one list)."""
    agg = Aggregator(gallery3())
    agg.add_beats(BeatGridIn("A", "s", 1, 0, 20, 120, 0.9, [0.5 * k for k in range(40)], [k % 8 + 1 for k in range(40)]))
    before = agg.update(WindowIn("A", "s", 0, 1, 9.0, 11.0, np.ones(8, np.float32)), cls([0.4, 0.3, 0.3]))
    agg.add_beats(BeatGridIn("B", "s", 1, 0, 20, 120, 0.9, [0.25 + 0.5 * k for k in range(40)],
                             [(k + 4) % 8 + 1 for k in range(40)]))
    after = agg.update(WindowIn("A", "s", 1, 1, 9.0, 11.0, np.ones(8, np.float32)), cls([0.4, 0.3, 0.3]))
    assert (before.phrase, before.count) == (after.phrase, after.count) == (2, 5)
    on_b = agg.update(WindowIn("B", "s", 0, 1, 9.0, 11.0, np.ones(8, np.float32)), cls([0.4, 0.3, 0.3]))
    assert (on_b.phrase, on_b.count) == (1, 8)                      # its own: downbeats at 2.25, 6.25 s
    assert [len(g.beats) for g in agg.sessions["s"].grids.values()] == [40, 40]   # kept apart


def test_eight_count_numbers_go_on_across_a_restart():
    """Only the last 2000 beats are saved; the downbeats before them are counted, so a window 18
    minutes into a session keeps its eight-count number after a restart (it dropped by 50)."""
    a = Aggregator(gallery3())
    beats = [0.5 * k for k in range(2400)]                           # 20 minutes at 120 BPM
    a.add_beats(BeatGridIn("n", "s", 1, 0, 1200, 120, 0.9, beats, [k % 8 + 1 for k in range(2400)]))
    r = a.update(window(1, 1102.0), cls([0.4, 0.3, 0.3]))
    _, sessions = a.take_dirty()
    b = Aggregator(gallery3())
    b.restore_session(json.loads(json.dumps(sessions[0])))
    r2 = b.update(window(2, 1102.0, track=1), cls([0.4, 0.3, 0.3]))
    assert (r2.phrase, r2.count) == (r.phrase, r.count) == (275, 3)


def test_windows_before_the_first_downbeat_keep_eight_count_scores_of_their_own():
    """An intro window (beats, no count 1 yet) is scored in a time bucket that never shares a key
    with a session eight-count: the time bucket 2 (8-12 s) and eight-count 2 were one entry."""
    def unit(i):
        v = np.zeros(8, np.float32)
        v[i] = 1
        return v
    refs, embs = [], []
    for p in range(4):                                              # one routine, four eight-counts
        e = unit(0) + 0.05 * unit(2 + p)
        refs.append(Reference(f"r{p}", "a", routine="r", video="v", phrase=p))
        embs.append(e / np.linalg.norm(e))
    agg = Aggregator(Gallery(np.array(embs), refs, {"hash": "h", "dim": 8}, {}))
    beats = [0.5 * k for k in range(200)]                          # counting starts at 20 s
    agg.add_beats(BeatGridIn("n", "s", 1, 0, 100, 120, 0.9, beats,
                             [0 if t < 20 else int((t - 20) / 0.5) % 8 + 1 for t in beats]))
    agg.session("s").routine = "r"
    intro = agg.update(WindowIn("n", "s", 0, 1, 8.0, 10.0, embs[0]), None)
    later = agg.update(WindowIn("n", "s", 0, 2, 30.0, 32.0, -embs[0]), None)
    assert intro.phrase == -1 and later.phrase == 2
    assert later.scores["eightcount_similarity"] == later.scores["routine_similarity"]   # not averaged with the intro
    ec = agg.dancer_summary("n/s/0")["eightcounts"]
    assert [(e["phrase"], e["t0"]) for e in ec] == [(None, 8.0), (2, None)]


def test_an_edge_restarted_into_the_session_moves_the_label_again():
    """The edge restarts with the same session, node, epoch and track ids, its media clock back at
    0: the new windows (higher seqs, early times) were all late, so the label froze on the old
    style; its beats start afresh, their eight-count numbers going on from the old ones."""
    agg = Aggregator(gallery3())
    beats = [0.5 * k for k in range(1200)]
    agg.add_beats(BeatGridIn("n", "s", 1, 0, 600, 120, 0.9, beats, [k % 8 + 1 for k in range(1200)]))
    for k in range(300):                                             # 10 minutes of style a
        agg.update(window(k + 1, 2.0 + 2.0 * k), cls([0.9, 0.05, 0.05]))
    assert agg.dancer_summary("n/s/0")["style"] == "a"
    agg.add_beats(BeatGridIn("n", "s", 2, 0, 20, 120, 0.9, beats[:40], [k % 8 + 1 for k in range(40)]))
    res = [agg.update(window(301 + k, 2.0 + 2.0 * k), cls([0.05, 0.9, 0.05])) for k in range(10)]
    assert agg.dancer_summary("n/s/0")["style"] == "b" and not any(r.late for r in res)
    assert (res[4].phrase, res[4].count) == (150 + 2, 3)           # middle 9 s: 150 old eight-counts + the 3rd new one


def test_state_round_trip_through_json():
    rng = np.random.default_rng(3)
    a = Aggregator(gallery3())
    for k in range(30):
        a.update(window(k, 2 + 0.5 * k), cls(noisy(rng, "b")))
    dancers, sessions = a.take_dirty()
    dancers, sessions = json.loads(json.dumps(dancers)), json.loads(json.dumps(sessions))
    b = Aggregator(gallery3())
    for st in sessions:
        b.restore_session(st)
    for st in dancers:
        b.restore_dancer(st)
    assert b.dancer_summary("n/s/0")["style"] == "b"
    for agg in (a, b):
        agg.update(window(30, 17.0), cls([0.2, 0.6, 0.2]))
    np.testing.assert_allclose(a.dancers["n/s/0"].smoothed, b.dancers["n/s/0"].smoothed)
    assert b.update(window(3, 3.5), cls([0.2, 0.6, 0.2])) is None     # remembered as seen


def test_routine_and_gaussian_scores_flow_through(ballroom):
    from real_embeddings import make_gallery
    from cloud.enroll import fit_gallery
    from cloud.settings import ClassifySettings

    teacher = next(s for s in ballroom if s["name"] == "DANCE_W_1")
    others = [s for s in ballroom if s["style"] in ("waltz", "rumba") and s["name"] not in ("DANCE_W_1", "DANCE_W_10")]
    g = make_gallery([teacher] + others, routine_of=lambda s: s["name"] + "-routine",
                     score_of=lambda s, k: 8.0 if s["style"] == "waltz" else 4.0)
    fit_gallery(g, ClassifySettings())
    clf = Classifier(g)
    agg = Aggregator(g)
    student = next(s for s in ballroom if s["name"] == "DANCE_W_10")
    res = None
    for k, ((t0, t1), e) in enumerate(zip(student["times"], student["emb"])):
        w = WindowIn("n", "s", 0, k, t0, t1, e)
        res = agg.update(w, clf.classify(e[None])[0])
    assert {"routine_similarity", "routine_cosine", "eightcount_similarity", "gaussian_mu", "gaussian_sigma"} <= set(res.scores)
    s = agg.dancer_summary("n/s/0")
    assert s["routine"].startswith("DANCE_W_")               # the nearest routine is a waltz
    assert s["eightcounts"] and all(0 <= e["score"] <= 100 for e in s["eightcounts"])
    assert s["mean_scores"]["gaussian_mu"] > 6.0


def test_a_rig_restarted_on_a_fresh_spool_moves_the_label_again():
    """A new spool numbers from 1 under a new epoch, and the rig's clock is back near 0: the restart was
    only seen for a higher seq, so every window of the new run was late and the label stayed frozen."""
    agg = Aggregator(gallery3())
    emb = np.ones(8, np.float32) / np.sqrt(8)
    for k in range(100):
        agg.update(WindowIn("n", "s", 0, k + 1, 0.5 * k, 0.5 * k + 2, emb, epoch=111), cls([0.9, 0.05, 0.05]))
    assert agg.dancers["n/s/0"].stable == "a"
    late = 0
    for k in range(60):
        r = agg.update(WindowIn("n", "s", 0, k + 1, 0.5 * k, 0.5 * k + 2, emb, epoch=222), cls([0.05, 0.9, 0.05]))
        late += r.late
    assert late == 0 and r.stable_style == "b"


def _grid(seq, t0, t1, epoch=111):
    ts = [t0 + 0.5 * k for k in range(int((t1 - t0) / 0.5))]
    return BeatGridIn("n", "s", seq, t0, t1, 120, 0.9, ts, [k % 8 + 1 for k in range(len(ts))], epoch=epoch)


def test_a_rig_restarted_on_a_fresh_spool_starts_its_beats_afresh():
    """A fresh spool numbers its grids from 1 under a new epoch: the restart was only seen for a higher
    seq, so the new run's beats were merged with the old run's and windows got the old run's counts;
    and a late grid of the run before a restart must not be merged into the new one either."""
    agg = Aggregator(gallery3())
    agg.add_beats(_grid(500, 0.0, 300.0))
    agg.add_beats(_grid(1, 0.25, 30.25, epoch=222))             # back near 0, half a beat later
    grid = agg.sessions["s"].grids["n"]
    assert grid.beats[0][0] == 0.25 and grid.beats[-1][0] < 31
    r = agg.update(WindowIn("n", "s", 0, 2, 4.0, 6.0, np.ones(8, np.float32), epoch=222), cls([0.4, 0.3, 0.3]))
    assert r.count == 2                                         # 5.0 s: beat 10 of the new grid (4.75 s)
    assert agg.sessions["s"].grids["n"].take(_grid(7, 30.25, 40.25, epoch=222)) is False   # the next grid: no restart
    agg.add_beats(_grid(10, 0.0, 300.0, epoch=333))
    agg.add_beats(_grid(11, 0.1, 20.1, epoch=333))              # restarted at seq 11
    agg.add_beats(_grid(9, 250.0, 290.0, epoch=333))            # late, from the run before
    agg.add_beats(_grid(12, 20.1, 40.1, epoch=333))
    grid = agg.sessions["s"].grids["n"]
    assert grid.beats[0][0] == 0.1 and grid.beats[-1][0] < 41 and grid.run_seq == 11
    again = Aggregator(gallery3())
    again.restore_session(json.loads(json.dumps(agg.take_dirty()[1][0])))
    assert again.sessions["s"].grids["n"].take(_grid(9, 250.0, 290.0, epoch=333)) is False
    assert again.sessions["s"].grids["n"].beats[-1][0] < 41      # the run is remembered across a restore


def test_a_window_of_another_size_is_kept_unscored_not_a_crash():
    g = Gallery(np.eye(3, 8, dtype=np.float32), [Reference(f"r{i}", s, video=f"v{i}", routine="basic", phrase=i)
                                                 for i, s in enumerate(STYLES)], {"hash": "h"})
    agg = Aggregator(g)
    agg.session("s").routine = "basic"            # compared with the routine: the matmul raised
    r = agg.update(WindowIn("n", "s", 0, 1, 0.0, 2.0, np.ones(16, np.float32) / 4.0), None)
    assert r is not None and "routine_similarity" not in r.scores


def test_routine_scores_go_on_after_a_reload_renames_the_routine():
    from cloud.records import Neighbor

    rng = np.random.default_rng(0)
    e = rng.normal(size=(8, 8)).astype(np.float32)

    def gallery(routine):
        return Gallery(e, [Reference(f"t@{i}", "salsa", routine=routine, video="teacher", t0=2.0 * i, t1=2.0 * i + 2,
                                     phrase=i // 2) for i in range(8)], {"hash": "h"})

    def c():
        return Classification({"salsa": 1.0}, "salsa", 1.0, [Neighbor("teacher", "", 0.9)], [], 0.9)

    agg = Aggregator(gallery("basic"))
    for k in range(30):
        agg.update(WindowIn("n", "s", 0, k, 0.5 * k, 0.5 * k + 2, e[k % 8] / np.linalg.norm(e[k % 8])), c())
    agg.set_gallery(gallery("basic-v2"))
    scored = [("routine_similarity" in agg.update(WindowIn("n", "s", 0, k, 0.5 * k, 0.5 * k + 2,
                                                           e[k % 8] / np.linalg.norm(e[k % 8])), c()).scores)
              for k in range(30, 60)]
    assert all(scored) and agg.dancers["n/s/0"].latest["routine"] == "basic-v2"


def test_the_group_counts_the_labels_of_its_active_dancers():
    import time

    agg = Aggregator(gallery3())
    old = time.time() - 3600
    for track in range(5):                       # five dancers who left an hour ago, all "a"
        for k in range(20):
            w = WindowIn("n", "s", track, 100 * track + k, 0.5 * k, 0.5 * k + 2, np.ones(8, np.float32) / np.sqrt(8),
                         arrival=old)
            agg.update(w, cls([0.9, 0.05, 0.05]))
    for k in range(20):                           # one dancing "b" now
        agg.update(WindowIn("n", "s", 9, 1000 + k, 0.5 * k, 0.5 * k + 2, np.ones(8, np.float32) / np.sqrt(8)),
                   cls([0.05, 0.9, 0.05]))
    g = agg.group_summary("s")
    assert g["active"] == 1 and g["style"] == "b" and g["labels"] == {"b": 1} and g["dancers"] == 6


def test_ids_holding_a_slash_are_still_two_dancers():
    """The dancer key joined node, session and track with '/': node "studio/1" in session "x" and
    node "studio" in session "1/x" were one dancer (the second's windows dropped as duplicates)."""
    agg = Aggregator(gallery3(), AggregateSettings())
    e = np.ones(8, np.float32) / np.sqrt(8)
    a = WindowIn("studio/1", "x", 0, 1, 0.0, 2.0, e)
    b = WindowIn("studio", "1/x", 0, 1, 0.0, 2.0, e)
    assert a.dancer != b.dancer
    assert agg.update(a, cls([0.8, 0.1, 0.1])) is not None and agg.update(b, cls([0.8, 0.1, 0.1])) is not None
    assert WindowIn("studio-a", "class-1", 3, 1, 0.0, 2.0, e).dancer == "studio-a/class-1/3"   # plain ids as before


def test_a_window_from_before_a_rig_restart_is_late_not_the_newest():
    """After an edge restart (the rig's clock back near 0) a straggler of the old run (lower seq, or
    an older spool epoch) has a HIGHER media time: it became the newest window, credited the whole
    clock gap to the label and wiped the live buffer, and the next window restarted the run again."""
    for straggler in ("lower seq", "older epoch"):
        agg = Aggregator(gallery3(), AggregateSettings(horizon_s=8.0))
        e = np.ones(8, np.float32) / np.sqrt(8)
        old_epoch, new_epoch = (0, 0) if straggler == "lower seq" else (1, 2)
        for k in range(200):
            agg.update(WindowIn("n", "s", 0, 1 + k, 0.5 * k - 2, 0.5 * k, e, epoch=old_epoch), cls([0.8, 0.1, 0.1]))
        for k in range(20):                                 # the restart: the clock from 0 again
            agg.update(WindowIn("n", "s", 0, 301 + k, 0.5 * k - 2, 0.5 * k, e, epoch=new_epoch), cls([0.1, 0.8, 0.1]))
        d = agg.dancers["n/s/0"]
        before = (d.newest_t, dict(d.label_time), len(d.buffer))
        res = agg.update(WindowIn("n", "s", 0, 250, 119, 121, e, epoch=old_epoch), cls([0.8, 0.1, 0.1]))
        assert res.late, straggler
        assert (d.newest_t, dict(d.label_time), len(d.buffer)) == before, straggler
        agg.update(WindowIn("n", "s", 0, 321, 8.0, 10.0, e, epoch=new_epoch), cls([0.1, 0.8, 0.1]))
        assert d.run_seq == 301 and len(d.buffer) > 10 and d.newest_t == 9.0, straggler     # no new run
        restored = Aggregator(gallery3(), AggregateSettings(horizon_s=8.0))
        restored.restore_dancer(json.loads(json.dumps(agg.dancer_state("n/s/0"))))
        assert restored.update(WindowIn("n", "s", 0, 251, 120, 122, e, epoch=old_epoch), cls([0.8, 0.1, 0.1])).late


def test_a_routine_change_does_not_mix_the_two_routines_scores():
    """Set mid-eight-count (or the nearest routine's vote flipping), the new routine's scores went into
    the same eight-count and mean entries as the old one's, and the summary named only the new one."""
    rng = np.random.default_rng(2)
    dim = 16
    refs, embs = [], []
    for routine in ("A", "B"):
        for p in range(2):
            c = rng.normal(size=dim)
            for k in range(4):
                refs.append(Reference(f"{routine}{p}-{k}", "a", routine=routine, video=routine, phrase=p))
                embs.append(c + 0.1 * rng.normal(size=dim))
    e = np.stack(embs).astype(np.float32)
    g = Gallery(e / np.linalg.norm(e, axis=1, keepdims=True), refs)
    agg = Aggregator(g, AggregateSettings())
    agg.session("s").routine = "A"
    student = g.embeddings[0]                                     # dances A's first eight-count
    probs = {s: 1.0 / len(g.styles) for s in g.styles}
    c = Classification(probs, g.styles[0], probs[g.styles[0]], [], [], 0.9)
    for k in range(6):
        agg.update(WindowIn("n", "s", 0, 1 + k, k * 0.5, k * 0.5 + 2, student), c)
    agg.session("s").routine = "B"
    for k in range(6, 9):
        agg.update(WindowIn("n", "s", 0, 1 + k, k * 0.5, k * 0.5 + 2, student), c)
    s = agg.dancer_summary("n/s/0")
    assert s["routine"] == "B" and sum(ec["windows"] for ec in s["eightcounts"]) == 3
    assert agg.dancers["n/s/0"].score_sums["routine_similarity"][1] == 3
