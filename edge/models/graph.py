"""ONNX graph edits after conversion: keep only some outputs, and make the batch dynamic.

Both need only the ``onnx`` package (a runtime dependency), not TensorFlow.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

BATCH_DIM = "batch"


def trim_outputs(model: onnx.ModelProto, keep: list[str]) -> onnx.ModelProto:
    """The sub-graph that computes only the outputs in ``keep`` (onnx.utils.Extractor).

    Dropping the segmentation and heatmap branches of the landmark model removes ~40% of
    its work; the kept outputs are computed by the very same nodes as before.
    """
    names = [o.name for o in model.graph.output]
    missing = [k for k in keep if k not in names]
    if missing:
        raise ValueError(f"outputs {missing} not in the model (it has {names})")
    inputs = [i.name for i in model.graph.input]
    extracted = onnx.utils.Extractor(model).extract_model(inputs, keep)
    # Extractor builds a fresh ModelProto: carry over the producer and metadata.
    extracted.ir_version = model.ir_version
    extracted.producer_name = model.producer_name
    extracted.producer_version = model.producer_version
    del extracted.metadata_props[:]
    extracted.metadata_props.extend(model.metadata_props)
    return extracted


def _constant_values(model: onnx.ModelProto) -> dict[str, tuple[object, np.ndarray]]:
    """name -> (owner proto, value) for every initializer and Constant node output."""
    out: dict[str, tuple[object, np.ndarray]] = {}
    for init in model.graph.initializer:
        out[init.name] = (init, numpy_helper.to_array(init))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = (node, numpy_helper.to_array(node.attribute[0].t))
    return out


def make_batch_dynamic(model: onnx.ModelProto, dim_name: str = BATCH_DIM) -> onnx.ModelProto:
    """Turn a fixed batch-1 graph into one whose leading dimension is ``dim_name``.

    The graph inputs and outputs get a symbolic leading dimension; every Reshape whose
    target shape is a constant starting with a hard-coded 1 gets 0 there instead ("copy the
    input's dimension", ONNX's default ``allowzero=0``), so the batch flows through.
    Stale intermediate shape annotations are dropped and shape inference is run again.
    Raises ValueError when a Resize, Expand or ConstantOfShape takes a constant batch-1 shape.
    Other ways a graph can pin the batch (a Slice's constant ends, a shape built by a Concat of
    constants) are not looked for here: the build's batch check (`verify.batch_consistency`,
    output shapes compared, distinct inputs) is what catches them.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    for value in list(graph.input) + list(graph.output):
        if value.name in init_names:
            continue
        dims = value.type.tensor_type.shape.dim
        if not dims:
            raise ValueError(f"tensor {value.name} has no shape")
        dims[0].Clear()
        dims[0].dim_param = dim_name

    consts = _constant_values(model)
    rewritten: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in ("Resize", "Expand", "Tile", "ConstantOfShape"):
            # sizes/shapes given as constants would pin the batch; scales are fine.
            shape_inputs = {"Resize": [3], "Expand": [1], "Tile": [], "ConstantOfShape": [0]}[node.op_type]
            for k in shape_inputs:
                if k < len(node.input) and node.input[k] in consts:
                    value = consts[node.input[k]][1]
                    if value.size and value.reshape(-1)[0] == 1:
                        raise ValueError(f"{node.op_type} {node.name} has a constant batch-1 shape")
        if node.op_type != "Reshape" or node.input[1] not in consts:
            continue
        shape_name = node.input[1]
        owner, value = consts[shape_name]
        if value.ndim != 1 or value.size == 0 or value[0] != 1:
            continue
        if shape_name not in rewritten:
            new_value = value.copy()
            new_value[0] = 0
            new_name = shape_name + "_dynbatch"
            graph.initializer.append(numpy_helper.from_array(new_value.astype(np.int64), new_name))
            rewritten[shape_name] = new_name
        node.input[1] = rewritten[shape_name]
        for attr in node.attribute:
            if attr.name == "allowzero" and attr.i:
                raise ValueError(f"Reshape {node.name} has allowzero=1")

    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    # Drop initializers that nothing uses any more (the old batch-1 shapes).
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.checker.check_model(model, full_check=True)
    return model


def tensor_specs(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """Inputs and outputs as ``{"inputs": [{name, shape, dtype}], "outputs": [...]}``."""
    init_names = {i.name for i in model.graph.initializer}

    def spec(v):
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in v.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
        return {"name": v.name, "shape": shape, "dtype": dtype}

    return {"inputs": [spec(v) for v in model.graph.input if v.name not in init_names],
            "outputs": [spec(v) for v in model.graph.output]}
