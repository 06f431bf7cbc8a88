"""Tiny ONNX models built with onnx.helper for the engine tests."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def affine_model(path, batch: int | str = "N", features: int = 3, scale: float = 2.0, bias: float = 1.0):
    """y = x * scale + bias and s = sum(x, axis=1), with a fixed or symbolic batch dimension."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [batch, 1])
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale]),
             helper.make_tensor("bias", TensorProto.FLOAT, [1], [bias]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    nodes = [helper.make_node("Mul", ["x", "scale"], ["xs"]),
             helper.make_node("Add", ["xs", "bias"], ["y"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1)]
    graph = helper.make_graph(nodes, "affine", [x], [y, s], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
