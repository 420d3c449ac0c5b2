"""Static INT8 of a decoder: calibration on real text, through the graph's real inputs, and the
choice of which nodes get QuantizeLinear/DequantizeLinear.

Calibration windows are drawn from the recipe's validation split with a seed (start offsets
uniform over the token stream, so any number of windows can be drawn). Each window is fed to the
exported KV-cache graph the way it runs when serving: a prefill of its first `prefill` tokens
with an empty past, then `decode_steps` single-token steps whose past is the FP32 graph's own
present (teacher forcing: the next token is the window's, not a generated one). Both paths thus
give the calibrator activation ranges. The report records the windows, tokens, seed and the
sha256 of the calibration token ids (int64, row-major), as the image families record their
latent calibration set.

What is quantized (QDQ): the MatMuls that multiply an activation by a weight (every attention
and MLP projection, and the output head unless the recipe keeps it in float), with int8 weights
and per-tensor uint8 activations from MinMax calibration. Left in float: the attention products
(Q·K^T and P·V, two activations; the softmax's probabilities and the cache would each share one
static range across every position and sequence length), LayerNorm/RMSNorm, Softmax, the
rotary embedding and the embedding lookup (a Gather reads the table, it computes nothing; a
tied table is then kept once, the lookup reading the head's int8 copy: optimizer/graphs.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx

from edge_app.generation import TextGeneration
from edge_app.textgen import Decoder

from ..errors import OptimizerError

BATCH = 16  # windows per graph run


def calibration_windows(stream: np.ndarray, samples: int, length: int, seed: int) -> np.ndarray:
    """(samples, length) int64 windows of `stream` at seeded uniform start offsets."""
    if len(stream) < length:
        raise OptimizerError(f"static-int8: the validation split has {len(stream)} tokens, fewer "
                             f"than one calibration window of {length}")
    starts = np.random.default_rng(seed).integers(0, len(stream) - length + 1, samples)
    return np.stack([stream[s:s + length] for s in starts]).astype(np.int64)


class DecoderReader:
    """ORT CalibrationDataReader: per batch of windows one prefill (empty past, logits at every
    position, as perplexity scoring runs) and `decode_steps` cached steps (logits at the last)."""

    def __init__(self, graph: Path, spec: TextGeneration, windows: np.ndarray, prefill: int):
        self.dec, self.windows, self.prefill = Decoder.open(graph, spec), windows, prefill
        self.feeds = self._feeds()

    def _feeds(self):
        spec = self.dec.spec
        for i in range(0, len(self.windows), BATCH):
            batch = self.windows[i:i + BATCH]
            past, n = None, self.prefill
            ids, index = batch[:, :n], np.arange(n)
            for step in range(n, batch.shape[1] + 1):
                feed = {spec.input_ids: ids, spec.logits_index: index}
                feed.update(self._numpy(past) if past is not None else self._empty(len(batch)))
                yield feed
                if step == batch.shape[1]:
                    break
                _, past = self.dec.forward(ids, past, index)
                ids, index = batch[:, step:step + 1], np.array([0])

    def _empty(self, batch: int) -> dict:
        spec = self.dec.spec
        empty = {layer.heads: np.zeros((batch, layer.heads, 0, spec.head_dim), spec.cache_dtype)
                 for layer in spec.layers}
        return {name: empty[layer.heads] for layer in spec.layers
                for name in (layer.key_input, layer.value_input)}

    @staticmethod
    def _numpy(past: dict) -> dict:
        return {k: v.numpy() for k, v in past.items()}

    def get_next(self):
        return next(self.feeds, None)


def calibration(graph: Path, spec: TextGeneration, val, samples: int, seed: int,
                prefill: int, decode_steps: int) -> tuple[DecoderReader, dict]:
    """(a fresh reader, the report's calibration section); `val`: the validation token blocks."""
    stream = np.asarray(val, np.int64).reshape(-1)
    length = min(prefill + decode_steps, spec.context_length)
    windows = calibration_windows(stream, samples, length, seed)
    prefill = min(prefill, length - 1)
    runs = -(-samples // BATCH) * (1 + length - prefill)
    return DecoderReader(graph, spec, windows, prefill), {
        "source": f"validation split ({len(stream)} tokens), windows at seeded uniform offsets",
        "seed": seed, "samples": samples, "window_tokens": length, "prefill_tokens": prefill,
        "decode_steps": length - prefill, "tokens": int(windows.size), "graph_runs": runs,
        "paths": "prefill with an empty past and cached single-token decode steps (the FP32 "
                 "graph's own present as past; teacher-forced)",
        "method": "MinMax", "sha256": hashlib.sha256(windows.tobytes()).hexdigest()}


def _initializers(model: onnx.ModelProto) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # a Constant node's output is a weight too
        if node.op_type == "Constant":
            names.update(node.output)
    return names


def quantized_nodes(model: onnx.ModelProto, keep_head: bool) -> tuple[dict, dict]:
    """(quantize_static's node selection, the report's description) for a prepared graph."""
    weights = _initializers(model)
    producers = {out: node for node in model.graph.node for out in node.output}

    def weight_input(name: str) -> bool:  # an initializer, or one behind Transpose/Cast
        while name not in weights and name in producers and \
                producers[name].op_type in ("Transpose", "Cast", "Identity"):
            name = producers[name].input[0]
        return name in weights

    head = _head(model, producers)
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    projections = [n.name for n in matmuls if weight_input(n.input[1])]
    activations = [n.name for n in matmuls if n.name not in projections]
    exclude = activations + ([head] if keep_head and head else [])
    quantized = [n for n in projections if n not in exclude]
    return ({"op_types_to_quantize": ["MatMul", "Gemm"], "nodes_to_exclude": exclude},
            {"quantized_matmuls": len(quantized),
             "float_matmuls": {"attention (two activations)": len(activations),
                               "output head": int(bool(keep_head and head))},
             "output_head": "float (recipe: keep_head)" if keep_head else "int8",
             "float_ops": "LayerNorm/RMSNorm, Softmax, the rotary embedding; the embedding "
                          "lookup is a Gather (of the head's int8 copy when tied)"})


def _head(model: onnx.ModelProto, producers: dict) -> str | None:
    """The MatMul/Gemm that computes the logits (the graph's first output), behind shape ops."""
    name = model.graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type in ("MatMul", "Gemm"):
            return node.name
        if node.op_type not in ("Reshape", "Transpose", "Identity", "Cast", "Squeeze",
                                "Unsqueeze"):
            return None
        name = node.input[0]
    return None
