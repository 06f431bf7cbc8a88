"""Helpers shared by benchmarks: machine description, percentiles, plotting backend."""
from __future__ import annotations

import os
import platform

import numpy as np


def machine_info() -> dict:
    """What the figures were measured on. "AMD EPYC" alone names several CPU generations (a cloud
    box of the same name ran these benchmarks 2-3x faster one day than the day before), so the
    CPU family/model and the widest SIMD the CPU offers are recorded as well."""
    cpu, family, model, flags = "", None, None, set()   # platform.processor() is just "x86_64" on Ubuntu
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and not cpu:
                cpu = value
            elif key == "cpu family" and family is None:
                family = int(value)
            elif key == "model" and model is None:
                model = int(value)
            elif key == "flags" and not flags:
                flags = set(value.split())
            if not line.strip() and cpu:
                break
    except (OSError, ValueError):
        pass
    cpu = cpu or platform.processor() or platform.machine()
    simd = next((f for f in ("avx512f", "avx2", "avx", "sse4_2", "asimd") if f in flags), None)
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    try:
        usable = len(os.sched_getaffinity(0))          # the CPUs this process may run on
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"cpu": cpu, "cpu_family": family, "cpu_model": model, "simd": simd, "cores": os.cpu_count(),
            "cores_usable": usable,
            "memory_gib": mem_gib, "python": platform.python_version(), "platform": platform.platform(),
            "onnxruntime": ort}


def percentiles(values, ps=(50, 95, 99)) -> dict[str, float]:
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return {f"p{p}": None for p in ps}
    return {f"p{p}": float(np.percentile(arr, p)) for p in ps}


def pyplot():
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
