"""A full-size Llama-family model through the optimizer: SmolLM2-135M's real configuration
(HuggingFaceTB/SmolLM2-135M config.json: 30 layers, hidden 576, 9 query and 3 key/value heads,
SwiGLU 1536, vocabulary 49152, RoPE theta 100000, tied embeddings), randomly initialised
(weights do not change how it exports or what it weighs), exported with its KV cache, validated
as a recipe validates it (logits within atol, chunked prefill, greedy tokens cached and uncached
equal to PyTorch's), then quantized to weight-only INT8 and 4-bit.

Usage (from the repo root):

    .venv/bin/python bench/bench_llama_export.py [--seed 0] [--out bench/results/llama_export.json]

Prints export and quantization times and file sizes, with the machine and versions; writes
them as JSON. Random-init logits are nearly flat, so --logit-scale sharpens the output head
(as training does) to make greedy decoding decisive enough for a token-exact comparison.
Exits 1 if a validation fails or the 4-bit file is over 0.35x the FP32 file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logit-scale", type=float, default=20.0)
    p.add_argument("--workdir", type=Path, default=None, help="keep the graphs here")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llama_export.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime
    import torch
    import transformers

    from bench.machine import cpu_info, cpu_load
    from edge_app.textgen import Decoder
    from optimizer.errors import ExportError
    from optimizer.families import Subject
    from optimizer.families.llama import FAMILY as LLAMA
    from optimizer.families.llama import LlamaSpec
    from optimizer.models.dcgan import count_parameters
    from optimizer.passes import apply
    from optimizer.text.export import export_decoder, generation_spec, validate

    work = args.workdir or Path(tempfile.mkdtemp(prefix="llama-export-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = LLAMA.new_model(LlamaSpec(**SMOLLM2_135M), SMOLLM2_135M["vocab_size"],
                            SimpleNamespace(bos_id=1, eos_ids=(2,))).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(args.logit_scale)  # tied: the embedding scales with it
    layout = LLAMA.layout(model)
    result = {"model": "SmolLM2-135M shape, random init", "config": SMOLLM2_135M,
              "params": count_parameters(model), "seed": args.seed, "logit_scale": args.logit_scale,
              "machine": {**cpu_info(), "load_before": cpu_load()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__,
                           "onnxruntime": onnxruntime.__version__}}
    t0 = time.perf_counter()
    fp32 = export_decoder(model, layout, work / "fp32" / "model.onnx")
    result["export_seconds"] = round(time.perf_counter() - t0, 1)
    spec = generation_spec(layout, eos_ids=(2,), bos_id=1)
    sample = torch.randint(3, layout.vocab_size, (64,),
                           generator=torch.Generator().manual_seed(1)).tolist()
    failed = False
    t0 = time.perf_counter()
    try:
        result["validation"] = validate(model, Decoder.open(fp32, spec), sample, atol=1e-3,
                                        graph="fp32")
    except ExportError as exc:
        result["validation"], failed = {"failed": str(exc)}, True
    result["validation_seconds"] = round(time.perf_counter() - t0, 1)
    sizes = {"fp32": fp32.stat().st_size + _data_size(fp32)}
    for label, params in (("int8", {"bits": 8, "embeddings": False}), ("int4", {"bits": 4})):
        t0 = time.perf_counter()
        out = apply("quantize_weights", params, Subject(model, fp32), LLAMA, work / label)
        result[f"{label}_seconds"] = round(time.perf_counter() - t0, 1)
        sizes[label] = out.graph.stat().st_size
        dec = Decoder.open(out.graph, spec)
        prompt = sample[:16]
        cached = dec.generate(prompt, 24, stop_at_eos=False).tokens
        result[f"{label}_cached_equals_uncached"] = cached == dec.generate_uncached(prompt, 24)
        failed |= not result[f"{label}_cached_equals_uncached"]
    result["file_bytes"] = sizes
    result["ratio_vs_fp32"] = {k: round(v / sizes["fp32"], 3) for k, v in sizes.items()}
    failed |= result["ratio_vs_fp32"]["int4"] > 0.35
    result["machine"]["load_after"] = cpu_load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"SmolLM2-135M shape ({result['params']:,} params, random init), "
          f"{result['machine'].get('model', '?')}")
    print(f"  export {result['export_seconds']} s, validation {result['validation_seconds']} s: "
          f"{result['validation']}")
    for label in ("fp32", "int8", "int4"):
        extra = "" if label == "fp32" else (f"  quantized in {result[label + '_seconds']} s, "
                                            f"cached == uncached: "
                                            f"{result[label + '_cached_equals_uncached']}")
        print(f"  {label}: {sizes[label] / 1e6:8.1f} MB  {result['ratio_vs_fp32'][label]:.3f}x"
              f"{extra}")
    print(f"results: {args.out}")
    return 1 if failed else 0


def _data_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return data.stat().st_size if data.is_file() else 0


if __name__ == "__main__":
    sys.exit(main())
