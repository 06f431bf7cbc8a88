"""bench encoder's live-label figure: query streams through the cloud's own aggregation."""
from __future__ import annotations

import numpy as np

from benchmarks.encoder import _live_label
from cloud.classify import Classifier
from cloud.gallery import Gallery
from cloud.records import Reference
from edge.motion.evaluate import WindowSet


def _unit(rng, centre, n, spread):
    x = centre + spread * rng.standard_normal((n, len(centre)))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _queries(labels: list[tuple[str, str, str]]) -> WindowSet:
    """One window per (performance, camera, genre) entry, in order, 0.5 s apart per stream."""
    starts: dict[tuple[str, str], float] = {}
    st = []
    for name, view, _ in labels:
        st.append(starts.get((name, view), 0.0))
        starts[(name, view)] = st[-1] + 0.5
    n = len(labels)
    name, view, genre = (np.array(c, object) for c in zip(*labels))
    return WindowSet(np.zeros((n, 4, 34), np.float32), np.ones((n, 4), bool), genre, name, view, np.array(st))


def test_live_label_follows_the_stream_and_counts_no_label_and_wrong_labels():
    rng = np.random.default_rng(0)
    a, b = np.eye(16)[0], np.eye(16)[1]
    emb = np.concatenate([_unit(rng, a, 20, 0.1), _unit(rng, b, 20, 0.1)])
    refs = [Reference(f"r{i}", "A" if i < 20 else "B", video=f"v{i // 5}") for i in range(40)]
    gallery = Gallery(emb, refs)
    # stream 1: a dancer of A throughout; stream 2: labelled A but every window looks like B
    q = _queries([("p1", "c0", "A")] * 12 + [("p2", "c0", "A")] * 12)
    qe = np.concatenate([_unit(rng, a, 12, 0.1), _unit(rng, b, 12, 0.1)])
    live = _live_label(gallery, q, qe, Classifier(gallery).classify(qe))
    assert live["streams"] == 2
    assert live["accuracy_once_labelled"] == 0.5                  # stream 1 always right, stream 2 always wrong
    assert 0.0 < live["windows_to_first_label"] < 12
    assert live["accuracy"] < 0.5                                 # windows before the first label count as wrong
    assert live["label_changes_per_stream"] == 0.0
