"""`make bench DEVICE=<class>|all`: the device-side benchmark on every device of a fleet, through
Ansible (ansible/bench.yml, role edge_bench) and ansible-runner's Python API.

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
from .playbook import Display, HostReport, reports

ARTIFACTS = REPO / "build" / "bench"


class BenchError(FleetError):
    """The benchmark cannot start; the message says what to fix."""


def fleet_hosts(inventory: Path, device: str, limit: str = "", log=print
                ) -> dict[str, tuple[str, dict[str, Any]]]:
    """{host: (class, settings)} of the devices to measure: one class, or `all` (every class
    of the inventory that runs the server container; the others are named and skipped)."""
    if device != "all":
        hosts = rollout_hosts(inventory, device, limit)
        if "edgegen_dockerfile" not in next(iter(hosts.values())):
            raise BenchError(f"class {device!r} runs no server container for `make bench` to "
                             f"measure in (phones run the companion app)")
        return {h: (device, s) for h, s in hosts.items()}
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for group in class_names(inventory):
        try:
            hosts = rollout_hosts(inventory, group, limit)
        except InventoryError:
            if limit:  # a class none of whose hosts is in --limit
                continue
            raise
        if "edgegen_dockerfile" not in next(iter(hosts.values())):
            log(f"skipped: class {group} ({', '.join(hosts)}): no server container to measure "
                f"in (phones run the companion app)")
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

    hosts = fleet_hosts(inventory, device, limit, log)
    classes = {h: c for h, (c, _) in hosts.items()}
    results = Path(results).resolve()
    results.mkdir(parents=True, exist_ok=True)
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
        return 130
    rows = reports(runner.stats or {}, display, list(hosts),
                   stopped="not measured: every device of its serial batch failed before it")
    log("")
    log(render_table(rows, classes))
    files = sum(len(r.result.get("files") or []) for r in rows if r.status not in playbook.FAILED)
    summary = {"device": device, "results": str(results), "workload": workload_args,
               "status": runner.status, "rc": runner.rc, "files": files,
               "hosts": [{**r.__dict__, "class": classes.get(r.host)} for r in rows]}
    log("")
    if files and bundles_dir is not None:
        from .measured import write_measured

        written = write_measured(results, bundles_dir)
        log(f"{len(written)} measured entr{'y' if len(written) == 1 else 'ies'} written into "
            f"the manifests under {bundles_dir}")
    return playbook.conclude(runner, rows, summary, f"{len(rows)} device(s) measured; {files} "
                             f"result file(s) under {results}", log, noun="device")
