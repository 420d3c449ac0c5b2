"""Results tables mirroring the paper's Tables 2 (size and complexity), 4 (memory) and
6 (quality): mean ± std over seeds, and for each point the paired test against the baseline."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from edge_app.stats import paired_comparison, summarize

# metric key -> (column title, scale for display, digits)
COLUMNS = {
    "size": [("params", "Params (M)", 1e-6, 3), ("nonzero_params", "Non-zero (M)", 1e-6, 3),
             ("flops", "FLOPs/img (M)", 1e-6, 1), ("flops_per_token", "FLOPs/token (M)", 1e-6, 1),
             ("file_size_bytes", "File (MB)", 1e-6, 3)],
    "memory": [("peak_rss_bytes", "Peak RSS (MB)", 2 ** -20, 1),
               ("model_rss_bytes", "Model RSS (MB)", 2 ** -20, 1)],
    "quality": [("fid", "FID", 1, 2), ("ssim", "SSIM", 1, 4), ("perplexity", "Perplexity", 1, 2),
                ("perplexity_in_domain", "PPL (train corpus)", 1, 2),
                ("bleu", "BLEU", 1, 2), ("distinct_1", "distinct-1", 1, 3),
                ("distinct_2", "distinct-2", 1, 3),
                ("greedy_agreement_vs_fp32", "Greedy = FP32", 1, 3)],
}
TITLES = {"size": "Size and complexity (paper Table 2)", "memory": "Memory (paper Table 4)",
          "quality": "Quality (paper Table 6)"}


def _fmt(value: float, scale: float, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}"


def aggregate(rows: list[dict]) -> dict:
    """rows: {seed, point, metrics{...}} -> {point: {metric: {summary, vs_baseline}}}."""
    points = list(dict.fromkeys(r["point"] for r in rows))
    by = {(r["point"], r["seed"]): r["metrics"] for r in rows}
    out = {}
    for point in points:
        seeds = [s for (p, s) in by if p == point and ("baseline", s) in by]
        metrics = sorted({k for s in seeds for k, v in by[(point, s)].items()
                          if isinstance(v, (int, float))})
        out[point] = {}
        for metric in metrics:
            pairs = [(by[("baseline", s)].get(metric), by[(point, s)][metric]) for s in seeds]
            pairs = [(b, o) for b, o in pairs if b is not None]
            if not pairs:  # the baseline has no such metric (e.g. agreement with FP32)
                out[point][metric] = {"summary": summarize([by[(point, s)][metric] for s in seeds])}
                continue
            entry = {"summary": summarize([o for _, o in pairs])}
            if point != "baseline" and pairs:
                entry["vs_baseline"] = paired_comparison([b for b, _ in pairs],
                                                         [o for _, o in pairs])
            out[point][metric] = entry
    return out


def markdown(summary: dict, method: str) -> str:
    lines = []
    for table, columns in COLUMNS.items():
        present = [c for c in columns if any(c[0] in m for m in summary.values())]
        if not present:
            continue
        lines += [f"### {TITLES[table]}", "",
                  "| point | " + " | ".join(
                      f"{title} | Δ vs baseline (95% CI, p)" for _, title, _, _ in present) + " |",
                  "|---|" + "---|---|" * len(present)]
        for point, metrics in summary.items():
            cells = [point]
            for key, _, scale, digits in present:
                entry = metrics.get(key)
                if entry is None:
                    cells += ["not measured", ""]
                    continue
                s = entry["summary"]
                cells.append(f"{_fmt(s['mean'], scale, digits)} ± {_fmt(s['std'], scale, digits)}")
                cells.append(_delta(entry.get("vs_baseline"), scale, digits))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"_Method: {method}_", ""]
    return "\n".join(lines)


def _delta(cmp: dict | None, scale: float, digits: int) -> str:
    if cmp is None:
        return "—"
    if cmp.get("ci95") is None:
        return f"{_fmt(cmp['mean_diff'], scale, digits)} ({cmp['note']})"
    lo, hi = cmp["ci95"]
    return (f"{_fmt(cmp['mean_diff'], scale, digits)} ({_fmt(cmp['relative_pct'], 1, 1)}%) "
            f"[{_fmt(lo, scale, digits)}, {_fmt(hi, scale, digits)}], p={cmp['p']:.3g}")


def compare_points(rows: list[dict], point: str, reference: str) -> dict:
    """Paired comparison of two points (not the baseline) over the seeds both have."""
    by = {(r["point"], r["seed"]): r["metrics"] for r in rows}
    seeds = sorted(s for (p, s) in by if p == point and (reference, s) in by)
    out = {}
    for metric in sorted(by[(point, seeds[0])]) if seeds else []:
        values = [(by[(reference, s)].get(metric), by[(point, s)][metric]) for s in seeds]
        if all(isinstance(v, (int, float)) for pair in values for v in pair):
            out[metric] = paired_comparison([r for r, _ in values], [v for _, v in values])
    return out


def comparisons_markdown(comparisons: dict) -> str:
    lines = []
    for title, metrics in comparisons.items():
        lines += [f"### {title} (paired over seeds)", "", "| metric | Δ (95% CI, p) |", "|---|---|"]
        for table in COLUMNS.values():
            for key, name, scale, digits in table:
                if key in metrics:
                    lines.append(f"| {name} | {_delta(metrics[key], scale, digits)} |")
        lines.append("")
    return "\n".join(lines)


def write_tables(out_dir: Path, rows: list[dict], method: dict,
                 compare: tuple[tuple[str, str], ...] = ()) -> dict:
    """Write results.json (raw rows, summary, method), results.csv and results.md.

    `compare` lists (point, reference) pairs tested against each other besides the baseline,
    e.g. a distilled student against the same student trained without its teacher.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = aggregate(rows)
    comparisons = {f"{a} vs {b}": compare_points(rows, a, b) for a, b in compare}
    (out_dir / "results.json").write_text(json.dumps(
        {"method": method, "rows": rows, "summary": summary, "comparisons": comparisons},
        indent=2, default=str) + "\n")
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["point", "metric", "mean", "std", "n", "diff_vs_baseline", "ci95_low",
                         "ci95_high", "p_value", "relative_pct"])
        for point, metrics in summary.items():
            for metric, entry in metrics.items():
                s, c = entry["summary"], entry.get("vs_baseline") or {}
                ci = c.get("ci95") or [None, None]
                writer.writerow([point, metric, s["mean"], s["std"], s["n"], c.get("mean_diff"),
                                 ci[0], ci[1], c.get("p"), c.get("relative_pct")])
    method_line = "; ".join(f"{k}: {v}" for k, v in method.items() if not isinstance(v, dict))
    (out_dir / "results.md").write_text(markdown(summary, method_line)
                                        + comparisons_markdown(comparisons))
    return summary
