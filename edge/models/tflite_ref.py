"""TFLite reference outputs for the fidelity check (build time and tests only).

Runs a ``.tflite`` model one sample at a time on a batch of NHWC inputs and returns every
output, keyed by the TFLite output tensor name ("Identity", "Identity_1", ...).
The interpreter is ``ai_edge_litert`` (a dev dependency) when importable, else
``tensorflow.lite`` (the isolated build venv). Standalone on purpose: the build runs this
file as a script with the build venv's Python when the main venv has no interpreter:

    python tflite_ref.py MODEL.tflite INPUTS.npz OUTPUTS.npz

(INPUTS.npz holds one array ``x``; OUTPUTS.npz gets one array per output tensor.)
Only numpy and the interpreter are imported.
"""
from __future__ import annotations

import sys

import numpy as np


def interpreter_module():
    """The Interpreter class and a label, or (None, reason)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        import ai_edge_litert
        return Interpreter, f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}"
    except ImportError as exc:
        reason = str(exc)
    try:
        import tensorflow as tf  # noqa: F401  (only inside the build venv)
        return tf.lite.Interpreter, f"tensorflow.lite {tf.__version__}"
    except ImportError:
        return None, reason


def available() -> bool:
    return interpreter_module()[0] is not None


def run(model_path: str, x: np.ndarray, threads: int = 2) -> tuple[dict[str, np.ndarray], str]:
    """Outputs for each sample of ``x`` (N, H, W, C), stacked: ({name: (N, ...)}, label)."""
    Interpreter, label = interpreter_module()
    if Interpreter is None:
        raise ImportError(f"no TFLite interpreter (pip install ai-edge-litert): {label}")
    it = Interpreter(model_path=str(model_path), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()
    results: dict[str, list[np.ndarray]] = {d["name"]: [] for d in outs}
    for sample in np.asarray(x, np.float32):
        it.set_tensor(inp["index"], sample[None])
        it.invoke()
        for d in outs:
            results[d["name"]].append(it.get_tensor(d["index"]).copy())
    return {k: np.concatenate(v) for k, v in results.items()}, label


def main(argv: list[str]) -> int:
    model, inputs, outputs = argv
    x = np.load(inputs)["x"]
    result, label = run(model, x)
    np.savez(outputs, __interpreter__=np.array(label), **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
