"""`python -m fleet status --inventory FILE [--limit HOST,...]`: the fleet at a glance.
`python -m fleet targets --inventory FILE [--out PATH]`: Prometheus file_sd targets.
`python -m fleet report --results DIR --out DIR`: tables, figures and HTML from measurements.
`python -m fleet measured --results DIR --bundles DIR`: measured figures into bundle manifests.
`python -m fleet images --device CLASS`: build and save the class's edge server image.
`python -m fleet deploy --device CLASS --inventory FILE [--limit ...]`: roll it out (Ansible).
`python -m fleet bench --device CLASS|all --inventory FILE [...]`: benchmark the devices."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

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


def _images(args) -> int:
    from .images import ImageSpec, build, save
    from .inventory import device_class, rollout_hosts

    if args.inventory:
        spec = ImageSpec.for_hosts(args.device, rollout_hosts(args.inventory, args.device))
    else:
        spec = ImageSpec.from_settings(args.device, device_class(args.device))
    build(spec)
    archive = save(spec.tag)
    print(f"{spec.tag}  {spec.platform}  image {archive.image_bytes / 1e6:.0f} MB  "
          f"archive {archive.archive_bytes / 1e6:.0f} MB  {archive.path}")
    return 0


def _extra_vars(items: list[str] | None) -> dict | None:
    """-e KEY=VALUE options (values parsed as YAML); None after printing the error."""
    extra = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"fleet: error: -e expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return None
        extra[key] = yaml.safe_load(value) if value else ""
    return extra


def _deploy(args) -> int:
    from .deploy import deploy

    if args.device == "pixel":  # phones run the companion APK, not a container
        from .pixel import deploy_pixel

        return deploy_pixel(args.inventory, limit=args.limit or "", bundles_dir=args.bundles)
    extra = _extra_vars(args.extra_vars)
    if extra is None:
        return 2
    return deploy(args.device, args.inventory, limit=args.limit or "", check=args.check,
                  image=args.image or "", archive_path=args.archive, bundles_dir=args.bundles,
                  extra_vars=extra,
                  vault_password_file=args.vault_password_file or "")


def _bench(args) -> int:
    from edge_app.workload import workload_argv, workload_from_args
    from edge_app.config import ConfigError

    from .bench import bench

    try:
        workload_from_args(args)  # refused here, before any device is touched
    except ConfigError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 2
    extra = _extra_vars(args.extra_vars)
    if extra is None:
        return 2
    names = [Path(b).name for b in args.bundle or []]
    return bench(args.device, args.inventory, results=args.results,
                 workload_args=workload_argv(args), limit=args.limit or "", bundles=names,
                 sensor=args.sensor or "", serial=args.serial or "", extra_vars=extra,
                 bundles_dir=args.bundles)


INVENTORY_HELP = "the fleet's Ansible inventory (required; e.g. a copy of " \
                 "ansible/inventory/example.yml with your devices)"
# No default inventory: the example's hosts are placeholders, and probing them sent traffic to
# whatever network the controller was on.
NO_INVENTORY = ("pass --inventory FILE (make: INVENTORY=FILE); make one from "
                "ansible/inventory/example.yml with your devices' addresses")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="probe /health, /ready and /v1/models on every device")
    status.add_argument("--inventory", type=Path, help=INVENTORY_HELP)
    status.add_argument("--limit", help="comma-separated host names or classes to probe")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    targets = sub.add_parser("targets", help="write Prometheus file_sd targets for the fleet")
    targets.add_argument("--inventory", type=Path, help=INVENTORY_HELP)
    targets.add_argument("--limit", help="comma-separated host names or classes to include")
    targets.add_argument("--out", type=Path, default=DEFAULT_TARGETS,
                         help=f"targets file (default {DEFAULT_TARGETS})")
    report = sub.add_parser("report", help="tables, figures and HTML from bench results")
    report.add_argument("--results", type=Path, default=Path("results/bench"))
    report.add_argument("--out", type=Path, default=Path("results/report"))
    measured = sub.add_parser("measured", help="write measured figures into bundle manifests")
    measured.add_argument("--results", type=Path, default=Path("results/bench"))
    measured.add_argument("--bundles", type=Path, default=Path("bundles"))
    images = sub.add_parser("images", help="build and save the edge server image of a class")
    images.add_argument("--device", required=True,
                        help="device class (ansible/group_vars/<class>.yml)")
    images.add_argument("--inventory", type=Path,
                        help="inventory whose group vars override the class (e.g. a base image)")
    deploy = sub.add_parser("deploy", help="roll the class's image and bundles out with Ansible")
    deploy.add_argument("--device", required=True, help="device class = inventory group")
    deploy.add_argument("--inventory", type=Path, help=INVENTORY_HELP)
    deploy.add_argument("--limit", help="comma-separated hosts of the class")
    deploy.add_argument("--check", action="store_true", help="dry run: report what would change")
    deploy.add_argument("--image", help="deploy this local image instead of building the class's")
    deploy.add_argument("--archive", type=Path,
                        help="deploy a saved image archive (build/images/*.tar.gz with its .json); "
                             "needs no Docker engine here")
    deploy.add_argument("--bundles", type=Path, default=Path("bundles"),
                        help="directory holding the bundles (default bundles/)")
    deploy.add_argument("-e", "--extra-vars", action="append", metavar="KEY=VALUE",
                        help="Ansible extra variable (repeatable)")
    deploy.add_argument("--vault-password-file", help="for an API key kept in Ansible Vault")
    fleet_bench = sub.add_parser(
        "bench", help="run the benchmark in the server container of every device (Ansible)")
    fleet_bench.add_argument("--device", required=True,
                             help="device class = inventory group, or all")
    fleet_bench.add_argument("--inventory", type=Path, help=INVENTORY_HELP)
    fleet_bench.add_argument("--limit", help="comma-separated hosts")
    fleet_bench.add_argument("--results", type=Path, default=Path("results/bench"),
                             help="where the result files go (default results/bench)")
    fleet_bench.add_argument("--bundles", type=Path, default=Path("bundles"),
                             help="the bundles deployed, whose manifests get the measured figures")
    fleet_bench.add_argument("--bundle", action="append", metavar="NAME",
                             help="measure only these of the bundles each device serves")
    fleet_bench.add_argument("--sensor", help="power sensor (default: the class's "
                                              "edgegen_power_sensor)")
    fleet_bench.add_argument("--serial", help="devices measured at a time (default: all; 1 for "
                                              "devices that share hardware)")
    fleet_bench.add_argument("-e", "--extra-vars", action="append", metavar="KEY=VALUE",
                             help="Ansible extra variable (repeatable), e.g. "
                                  "edgegen_bench_poll_delay=30")
    from edge_app.workload import add_workload_args

    add_workload_args(fleet_bench)
    args = parser.parse_args(argv)
    if args.command in ("status", "targets", "deploy", "bench") and args.inventory is None:
        print(f"fleet: error: {args.command} needs an inventory: {NO_INVENTORY}", file=sys.stderr)
        return 2
    if args.command in ("images", "deploy", "bench"):
        from .bench import BenchError
        from .deploy import DeployError
        from .images import ImageError

        run = {"images": _images, "deploy": _deploy, "bench": _bench}[args.command]
        try:
            return run(args)
        except (BenchError, DeployError, ImageError, InventoryError) as exc:
            print(f"fleet: error: {exc}", file=sys.stderr)
            return 2
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
