"""Small, exact rewrites of exported ONNX graphs that let ONNX Runtime's quantizers reach every
weight: they change how a product is written, never what it computes; and one that lets a
quantized graph keep a tied embedding once."""

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


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _dequantized(inits, q: str, scale: str, zero: str) -> np.ndarray | None:
    """q's values in float; None unless scale and zero point are per tensor or per last axis."""
    if not {q, scale, zero} <= inits.keys():
        return None
    data, s, z = (numpy_helper.to_array(inits[n]) for n in (q, scale, zero))
    if s.ndim > 1 or z.shape != s.shape or data.ndim != 2 or (s.ndim and s.size != data.shape[1]):
        return None
    return (data.astype(np.float32) - z.astype(np.float32)) * s.astype(np.float32)


def _int8_head(inits, users, producers, node):
    """(weight, scale, zero point) of a dynamically quantized product h @ W with W a constant:
    ONNX Runtime writes MatMulInteger(h_q, W_q, h_zp, W_zp) -> Cast -> Mul(., h_scale * W_scale)."""
    if len(node.input) < 4 or node.input[1] not in inits:
        return None
    cast = users.get(node.output[0], [])
    if len(cast) != 1 or cast[0].op_type != "Cast":
        return None
    mul = users.get(cast[0].output[0], [])
    if len(mul) != 1 or mul[0].op_type != "Mul":
        return None
    for name in mul[0].input:
        scales = producers.get(name)
        if scales is not None and scales.op_type == "Mul" and scales.input[1] in inits:
            return node.input[1], scales.input[1], node.input[3]
    return None


def share_tied_int8_embedding(model: onnx.ModelProto) -> dict | None:
    """A dynamically quantized decoder with a tied embedding stores it twice: int8 [D, V] for
    the output head (MatMulInteger) and uint8 [V, D] for the token lookup (Gather, then
    DequantizeLinear) -- for a small model the larger half of the file. The lookup is rewritten
    to read the head's copy: Gather along axis 1, Transpose to [..., D], dequantize with the
    head's scale; the lookup's copy is dropped.

    A pair is taken only when both dequantize to the same matrix within their two rounding
    steps (so they came from one float tensor); the lookup's values then change by at most
    that. Returns what was shared, or None when the graph has no such pair."""
    graph = model.graph
    inits, users = _initializers(graph), _consumers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    heads = [h for n in graph.node if n.op_type == "MatMulInteger"
             for h in [_int8_head(inits, users, producers, n)] if h]
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in [*graph.input, *onnx.shape_inference.infer_shapes(model).graph.value_info]
             if v.type.tensor_type.HasField("shape")}
    for gather in [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]:
        deq = users.get(gather.output[0], [])
        if _attr(gather, "axis", 0) != 0 or len(deq) != 1 or deq[0].op_type != "DequantizeLinear" \
                or len(deq[0].input) != 3 or gather.input[1] not in ranks:
            continue
        table = _dequantized(inits, gather.input[0], *deq[0].input[1:])
        step = numpy_helper.to_array(inits[deq[0].input[1]]) if table is not None else None
        if step is None or step.ndim:  # the lookup's copy: one scale for the whole table
            continue
        for weight, scale, zero in heads:
            head = _dequantized(inits, weight, scale, zero)
            if head is None or head.shape != table.shape[::-1]:
                continue
            head_step = numpy_helper.to_array(inits[scale])
            change = float(np.abs(head.T - table).max())
            if change > 0.5 * (float(step) + float(head_step.max())) * 1.001 + 1e-7:
                continue
            _lookup_from_head(graph, gather, deq[0], ranks[gather.input[1]], weight, scale, zero,
                              per_channel=head_step.ndim == 1)
            dropped = gather.input[0]
            saved = inits[dropped].ByteSize()
            drop_unused_initializers(model)
            return {"lookup_reads": weight, "dropped": dropped, "bytes_saved": saved,
                    "max_abs_change": round(change, 8)}
    return None


def share_tied_qdq_embedding(model: onnx.ModelProto) -> dict | None:
    """The static (QDQ) twin of share_tied_int8_embedding: a tied decoder's head reads an int8
    [D, V] copy through DequantizeLinear, and the token lookup (Gather) the float [V, D] table,
    stored beside it at four times the size. The lookup is rewritten to read the head's int8
    copy (per-token scale where the head is per channel) and the float table is dropped; taken
    only when the two agree within half the head's rounding step, which bounds the change."""
    graph = model.graph
    inits, users = _initializers(graph), _consumers(graph)
    heads = [n for n in graph.node if n.op_type == "DequantizeLinear" and len(n.input) == 3
             and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8
             and _attr(n, "axis", 1) == 1
             and all(u.op_type in ("MatMul", "Gemm") for u in users.get(n.output[0], []))]
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in [*graph.input, *onnx.shape_inference.infer_shapes(model).graph.value_info]
             if v.type.tensor_type.HasField("shape")}
    for gather in [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
                   and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT
                   and _attr(n, "axis", 0) == 0 and n.input[1] in ranks]:
        table = numpy_helper.to_array(inits[gather.input[0]])
        for deq in heads:
            weight, scale, zero = deq.input
            head = _dequantized(inits, weight, scale, zero)
            if head is None or table.ndim != 2 or head.shape != table.shape[::-1]:
                continue
            step = numpy_helper.to_array(inits[scale])
            change = float(np.abs(head.T - table).max())
            if change > 0.5 * float(step.max()) * 1.001 + 1e-7:
                continue
            dropped, saved = gather.input[0], inits[gather.input[0]].ByteSize()
            _lookup_from_head(graph, gather, None, ranks[gather.input[1]], weight, scale, zero,
                              per_channel=step.ndim == 1)
            drop_unused_initializers(model)
            return {"lookup_reads": weight, "dropped": dropped, "bytes_saved": saved,
                    "max_abs_change": round(change, 8)}
    return None


def _lookup_from_head(graph, gather, deq, rank, weight, scale, zero, per_channel):
    """Replace `gather` (and the DequantizeLinear `deq` after it, if any) by a lookup of the
    head's int8 [D, V] weight, dequantized: the same output name."""
    ids, base = gather.input[1], gather.output[0]
    out = deq.output[0] if deq is not None else base
    nodes = [helper.make_node("Gather", [weight, ids], [base + "_t"], axis=1),
             helper.make_node("Transpose", [base + "_t"], [base + "_q"],
                              perm=[*range(1, rank + 1), 0])]
    if per_channel:  # a scale and zero point per token: looked up alongside
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), base + "_ax"))
        nodes += [helper.make_node("Gather", [scale, ids], [base + "_s0"], axis=0),
                  helper.make_node("Unsqueeze", [base + "_s0", base + "_ax"], [base + "_s"]),
                  helper.make_node("Gather", [zero, ids], [base + "_z0"], axis=0),
                  helper.make_node("Unsqueeze", [base + "_z0", base + "_ax"], [base + "_z1"]),
                  helper.make_node("Cast", [base + "_z1"], [base + "_z"], to=onnx.TensorProto.FLOAT),
                  helper.make_node("Cast", [base + "_q"], [base + "_f"], to=onnx.TensorProto.FLOAT),
                  helper.make_node("Sub", [base + "_f", base + "_z"], [base + "_c"]),
                  helper.make_node("Mul", [base + "_c", base + "_s"], [out])]
    else:
        nodes.append(helper.make_node("DequantizeLinear", [base + "_q", scale, zero], [out]))
    at = list(graph.node).index(gather)
    graph.node.remove(gather)
    if deq is not None:
        graph.node.remove(deq)
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)


def graph_opset(path) -> int:
    """The default-domain opset the graph file imports (a quantizer may raise it: int4 tensors
    need 21), which is what a runtime must support."""
    return _default_opset(onnx.load(str(path), load_external_data=False))


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def graph_needs(path) -> dict:
    """The manifest's record of what loading the graph takes: its opset, IR version, and the
    oldest ONNX Runtime implementing those and the contrib ops it uses (edge_app/compat.py),
    which a deploy checks against each device class's runtime. A LiteRT graph (.tflite) needs
    the ai-edge-litert release that validated it, or a newer one."""
    from edge_app.compat import min_onnxruntime
    from edge_app.litert import is_litert_graph, litert_version

    if is_litert_graph(path):
        return {"runtime": "litert", "min_litert": litert_version()}
    model = onnx.load(str(path), load_external_data=False)
    opset = _default_opset(model)
    contrib = {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}
    return {"opset": opset, "ir_version": model.ir_version,
            "min_onnxruntime": min_onnxruntime(opset, contrib, model.ir_version)}
