"""`dancewire bench wire` runs end to end and writes the metrics the issue asks for (no speed assertions here)."""
from __future__ import annotations

import json

import pytest

from dancewire.cli import main


@pytest.mark.slow
def test_bench_wire_quick_writes_all_metrics(tmp_path):
    out = tmp_path / "bench-wire.json"
    assert main(["bench", "wire", "--json", str(out), "--quick", "--bytes-seconds", "1.5", "--seconds", "1",
                 "--ingest-windows", "8000", "--nodes", "3", "--repeats", "1"]) == 0
    result = json.loads(out.read_text())
    m = result["metrics"]
    for key in ("bytes_per_dancer_second", "ingest_windows_per_s", "roundtrip_ms_p50", "roundtrip_ms_p99",
                "nodes_roundtrip_ms_p50", "nodes_roundtrip_ms_p99"):
        assert isinstance(m[key], float) and m[key] > 0, key
    assert m["roundtrip_missing_feedback"] == 0          # every window got its feedback back
    assert result["detail"]["ingest"]["rejected"] == 0
    assert m["handshake_failures"] == 0                  # every connection, the bench's own included, was CURVE
    assert result["config"]["security"] == "CURVE"
    assert (tmp_path / "bench-wire-roundtrip.png").stat().st_size > 0
