"""GPT-2 decode speed, side by side: PyTorch eager FP32, ONNX Runtime FP32 and ONNX Runtime INT8,
for GPT-2 Small (124M: 12 layers, 768 hidden, 12 heads) and the paper's student (6 layers, 384
hidden, 6 heads), both with GPT-2's 50257-token vocabulary and 1024 positions.

Usage (from the repo root):

    .venv/bin/python bench/bench_text_decode.py [--threads 2] [--rounds 3] [--prompt 32]
        [--new 128] [--models gpt2-124m,student] [--out bench/results/text_decode.json]

Workload: batch 1, greedy, a 32-token prompt, 128 new tokens, KV cache in every backend.
TTFT = prompt forward + first token; decode tok/s = (new - 1) / (t_last - t_first).

Models are randomly initialised (transformers' GPT-2 init, seed --seed): weights do not change
speed. They are built by the kit's own pipeline: `export_decoder` (KV-cache graph, validated
against PyTorch: logits, chunked prefill and greedy tokens cached and uncached) and the
`quantize` pass (quant_pre_process, then dynamic INT8 per-tensor; per-channel as an extra row
with --per-channel). ORT backends decode through edge_app.textgen.Decoder, the server's own
loop; eager decodes with transformers' DynamicCache under torch.no_grad().

Each backend runs in its own fresh process (so peak RSS is its own: VmHWM), one warm-up
generation then one timed generation per round; rounds interleave every backend round-robin
and each figure is the median over rounds; speed-ups are the MEDIAN OF PER-ROUND RATIOS
against eager FP32 of the same model. Raw numbers and the environment go to --out (JSON).
The script exits 0; target checks print PASS/FAIL.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {"gpt2-124m": (12, 768, 12), "student": (6, 384, 6)}
VOCAB, POSITIONS = 50257, 1024
REF = "eager FP32"
# Measured on the 2-core reference machine (docs: research perf anchors); the pipeline must reach them.
TARGETS = {("gpt2-124m", "ORT INT8", "x_eager"): 5.3 * 0.9, ("gpt2-124m", "ORT INT8", "tok_s"): 108 * 0.9,
           ("student", "ORT INT8", "tok_s"): 400 * 0.9}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="gpt2-124m,student")
    p.add_argument("--per-channel", action="store_true", help="also time per-channel INT8")
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-text")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "text_decode.json")
    p.add_argument("--worker", nargs=3, metavar=("BACKEND", "MODEL_DIR", "ARGS_JSON"),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def select_models(spec: str, prog: str) -> list[str] | None:
    """The comma-separated model names of --models; None (after saying why) if one is unknown."""
    models = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"{prog}: unknown model(s) {unknown}; known: {sorted(MODELS)}", file=sys.stderr)
        return None
    return models


# --------------------------------------------------------------------------- build (parent)


def build(name: str, args) -> dict:
    """Random-init model -> checkpoint, validated FP32 graph, INT8 graph(s); cached by shape."""
    import torch
    from transformers import GPT2LMHeadModel

    from edge_app.textgen import Decoder
    from optimizer.families import Subject
    from optimizer.families.gpt2 import FAMILY as GPT2
    from optimizer.families.gpt2 import gpt2_config
    from optimizer.models.dcgan import count_parameters
    from optimizer.passes import apply
    from optimizer.text.export import (export_decoder, generation_manifest, generation_spec,
                                       graph_manifest, validate)

    n_layer, n_embd, n_head = MODELS[name]
    d = args.workdir / f"{name}-seed{args.seed}"
    info_file = d / "info.json"
    if info_file.exists():
        return json.loads(info_file.read_text())
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(gpt2_config(n_layer, n_embd, n_head, POSITIONS, VOCAB, VOCAB - 1)).eval()
    GPT2.save_checkpoint(model, d / "model.pt")
    spec = generation_spec(GPT2.layout(model), (VOCAB - 1,), VOCAB - 1)
    t0 = time.perf_counter()
    export_decoder(model, GPT2.layout(model), d / "fp32.onnx")
    export_s = time.perf_counter() - t0
    sample = torch.randint(0, VOCAB, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    check = validate(model, Decoder.open(d / "fp32.onnx", spec), sample, atol=1e-3)
    graphs = {"ORT FP32": "fp32.onnx"}
    reports = {}
    for label, per_channel in [("ORT INT8", False)] + ([("ORT INT8 per-channel", True)]
                                                        if args.per_channel else []):
        t0 = time.perf_counter()
        q = apply("quantize", {"mode": "dynamic-int8", "per_channel": per_channel},
                  Subject(model, d / "fp32.onnx"), GPT2, d / f"q-{int(per_channel)}")
        out, report = q.graph, q.info
        report["seconds"] = round(time.perf_counter() - t0, 1)
        target = d / f"int8-{'pc' if per_channel else 'pt'}.onnx"
        out.replace(target)
        shutil.rmtree(d / f"q-{int(per_channel)}")  # the pre-processed intermediate
        graphs[label] = target.name
        reports[label] = report
    sections = {"generation": generation_manifest(spec), "graph": graph_manifest(spec, {"opset": 18})}
    (d / "sections.json").write_text(json.dumps(sections))
    info = {"name": name, "params": count_parameters(model), "shape": MODELS[name],
            "export_seconds": round(export_s, 1), "validation": check, "graphs": graphs,
            "file_mb": {k: round((d / v).stat().st_size / 1e6, 1) for k, v in graphs.items()},
            "quantize": reports}
    info_file.write_text(json.dumps(info, indent=1))
    return info


# --------------------------------------------------------------------------- workers


def _rss() -> dict:
    from edge_app.system import memory

    m = memory(Path("/"))
    return {"peak_rss_mb": round(m["peak_rss"] / 2 ** 20, 1)}


def prompt_ids(n: int) -> list[int]:
    """The prompt's token ids, the same for every backend and run."""
    return [(7 * i + 11) % VOCAB for i in range(n)]


def timing_method(args, load_before: dict) -> dict:
    """What every decode-timing table records of how it was measured (the load now is its load
    after)."""
    from bench.machine import cpu_info, cpu_load

    return {"python": platform.python_version(), "cpu": cpu_info(), "load_before": load_before,
            "load_after": cpu_load(), "threads": args.threads, "rounds": args.rounds,
            "seed": args.seed, "workload": f"batch 1, greedy, {args.prompt}-token prompt (the "
            f"same ids for every backend), {args.new} new tokens",
            "tok_s": "(new - 1) / (t_last - t_first)", "ttft": "prompt forward + first token",
            "rss": "VmHWM of each backend's own fresh process"}


def worker(backend: str, model_dir: Path, opts: dict) -> dict:
    prompt = prompt_ids(opts["prompt"])
    new = opts["new"]
    if backend == REF:
        import torch
        from transformers import DynamicCache

        from optimizer.families.gpt2 import FAMILY as GPT2

        torch.set_num_threads(opts["threads"])
        model = GPT2.load_checkpoint(model_dir / "model.pt")

        @torch.no_grad()
        def generate() -> tuple[list[float], list[int]]:
            stamps, tokens, cache = [], [], DynamicCache()
            ids = torch.tensor([prompt])
            start = time.perf_counter()
            for _ in range(new):
                logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits
                token = int(logits[0, -1].argmax())
                stamps.append(time.perf_counter() - start)
                tokens.append(token)
                ids = torch.tensor([[token]])
            return stamps, tokens
    else:
        from edge_app.generation import parse_text_generation
        from edge_app.textgen import Decoder

        sections = json.loads((model_dir / "sections.json").read_text())
        spec = parse_text_generation(sections["generation"], sections["graph"])
        graph = json.loads((model_dir / "info.json").read_text())["graphs"][backend]
        dec = Decoder.open(model_dir / graph, spec, threads=opts["threads"])

        def generate() -> tuple[list[float], list[int]]:
            stamps, tokens = [], []
            start = time.perf_counter()
            for token in dec.stream(prompt, new, stop_at_eos=False):
                stamps.append(time.perf_counter() - start)
                tokens.append(token)
            return stamps, tokens

    generate()  # warm-up: allocations, pre-packed weights, thread pools
    stamps, tokens = generate()
    return {"ttft_ms": stamps[0] * 1000, "tok_s": (new - 1) / (stamps[-1] - stamps[0]),
            "total_ms": stamps[-1] * 1000, "tokens": tokens, **_rss()}


def run_worker(backend: str, model_dir: Path, args) -> dict:
    opts = json.dumps({"prompt": args.prompt, "new": args.new, "threads": args.threads})
    result = subprocess.run([sys.executable, __file__, "--worker", backend, str(model_dir), opts],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{backend} worker failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def summarize(raw: dict[str, dict[str, list[dict]]]) -> dict:
    out = {}
    for model, backends in raw.items():
        ref = backends[REF]
        out[model] = {}
        for backend, runs in backends.items():
            x_tok = [r["tok_s"] / e["tok_s"] for r, e in zip(runs, ref)]
            x_ttft = [e["ttft_ms"] / r["ttft_ms"] for r, e in zip(runs, ref)]
            out[model][backend] = {
                "tok_s": statistics.median(r["tok_s"] for r in runs),
                "tok_s_range": [min(r["tok_s"] for r in runs), max(r["tok_s"] for r in runs)],
                "ms_per_token": 1000 / statistics.median(r["tok_s"] for r in runs),
                "ttft_ms": statistics.median(r["ttft_ms"] for r in runs),
                "total_ms": statistics.median(r["total_ms"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "x_eager": statistics.median(x_tok), "x_eager_ttft": statistics.median(x_ttft),
                "same_first_tokens_as_eager": all(r["tokens"][:8] == e["tokens"][:8]
                                                  for r, e in zip(runs, ref)),
                "n": len(runs)}
    return out


def print_table(summary: dict, infos: dict) -> None:
    print("\n| model | backend | decode tok/s (range) | ms/tok | TTFT ms | 128-tok total ms | "
          "x eager tok/s | x eager TTFT | peak RSS MB | file MB | same tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model, rows in summary.items():
        files = infos[model]["file_mb"]
        for backend, r in rows.items():
            lo, hi = r["tok_s_range"]
            file_mb = files.get(backend, round(infos[model]["params"] * 4 / 1e6, 1))
            print(f"| {model} ({infos[model]['params'] / 1e6:.1f}M) | {backend} | {r['tok_s']:.1f} "
                  f"({lo:.1f}-{hi:.1f}) | {r['ms_per_token']:.1f} | {r['ttft_ms']:.1f} | "
                  f"{r['total_ms']:.0f} | {r['x_eager']:.2f} | {r['x_eager_ttft']:.2f} | "
                  f"{r['peak_rss_mb']:.0f} | {file_mb} | "
                  f"{'yes' if r['same_first_tokens_as_eager'] else 'NO'} |")


def checks(summary: dict) -> list[str]:
    lines = []
    for (model, backend, key), want in TARGETS.items():
        if model in summary and backend in summary[model]:
            got = summary[model][backend][key]
            unit = "x eager FP32" if key == "x_eager" else "tok/s"
            lines.append(f"{'PASS' if got >= want else 'FAIL'}: {model} {backend} {got:.2f} "
                         f"{unit} (target >= {want:.2f}, 90% of the reference machine's figure)")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        backend, model_dir, opts = args.worker
        print(json.dumps(worker(backend, Path(model_dir), json.loads(opts))))
        return 0
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    from bench.machine import cpu_load

    models = select_models(args.models, "bench_text_decode")
    if models is None:
        return 2
    infos = {}
    for name in models:
        t0 = time.perf_counter()
        infos[name] = build(name, args)
        print(f"{name}: {infos[name]['params']:,} params; graphs ready in "
              f"{time.perf_counter() - t0:.0f} s (export {infos[name]['export_seconds']} s, "
              f"greedy tokens {infos[name]['validation']['greedy_cached']})", flush=True)
    load_before = cpu_load()
    raw: dict = {m: {REF: [], **{b: [] for b in infos[m]["graphs"]}} for m in models}
    for r in range(args.rounds):
        for m in models:
            for backend in raw[m]:
                raw[m][backend].append(run_worker(backend, args.workdir / f"{m}-seed{args.seed}",
                                                  args))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    summary = summarize(raw)
    import onnxruntime
    import torch
    import transformers

    method = {**timing_method(args, load_before),
              "torch": torch.__version__, "transformers": transformers.__version__,
              "onnxruntime": onnxruntime.__version__,
              "ratio": "median of per-round ratios against eager FP32 of the same model"}
    print_table(summary, infos)
    print()
    for line in checks(summary):
        print(line)
    print("\nreference (same 2-core machine class, research/perf-anchors.md): llama.cpp q8_0 "
          "on GPT-2 124M: 111 tok/s, TTFT 72 ms, peak RSS 205 MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"method": method, "models": infos, "raw": raw,
                                    "summary": summary}, indent=1) + "\n")
    print(f"raw numbers: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
