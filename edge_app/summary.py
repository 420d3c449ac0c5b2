"""`python -m edge_app summary --bundle DIR ...`: what optimization bought, measured here.

For each bundle: its file size and quality (from the manifest: FID for image generators,
perplexity for text) and its speed on this machine from a short warm run of `edge_app bench`
(each bundle in a fresh process; image latency at batch 1, text decode tokens/s and time to
first token), with ratios against its recipe's baseline (the bundle the others' names extend:
`dcgan-digits` for `dcgan-digits-int8`). Measurements are kept under --out and reused while the
bundle is unchanged, so a second `make run` prints the table at once; the table says when and on
what it was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .benchmark import benchmark
from .bundle import BundleError, load_bundle
from .config import ConfigError
from .power import SensorError
from .workload import Workload

# Short and warm: enough for a stable median on a small model, seconds per bundle.
WORKLOAD = Workload(runs=10, warmup=2, image_batches=(1,), new_tokens=32, window_s=0.0)
DEVICE = "local"


def _quality(manifest) -> str:
    quality = manifest.metrics.get("quality", {})
    for key, label in (("perplexity", "perplexity"), ("fid", "FID")):
        if key in quality:
            return f"{label} {quality[key]:.4g}"
    return "-"


def _speed(result: dict) -> tuple[str, float | None]:
    """The row's speed text, and the figure its ratio compares (higher is better)."""
    workloads = result["workloads"]
    if "generate" in workloads:
        text = workloads["generate"]
        tps = text.get("tokens_per_s_mean")
        ttft = text["time_to_first_token"]["p50_s"] * 1e3
        return (f"{tps:,.0f} tok/s, first token {ttft:.1f} ms" if tps else "-"), tps
    latency = workloads["batch_1"]["latency"]["p50_s"]
    return f"{latency * 1e3:.2f} ms / image", 1.0 / latency


def _baselines(bundles: list) -> dict[str, str]:
    """Each bundle's baseline: the bundle of the same recipe whose name the others extend."""
    out = {}
    for b in bundles:
        m = b.manifest
        recipe = (m.provenance.get("recipe") or {}).get("path")
        same = [o.manifest.name for o in bundles
                if (o.manifest.provenance.get("recipe") or {}).get("path") == recipe]
        roots = [n for n in same if m.name.startswith(n + "-")]
        out[m.name] = min(roots, key=len) if roots else m.name
    return out


def table(bundles: list, results: dict[str, dict]) -> str:
    """The summary table of loaded `bundles` and their bench `results` by bundle name."""
    baselines = _baselines(bundles)
    sizes = {b.manifest.name: b.manifest.metrics.get("file_size_bytes")
             or sum(f.size for f in b.manifest.files.values()) for b in bundles}
    speeds = {name: _speed(result) for name, result in results.items()}  # (text, figure)
    rows = [("bundle", "precision", "size", "quality", "speed on this machine", "vs baseline")]
    for b in bundles:
        m, base = b.manifest, baselines[b.manifest.name]
        (speed, figure), versus = speeds[m.name], ""
        if base != m.name:
            versus = f"{sizes[m.name] / sizes[base]:.2f}x size"
            if figure and speeds[base][1]:
                versus += f", {figure / speeds[base][1]:.2f}x speed"
        rows.append((m.name, m.precision, f"{sizes[m.name] / 1e6:.2f} MB", _quality(m), speed,
                     versus))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def method_line(results: dict[str, dict]) -> str:
    """How the speeds were measured: workload, repeats, when, on what, with what."""
    first = next(iter(results.values()))
    method, cpu = first["method"], first["method"].get("cpu", {})
    w = method["workload"]
    when = sorted(r["measured_at"] for r in results.values())
    span = when[0] if when[0][:10] == when[-1][:10] else f"{when[0]} to {when[-1]}"
    return (f"Speed: median of {w['runs']} warm runs after {w['warmup']} (images: batch 1; text: "
            f"{w['new_tokens']} greedy tokens from each of {len(w['prompts'])} prompts), each "
            f"bundle in a fresh process, measured {span} on {cpu.get('model', 'this CPU')} "
            f"({cpu.get('logical_cpus', '?')} CPUs), onnxruntime "
            f"{method['runtime']['onnxruntime']}. Quality and size: the bundle's manifest "
            f"(the optimizer's evaluation). Ratios against each recipe's baseline.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_app summary", allow_abbrev=False,
                                description="Size, quality and speed of bundles, side by side.")
    p.add_argument("--bundle", action="append", dest="bundles", metavar="DIR", required=True)
    p.add_argument("--out", type=Path, default=Path("results/summary"),
                   help="where the measurements are kept and reused (default results/summary)")
    args = p.parse_args(argv)
    try:
        bundles = [load_bundle(b) for b in args.bundles]
        written = benchmark(args.bundles, args.out, DEVICE, WORKLOAD, repeats=1,
                            sensor_name="none",
                            log=lambda line: print(f"summary: {line}", flush=True))
    except (BundleError, ConfigError, SensorError) as exc:
        print(f"edgegen: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a bundle's benchmark process failed: its own output says why
        print(f"edgegen: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    results = {}
    for path in written:
        record = json.loads(path.read_text())
        results[record["bundle"]] = record
    print(f"\n{table(bundles, results)}\n\n{method_line(results)}\n", flush=True)
    return 0
