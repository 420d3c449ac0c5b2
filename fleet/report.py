"""`python -m fleet report`: the paper's tables and figures from measured device results.

Input: the results store written by `python -m edge_app bench` (`<results>/<device>/<bundle>/
repeat-<k>.json`, one file per bundle and repeat, each carrying the bundle's manifest facts and
the method). Output, in `--out`:
- `tables/*.csv` (every number at full precision, each row naming the raw files it comes
  from) and `report.md`: size and complexity, latency per device, throughput, memory, power
  and energy, quality; each optimized bundle against its baseline (the shortest other bundle
  name it extends from the same recipe, e.g. `dcgan-digits` for `dcgan-digits-int8`) as a
  paired t-test over matched repeats with the 95% CI of the change;
- `figures/*.png`: Figure 1 (parameters, FLOPs and file size of each bundle against its
  baseline), latency across devices, power and energy, quality vs compression, and a Pareto
  plot of quality vs latency;
- samples of what each bundle generates, met early in the report (fleet/samples.py: a seeded
  grid per image bundle, `figures/samples-<bundle>.png`; greedy completions of fixed prompts
  per text bundle), drawn through the server's own code from the bundles under `--bundles`;
  a bundle not there says why it has none;
- `report.html`: one self-contained page (tables, figures and samples inline);
- `report.json`: what the report covers, the samples with their method included.
A cell that could not be measured says why (e.g. "no power sensor on this device").
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from edge_app.power import NO_SENSOR
from edge_app.stats import paired_comparison, summarize

from . import slo
from .errors import FleetError
from .figures import figures
from .samples import Sample, samples
from .samples import html_section as samples_html
from .samples import markdown as samples_md


class ReportError(FleetError):
    """The results store cannot be reported on; the message says what is missing."""


@dataclass
class Series:
    """One bundle on one device: its repeats, in repeat order."""

    device: str
    bundle: str
    records: list[dict]
    files: list[Path]
    baseline: str | None = None

    @property
    def manifest(self) -> dict:
        return self.records[0]["manifest"]

    def values(self, getter) -> list[float | None]:
        out = []
        for r in self.records:
            try:
                out.append(getter(r))
            except (KeyError, TypeError):
                out.append(None)
        return out

    def summary(self, getter) -> dict | None:
        """Mean, std and n over the repeats that measured it; None when none did."""
        vals = [v for v in self.values(getter) if v is not None]
        return summarize(vals) if vals else None


def load_results(root: Path) -> list[Series]:
    series = []
    for bundle_dir in sorted(p for p in Path(root).glob("*/*") if p.is_dir()):
        files = sorted(bundle_dir.glob("repeat-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        if not files:
            continue
        records = [json.loads(f.read_text()) for f in files]
        series.append(Series(bundle_dir.parent.name, bundle_dir.name, records, files))
    if not series:
        raise ReportError(f"no results under {root} (expected <device>/<bundle>/repeat-<k>.json;"
                          f" run `make bench` first)")
    recipe_of = {s.bundle: (s.manifest.get("recipe") or {}).get("sha256") for s in series}
    for s in series:
        # The baseline is the run's own: the shortest bundle name this one extends, built by
        # the same recipe (`dcgan-digits-sweep-int8` -> `dcgan-digits-sweep`, not the
        # `dcgan-digits` of another recipe).
        prefixes = [n for n, r in recipe_of.items() if s.bundle.startswith(n + "-")
                    and r == recipe_of[s.bundle]]
        s.baseline = min(prefixes, key=len) if prefixes else None
    return series


# --------------------------------------------------------------------------- tables

@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _compare(s: Series, by: dict, getter) -> dict:
    """Paired test of s against its baseline on the same device, over matched repeats."""
    if s.baseline is None:
        return {"vs_baseline": "baseline"}
    base = by.get((s.device, s.baseline))
    if base is None:
        return {"vs_baseline": f"baseline {s.baseline} not measured on {s.device}"}
    n = min(len(base.records), len(s.records))
    a, b = base.values(getter)[:n], s.values(getter)[:n]
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 2:
        return {"vs_baseline": "needs >= 2 matched repeats"}
    c = paired_comparison([x for x, _ in pairs], [y for _, y in pairs])
    return {"change_pct": c["relative_pct"], "ci95_low_pct": c["relative_ci95_pct"][0],
            "ci95_high_pct": c["relative_ci95_pct"][1], "p": c["p"],
            "vs_baseline": f"{c['verdict']} vs {s.baseline} (n={c['n']})"}


def _workloads(s: Series) -> list[str]:
    return list(s.records[0]["workloads"])


def _sources(s: Series, root: Path) -> str:
    return ";".join(str(f.relative_to(root)) for f in s.files)


def _one_per_bundle(series: list[Series]) -> list[Series]:
    """The first device's series of each bundle (manifest facts are the same everywhere)."""
    first: dict[str, Series] = {}
    for s in series:
        first.setdefault(s.bundle, s)
    return list(first.values())


# Figure 1's numbers: each bundle's size as a share of its baseline's (100 for the baseline).
SHARES = {"params_pct_of_baseline": "params", "flops_pct_of_baseline": "flops_per_item",
          "file_size_pct_of_baseline": "file_size_mb"}


def _size(m: dict) -> dict:
    return {"params": m.get("params"),
            "file_size_mb": m["file_size_bytes"] / 1e6 if "file_size_bytes" in m else None,
            "flops_per_item": m.get("flops_per_image", m.get("flops_per_token"))}


def build_tables(series: list[Series], root: Path) -> list[Table]:
    by = {(s.device, s.bundle): s for s in series}
    size = Table("size", "Size and complexity (from the bundles' manifests); Figure 1 charts "
                 "the shares of the baseline",
                 ["bundle", "family", "precision", "techniques", "params", "file_size_mb",
                  "flops_per_item", "baseline", *SHARES])
    for s in _one_per_bundle(series):
        size.rows.append({"bundle": s.bundle, "family": s.manifest["family"],
                          "precision": s.manifest["precision"],
                          "techniques": " > ".join(s.manifest["techniques"]),
                          **_size(s.manifest["metrics"]), "baseline": s.baseline or s.bundle})
    sizes = {r["bundle"]: r for r in size.rows}
    for r in size.rows:
        base = sizes[r["baseline"]]
        for share, of in SHARES.items():
            if r[of] is not None and base[of]:
                r[share] = 100.0 * r[of] / base[of]

    cols = ["device", "bundle", "workload", "repeats", "mean", "std", "change_pct",
            "ci95_low_pct", "ci95_high_pct", "p", "vs_baseline", "sources"]
    latency = Table("latency", "Latency per device: p50 of each repeat, ms (mean ± std over "
                    "repeats)", cols)
    ttft = Table("ttft", "Time to first token per device: p50 of each repeat, ms", cols)
    throughput = Table("throughput", "Throughput per device: images/s or tokens/s", cols)
    memory = Table("memory", "Peak resident memory per device (fresh process per repeat), MB",
                   cols)
    power = Table("power", "Mean power above the idle baseline, W", cols)
    energy = Table("energy", "Energy per image / per token above the idle baseline, J", cols)
    for s in series:
        src = _sources(s, root)
        base_row = {"device": s.device, "bundle": s.bundle, "repeats": len(s.records),
                    "sources": src}

        def add(table: Table, workload: str, getter):
            st = s.summary(getter) or {"mean": None, "std": None}
            table.rows.append({**base_row, "workload": workload, "mean": st["mean"],
                               "std": st["std"], **_compare(s, by, getter)})

        for w in _workloads(s):
            add(latency, w, lambda r, w=w: r["workloads"][w]["latency"]["p50_s"] * 1e3)
            if "time_to_first_token" in s.records[0]["workloads"][w]:
                add(ttft, w, lambda r, w=w: r["workloads"][w]["time_to_first_token"]["p50_s"] * 1e3)
            key = "tokens_per_s_mean" if s.manifest["task"] == "text-generation" else "images_per_s"
            add(throughput, f"{w} ({'tokens' if 'tokens' in key else 'images'}/s)",
                lambda r, w=w, key=key: r["workloads"][w][key])
            window = s.records[0]["workloads"][w]["power"]
            if window.get("power_w") is None:  # no sensor, or no power window: say which
                for t in (power, energy):
                    t.rows.append({**base_row, "workload": w, "mean": None, "std": None,
                                   "vs_baseline": window.get("energy_note") or NO_SENSOR})
            else:
                add(power, w, lambda r, w=w: r["workloads"][w]["power"]["power_w"])
                add(energy, w, lambda r, w=w: r["workloads"][w]["power"]["energy_per_item_j"])
        add(memory, "process", lambda r: r["memory"]["peak_rss_bytes"] / 1e6)

    quality = Table("quality", "Quality (from the optimizer's evaluation, in the manifests)",
                    ["bundle", "metric", "value", "method"])
    for s in _one_per_bundle(series):
        m = s.manifest["metrics"]
        for metric, value in (m.get("quality") or {}).items():
            method = (m.get("fid_extractor", {}).get("name", "") if metric == "fid" else
                      (m.get("quality_method", {}).get("dataset", "")))
            quality.rows.append({"bundle": s.bundle, "metric": metric, "value": value,
                                 "method": method})
    return [size, latency, ttft, throughput, memory, power, energy, quality]


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _cell(row: dict, col: str) -> str:
    if col == "mean" and row.get("mean") is not None and row.get("std") is not None:
        return f"{_fmt(row['mean'])} ± {_fmt(row['std'])}"
    if col == "change_pct" and row.get("change_pct") is not None:
        return (f"{row['change_pct']:+.1f}% [{row['ci95_low_pct']:+.1f}, "
                f"{row['ci95_high_pct']:+.1f}]")
    return _fmt(row.get(col))


_SHOWN = {"mean": "mean ± std", "change_pct": "change vs baseline [95% CI]", "p": "p",
          "params_pct_of_baseline": "params, % of baseline",
          "flops_pct_of_baseline": "FLOPs, % of baseline",
          "file_size_pct_of_baseline": "file size, % of baseline"}


def _display_columns(t: Table) -> list[str]:
    hidden = {"std", "ci95_low_pct", "ci95_high_pct", "sources"}
    return [c for c in t.columns if c not in hidden]


def write_csv(t: Table, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=t.columns, extrasaction="ignore")
        writer.writeheader()
        for row in t.rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in t.columns})


def markdown(t: Table) -> str:
    cols = _display_columns(t)
    lines = [f"### {t.title}", "", "| " + " | ".join(_SHOWN.get(c, c) for c in cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for r in t.rows]
    return "\n".join(lines + [""] + t.notes)


def html_table(t: Table) -> str:
    cols = _display_columns(t)
    head = "".join(f"<th>{html.escape(_SHOWN.get(c, c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r, c))}</td>" for c in cols)
                   + "</tr>" for r in t.rows)
    return f"<h3>{html.escape(t.title)}</h3><table><tr>{head}</tr>{body}</table>"


# --------------------------------------------------------------------------- report

def _methods(series: list[Series]) -> list[str]:
    lines = []
    for dev in sorted({s.device for s in series}):
        m = next(s.records[0]["method"] for s in series if s.device == dev)
        power = m["power"]
        psens = (f"{power['sensor']} ({power['scope']}), idle baseline "
                 f"{power['idle_baseline_w']:.3f} W, {power['hz']:g} Hz" if power.get("sensor")
                 else power.get("note", NO_SENSOR))
        cpu = m["cpu"]
        feats = ", ".join(k for k, v in cpu.items() if v is True) or "none of note"
        w = m["workload"]
        # The repeats found (a resumed run may have added some), and whether every bundle of
        # the device ran the same workload.
        mine = [s for s in series if s.device == dev]
        counts = sorted({len(s.records) for s in mine})
        repeats = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        mixed = any(r["method"]["workload"] != w for s in mine for r in s.records)
        traffic = _server_traffic([r for s in mine for r in s.records])
        lines.append(f"- **{dev}**: {cpu['model']} ({cpu['arch']}, {cpu['logical_cpus']} CPUs; "
                     f"INT8-relevant features: {feats}); ONNX Runtime "
                     f"{m['runtime']['onnxruntime']}; power: {psens}; memory: "
                     f"{m.get('peak_rss', 'not recorded')}; {repeats} repeats x "
                     f"{w['runs']} runs after {w['warmup']} warm-up, image batches "
                     f"{w['image_batches']}, {w['new_tokens']} new tokens, power window "
                     f"{w['window_s']:g} s, seed {w['seed']}"
                     + ("; other workloads too, each result file has its own" if mixed else "")
                     + traffic + ".")
    return lines


def _server_traffic(records: list[dict]) -> str:
    """What the device's own server answered while it was measured (the deployed server runs
    beside a fleet benchmark): "" where no server was watched."""
    watched = [r["server"] for r in records if r.get("server")]
    if not watched:
        return ""
    counts = [w.get("generation_requests_during") for w in watched]
    if None in counts:
        note = next(w.get("note", "") for w in watched if w.get("generation_requests_during")
                    is None)
        return f"; its server's traffic during the measurements is unknown ({note})"
    total = sum(counts)
    if not total:
        return "; its server answered no generation requests during the measurements"
    return (f"; its server answered {total:g} generation requests during the measurements "
            f"(they shared the device)")


def build_report(results: Path, out: Path, bundles: Path | None = None,
                 deployments: Path | None = None) -> dict:
    """The report of the results store `results` into `out`; samples of the bundles found
    under `bundles` (none given: each bundle's samples say so); the bundles chosen per class
    from the deploy records under `deployments` (marked in the Pareto figure)."""
    series = load_results(results)
    tables = build_tables(series, results)
    choices = slo.choices_table(deployments) if deployments is not None else None
    if choices is not None:
        tables.append(choices)
    by_name = {t.name: t for t in tables}
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for t in tables:
        write_csv(t, out / "tables" / f"{t.name}.csv")
    figs = figures(by_name, out / "figures")
    size_fig = figs.pop("size")  # Figure 1, met early with the samples
    made = _samples(series, bundles, out / "figures")
    method = _methods(series)
    md = ["# EdgeGen benchmark report", "", "## Method", "", *method, "",
          "Each optimized bundle is compared with its baseline on the same device by a paired "
          "t-test over matched repeats; changes are relative to the baseline mean, with the "
          "95% confidence interval.", "", f"## {FIGURE_1}", "",
          f"![size](figures/{size_fig.name})", "", FIGURE_1_CAPTION, "", f"## {SAMPLES}", "",
          *samples_md(made), "## Tables", ""]
    md += [markdown(t) + "\n" for t in tables]
    md += ["## Figures", ""] + [f"![{k}](figures/{p.name})" for k, p in figs.items()]
    (out / "report.md").write_text("\n".join(md) + "\n")
    images = "".join(_html_figure(k, p) for k, p in figs.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EdgeGen benchmark report</title>
<link rel="icon" href="data:,">
<style>body{{font:14px/1.4 system-ui,sans-serif;max-width:80rem;margin:auto;padding:1rem}}
table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}td,th{{border:1px solid #ccc;padding:2px 6px;
font-size:12px}}th{{background:#f3f3f3}}img{{max-width:100%}}figure{{margin:1rem 0}}
img.samples{{image-rendering:pixelated}}pre.completion{{white-space:pre-wrap;background:#f7f7f7;
padding:4px 8px;margin:.3rem 0}}.prompt{{font-weight:bold;color:#555}}.note{{color:#666}}</style>
</head><body><h1>EdgeGen benchmark report</h1><h2>Method</h2><ul>
{''.join('<li>' + html.escape(line[2:].replace('**', '')) + '</li>' for line in method)}</ul>
<h2>{FIGURE_1}</h2>{_html_figure("size", size_fig, FIGURE_1_CAPTION)}<h2>{SAMPLES}</h2>{samples_html(made)}
<h2>Tables</h2>{''.join(html_table(t) for t in tables)}<h2>Figures</h2>{images}</body></html>
"""
    (out / "report.html").write_text(page)
    summary = {"devices": sorted({s.device for s in series}),
               "bundles": sorted({s.bundle for s in series}),
               "tables": [t.name for t in tables],
               "figures": [str(p) for p in (size_fig, *figs.values())],
               "samples": [m.as_json() for m in made]}
    (out / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


FIGURE_1 = "Figure 1: size and complexity against the baseline"
FIGURE_1_CAPTION = ("Parameters, FLOPs per item (image or token) and model file size of each "
                    "bundle as a percentage of its baseline's, from the manifests (the size "
                    "table below has the numbers).")
SAMPLES = "Samples: what each bundle generates"


def _html_figure(name: str, path: Path, caption: str | None = None) -> str:
    return (f'<figure><img alt="{name}" src="data:image/png;base64,'
            f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>'
            f'{html.escape(caption or name)}</figcaption></figure>')


def _samples(series: list[Series], bundles: Path | None, out: Path) -> list[Sample]:
    """Each reported bundle's samples, from its directory under `bundles`."""
    facts = [{**s.manifest, "name": s.bundle} for s in _one_per_bundle(series)]
    if bundles is None:
        return [Sample(f["name"], f["family"], f["task"],
                       note="no samples: no bundles directory was given (--bundles DIR)")
                for f in facts]
    return samples(facts, bundles, out)
