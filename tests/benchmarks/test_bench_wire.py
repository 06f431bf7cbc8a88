"""The wire suite's bytes figure counts delivered windows only."""
from __future__ import annotations

import argparse

import pytest

import benchmarks.wire as wire


def test_a_bytes_run_that_delivers_nothing_is_an_error_not_a_pass(tmp_path, monkeypatch):
    """Every submit refused (here, embeddings of another size than the Hello's): the run reported
    3 bytes per dancer-second and its <= 400 goal passed."""
    real = wire._embeddings
    monkeypatch.setattr(wire, "_embeddings", lambda n, dim, seed=0: real(n, dim + 3, seed))
    args = argparse.Namespace(dtype="int8", bytes_seconds=1.0)
    with pytest.raises(RuntimeError, match="not every window"):
        wire.measure_bytes(tmp_path, None, args, 64, 4)
    monkeypatch.setattr(wire, "_embeddings", real)
    ok = wire.measure_bytes(tmp_path, None, args, 64, 4)                  # delivered: measured
    assert 0 < ok["bytes_per_dancer_second"] < 1000
