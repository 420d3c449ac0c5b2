"""Write measured device figures back into the bundles' manifests, as
`metrics.measured.<device_class>.<device>`: what a bundle achieved where it ran, next to what
the optimizer measured at build time.

A result belongs to a bundle when its model file's sha256 matches the manifest's, so figures
never land on a rebuilt bundle they were not measured on. Each manifest is validated and
replaced atomically; nothing else in it changes (its file checksums still hold).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edge_app.bundle import MANIFEST, parse_manifest

from .report import Series, load_results


def entry(s: Series, results_root: Path) -> dict:
    workloads = {}
    for w in s.records[0]["workloads"]:
        def get(path, w=w):
            return s.summary(lambda r: path(r["workloads"][w]))

        item = {"latency_p50_ms": get(lambda x: x["latency"]["p50_s"] * 1e3),
                "latency_p95_ms": get(lambda x: x["latency"]["p95_s"] * 1e3)}
        if "time_to_first_token" in s.records[0]["workloads"][w]:
            item["time_to_first_token_p50_ms"] = get(
                lambda x: x["time_to_first_token"]["p50_s"] * 1e3)
            item["tokens_per_s"] = get(lambda x: x["tokens_per_s_mean"])
        else:
            item["images_per_s"] = get(lambda x: x["images_per_s"])
        power = s.records[0]["workloads"][w]["power"]
        if power.get("power_w") is None:
            item["energy_note"] = power.get("energy_note")
        else:
            item["power_above_idle_w"] = get(lambda x: x["power"]["power_w"])
            item["energy_per_item_j"] = get(lambda x: x["power"]["energy_per_item_j"])
        workloads[w] = item
    method = s.records[0]["method"]
    return {
        "repeats": len(s.records), "measured_at": s.records[-1]["measured_at"],
        "workloads": workloads,
        "peak_rss_mb": s.summary(lambda r: r["memory"]["peak_rss_bytes"] / 1e6),
        "method": {"power": method["power"].get("sensor") or method["power"].get("note"),
                   "onnxruntime": method["runtime"]["onnxruntime"],
                   "providers": s.records[0]["providers"], "cpu": method["cpu"]["model"],
                   "workload": method["workload"]},
        "sources": [str(f.relative_to(results_root)) for f in s.files],
    }


def write_measured(results_root: Path, bundles_root: Path) -> list[tuple[str, str, str]]:
    """Update every bundle under bundles_root that has results; returns (bundle, class,
    device) for each entry written."""
    by_model: dict[str, Path] = {}
    for manifest in Path(bundles_root).glob(f"*/{MANIFEST}"):
        data = json.loads(manifest.read_text())
        model = data.get("files", {}).get(data.get("model_file", "model.onnx"), {})
        if model.get("sha256"):
            by_model[model["sha256"]] = manifest
    written = []
    updates: dict[Path, dict] = {}
    for s in load_results(results_root):
        sha = s.manifest.get("model_sha256")
        manifest = by_model.get(sha)
        if manifest is None:
            continue
        data = updates.setdefault(manifest, json.loads(manifest.read_text()))
        device_class = s.records[0].get("device_class") or s.device
        measured = data.setdefault("metrics", {}).setdefault("measured", {})
        measured.setdefault(device_class, {})[s.device] = entry(s, results_root)
        written.append((s.bundle, device_class, s.device))
    for manifest, data in updates.items():
        parse_manifest(data, origin=f"{manifest} (with measured figures)")
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=manifest.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, manifest)
    return written
