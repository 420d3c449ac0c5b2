"""Weight-only 4-bit or 8-bit quantization of a decoder: ONNX Runtime's MatMulNBits.

Every product with a constant weight (attention and MLP projections, and the output head,
whose tied weight the exporter writes as a Transpose of the embedding: folded first, see
optimizer/graphs.py) stores its weight in blocks of `block_size` values along the input
dimension, each block with its own scale (and zero point unless symmetric); with 4 bits the
token embedding (Gather) is quantized alike (GatherBlockQuantized). Activations stay float;
`accuracy_level` picks the kernels' compute type: 0 unset, 1 float32, 2 float16, 3 bfloat16,
4 int8 (activations quantized per block on the fly: integer dot-product instructions such as
AVX-VNNI, AVX512-VNNI or Arm dotprod do the multiply-adds). Products of two activations
(attention scores) stay float.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, replace

import onnx

from ..graphs import (drop_unused_initializers, fold_transposed_weights, gemm_to_matmul,
                      graph_opset)

STAGE = "graph"
FAMILIES = ("gpt2", "llama")


@dataclass(frozen=True)
class Config:
    bits: int = 4  # 4 or 8
    block_size: int = 32  # values per scale, along the input dimension (a power of 2, >= 16)
    symmetric: bool = True  # no zero points (the int8 kernels of accuracy level 4 want that)
    accuracy_level: int = 4  # 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute
    embeddings: bool = True  # quantize the token embedding too (4 bits only)

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of 2 >= 16, got {self.block_size}")
        if self.accuracy_level not in range(5):
            raise ValueError(f"accuracy_level must be 0..4, got {self.accuracy_level}")
        if self.embeddings and self.bits != 4:
            raise ValueError("embeddings: true needs bits 4 (ONNX Runtime's GatherBlockQuantized "
                             "takes 4-bit data); set embeddings: false for 8 bits")


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def run(subject, cfg: Config, ctx):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    source = subject.graph
    model = onnx.load(str(source))
    before = _ops(model)
    rewritten = {"transposes_folded": fold_transposed_weights(model),
                 "gemm_to_matmul": gemm_to_matmul(model)}
    drop_unused_initializers(model)
    ops = ("MatMul", "Gather") if cfg.embeddings else ("MatMul",)
    algo = nbits.DefaultWeightOnlyQuantConfig(
        block_size=cfg.block_size, is_symmetric=cfg.symmetric,
        accuracy_level=cfg.accuracy_level, bits=cfg.bits, op_types_to_quantize=ops)
    quiet = logging.getLogger("onnxruntime.quantization")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # every node at INFO; the opset raise (recorded) at WARNING
    try:
        quantizer = nbits.MatMulNBitsQuantizer(model, algo_config=algo)
        quantizer.process()
    finally:
        quiet.setLevel(level)
    out = ctx.scratch("quantize-weights") / "model.onnx"
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    after = _ops(quantizer.model.model)
    info = {"method": "ONNX Runtime MatMulNBits (round to nearest, block-wise)",
            "bits": cfg.bits, "block_size": cfg.block_size, "symmetric": cfg.symmetric,
            "accuracy_level": cfg.accuracy_level, "embeddings": cfg.embeddings, **rewritten,
            "ops_before": {k: before[k] for k in ("MatMul", "Gemm", "Gather") if k in before},
            "ops_after": {k: v for k, v in after.items()
                          if k in ("MatMul", "MatMulNBits", "Gather", "GatherBlockQuantized")},
            "opset": graph_opset(out),  # 21 with 4-bit embeddings: int4 tensors need it
            "sha256_fp32_source": hashlib.sha256(source.read_bytes()).hexdigest(),
            "file_size_bytes": {"fp32": source.stat().st_size, "quantized": out.stat().st_size}}
    return replace(subject, graph=out, precision=f"int{cfg.bits}", info=info)
