"""Which bundle a device class serves, chosen by measurement against its service-level objective.

A class's group vars may name, per model, the candidate bundles it could serve and its SLO:

    edgegen_candidates:            # per model: the reference (usually the unoptimized build)
      dcgan-digits:                #   first, then the variants made from it
        - dcgan-digits
        - dcgan-digits-int8
    edgegen_slo:
      p95_latency_ms: 250          # every limit holds on every measured device of the class
      max_fid_increase: 5          # quality against the reference's, same extractor
      objective: energy_per_item   # latency | energy_per_item | memory: the lower, the better

`make bench DEVICE=<class>` measures the candidates on the class's devices (the measured figures
land in each manifest's `metrics.measured.<class>`); `make deploy DEVICE=<class>` then serves,
per model, the candidate that meets every limit with the best objective (`choose`). A class
with several devices is judged by its worst device: an SLO is a promise for each of them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FleetError


class SloError(FleetError):
    """No bundle can be chosen; the message says why and what to run. `selection` holds the
    judged candidates when there were measurements to judge."""

    def __init__(self, message: str, selection: Selection | None = None):
        super().__init__(message)
        self.selection = selection


@dataclass(frozen=True)
class Limit:
    key: str
    figure: str  # Figures attribute compared with it
    unit: str
    what: str


# The SLO's limits: each an upper bound on one figure of a candidate.
LIMITS = {lim.key: lim for lim in (
    Limit("p95_latency_ms", "p95_ms", "ms", "p95 latency"),
    Limit("p50_latency_ms", "p50_ms", "ms", "p50 latency"),
    Limit("max_peak_rss_mb", "peak_rss_mb", "MB", "peak RSS"),
    Limit("max_energy_per_item_j", "energy_j", "J", "energy per item"),
    Limit("max_bundle_mb", "bundle_mb", "MB", "bundle size"),
    Limit("max_fid_increase", "fid_increase", "", "FID increase"),
    Limit("max_perplexity_increase", "perplexity_increase", "", "perplexity increase"),
)}
# objective -> (figure minimized, how the table names it)
OBJECTIVES = {"latency": ("p50_ms", "p50 latency"),
              "energy_per_item": ("energy_j", "energy per item"),
              "memory": ("peak_rss_mb", "peak RSS")}
# The workload whose latency the SLO speaks of: one image per request, or one generation.
WORKLOADS = ("batch_1", "generate")


@dataclass(frozen=True)
class Slo:
    limits: dict[str, float]
    objective: str

    @classmethod
    def parse(cls, raw: Any, device_class: str) -> Slo:
        where = f"class {device_class}: edgegen_slo"
        if not isinstance(raw, dict):
            raise SloError(f"{where} must be a mapping of limits and an objective, e.g. "
                           f"{{p95_latency_ms: 250, objective: latency}}")
        raw = dict(raw)
        objective = raw.pop("objective", "latency")
        if objective not in OBJECTIVES:
            raise SloError(f"{where}: objective {objective!r} is not one of "
                           f"{', '.join(OBJECTIVES)}")
        limits = {}
        for key, value in raw.items():
            if key not in LIMITS:
                raise SloError(f"{where}: unknown limit {key!r} (known: {', '.join(LIMITS)}, "
                               f"objective)")
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(value, bool) or not math.isfinite(number) or number < 0:
                raise SloError(f"{where}: {key} must be a number >= 0, not {value!r}")
            limits[key] = number
        return cls(limits, objective)

    def describe(self) -> str:
        bounds = ", ".join(f"{LIMITS[k].what} <= {v:g}{(' ' + LIMITS[k].unit).rstrip()}"
                           for k, v in self.limits.items())
        return f"{bounds or 'no limits'}; objective: lowest {OBJECTIVES[self.objective][1]}"


@dataclass
class Figures:
    """One candidate on one class: its worst device's figures, its bundle's own."""

    bundle: str
    precision: str
    devices: list[str]
    p50_ms: float | None = None
    p95_ms: float | None = None
    energy_j: float | None = None
    energy_note: str = ""
    peak_rss_mb: float | None = None
    bundle_mb: float | None = None
    quality: tuple[str, float, str] | None = None  # (metric, value, who measured it)
    fid_increase: float | None = None
    perplexity_increase: float | None = None


@dataclass
class Row:
    model: str
    figures: Figures
    misses: list[str] = field(default_factory=list)  # the limits it breaks, said in words
    shortfall: float = 0.0  # the sum of its relative excesses: the smallest is the closest
    verdict: str = ""


@dataclass
class Selection:
    device_class: str
    slo: Slo
    rows: list[Row]
    chosen: dict[str, str]  # model -> bundle

    def record(self) -> dict:
        """What the deployment state keeps of the choice (summary.json, selection.json)."""
        return {"class": self.device_class,
                "slo": {**self.slo.limits, "objective": self.slo.objective},
                "chosen": self.chosen,
                "candidates": [{"model": r.model, "bundle": r.figures.bundle,
                                "devices": r.figures.devices, "verdict": r.verdict,
                                **{k: getattr(r.figures, k) for k in (
                                    "precision", "p50_ms", "p95_ms", "energy_j",
                                    "peak_rss_mb", "bundle_mb", "fid_increase",
                                    "perplexity_increase")}}
                               for r in self.rows]}


def candidates_of(settings: dict[str, Any], device_class: str) -> dict[str, list[str]]:
    """The class's `edgegen_candidates` ({} when it names none), checked."""
    from edge_app.bundle import NAME

    raw = settings.get("edgegen_candidates") or {}
    if not isinstance(raw, dict) or not all(
            isinstance(v, list) and v and all(isinstance(b, str) and NAME.fullmatch(b) for b in v)
            for v in raw.values()):
        raise SloError(f"class {device_class}: edgegen_candidates must map each model to a "
                       f"non-empty list of bundle names (the reference first)")
    return {str(k): list(dict.fromkeys(v)) for k, v in raw.items()}


def _manifest(bundles_dir: Path, name: str) -> dict:
    path = bundles_dir / name / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SloError(f"candidate bundle {name!r} is not built ({path} missing)") from None
    except (OSError, ValueError) as exc:
        raise SloError(f"{path}: cannot read it ({exc})") from None


def _figures(bundles_dir: Path, name: str, device_class: str) -> Figures:
    try:
        return figures(name, _manifest(bundles_dir, name), device_class)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SloError(f"{bundles_dir / name / 'manifest.json'}: its metrics cannot be read "
                       f"({type(exc).__name__}: {exc})") from None


def _mean(entry: dict | None) -> float | None:
    return entry.get("mean") if isinstance(entry, dict) else None


def _worst(values: list[float | None]) -> float | None:
    return max(values) if values and all(v is not None for v in values) else None


def figures(name: str, manifest: dict, device_class: str) -> Figures:
    measured = (manifest.get("metrics", {}).get("measured") or {}).get(device_class) or {}
    devices = sorted(measured)
    fig = Figures(name, str(manifest.get("precision", "?")), devices)
    fig.bundle_mb = sum(f.get("size", 0) for f in manifest.get("files", {}).values()) / 1e6
    quality = manifest.get("metrics", {}).get("quality") or {}
    for metric in ("fid", "perplexity"):
        if quality.get(metric) is not None:
            extractor = (manifest["metrics"].get("fid_extractor") or {}).get("weights_sha256", "")
            dataset = (manifest.get("metrics", {}).get("quality_method") or {}).get("dataset", "")
            fig.quality = (metric, float(quality[metric]), extractor if metric == "fid"
                           else json.dumps(dataset, sort_keys=True))
            break
    if not devices:
        return fig
    workloads = [next((e["workloads"][w] for w in WORKLOADS if w in e.get("workloads", {})),
                      None) for e in measured.values()]
    fig.p50_ms = _worst([_mean(w.get("latency_p50_ms")) if w else None for w in workloads])
    fig.p95_ms = _worst([_mean(w.get("latency_p95_ms")) if w else None for w in workloads])
    fig.energy_j = _worst([_mean(w.get("energy_per_item_j")) if w else None for w in workloads])
    if fig.energy_j is None:
        fig.energy_note = next((w.get("energy_note") for w in workloads if w and
                                w.get("energy_note")), "") or "no power sensor"
    fig.peak_rss_mb = _worst([_mean(e.get("peak_rss_mb")) for e in measured.values()])
    return fig


def _quality_increase(rows: list[Row], model: str) -> None:
    """Each candidate's quality against the model's reference (its first candidate): only
    figures measured the same way (same FID extractor, same perplexity dataset) compare."""
    ref = rows[0].figures
    for row in rows:
        q = row.figures.quality
        if q is None or ref.quality is None:
            continue
        if q[0] != ref.quality[0] or q[2] != ref.quality[2]:
            raise SloError(f"model {model}: {row.figures.bundle}'s {q[0]} and "
                           f"{ref.bundle}'s were not measured the same way (another extractor "
                           f"or dataset); they do not compare")
        setattr(row.figures, f"{q[0]}_increase", q[1] - ref.quality[1])


def _judge(row: Row, slo: Slo) -> None:
    fig = row.figures
    for key, bound in slo.limits.items():
        lim = LIMITS[key]
        value = getattr(fig, lim.figure)
        if value is None:
            why = ("not measured on this class" if not fig.devices else
                   fig.energy_note if lim.figure == "energy_j" else "not recorded")
            row.misses.append(f"{lim.what} unknown ({why})")
            row.shortfall += 1.0
        elif value > bound:
            unit = (" " + lim.unit).rstrip()
            row.misses.append(f"{lim.what} {value:.4g}{unit} > {bound:g}{unit}")
            row.shortfall += (value - bound) / max(abs(bound), 1e-9)
    objective = getattr(fig, OBJECTIVES[slo.objective][0])
    if objective is None and not row.misses:
        row.misses.append(f"{OBJECTIVES[slo.objective][1]} unknown ("
                          f"{fig.energy_note if slo.objective == 'energy_per_item' else 'not measured'})")
        row.shortfall += 1.0


def choose(device_class: str, candidates: dict[str, list[str]], slo: Slo,
           bundles_dir: Path) -> Selection:
    """Per model, the candidate that meets every limit with the lowest objective. Raises
    SloError when the class has no measurements of any candidate (run `make bench`), or when
    no candidate of a model meets the SLO (naming the closest and what it missed)."""
    rows_by_model = {model: [Row(model, _figures(bundles_dir, name, device_class))
                             for name in names]
                     for model, names in candidates.items()}
    every = [r for rows in rows_by_model.values() for r in rows]
    if not any(r.figures.devices for r in every):
        raise SloError(f"class {device_class}: none of its candidate bundles has been measured "
                       f"on it: `make bench DEVICE={device_class}` measures them (they must be "
                       f"on the devices: `make deploy DEVICE={device_class} "
                       f"DEPLOY_ARGS=--allow-unmeasured` ships them beside the default)")
    chosen, failures = {}, []
    key = OBJECTIVES[slo.objective][0]
    for model, rows in rows_by_model.items():
        _quality_increase(rows, model)
        for row in rows:
            _judge(row, slo)
            if row.misses:
                row.verdict = "misses: " + "; ".join(row.misses)
        fit = [r for r in rows if not r.misses]
        if not fit:
            closest = min(rows, key=lambda r: r.shortfall)
            failures.append(f"{model}: no candidate meets the SLO; the closest, "
                            f"{closest.figures.bundle}, misses {'; '.join(closest.misses)}")
            continue
        best = min(fit, key=lambda r: getattr(r.figures, key))  # the first of equals
        chosen[model] = best.figures.bundle
        what = OBJECTIVES[slo.objective][1]
        for r in fit:
            if r is best:
                r.verdict = f"chosen: meets the SLO, lowest {what}"
            else:
                r.verdict = (f"meets the SLO; {what} {getattr(r.figures, key):.4g} > "
                             f"{getattr(best.figures, key):.4g} of {best.figures.bundle}")
    selection = Selection(device_class, slo, every, chosen)
    if failures:
        raise SloError(f"class {device_class}: " + "; ".join(failures)
                       + f" (SLO: {slo.describe()})", selection)
    return selection


def render(selection: Selection) -> str:
    from .playbook import table

    def num(v, fmt="{:.3g}"):
        return "-" if v is None else fmt.format(v)

    header = ("MODEL", "CANDIDATE", "PRECISION", "DEVICES", "P50 MS", "P95 MS", "ENERGY J",
              "RSS MB", "SIZE MB", "QUALITY (+REF)", "RESULT")
    lines = []
    for r in selection.rows:
        f = r.figures
        quality = "-"
        if f.quality:
            inc = getattr(f, f"{f.quality[0]}_increase")
            quality = f"{f.quality[0]} {f.quality[1]:.4g}" + (
                f" ({inc:+.3g})" if inc is not None else "")
        lines.append((r.model, f.bundle, f.precision, str(len(f.devices)), num(f.p50_ms),
                      num(f.p95_ms), num(f.energy_j), num(f.peak_rss_mb, "{:.0f}"),
                      num(f.bundle_mb, "{:.2f}"), quality, r.verdict))
    head = (f"class {selection.device_class}: SLO {selection.slo.describe()} "
            f"(each figure the worst of the class's measured devices)")
    return head + "\n" + table(header, lines, [])


def choices_table(deployments: Path):
    """The bundles each class was given by measurement (`make deploy` of a class with
    candidates and an SLO keeps its choice in <deployments>/<class>/selection.json), every
    candidate with the reason it won or lost, as a report table; None when no class chose."""
    from .report import ReportError, Table

    rows = []
    for path in sorted(Path(deployments).glob("*/selection.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ReportError(f"{path}: cannot read it ({exc})") from None
        if not record.get("chosen"):
            continue  # deployed unmeasured (--allow-unmeasured): nothing was chosen
        slo = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                        for k, v in record.get("slo", {}).items())
        for c in record.get("candidates", []):
            rows.append({"class": record["class"], "model": c["model"],
                         "bundle": c["bundle"], "devices": ", ".join(c.get("devices", [])),
                         "chosen": "yes" if record["chosen"].get(c["model"]) == c["bundle"]
                         else "", "p50_ms": c.get("p50_ms"), "p95_ms": c.get("p95_ms"),
                         "peak_rss_mb": c.get("peak_rss_mb"), "energy_j": c.get("energy_j"),
                         "verdict": c.get("verdict", ""), "slo": slo})
    if not rows:
        return None
    return Table("choices", "Bundles chosen per device class (SLO and measurements)",
                 ["class", "model", "bundle", "chosen", "devices", "p50_ms", "p95_ms",
                  "peak_rss_mb", "energy_j", "verdict", "slo"], rows,
                 ["Each figure is the worst of the class's measured devices; the chosen bundle "
                  "meets every limit of the SLO with the best objective (fleet/slo.py)."])
