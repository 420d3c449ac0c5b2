"""`make bench DEVICE=<class>|all`: the device-side benchmark on every device of a fleet, through
Ansible (ansible/bench.yml, role edge_bench) and ansible-runner's Python API; phones (a class
deployed as `edgegen_deploy: companion-apk`) through adb, in the companion app's bench mode
(fleet/phonebench.py), into the same results tree.

Each device runs `python -m edge_app bench` inside its deployed server container, so the
figures are those of the image, ONNX Runtime build, providers and power sensor it serves with.
The run is detached on the device: a controller that is stopped or loses its connection leaves
it going, and the next `make bench` waits for it. Finished repeats are never measured again.
The result files come back to results/bench/<device>/<bundle>/repeat-<k>.json; the measured
figures then go into the bundles' manifests (`metrics.measured.<class>.<device>`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from . import playbook
from .errors import FleetError
from .inventory import InventoryError, class_names, rollout_hosts
from .paths import REPO
from .phonebench import SENSORS as PHONE_SENSORS
from .phonebench import bench_phones
from .playbook import Display, HostReport, reports

ARTIFACTS = REPO / "build" / "bench"


class BenchError(FleetError):
    """The benchmark cannot start; the message says what to fix."""


def is_phone(settings: dict[str, Any]) -> bool:
    """A phone: measured in the companion app over adb, not in a server container."""
    return settings.get("edgegen_deploy") == "companion-apk"


def _measurable(settings: dict[str, Any]) -> bool:
    return is_phone(settings) or "edgegen_dockerfile" in settings


def fleet_hosts(inventory: Path, device: str, limit: str = "", log=print
                ) -> dict[str, tuple[str, dict[str, Any]]]:
    """{host: (class, settings)} of the devices to measure: one class, or `all` (every class
    of the inventory that runs the server container or the companion app; the others are
    named and skipped)."""
    if device != "all":
        hosts = rollout_hosts(inventory, device, limit)
        if not _measurable(next(iter(hosts.values()))):
            raise BenchError(f"class {device!r} runs neither the server container nor the "
                             f"companion app for `make bench` to measure in")
        return {h: (device, s) for h, s in hosts.items()}
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for group in class_names(inventory):
        try:
            hosts = rollout_hosts(inventory, group, limit)
        except InventoryError:
            if limit:  # a class none of whose hosts is in --limit
                continue
            raise
        if not _measurable(next(iter(hosts.values()))):
            log(f"skipped: class {group} ({', '.join(hosts)}): neither a server container nor "
                f"the companion app to measure in")
            continue
        out.update({h: (group, s) for h, s in hosts.items()})
    if not out:
        raise BenchError(f"{inventory}: no device to measure"
                         + (f" matching --limit {limit}" if limit else ""))
    return out


def render_table(rows: list[HostReport], classes: dict[str, str]) -> str:
    header = ("HOST", "CLASS", "RESULT", "FILES", "LAST")
    lines = []
    for r in rows:
        result = r.status if r.status in playbook.FAILED else \
            r.result.get("state", r.status)
        lines.append((r.host, classes.get(r.host, "-"), result,
                      str(len(r.result.get("files") or [])),
                      str(r.result.get("progress") or "-")[:100]))
    return playbook.table(header, lines, rows)


def bench(device: str, inventory: Path, *, results: Path, workload_args: list[str],
          limit: str = "", bundles: list[str] | None = None, sensor: str = "",
          serial: str = "", extra_vars: dict | None = None, bundles_dir: Path | None = None,
          vault_password_file: str = "", artifacts: Path = ARTIFACTS,
          out: TextIO = sys.stdout) -> int:
    def log(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    every = fleet_hosts(inventory, device, limit, log)
    results = Path(results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    phones = {h: v for h, v in every.items() if is_phone(v[1])}
    hosts = {h: v for h, v in every.items() if not is_phone(v[1])}
    if phones and sensor not in ("", "auto", *PHONE_SENSORS):
        raise BenchError(f"--sensor {sensor}: a phone's power sensor is one of "
                         f"{list(PHONE_SENSORS)} (the app samples the battery); phones: "
                         f"{', '.join(phones)}")
    rc, files = 0, 0
    if hosts:
        rc, files = _bench_servers(hosts, device, inventory, results, workload_args, bundles,
                                   sensor, serial, extra_vars, vault_password_file, artifacts,
                                   out, log)
        if rc == 130:
            return rc
    if phones:
        log(f"benchmarking {len(phones)} phone(s) over adb: {', '.join(phones)}")
        phone_rc, phone_files = bench_phones(phones, results=results,
                                             workload_args=workload_args, bundles=bundles,
                                             sensor=sensor, log=log)
        rc, files = max(rc, phone_rc), files + phone_files
    if files and bundles_dir is not None:
        from .measured import write_measured

        written = write_measured(results, bundles_dir)
        log(f"{len(written)} measured entr{'y' if len(written) == 1 else 'ies'} written into "
            f"the manifests under {bundles_dir}")
    return rc


def _bench_servers(hosts, device, inventory, results, workload_args, bundles, sensor, serial,
                   extra_vars, vault_password_file, artifacts, out, log) -> tuple[int, int]:
    """The server devices, through Ansible: (exit status, result files)."""
    classes = {h: c for h, (c, _) in hosts.items()}
    extravars = {"edgegen_bench_hosts": ",".join(hosts), "edgegen_bench_classes": classes,
                 "edgegen_bench_results": str(results), "edgegen_bench_args": workload_args,
                 **({"edgegen_bench_bundles": bundles} if bundles else {}),
                 **({"edgegen_bench_sensor": sensor} if sensor else {}),
                 **({"edgegen_bench_serial": serial} if serial else {}),
                 **(extra_vars or {})}
    display = Display(out)
    log(f"benchmarking {len(hosts)} device(s): {', '.join(hosts)}; "
        f"workload {' '.join(workload_args)}")
    try:
        runner = playbook.run("bench.yml", inventory, artifacts / device, extravars, display,
                              cmdline=playbook.cmdline(vault_password_file=vault_password_file))
    except KeyboardInterrupt:
        runner = None
    if runner is None or runner.status == "canceled":  # ansible-runner's cancel: Ctrl-C, TERM
        log("\ninterrupted: benchmarks already started keep running on their devices; "
            "`make bench` again waits for them and collects the results")
        return 130, 0
    rows = reports(runner.stats or {}, display, list(hosts),
                   stopped="not measured: every device of its serial batch failed before it")
    log("")
    log(render_table(rows, classes))
    files = sum(len(r.result.get("files") or []) for r in rows if r.status not in playbook.FAILED)
    summary = {"device": device, "results": str(results), "workload": workload_args,
               "status": runner.status, "rc": runner.rc, "files": files,
               "hosts": [{**r.__dict__, "class": classes.get(r.host)} for r in rows]}
    log("")
    return playbook.conclude(runner, rows, summary, f"{len(rows)} device(s) measured; {files} "
                             f"result file(s) under {results}", log, noun="device"), files
