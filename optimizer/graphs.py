"""Small, exact rewrites of exported ONNX graphs that let ONNX Runtime's quantizers reach every
weight: they change how a product is written, never what it computes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in graph.initializer}


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def fold_transposed_weights(model: onnx.ModelProto) -> int:
    """Transpose(initializer) feeding products becomes a transposed initializer of its own.

    The exporter writes a tied output projection as MatMul(h, Transpose(embedding)): the
    quantizers only take products whose weight is a constant, so the head stayed in float.
    Returns the number of Transpose nodes folded (the embedding itself is kept for Gather)."""
    graph, inits, folded = model.graph, _initializers(model.graph), 0
    for node in list(graph.node):
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[0]])
        perm = _attr(node, "perm", None)
        graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(weight.transpose(perm)), node.output[0]))
        graph.node.remove(node)
        folded += 1
    return folded


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Gemm(A, B, C) with a constant B (GPT-2's Conv1D layers) becomes MatMul(A, B) + C, which
    the weight-only quantizer takes. Only alpha = beta = 1 and transA = 0 (what the exporter
    writes); transB is folded into B. Returns the number of nodes rewritten."""
    graph, inits, count = model.graph, _initializers(model.graph), 0
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits or \
                _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or \
                _attr(node, "beta", 1.0) != 1.0:
            continue
        weight = node.input[1]
        if _attr(node, "transB", 0):
            array = numpy_helper.to_array(inits[weight]).T
            weight = f"{weight}_transposed"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), weight))
        out = node.output[0]
        product = out if len(node.input) < 3 or not node.input[2] else f"{out}_matmul"
        new = [helper.make_node("MatMul", [node.input[0], weight], [product],
                                name=f"{node.name}_matmul")]
        if product != out:
            new.append(helper.make_node("Add", [product, node.input[2]], [out],
                                        name=f"{node.name}_bias"))
        graph.node.remove(node)
        for offset, n in enumerate(new):
            graph.node.insert(index + offset, n)
        count += 1
    return count


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for init in list(model.graph.initializer):
        if init.name not in used:
            model.graph.initializer.remove(init)


def graph_opset(path) -> int:
    """The default-domain opset the graph file imports (a quantizer may raise it: int4 tensors
    need 21), which is what a runtime must support."""
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
