"""Benchmark JSON names the machine precisely enough to compare runs (one CPU name covers several generations)."""
from __future__ import annotations

import os

import pytest

from benchmarks.common import machine_info


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads /proc/cpuinfo (Linux)")
def test_machine_info_records_cpu_generation_and_simd():
    info = machine_info()
    flags = next(ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith(("flags", "Features")))
    assert info["cores"] == os.cpu_count() and info["memory_gib"] > 0
    assert 1 <= info["cores_usable"] == len(os.sched_getaffinity(0)) <= info["cores"]
    assert info["simd"] in flags
    if "avx512f" in flags:
        assert info["simd"] == "avx512f"
    elif "avx2" in flags:
        assert info["simd"] == "avx2"
    if any(ln.startswith("cpu family") for ln in open("/proc/cpuinfo")):
        assert isinstance(info["cpu_family"], int) and isinstance(info["cpu_model"], int)
