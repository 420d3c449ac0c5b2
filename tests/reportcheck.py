"""Trace a `python -m fleet report` back to the raw result files: every number of its
per-device tables is recomputed from the repeat files its row names."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

TABLES = ("latency", "ttft", "throughput", "memory", "power", "energy")


def check_row(row: dict, table: str, root: Path) -> None:
    """Recompute a row's mean and std from the raw files it names."""
    records = [json.loads((root / s).read_text()) for s in row["sources"].split(";")]
    w = row["workload"].split(" (")[0]
    get = {
        "latency": lambda r: r["workloads"][w]["latency"]["p50_s"] * 1e3,
        "ttft": lambda r: r["workloads"][w]["time_to_first_token"]["p50_s"] * 1e3,
        "throughput": lambda r: r["workloads"][w].get("tokens_per_s_mean") or
        r["workloads"][w]["images_per_s"],
        "memory": lambda r: r["memory"]["peak_rss_bytes"] / 1e6,
        "power": lambda r: r["workloads"][w]["power"]["power_w"],
        "energy": lambda r: r["workloads"][w]["power"]["energy_per_item_j"],
    }[table]
    values = [get(r) for r in records]
    assert int(row["repeats"]) == len(records)
    assert float(row["mean"]) == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-12)
    assert float(row["std"]) == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-12)


def trace_report(report: Path, results: Path) -> tuple[int, list[dict]]:
    """(rows recomputed, rows without a number); each of the latter says why it has none."""
    checked, unmeasured = 0, []
    for table in TABLES:
        with open(report / "tables" / f"{table}.csv") as f:
            for row in csv.DictReader(f):
                if row["mean"] == "":
                    assert row["vs_baseline"], f"{table}: a row without a number or a reason: {row}"
                    unmeasured.append({**row, "table": table})
                    continue
                check_row(row, table, results)
                checked += 1
    return checked, unmeasured
