"""ONNX Runtime backend: the CPU default (all graph optimisations, configurable threads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dancewire.errors import ModelCacheError
from edge.engines.base import Engine, TensorSpec

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_}


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    if arg.type not in _ORT_TYPES:      # taken as float32 it made warm_up and empty batches lie
        raise ModelCacheError(f"tensor {arg.name!r} has type {arg.type}, which no dancewire engine feeds")
    return TensorSpec(arg.name, shape, np.dtype(_ORT_TYPES[arg.type]))


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int = 2, providers: list[str] | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # Worker threads that busy-wait between ops cost 3x on a loaded 2-core box: let them sleep.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._sess = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                              providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelCacheError(f"cannot load ONNX model {onnx_path}: {str(exc).splitlines()[0]}") from None
        self.path = Path(onnx_path)
        self.threads = threads
        self._inputs = [_spec(a) for a in self._sess.get_inputs()]
        self._outputs = [_spec(a) for a in self._sess.get_outputs()]
        self._out_names = [o.name for o in self._outputs]

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._sess is None:
            raise RuntimeError(f"the engine for {self.path.name} is closed")
        results = self._sess.run(self._out_names, feeds)
        return dict(zip(self._out_names, results))

    def close(self) -> None:
        """Drop the session (its memory and threads); run() raises afterwards."""
        self._sess = None
