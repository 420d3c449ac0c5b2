"""`python -m fleet status --inventory FILE [--limit HOST,...]`: the fleet at a glance.
`python -m fleet targets --inventory FILE [--out PATH]`: Prometheus file_sd targets.
`python -m fleet report --results DIR --out DIR`: tables, figures and HTML from measurements.
`python -m fleet measured --results DIR --bundles DIR`: measured figures into bundle manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .inventory import InventoryError, load_inventory
from .status import probe_all, render_table
from .targets import write_file_sd

DEFAULT_TARGETS = Path("monitoring/prometheus/targets/edge.json")


def _measured(args) -> int:
    from .measured import write_measured

    written = write_measured(args.results, args.bundles)
    for bundle, device_class, device in written:
        print(f"{bundle}: metrics.measured.{device_class}.{device}")
    print(f"{len(written)} measured entr{'y' if len(written) == 1 else 'ies'} written under "
          f"{args.bundles}")
    return 0


def _report(args) -> int:
    from .report import build_report

    summary = build_report(args.results, args.out)
    print(f"report for {len(summary['devices'])} device(s), {len(summary['bundles'])} "
          f"bundle(s): {args.out / 'report.md'}, {args.out / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="probe /health, /ready and /v1/models on every device")
    status.add_argument("--inventory", type=Path, default=Path("ansible/inventory/example.yml"))
    status.add_argument("--limit", help="comma-separated host names or classes to probe")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    targets = sub.add_parser("targets", help="write Prometheus file_sd targets for the fleet")
    targets.add_argument("--inventory", type=Path, default=Path("ansible/inventory/example.yml"))
    targets.add_argument("--limit", help="comma-separated host names or classes to include")
    targets.add_argument("--out", type=Path, default=DEFAULT_TARGETS,
                         help=f"targets file (default {DEFAULT_TARGETS})")
    report = sub.add_parser("report", help="tables, figures and HTML from bench results")
    report.add_argument("--results", type=Path, default=Path("results/bench"))
    report.add_argument("--out", type=Path, default=Path("results/report"))
    measured = sub.add_parser("measured", help="write measured figures into bundle manifests")
    measured.add_argument("--results", type=Path, default=Path("results/bench"))
    measured.add_argument("--bundles", type=Path, default=Path("bundles"))
    args = parser.parse_args(argv)
    if args.command in ("measured", "report"):
        from .report import ReportError

        try:
            return (_measured if args.command == "measured" else _report)(args)
        except ReportError as exc:
            print(f"fleet: error: {exc}", file=sys.stderr)
            return 2
    try:
        devices = load_inventory(args.inventory)
    except InventoryError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        wanted = set(args.limit.split(","))
        devices = [d for d in devices if d.name in wanted or d.device_class in wanted]
        if not devices:
            print(f"fleet: error: --limit {args.limit} matches no host or class", file=sys.stderr)
            return 2
    if args.command == "targets":
        path = write_file_sd(devices, args.out)
        print(f"wrote {len(devices)} target(s) to {path}")
        return 0
    statuses = probe_all(devices, args.timeout)
    print(render_table(statuses))
    down = [s.device.name for s in statuses if not s.ok]
    if down:
        print(f"\n{len(down)} of {len(statuses)} device(s) not ready: {', '.join(down)}")
        return 1
    print(f"\nall {len(statuses)} device(s) ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
