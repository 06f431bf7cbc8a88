"""Engines: one interface (`Engine`), backends behind `open_engine`."""
from __future__ import annotations

from pathlib import Path

from edge.engines.base import Engine, TensorSpec

BACKENDS = ("onnxruntime", "tensorrt")


def open_engine(onnx_path: str | Path, backend: str = "onnxruntime", *, threads: int = 2,
                precision: str = "fp16", max_batch: int = 8, calibrator=None) -> Engine:
    """Open a model on a backend. TensorRT builds (and caches) an engine from the ONNX file."""
    if backend == "onnxruntime":
        from edge.engines.ort import OrtEngine
        return OrtEngine(onnx_path, threads=threads)
    if backend == "tensorrt":
        from edge.engines.trt import TrtEngine
        return TrtEngine(onnx_path, precision=precision, max_batch=max_batch, calibrator=calibrator)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


__all__ = ["Engine", "TensorSpec", "open_engine", "BACKENDS"]
