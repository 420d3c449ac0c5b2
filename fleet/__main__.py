"""`python -m fleet status --inventory FILE [--limit HOST,...]`: the fleet at a glance.
`python -m fleet targets --inventory FILE [--out PATH]`: Prometheus file_sd targets.
`python -m fleet report --results DIR --out DIR [--bundles DIR]`: tables, figures, samples, HTML.
`python -m fleet measured --results DIR --bundles DIR`: measured figures into bundle manifests.
`python -m fleet images --device CLASS`: build and save the class's edge server image.
`python -m fleet deploy --device CLASS --inventory FILE [--limit ...]`: roll it out (Ansible).
`python -m fleet bench --device CLASS|all --inventory FILE [...]`: benchmark the devices.
`python -m fleet monitoring-images [--platform P]`: the monitoring stack's images, saved.
`python -m fleet monitoring --inventory FILE`: deploy that stack to the monitoring hosts.
`python -m fleet reproduce TABLE [--device local|CLASS|all]`: one of the study's tables, resumable.

One table of commands (COMMANDS): each command's arguments are defined beside its handler.
A handler returns the exit status, or raises a FleetError that main() prints as one line,
`fleet: error: <message>`, with exit status 2. Handlers import what they need when they run:
`fleet status` loads neither Ansible nor matplotlib."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import FleetError

# The device list of the stack `make monitor` runs here (compose/monitoring.yml).
DEFAULT_TARGETS = Path("build/monitoring/local/prometheus/targets/edge.json")
INVENTORY_HELP = "the fleet's Ansible inventory (required; e.g. a copy of " \
                 "ansible/inventory/example.yml with your devices)"
# No default inventory: the example's hosts are placeholders, and probing them sent traffic to
# whatever network the controller was on.
NO_INVENTORY = ("pass --inventory FILE (make: INVENTORY=FILE); make one from "
                "ansible/inventory/example.yml with your devices' addresses")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    needs_inventory: bool = False  # refused without --inventory, before anything is touched


def _inventory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", type=Path, help=INVENTORY_HELP)


def _extra_vars_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("-e", "--extra-vars", action="append", metavar="KEY=VALUE", help=help)


def _vault_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vault-password-file",
                        help="for secrets kept in Ansible Vault: the server's API key, the "
                             "devices' sudo password (ansible_become_password)")


def _extra_vars(items: list[str] | None) -> dict:
    """-e KEY=VALUE options, values parsed as YAML."""
    import yaml

    extra = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FleetError(f"-e expects KEY=VALUE, got {item!r}")
        extra[key] = yaml.safe_load(value) if value else ""
    return extra


def _devices(args) -> list:
    """The served devices of the inventory, narrowed to --limit (host names or classes)."""
    from .inventory import load_inventory

    devices = load_inventory(args.inventory)
    if args.limit:
        wanted = set(args.limit.split(","))
        devices = [d for d in devices if d.name in wanted or d.device_class in wanted]
        if not devices:
            raise FleetError(f"--limit {args.limit} matches no host or class")
    return devices


# -------------------------------------------------------------------------------------- status
def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _inventory(parser)
    parser.add_argument("--limit", help="comma-separated host names or classes to probe")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")


def _status(args) -> int:
    from .status import probe_all, render_table

    statuses = probe_all(_devices(args), args.timeout)
    print(render_table(statuses))
    down = [s.device.name for s in statuses if not s.ok]
    if down:
        print(f"\n{len(down)} of {len(statuses)} device(s) not ready: {', '.join(down)}")
        return 1
    print(f"\nall {len(statuses)} device(s) ready")
    return 0


# ------------------------------------------------------------------------------------- targets
def _targets_arguments(parser: argparse.ArgumentParser) -> None:
    _inventory(parser)
    parser.add_argument("--limit", help="comma-separated host names or classes to include")
    parser.add_argument("--out", type=Path, default=DEFAULT_TARGETS,
                        help=f"targets file (default {DEFAULT_TARGETS})")


def _targets(args) -> int:
    from .targets import write_file_sd

    devices = _devices(args)
    path = write_file_sd(devices, args.out)
    print(f"wrote {len(devices)} target(s) to {path}")
    return 0


# -------------------------------------------------------------------------------------- report
def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--out", type=Path, default=Path("results/report"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"),
                        help="where the measured bundles are, for their samples (default "
                             "bundles/); a bundle not there gets a note instead")
    parser.add_argument("--deployments", type=Path, default=Path("build/deploy"),
                        help="the deploy records whose bundle choices the report marks "
                             "(default build/deploy/)")


def _report(args) -> int:
    from .report import build_report

    summary = build_report(args.results, args.out, args.bundles, args.deployments)
    print(f"report for {len(summary['devices'])} device(s), {len(summary['bundles'])} "
          f"bundle(s): {args.out / 'report.md'}, {args.out / 'report.html'}")
    return 0


# ------------------------------------------------------------------------------------ measured
def _measured_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))


def _measured(args) -> int:
    from .measured import write_measured

    written = write_measured(args.results, args.bundles)
    for bundle, device_class, device in written:
        print(f"{bundle}: metrics.measured.{device_class}.{device}")
    print(f"{len(written)} measured entr{'y' if len(written) == 1 else 'ies'} written under "
          f"{args.bundles}")
    return 0


# -------------------------------------------------------------------------------------- images
def _images_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True,
                        help="device class (ansible/group_vars/<class>.yml)")
    parser.add_argument("--inventory", type=Path,
                        help="inventory whose group vars override the class (e.g. a base image)")


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


# -------------------------------------------------------------------------------------- deploy
def _deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True, help="device class = inventory group")
    _inventory(parser)
    parser.add_argument("--limit", help="comma-separated hosts of the class")
    parser.add_argument("--check", action="store_true",
                        help="dry run: report what would change")
    parser.add_argument("--image",
                        help="deploy this local image instead of building the class's")
    parser.add_argument("--archive", type=Path,
                        help="deploy a saved image archive (build/images/*.tar.gz with its "
                             ".json); needs no Docker engine here")
    parser.add_argument("--bundles", type=Path, default=Path("bundles"),
                        help="directory holding the bundles (default bundles/)")
    parser.add_argument("--allow-unmeasured", action="store_true",
                        help="a class with edgegen_candidates but no measurements yet: deploy "
                             "its declared default bundles and ship the candidates for "
                             "`make bench` (otherwise refused)")
    parser.add_argument("--resume", action="store_true",
                        help="carry a halted rollout on: the same release, to the devices "
                             "that did not finish it (build/deploy/<class>/rollout.json)")
    _extra_vars_option(parser, "Ansible extra variable (repeatable)")
    _vault_option(parser)


def _deploy_container(args) -> int:
    """The class's edge server image and bundles, rolled out by deploy.yml."""
    from .deploy import deploy

    return deploy(args.device, args.inventory, limit=args.limit or "", check=args.check,
                  image=args.image or "", archive_path=args.archive, bundles_dir=args.bundles,
                  extra_vars=_extra_vars(args.extra_vars),
                  allow_unmeasured=args.allow_unmeasured, resume=args.resume,
                  vault_password_file=args.vault_password_file or "")


def _deploy_companion(args) -> int:
    """Phones: the companion APK with the class's bundles, installed over adb."""
    from .companion import deploy_companion

    return deploy_companion(args.device, args.inventory, limit=args.limit or "",
                            bundles_dir=args.bundles)


# How a class is deployed is its group vars' `edgegen_deploy` (group_vars/all.yml: container).
DEPLOY_METHODS = {"container": _deploy_container, "companion-apk": _deploy_companion}


def _deploy(args) -> int:
    from .inventory import device_class

    method = device_class(args.device).get("edgegen_deploy", "container")
    if method not in DEPLOY_METHODS:
        raise FleetError(f"class {args.device!r}: edgegen_deploy must be one of "
                         f"{sorted(DEPLOY_METHODS)}, got {method!r}")
    return DEPLOY_METHODS[method](args)


# ---------------------------------------------------------------------------------- monitoring
def _monitoring_images_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", default="linux/amd64",
                        help="the monitoring host's platform (default linux/amd64)")


def _monitoring_images(args) -> int:
    from .monitoring import build_images

    for archive in build_images(args.platform).values():
        print(f"{archive.tag}  image {archive.image_bytes / 1e6:.0f} MB  archive "
              f"{archive.archive_bytes / 1e6:.0f} MB  {archive.path}")
    return 0


def _monitoring_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True,
                        help="directory to render into (replaced), e.g. build/monitoring/local")
    parser.add_argument("--port", action="append", default=[], metavar="COMPONENT=PORT",
                        help="a component's port (repeatable), e.g. prometheus=9090")
    parser.add_argument("--webhook", default="", help="Alertmanager's webhook receiver URL")


def _monitoring_config(args) -> int:
    from .monitoring import MonitoringError, Stack, render

    ports = {}
    for item in args.port:
        component, _, port = item.partition("=")
        if not port.isdigit():
            raise MonitoringError(f"--port {item}: expected COMPONENT=PORT")
        ports[component] = int(port)
    stack = Stack.of("this host", {"edgegen_monitoring": {"ports": ports,
                                                          "webhook_url": args.webhook}})
    print(f"monitoring configuration in {render(stack, args.out)}")
    return 0


def _monitoring_arguments(parser: argparse.ArgumentParser) -> None:
    _inventory(parser)
    parser.add_argument("--limit", help="comma-separated hosts of the monitoring group")
    parser.add_argument("--check", action="store_true", help="dry run: report what would change")
    _vault_option(parser)


def _monitoring(args) -> int:
    from .monitoring import deploy

    return deploy(args.inventory, check=args.check, limit=args.limit or "",
                  vault_password_file=args.vault_password_file or "")


# --------------------------------------------------------------------------------------- bench
def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_app.workload import add_workload_args

    parser.add_argument("--device", required=True, help="device class = inventory group, or all")
    _inventory(parser)
    parser.add_argument("--limit", help="comma-separated hosts")
    parser.add_argument("--results", type=Path, default=Path("results/bench"),
                        help="where the result files go (default results/bench)")
    parser.add_argument("--bundles", type=Path, default=Path("bundles"),
                        help="the bundles deployed, whose manifests get the measured figures")
    parser.add_argument("--bundle", action="append", metavar="NAME",
                        help="measure only these of the bundles each device serves")
    parser.add_argument("--sensor", help="power sensor (default: the class's "
                                         "edgegen_power_sensor)")
    parser.add_argument("--serial", help="devices measured at a time (default: all; 1 for "
                                         "devices that share hardware)")
    _extra_vars_option(parser, "Ansible extra variable (repeatable), e.g. "
                               "edgegen_bench_poll_delay=30")
    _vault_option(parser)
    add_workload_args(parser)


def _bench(args) -> int:
    from edge_app.config import ConfigError
    from edge_app.workload import workload_argv, workload_from_args

    from .bench import bench

    try:
        workload_from_args(args)  # refused here, before any device is touched
    except ConfigError as exc:
        raise FleetError(str(exc)) from None
    extra = _extra_vars(args.extra_vars)
    names = [Path(b).name for b in args.bundle or []]
    return bench(args.device, args.inventory, results=args.results,
                 workload_args=workload_argv(args), limit=args.limit or "", bundles=names,
                 sensor=args.sensor or "", serial=args.serial or "", extra_vars=extra,
                 bundles_dir=args.bundles, vault_password_file=args.vault_password_file or "")


# ----------------------------------------------------------------------------------- reproduce
def _reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="a table of recipes/study/tables.yaml, e.g. dcgan, gpt2, quick")
    parser.add_argument("--device", default="local",
                        help="local (this machine), or a class / all of --inventory")
    _inventory(parser)
    parser.add_argument("--out", type=Path, default=Path("results/reproduce"),
                        help="the table's results, report and state go to OUT/<table>/")
    parser.add_argument("--bundles", type=Path, default=Path("bundles"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--profile", help="the recipes' profile (e.g. ci: a CI-sized run); "
                                          "default: $EDGEGEN_PROFILE where a recipe has it")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="KEY=VALUE", help="a recipe value for every recipe (repeatable)")
    parser.add_argument("--bench-arg", action="append", default=[], dest="bench_args",
                        metavar="ARG", help="passed to the benchmark, e.g. --bench-arg=--repeats=2")


def _reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(args.table, args.out, bundles_dir=args.bundles, runs_dir=args.runs_dir,
              device=args.device, inventory=args.inventory, profile=args.profile,
              overrides=tuple(args.overrides), bench_args=tuple(args.bench_args))
    return 0


COMMANDS = (
    Command("status", "probe /health, /ready and /v1/models on every device",
            _status_arguments, _status, needs_inventory=True),
    Command("targets", "write Prometheus file_sd targets for the fleet",
            _targets_arguments, _targets, needs_inventory=True),
    Command("report", "tables, figures and HTML from bench results",
            _report_arguments, _report),
    Command("measured", "write measured figures into bundle manifests",
            _measured_arguments, _measured),
    Command("images", "build and save the edge server image of a class",
            _images_arguments, _images),
    Command("deploy", "roll the class's image and bundles out with Ansible",
            _deploy_arguments, _deploy, needs_inventory=True),
    Command("bench", "run the benchmark in every device's server container (Ansible) or "
                     "companion app (phones, adb)",
            _bench_arguments, _bench, needs_inventory=True),
    Command("monitoring-images", "build and save the monitoring stack's images (Debian's "
                                 "Prometheus, Alertmanager, Pushgateway)",
            _monitoring_images_arguments, _monitoring_images),
    Command("monitoring-config", "render the monitoring stack's configuration (make monitor)",
            _monitoring_config_arguments, _monitoring_config),
    Command("monitoring", "deploy the monitoring stack to the inventory's monitoring hosts "
                          "(Ansible)",
            _monitoring_arguments, _monitoring, needs_inventory=True),
    Command("reproduce", "one of the study's tables: recipes, device benchmark, report",
            _reproduce_arguments, _reproduce),
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m fleet")
    sub = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        each = sub.add_parser(command.name, help=command.help)
        command.arguments(each)
        each.set_defaults(command_entry=command)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command: Command = args.command_entry
    try:
        if command.needs_inventory and args.inventory is None:
            raise FleetError(f"{command.name} needs an inventory: {NO_INVENTORY}")
        return command.run(args)
    except FleetError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
