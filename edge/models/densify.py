"""Rewrite a TFLite model's sparse constant tensors (DENSIFY ops) as dense constants.

MediaPipe's pose detector stores most of its fp16 weights sparse: a constant tensor with
``sparsity`` parameters feeds a DENSIFY op whose output feeds DEQUANTIZE. tf2onnx cannot
convert DENSIFY, so before conversion every DENSIFY op is removed and its output tensor
becomes a dense constant holding exactly the values TFLite's own DENSIFY kernel produces
(the algorithm of ``tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc``).

The TFLite flatbuffer schema (``schema_py_generated.py``, generated with the object API)
is passed in as a module: the build takes it from the mediapipe wheel, so nothing here
needs TensorFlow. Only ``numpy`` and ``flatbuffers`` are imported.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

# TFLite TensorType -> numpy dtype (the ones a sparse constant can carry).
_TFL_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8,
               7: np.int16}
_DENSE, _SPARSE_CSR = 0, 1


def load_schema(path: str | Path) -> ModuleType:
    """Import a flatc-generated ``schema_py_generated.py`` from a file path."""
    spec = importlib.util.spec_from_file_location("_dancewire_tflite_schema", str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load TFLite schema from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vector(v) -> np.ndarray:
    if v is None:
        return np.zeros(0, np.int64)
    return np.asarray(v.values if v.values is not None else [], dtype=np.int64)


def densify_values(values: np.ndarray, dense_shape: tuple[int, ...], sparsity) -> np.ndarray:
    """Expand the stored non-zeros of one sparse tensor into its dense array.

    ``sparsity`` is a ``SparsityParametersT``: traversal order over the original and block
    dimensions, the block map, and per traversed dimension either DENSE (a size) or
    SPARSE_CSR (segments + indices). Values are stored in the order of a depth-first walk
    over those levels; the walk is done breadth-first here, vectorised, which visits the
    leaves in the same order.
    """
    traversal = list(sparsity.traversalOrder)
    block_map = list(sparsity.blockMap) if sparsity.blockMap is not None else []
    dims = sparsity.dimMetadata
    rank = len(dense_shape)
    n_levels = len(traversal)
    if len(dims) != n_levels:
        raise ValueError("sparsity metadata does not match its traversal order")
    block_size = [int(dims[traversal.index(rank + k)].denseSize) for k in range(len(block_map))]

    prev = np.zeros(1, np.int64)              # position within the current level
    idx = np.zeros((1, 0), np.int64)          # indices chosen so far, one column per level
    for dm in dims:
        if dm.format == _DENSE:
            size = int(dm.denseSize)
            new_prev = (prev[:, None] * size + np.arange(size)[None, :]).reshape(-1)
            new_col = np.tile(np.arange(size), len(prev))
            idx = np.repeat(idx, size, axis=0)
        elif dm.format == _SPARSE_CSR:
            seg = _vector(dm.arraySegments)
            ind = _vector(dm.arrayIndices)
            starts, ends = seg[prev], seg[prev + 1]
            counts = ends - starts
            total = int(counts.sum())
            # j runs over starts[p]..ends[p]-1 for each p, in order
            offsets = np.repeat(ends - counts.cumsum(), counts) if total else np.zeros(0, np.int64)
            new_prev = np.arange(total, dtype=np.int64) + offsets
            new_col = ind[new_prev]
            idx = np.repeat(idx, counts, axis=0)
        else:
            raise ValueError(f"unknown sparse dimension format {dm.format}")
        idx = np.concatenate([idx, new_col[:, None]], axis=1)
        prev = new_prev

    flat_values = np.asarray(values).reshape(-1)
    if len(idx) != flat_values.size:
        raise ValueError(f"sparse tensor holds {flat_values.size} values but its metadata "
                         f"addresses {len(idx)}")
    orig = np.zeros((len(idx), rank), np.int64)
    for level in range(rank):
        orig[:, traversal[level]] = idx[:, level]
    for level in range(rank, n_levels):
        block = traversal[level] - rank
        dim = block_map[block]
        orig[:, dim] = orig[:, dim] * block_size[block] + idx[:, level]
    dense = np.zeros(dense_shape, dtype=flat_values.dtype)
    dense[tuple(orig.T)] = flat_values
    return dense


def densify_model(src: str | Path, dst: str | Path, schema: ModuleType) -> int:
    """Write ``dst``: ``src`` with every DENSIFY op replaced by a dense constant.

    Returns how many DENSIFY ops were removed (0: the file is copied unchanged in content).
    """
    import flatbuffers

    buf = bytearray(Path(src).read_bytes())
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    densify_codes = {i for i, oc in enumerate(model.operatorCodes)
                     if max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
                     == schema.BuiltinOperator.DENSIFY}
    removed = 0
    for subgraph in model.subgraphs:
        kept = []
        for op in subgraph.operators:
            if op.opcodeIndex not in densify_codes:
                kept.append(op)
                continue
            src_t = subgraph.tensors[op.inputs[0]]
            dst_t = subgraph.tensors[op.outputs[0]]
            dtype = _TFL_DTYPES[src_t.type]
            raw = model.buffers[src_t.buffer].data
            values = np.frombuffer(bytes(bytearray(raw)), dtype=dtype)
            dense_shape = tuple(int(d) for d in dst_t.shape)
            dense = densify_values(values, dense_shape, src_t.sparsity)
            new_buffer = schema.BufferT()
            new_buffer.data = np.frombuffer(dense.astype(dtype).tobytes(), np.uint8)
            model.buffers.append(new_buffer)
            # The sparse source tensor must go too (tf2onnx reads every constant, used or
            # not): it shares the dense buffer, and its old buffer is emptied.
            old_buffer = src_t.buffer
            for t in (src_t, dst_t):
                t.buffer = len(model.buffers) - 1
                t.sparsity = None
                t.shape = list(dense_shape)
                t.type = dst_t.type
            if all(t.buffer != old_buffer for sg in model.subgraphs for t in sg.tensors):
                model.buffers[old_buffer].data = None
            removed += 1
        subgraph.operators = kept
    builder = flatbuffers.Builder(len(buf) * 2)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(dst).write_bytes(bytes(builder.Output()))
    return removed
