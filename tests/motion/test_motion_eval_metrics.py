"""The evaluation's own arithmetic: cross-view routine retrieval per window and per routine."""
from __future__ import annotations

import numpy as np

from edge.motion.evaluate import WindowSet, cross_view_eval, genre_eval


A, B, MOSTLY_B = (1.0, 0.0), (0.0, 1.0), (0.3, 1.0)


def _set(looks_like: list[tuple[str, str, tuple[float, float]]]) -> WindowSet:
    """One window per (routine, camera, embedding direction), so that every nearest
    neighbour is known in advance (and no two gallery windows of different routines tie)."""
    feats = np.zeros((len(looks_like), 60, 34), np.float32)
    for i, (_, _, vec) in enumerate(looks_like):
        feats[i, 0, :2] = vec
    n = len(looks_like)
    return WindowSet(feats, np.ones((n, 60), np.float32), np.array(["gBR"] * n),
                     np.array([r for r, _, _ in looks_like]), np.array([v for _, v, _ in looks_like]),
                     np.zeros(n))


def _embed(feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    e = feats[:, 0, :2]
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_cross_view_counts_windows_and_routine_votes():
    # routine A seen from camera c2 looks mostly like B in 2 of its 3 windows
    rows = [("A", "c1", A)] * 3 + [("B", "c1", B)] * 3 \
        + [("A", "c2", A), ("A", "c2", MOSTLY_B), ("A", "c2", MOSTLY_B)] + [("B", "c2", B)] * 3
    res = cross_view_eval(_embed, _set(rows))
    # enrol c1, query c2: 4 of 6 windows right; routine votes: A wrong (2 of 3 say B), B right
    # enrol c2, query c1: A's windows find A's A-like window, B's find B's own (cosine 1 beats
    # MOSTLY_B's 0.96): 6 of 6 right, both votes right
    assert res["top1"] == np.mean([4 / 6, 6 / 6])
    assert res["per_sequence_top1"] == np.mean([1 / 2, 2 / 2])
    assert res["routines"] == 2 and res["views"] == 2 and res["queries"] == 12 and res["chance"] == 0.5


def test_back_view_enrolment_mirrors_x_only_and_finds_the_far_camera():
    ws = _set([("A", "c1", (1.0, 0.1))] * 3 + [("B", "c1", B)] * 3
              + [("A", "c2", (-1.0, 0.1))] * 3 + [("B", "c2", B)] * 3)   # c2 films A from behind
    back = ws.seen_from_behind()
    assert np.array_equal(back.feats[..., 0::2], -ws.feats[..., 0::2])
    assert np.array_equal(back.feats[..., 1::2], ws.feats[..., 1::2])
    assert list(back.name) == list(ws.name) and len(ws + back) == 2 * len(ws)
    # without it, A's queries from the far camera find B (cosine 0.1 beats -0.99): 3 of 6 right
    assert cross_view_eval(_embed, ws)["top1"] == 0.5
    assert cross_view_eval(_embed, ws, back_view=True)["top1"] == 1.0


def test_genre_eval_breaks_top1_down_by_genre_camera_and_confusion():
    def ws(rows):
        w = _set([(name, view, vec) for name, view, vec, _ in rows])
        w.genre = np.array([g for *_, g in rows])
        return w
    gallery = ws([("g1", "c0", A, "Rumba"), ("g2", "c0", B, "Cha-cha")])
    # c1 sees a Rumba as Cha-cha-like: Rumba 1 of 2 right, Cha-cha 2 of 2; camera c1 1 of 2, c2 2 of 2
    query = ws([("q1", "c1", A, "Rumba"), ("q2", "c1", MOSTLY_B, "Rumba"),
                ("q3", "c2", B, "Cha-cha"), ("q4", "c2", B, "Cha-cha")])
    res = genre_eval(_embed, gallery, query, probe=False)
    assert res["top1"] == 0.75
    assert res["per_genre_top1"] == {"Cha-cha": 1.0, "Rumba": 0.5}
    assert res["per_view_top1"] == {"c1": 0.5, "c2": 1.0}
    assert res["confusion"] == {"Cha-cha": {"Cha-cha": 2, "Rumba": 0}, "Rumba": {"Cha-cha": 1, "Rumba": 1}}
