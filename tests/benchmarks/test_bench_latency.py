"""`dancewire bench latency` end to end on a short paced replay: real edge graph, real cloud
process over CURVE ZeroMQ. Checks what it writes, not how fast this machine is."""
from __future__ import annotations

import json

import pytest

from dancewire.cli import main
from dancewire.errors import ModelCacheError


@pytest.mark.slow
def test_bench_latency_writes_stages_feedback_and_a_timeline(tmp_path, shared_data):
    from edge.models.registry import model_path

    try:
        model_path("pose_landmarks")
    except ModelCacheError as exc:
        pytest.skip(f"pose models not built: {exc}")
    out = tmp_path / "bench-latency.json"
    assert main(["bench", "latency", "--json", str(out), "--configs", "ort-2", "--loops", "1"]) == 0
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert m["config"] == "ort-2" and m["frames"] > 150 and m["dropped_frames"] < 0.2 * m["frames"]
    assert 0 < m["edge_feedback_ms_p50"] <= m["edge_feedback_ms_p95"]
    assert 0 < m["cloud_feedback_ms_p50"] <= m["cloud_feedback_ms_p95"]       # Feedback came back
    stages = res["configs"]["ort-2"]
    for stage in ("detect", "landmarks", "track", "clean", "motion", "feedback", "total", "window", "encode", "send"):
        assert stages[stage]["p99"] > 0, stage                               # each stage was measured
    # the frames' "feedback" is the drawing only: the windows' work is in "motion" (its p95 > its p50 ~ 0)
    assert stages["motion"]["p95"] > stages["motion"]["p50"]
    cloud = res["cloud_stages_ms"]["ort-2"]                                    # per configuration
    assert {"classify", "total"} <= set(cloud["stages"])
    n = stages["cloud_feedback"]["n"]
    assert n <= cloud["stages"]["classify"]["count"] <= n + 2                 # its own windows only
    assert res["machine"]["cpu"] and res["machine"]["cores_usable"] >= 1
    assert res["measured_at"] and res["commit"] and len(res["commit"].rstrip("+")) == 40    # which run, which code
    assert stages["timeline_points"] == stages["frames"]                      # every frame is on the plot
    for png in ("latency_stages.png", "latency_timeline.png"):
        assert (tmp_path / png).stat().st_size > 0, png
