"""The report's figures (matplotlib, PNG): size and complexity against the baseline (Figure 1),
latency across devices, power, quality against model size, and a Pareto plot of quality
against latency, drawn from the report's tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from edge_app.power import NO_SENSOR

if TYPE_CHECKING:
    from .report import Table


def figures(tables: dict[str, Table], out: Path) -> dict[str, Path]:
    """Draw every figure of FIGURES into `out`: {name: PNG path}, in the report's order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, filename, draw in FIGURES:
        fig = draw(plt, tables)
        fig.tight_layout()
        made[name] = out / filename
        fig.savefig(made[name], dpi=120)
        plt.close(fig)
    return made


def _latency_rows(tables: dict[str, Table]) -> list[dict]:
    return [r for r in tables["latency"].rows if r["mean"] is not None]


def _quality(tables: dict[str, Table]) -> tuple[dict, dict, list[str]]:
    """(size rows by bundle, {bundle: (metric, value)} for FID and perplexity, the families
    that have a quality figure)."""
    size = {r["bundle"]: r for r in tables["size"].rows}
    quality = {}
    for r in tables["quality"].rows:
        if r["metric"] in ("fid", "perplexity"):
            quality[r["bundle"]] = (r["metric"], r["value"])
    return size, quality, sorted({size[b]["family"] for b in quality})


def _per_family(plt, families: list[str]):
    """One panel per model family, side by side."""
    return plt.subplots(1, max(1, len(families)), figsize=(8 * max(1, len(families)), 4.4),
                        squeeze=False)


# Figure 1's bars: the size table's shares of the baseline, and their legend labels.
SIZE_BARS = (("params_pct_of_baseline", "parameters"), ("flops_pct_of_baseline", "FLOPs per item"),
             ("file_size_pct_of_baseline", "model file size"))


def size_reduction(plt, tables: dict[str, Table]):
    """Figure 1: parameters, FLOPs and file size of each bundle as a percentage of its
    baseline's (the baseline itself is 100), one panel per family; each bar is labelled with
    its value, a missing number gets no bar."""
    rows = tables["size"].rows
    fams = sorted({r["family"] for r in rows})
    most = max((sum(r["family"] == f for r in rows) for f in fams), default=1)
    fig, axes = plt.subplots(1, max(1, len(fams)), squeeze=False,
                             figsize=(max(6.0, 2 + 1.4 * most) * max(1, len(fams)), 4.6))
    width = 0.8 / len(SIZE_BARS)
    for ax, fam in zip(axes[0], fams):
        # Each baseline, then the bundles compared with it.
        mine = sorted((r for r in rows if r["family"] == fam),
                      key=lambda r: (r["baseline"], r["bundle"] != r["baseline"], r["bundle"]))
        for i, (key, label) in enumerate(SIZE_BARS):
            xs = [k + (i - (len(SIZE_BARS) - 1) / 2) * width for k in range(len(mine))]
            values = [math.nan if r.get(key) is None else r[key] for r in mine]
            bars = ax.bar(xs, values, width, label=label)
            ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.0f}" for v in values],
                         fontsize=7, padding=1)
        ax.axhline(100, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([r["bundle"] if r["bundle"] == r["baseline"]
                            else f"{r['bundle']}\n(vs {r['baseline']})" for r in mine],
                           rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("% of baseline (lower is smaller)")
        # Room above the tallest bar for its label and the legend.
        ax.set_ylim(0, 1.3 * max([100.0] + [r[k] for r in mine for k, _ in SIZE_BARS
                                            if r.get(k) is not None]))
        ax.set_title(f"{fam}: size and complexity vs baseline")
        ax.legend(fontsize=7, loc="upper right", ncol=len(SIZE_BARS))
    return fig


def latency(plt, tables: dict[str, Table]):
    """p50 latency of every bundle and workload, one bar per device (log scale)."""
    lat = _latency_rows(tables)
    devices = sorted({r["device"] for r in lat})
    keys = sorted({(r["bundle"], r["workload"]) for r in lat})
    fig, ax = plt.subplots(figsize=(min(22, max(6, 0.45 * len(keys) * len(devices) + 2)), 4.8))
    width = 0.8 / max(1, len(devices))
    for i, dev in enumerate(devices):
        rows = {(r["bundle"], r["workload"]): r for r in lat if r["device"] == dev}
        xs = [k + i * width for k in range(len(keys))]
        # A bundle a device did not measure gets no bar (not a zero on the log scale).
        ax.bar(xs, [rows[k]["mean"] if k in rows else math.nan for k in keys], width,
               yerr=[rows[k]["std"] if k in rows else math.nan for k in keys], capsize=3,
               label=dev)
    ax.set_xticks([k + width * (len(devices) - 1) / 2 for k in range(len(keys))])
    ax.set_xticklabels([f"{b}\n{w}" for b, w in keys], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("p50 latency per run (ms)")
    ax.set_yscale("log")
    ax.set_title("Latency across devices (mean ± std over repeats)")
    ax.legend(title="device")
    return fig


def power(plt, tables: dict[str, Table]):
    """Mean power above idle per device, bundle and workload; a note where no device had a
    sensor."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pw = [r for r in tables["power"].rows if r.get("mean") is not None]
    if pw:
        labels = [f"{r['device']}\n{r['bundle']}\n{r['workload']}" for r in pw]
        ax.bar(range(len(pw)), [r["mean"] for r in pw], yerr=[r["std"] for r in pw], capsize=3)
        ax.set_xticks(range(len(pw)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("mean power above idle (W)")
        ax.set_title("Power per device and workload")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"Power: {NO_SENSOR}\n(no device in these results has one)",
                ha="center", va="center", fontsize=12)
    return fig


def quality_vs_size(plt, tables: dict[str, Table]):
    """Quality (FID, perplexity) against model file size, one panel per family."""
    size, quality, fams = _quality(tables)
    fig, axes = _per_family(plt, fams)
    for ax, fam in zip(axes[0], fams):
        pts = [(size[b]["file_size_mb"], quality[b][1], b) for b in quality
               if size[b]["family"] == fam and size[b]["file_size_mb"]]
        numbers = _numbering(p[2] for p in pts)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts])
        _label(ax, pts, numbers)
        metric = next(quality[b][0] for b in quality if size[b]["family"] == fam)
        ax.set_xlabel("model file size (MB)")
        ax.set_ylabel(f"{metric} (lower is better)")
        ax.set_title(f"{fam}: quality vs compression")
    return fig


def pareto(plt, tables: dict[str, Table]):
    """Quality against batch-1 (or one generation's) latency per device, with each device's
    Pareto front, one panel per family; the bundle chosen for a device's class is ringed."""
    lat = _latency_rows(tables)
    devices = sorted({r["device"] for r in lat})
    size, quality, fams = _quality(tables)
    chosen: dict[str, dict[str, str]] = {}  # device -> {bundle chosen for it: its class}
    for r in tables["choices"].rows if "choices" in tables else []:
        for dev in r["devices"].split(", ") if r["chosen"] else []:
            chosen.setdefault(dev, {})[r["bundle"]] = r["class"]
    fig, axes = _per_family(plt, fams)
    for ax, fam in zip(axes[0], fams):
        numbers = _numbering(b for b in quality if size[b]["family"] == fam)
        for dev in devices:
            pts = [(r["mean"], quality[r["bundle"]][1], r["bundle"]) for r in lat
                   if r["device"] == dev and r["bundle"] in quality
                   and size[r["bundle"]]["family"] == fam
                   and r["workload"] in ("batch_1", "generate")]
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=dev)
            _label(ax, pts, numbers)
            front = _front(pts)
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", alpha=0.6)
            # the bundle `make deploy` chose for this device's class, ringed
            mine = [p for p in pts if p[2] in chosen.get(dev, ())]
            if mine:
                ax.scatter([p[0] for p in mine], [p[1] for p in mine], s=260,
                           facecolors="none", edgecolors="black", linewidths=1.5,
                           label=f"chosen for {chosen[dev][mine[0][2]]}")
        ax.set_xlabel("p50 latency (ms, batch 1 / one generation)")
        ax.set_ylabel("quality metric (lower is better)")
        ax.set_title(f"{fam}: Pareto front of quality vs latency")
        # "best": the legend keeps off the points (and the rings of the chosen ones)
        ax.legend(title="device", fontsize=7, loc="best", markerscale=0.6)
    return fig


def _front(pts: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """The points no faster point beats on quality (lower is better), by latency."""
    front, best = [], math.inf
    for x, y, _ in sorted(pts):
        if y < best:
            front.append((x, y))
            best = y
    return front


# (name, file under figures/, function drawing it), in the report's order: the names are the
# report's alt texts and captions, the files what report.md links.
FIGURES = (
    ("size", "size_reduction.png", size_reduction),
    ("latency", "latency.png", latency),
    ("power", "power.png", power),
    ("quality", "quality_vs_compression.png", quality_vs_size),
    ("pareto", "pareto.png", pareto),
)


def _numbering(names) -> dict[str, int]:
    """Points are labelled by number, with the names in a key beside the plot: long bundle
    names at nearby points would otherwise overprint each other."""
    return {name: i for i, name in enumerate(sorted(set(names)), 1)}


def _label(ax, pts: list[tuple[float, float, str]], numbers: dict[str, int]) -> None:
    """Number each point; points that nearly coincide (within 2% of the data range on both
    axes) share one label ("3,4"). The key lists number and bundle name right of the axes."""
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[list[tuple[float, float, str]]] = []
    for p in sorted(pts):
        for g in groups:
            if abs(g[0][0] - p[0]) <= 0.02 * dx and abs(g[0][1] - p[1]) <= 0.02 * dy:
                g.append(p)
                break
        else:
            groups.append([p])
    for g in groups:
        text = ",".join(str(n) for n in sorted({numbers[p[2]] for p in g}))
        ax.annotate(text, (g[0][0], g[0][1]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    key = "\n".join(f"{n:>2}  {name}" for name, n in sorted(numbers.items(), key=lambda i: i[1]))
    ax.text(1.02, 1.0, key, transform=ax.transAxes, va="top", ha="left", fontsize=7,
            family="monospace")
