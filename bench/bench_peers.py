"""EdgeGen against llama.cpp on the same weights, side by side in one run (`make bench-peers`).

Usage (from the repo root; `make bench-peers` builds llama.cpp's virtualenv first and passes it):

    .venv/bin/python bench/bench_peers.py --llama-python build/llama-cpp-venv-<cpu>/bin/python
        [--models gpt2-124m,student] [--rounds 6] [--threads 2] [--prompt 32] [--new 128]

The models are GPT-2 124M and the paper's student (6 layers, 384 wide), randomly initialised
(seed --seed; weights do not change speed), built once by the kit's own pipeline
(bench_text_decode.build: the validated KV-cache FP32 graph and the dynamic INT8 the GPT-2
recipes ship) plus ONNX Runtime MatMulNBits weight-only INT8 and 4-bit (the quantize_weights
pass). The same PyTorch weights are written as an F32 GGUF (bench/gguf_export.py), and q8_0
and q4_0 are made from it by llama.cpp's own quantizer.

Parity first: EdgeGen's FP32 graph and llama.cpp's F32 file must produce the same greedy tokens
from the same prompt token ids (the run says so for every round; a mismatch is reported, not
hidden). Then the timing: batch 1, greedy, a 32-token prompt and 128 new tokens, 2 threads,
every backend in a fresh process (its peak RSS is its own), one warm-up generation and one
timed one; the backends interleave round-robin for --rounds rounds. Each pair's ratio is the
MEDIAN OF PER-ROUND RATIOS (EdgeGen / llama.cpp of the same round): decode tok/s (higher is
better), TTFT and peak RSS (lower is better). The targets (issue 20) print PASS or FAIL; the
machine's load, CPU flags and versions go with the figures, and raw numbers to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_text_decode as btd  # noqa: E402

WORKER = Path(__file__).resolve().parent / "llamacpp_worker.py"
OURS = {"fp32": "ORT FP32", "int8": "ORT INT8", "int8-wo": "ORT INT8 weight-only",
        "int4": "ORT 4-bit"}
PEERS = {"fp32": "llama.cpp f32", "int8": "llama.cpp q8_0", "int4": "llama.cpp q4_0"}
# (ours, peer, metric) -> (bound, "ge" | "le"): issue 20's targets on this machine class
TARGETS = {("ORT INT8", "llama.cpp q8_0", "tok_s"): (1.25, "ge"),
           ("ORT INT8", "llama.cpp q8_0", "ttft_ms"): (0.5, "le"),
           ("ORT INT8", "llama.cpp q8_0", "peak_rss_mb"): (1.0, "le"),
           ("ORT INT8 weight-only", "llama.cpp q8_0", "tok_s"): (1.25, "ge"),
           ("ORT INT8 weight-only", "llama.cpp q8_0", "ttft_ms"): (0.5, "le"),
           ("ORT INT8 weight-only", "llama.cpp q8_0", "peak_rss_mb"): (1.0, "le"),
           ("ORT 4-bit", "llama.cpp q4_0", "tok_s"): (1.1, "ge"),
           ("ORT 4-bit", "llama.cpp q4_0", "peak_rss_mb"): (1.0, "le")}
PAIRS = [("ORT FP32", "llama.cpp f32"), ("ORT INT8", "llama.cpp q8_0"),
         ("ORT INT8 weight-only", "llama.cpp q8_0"), ("ORT 4-bit", "llama.cpp q4_0")]


def llama_venv(root: Path = ROOT) -> Path:
    """Where `make bench-peers` builds llama.cpp's virtualenv for this CPU (the Makefile's
    LLAMA_VENV: the md5 of /proc/cpuinfo's first flags line, as `grep -m1 | md5sum` gives)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((ln for ln in text.splitlines() if re.match(r"^(flags|Features)", ln)), None)
    key = hashlib.md5((line + "\n").encode()).hexdigest()[:8] if line is not None \
        else hashlib.md5(b"").hexdigest()[:8]
    return root / "build" / f"llama-cpp-venv-{key}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llama-python", type=Path, default=llama_venv() / "bin" / "python",
                   help="the interpreter of the virtualenv with llama-cpp-python "
                        "(default: the one `make bench-peers` builds for this CPU)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="gpt2-124m,student")
    # its own cache: bench_text_decode times every graph its cached info.json lists
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-peers")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "peers.json")
    args = p.parse_args(argv)
    args.per_channel = False  # bench_text_decode.build's own option: its per-tensor INT8 only
    return args


def llama(args, *argv: str, timeout: float = 900) -> dict:
    """One call of the llama.cpp worker in its own virtualenv (a fresh process)."""
    run = subprocess.run([str(args.llama_python), str(WORKER), *argv], capture_output=True,
                         text=True, timeout=timeout, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"llama.cpp worker {argv[0]} failed: {run.stderr.strip()[-800:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def build(name: str, args) -> dict:
    """The model's ONNX graphs (bench_text_decode's, plus weight-only INT8 and 4-bit) and its
    GGUF files, from one checkpoint; cached in the model's directory."""
    import shutil

    from optimizer.families import Subject
    from optimizer.families.gpt2 import FAMILY as GPT2
    from optimizer.passes import apply

    from bench.gguf_export import write_gguf

    info = btd.build(name, args)
    d = args.workdir / f"{name}-seed{args.seed}"
    model = GPT2.load_checkpoint(d / "model.pt")
    for label, bits, embeddings in (("ORT INT8 weight-only", 8, False), ("ORT 4-bit", 4, True)):
        if label in info["graphs"]:
            continue
        t0 = time.perf_counter()
        q = apply("quantize_weights", {"bits": bits, "block_size": 32, "embeddings": embeddings},
                  Subject(model, d / "fp32.onnx"), GPT2, d / f"wq-{bits}")
        target = d / f"int{bits}-wo.onnx"
        q.graph.replace(target)
        shutil.rmtree(d / f"wq-{bits}")
        info["graphs"][label] = target.name
        info["file_mb"][label] = round(target.stat().st_size / 1e6, 1)
        info["quantize"][label] = {**q.info, "seconds": round(time.perf_counter() - t0, 1)}
    gguf = info.setdefault("gguf", {})
    if "llama.cpp f32" not in gguf:
        write_gguf(model, d / "f32.gguf", name=f"edgegen-bench-{name}")
        gguf["llama.cpp f32"] = {"file": "f32.gguf"}
    for kind, label in (("q8_0", "llama.cpp q8_0"), ("q4_0", "llama.cpp q4_0")):
        if label not in gguf:
            made = llama(args, "quantize", str(d / "f32.gguf"), str(d / f"{kind}.gguf"), kind)
            gguf[label] = {"file": f"{kind}.gguf", "quantize_seconds": made["seconds"]}
    for label, g in gguf.items():
        info["file_mb"][label] = round((d / g["file"]).stat().st_size / 1e6, 1)
    (d / "info.json").write_text(json.dumps(info, indent=1))
    return info


def run_backend(backend: str, name: str, info: dict, args) -> dict:
    d = args.workdir / f"{name}-seed{args.seed}"
    if backend in info["graphs"]:
        return btd.run_worker(backend, d, args)
    opts = {"prompt": btd.prompt_ids(args.prompt), "new": args.new, "threads": args.threads}
    return llama(args, "generate", str(d / info["gguf"][backend]["file"]), json.dumps(opts))


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (None when identical, lengths included)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def summarize(raw: dict[str, dict[str, list[dict]]]) -> dict:
    """Per model: each backend's medians, and per pair the medians of per-round ratios."""
    out = {}
    for model, backends in raw.items():
        rows = {b: {"tok_s": statistics.median(r["tok_s"] for r in runs),
                    "ttft_ms": statistics.median(r["ttft_ms"] for r in runs),
                    "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                    "n": len(runs)} for b, runs in backends.items()}
        pairs = {}
        for ours, peer in PAIRS:
            if ours not in backends or peer not in backends:
                continue
            a, b = backends[ours], backends[peer]
            ratio = {k: [x[k] / y[k] for x, y in zip(a, b)]
                     for k in ("tok_s", "ttft_ms", "peak_rss_mb")}
            diffs = [first_difference(x["tokens"], y["tokens"]) for x, y in zip(a, b)]
            pairs[f"{ours} / {peer}"] = {
                **{k: statistics.median(v) for k, v in ratio.items()},
                "per_round": ratio, "same_tokens_rounds": sum(d is None for d in diffs),
                "first_difference": diffs[0]}
        out[model] = {"backends": rows, "pairs": pairs}
    return out


def checks(summary: dict) -> list[str]:
    lines = []
    for model, s in summary.items():
        for (ours, peer, metric), (bound, how) in TARGETS.items():
            pair = s["pairs"].get(f"{ours} / {peer}")
            if pair is None:
                continue
            got = pair[metric]
            ok = got >= bound if how == "ge" else got <= bound
            lines.append(f"{'PASS' if ok else 'FAIL'}: {model} {ours} / {peer} {metric} "
                         f"{got:.2f}x (target {'>=' if how == 'ge' else '<='} {bound}x)")
    return lines


def print_tables(summary: dict, infos: dict) -> None:
    print("\n| model | backend | decode tok/s | TTFT ms | peak RSS MB | file MB |")
    print("|---|---|---|---|---|---|")
    for model, s in summary.items():
        for backend, r in s["backends"].items():
            print(f"| {model} | {backend} | {r['tok_s']:.1f} | {r['ttft_ms']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {infos[model]['file_mb'].get(backend, '')} |")
    print("\n| model | EdgeGen / llama.cpp | decode tok/s | TTFT | peak RSS | "
          "same greedy tokens (rounds) |")
    print("|---|---|---|---|---|---|")
    for model, s in summary.items():
        for pair, r in s["pairs"].items():
            n = len(r["per_round"]["tok_s"])
            same = f"{r['same_tokens_rounds']}/{n}"
            if r["first_difference"] is not None:
                same += f" (first differs at token {r['first_difference']})"
            print(f"| {model} | {pair} | {r['tok_s']:.2f}x | {r['ttft_ms']:.2f}x | "
                  f"{r['peak_rss_mb']:.2f}x | {same} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.llama_python.exists():
        print(f"bench_peers: no interpreter at {args.llama_python} (make bench-peers builds "
              f"llama.cpp's virtualenv)", file=sys.stderr)
        return 2
    models = btd.select_models(args.models, "bench_peers")
    if models is None:
        return 2
    from bench.machine import cpu_load

    infos = {}
    for name in models:
        t0 = time.perf_counter()
        infos[name] = build(name, args)
        print(f"{name}: {infos[name]['params']:,} params; graphs and GGUF files ready in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    backends = ["ORT FP32", "llama.cpp f32", "ORT INT8", "ORT INT8 weight-only",
                "llama.cpp q8_0", "ORT 4-bit", "llama.cpp q4_0"]
    load_before = cpu_load()
    raw: dict = {m: {b: [] for b in backends} for m in models}
    for r in range(args.rounds):
        for m in models:
            for b in backends:
                raw[m][b].append(run_backend(b, m, infos[m], args))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    summary = summarize(raw)
    import onnxruntime

    peer = raw[models[0]]["llama.cpp f32"][0]  # what llama.cpp says of its version and build
    peer_version, system_info = peer["llama_cpp_python"], peer["system_info"]
    method = {**btd.timing_method(args, load_before),
              "onnxruntime": onnxruntime.__version__, "llama_cpp_python": peer_version,
              "llama_cpp_system_info": system_info,
              "ratio": "median of per-round ratios, EdgeGen / llama.cpp"}
    print_tables(summary, infos)
    cpu = method["cpu"]
    print(f"\nmachine: {cpu['model']}, {cpu['logical_cpus']} CPUs; instruction sets: "
          f"{', '.join(k for k, v in cpu.items() if v is True) or 'none of note'}; load "
          f"{load_before['loadavg_1m']} before, {method['load_after']['loadavg_1m']} after")
    print(f"versions: onnxruntime {onnxruntime.__version__}, llama-cpp-python {peer_version}; "
          f"llama.cpp: {system_info}")
    print()
    for line in checks(summary):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"method": method, "models": infos, "raw": raw,
                                    "summary": summary}, indent=1) + "\n")
    print(f"raw numbers: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
