"""`python -m fleet status --inventory FILE [--limit HOST,...]`: the fleet at a glance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .inventory import InventoryError, load_inventory
from .status import probe_all, render_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="probe /health, /ready and /v1/models on every device")
    status.add_argument("--inventory", type=Path, default=Path("ansible/inventory/example.yml"))
    status.add_argument("--limit", help="comma-separated host names or classes to probe")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    args = parser.parse_args(argv)
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
