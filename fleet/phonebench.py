"""`make bench DEVICE=pixel` (and the phones of `DEVICE=all`): the companion app measures its
bundles in its bench mode (edge_app/static/companion/bench.js), the workloads of `python -m
edge_app bench`, and its result files join the same results tree.

For each phone of the class (its adb serial: `edgegen_phone_serial`), one after another:
1. the companion must be installed (`make deploy DEVICE=pixel`) with the bundles to measure;
2. its old results are cleared and it is started afresh with the bench spec as an intent extra
   (bench_spec: bundles, repeats, the workload with its prompts, device name and class, power
   sensor), which MainActivity hands to the page as ?bench=...;
3. the page runs each bundle and repeat in a fresh page and writes `<device>/<bundle>/
   repeat-<k>.json` and `status.json` into the app's storage through its bridge; the
   controller polls status.json, showing each new progress line;
4. the files are pulled into a scratch directory and collect() checks each against the schema
   (edge_app/benchrecord.py) and moves it into `<results>/<device>/<bundle>/repeat-<k>.json`.

Power: the app samples BatteryManager (current x voltage) at 10 Hz while the page measures.
A phone on USB is charging and its battery says nothing about the load: its figures are null
with the reason; adb over Wi-Fi (`adb tcpip`, wireless debugging) leaves it on battery.
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_app import __version__
from edge_app.benchrecord import RecordError, check_record
from edge_app.power import NO_SENSOR
from edge_app.power.sensors import AndroidBatterySensor
from edge_app.system import CPU_FEATURES
from edge_app.workload import Workload, add_workload_args, workload_from_args

from .adb import Adb, AdbError
from .errors import FleetError

REMOTE = "files/bench"  # the bench bridge's directory, relative to the app's data directory
SENSORS = ("android-battery", "none")  # what the app can sample
CHARGING = ("the battery was charging during the idle baseline (USB power?), so its current says "
            "nothing about the load: run over adb over Wi-Fi (adb tcpip) on battery")


class PhoneBenchError(FleetError):
    """A phone cannot be measured; the message says what to do."""


def workload_of(workload_args: list[str]) -> tuple[Workload, int, float]:
    """(workload, repeats, idle baseline seconds) of `python -m fleet bench`'s options."""
    p = argparse.ArgumentParser(add_help=False)
    add_workload_args(p)
    args = p.parse_args(workload_args)
    return workload_from_args(args), args.repeats, args.baseline


def bench_spec(workload: Workload, repeats: int, device: str, device_class: str,
               bundles: list[str], sensor: str = "android-battery",
               baseline_s: float = 10.0) -> dict[str, Any]:
    """What the page's bench mode runs, and the facts it writes into each record that only
    Python knows (so they are said once: the sensor's scope, the no-sensor wording)."""
    if sensor not in SENSORS:
        raise PhoneBenchError(f"a phone's power sensor is one of {list(SENSORS)} (the app "
                              f"samples the battery), got {sensor!r}")
    if not bundles:
        raise PhoneBenchError(f"{device}: no bundles to measure (edgegen_bundles)")
    return {"run": uuid.uuid4().hex[:12], "device": device, "device_class": device_class,
            "bundles": list(bundles), "repeats": repeats, "workload": asdict(workload),
            "baseline_s": baseline_s, "sensor": sensor, "power_scope": AndroidBatterySensor.scope,
            "no_sensor": NO_SENSOR, "charging_note": CHARGING,
            "cpu_features": list(CPU_FEATURES),
            "tool": f"edgegen {__version__} (companion bench mode)"}


def encode_spec(spec: dict) -> str:
    """The spec as one URL- and shell-safe word (base64url JSON): the page's ?bench=."""
    return base64.urlsafe_b64encode(json.dumps(spec, separators=(",", ":")).encode()).decode()


def collect(pulled: Path, results: Path, device: str) -> list[Path]:
    """The result files a phone wrote (`pulled`, laid out as the page writes them:
    <device>/<bundle>/repeat-<k>.json) into `results`, each checked against the benchmark
    record schema and its place in the tree, and written whole or not at all."""
    files = sorted(Path(pulled, device).glob("*/repeat-*.json"))
    if not files:
        raise PhoneBenchError(f"{device}: no result files in what the phone wrote ({pulled})")
    records = []
    for f in files:
        where = f.relative_to(pulled)
        try:
            record = json.loads(f.read_text())
        except ValueError as exc:
            raise PhoneBenchError(f"{where}: not JSON: {exc}") from None
        try:
            check_record(record, str(where))
        except RecordError as exc:
            raise PhoneBenchError(str(exc)) from None
        expected = (device, f.parent.name, int(f.stem.split("-")[1]))
        if (record["device"], record["bundle"], record["repeat"]) != expected:
            raise PhoneBenchError(f"{where}: says device {record['device']!r}, bundle "
                                  f"{record['bundle']!r}, repeat {record['repeat']}")
        records.append((where, record))
    written = []
    for where, record in records:  # all checked before any is written
        path = Path(results) / where
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(path)
        written.append(path)
    return written


def _status(adb: Adb) -> dict:
    raw = adb.read(f"{REMOTE}/status.json")
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}  # caught mid-write: read again at the next poll


def bench_phone(adb: Adb, host: str, spec: dict, results: Path, log=print,
                timeout_s: float = 4 * 3600, poll_s: float = 5.0) -> list[Path]:
    """Measure one phone: start the bench, follow it, pull and collect its files."""
    state = adb.state()
    if state != "device":
        raise PhoneBenchError(f"{host}: adb serial {adb.serial} is {state}: attach it (USB or "
                              f"adb connect) and accept the debugging prompt")
    if not adb.installed():
        raise PhoneBenchError(f"{host}: the companion app is not installed: deploy first "
                              f"(make deploy DEVICE={spec['device_class']})")
    adb.remove(REMOTE)
    adb.start({"bench": encode_spec(spec)})
    deadline, shown, status = time.monotonic() + timeout_s, "", {}
    while time.monotonic() < deadline:
        status = _status(adb)
        if status.get("run") == spec["run"]:
            line = status.get("progress") or status.get("error") or ""
            if line and line != shown:
                log(f"{host}: {line}")
                shown = line
            if status.get("state") in ("done", "failed"):
                break
        time.sleep(poll_s)
    else:
        adb.stop()
        raise PhoneBenchError(f"{host}: the bench did not finish in {timeout_s:g} s "
                              f"(last: {status.get('progress', 'no status')}); stopped")
    if status["state"] == "failed":
        raise PhoneBenchError(f"{host}: the page's bench failed: {status.get('error')}")
    with tempfile.TemporaryDirectory(prefix="edgegen-phone-") as tmp:
        for name in status.get("files") or []:
            if ".." in Path(name).parts or Path(name).is_absolute():
                raise PhoneBenchError(f"{host}: refused file name {name!r}")
            data = adb.read(f"{REMOTE}/{name}")
            if data is None:
                raise PhoneBenchError(f"{host}: {REMOTE}/{name} is listed but cannot be read")
            dest = Path(tmp, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return collect(Path(tmp), results, spec["device"])


def bench_phones(hosts: dict[str, tuple[str, dict]], *, results: Path, workload_args: list[str],
                 bundles: list[str] | None = None, sensor: str = "", log=print,
                 adb_for=Adb) -> tuple[int, int]:
    """Every phone of `hosts` ({host: (class, settings)}), one after another: (exit status,
    result files written). A phone that fails is named; the others are still measured."""
    workload, repeats, baseline_s = workload_of(workload_args)
    failed, files = [], 0
    for host, (device_class, settings) in hosts.items():
        serial = str(settings.get("edgegen_phone_serial") or "")
        try:
            if not serial:
                raise PhoneBenchError(f"{host}: no edgegen_phone_serial (its adb serial) in the "
                                      f"inventory")
            chosen = sensor or settings.get("edgegen_power_sensor") or "none"
            spec = bench_spec(workload, repeats, host, device_class,
                              bundles or list(settings.get("edgegen_bundles") or []),
                              "android-battery" if chosen == "auto" else chosen, baseline_s)
            log(f"{host}: benchmarking {', '.join(spec['bundles'])} over adb ({serial})")
            written = bench_phone(adb_for(serial), host, spec, results, log)
            files += len(written)
            log(f"{host}: {len(written)} result file(s) under {Path(results) / host}")
        except (PhoneBenchError, AdbError) as exc:
            failed.append(host)
            log(f"{host}: failed: {exc}")
    if failed:
        log(f"{len(failed)} of {len(hosts)} phone(s) failed: {', '.join(failed)}")
    return (1 if failed else 0), files
