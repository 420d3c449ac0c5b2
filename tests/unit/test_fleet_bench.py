"""`make bench DEVICE=<class>|all` on the controller side, without devices: which hosts a run
measures, the live progress of the device-side runs, the summary table, and CLI errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from fleet.bench import BenchError, fleet_hosts, is_phone, render_table
from fleet.playbook import Display, reports

from ..conftest import REPO

EXAMPLE = REPO / "ansible" / "inventory" / "example.yml"


def test_all_measures_every_container_class_and_the_phones():
    notes = []
    hosts = fleet_hosts(EXAMPLE, "all", log=notes.append)
    assert {h: c for h, (c, _) in hosts.items()} == {
        "workstation": "local", "pi-lab-01": "pi", "pi-lab-02": "pi", "orin-nano-01": "jetson",
        "nano-01": "jetson_nano", "pixel6-01": "pixel"}
    assert hosts["orin-nano-01"][1]["edgegen_container_name"] == "edgegen-edge"
    assert is_phone(hosts["pixel6-01"][1]) and not is_phone(hosts["pi-lab-01"][1])
    assert notes == []
    assert list(fleet_hosts(EXAMPLE, "all", "pi-lab-02,orin-nano-01")) == ["pi-lab-02",
                                                                          "orin-nano-01"]
    assert list(fleet_hosts(EXAMPLE, "pi")) == ["pi-lab-01", "pi-lab-02"]
    assert list(fleet_hosts(EXAMPLE, "pixel")) == ["pixel6-01"]
    with pytest.raises(BenchError, match="no device to measure matching --limit nowhere"):
        fleet_hosts(EXAMPLE, "all", "nowhere")


def _retry(host, attempts, progress):
    status = {"state": "running", "progress": progress, "files": []}
    return {"event": "runner_retry", "event_data": {
        "host": host, "task": "Wait for the benchmark to finish",
        "res": {"attempts": attempts, "retries": 1440, "stdout": json.dumps(status)}}}


def test_waiting_shows_each_new_progress_line_once():
    out = io.StringIO()
    display = Display(out)
    display(_retry("pi-1", 1, "power: no power sensor on this device"))
    display(_retry("pi-1", 2, "power: no power sensor on this device"))  # unchanged: quiet
    display(_retry("pi-2", 1, "power: no power sensor on this device"))  # another host
    display(_retry("pi-1", 3, "[1/6] dcgan-digits repeat 1: batch_1 p50 4.10 ms"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[2].endswith("pi-1               waiting   Wait for the benchmark to finish "
                             "(3/1440): [1/6] dcgan-digits repeat 1: batch_1 p50 4.10 ms")


def test_summary_table_of_a_bench_run():
    display = Display(io.StringIO())
    done = {"state": "done", "progress": "[2/2] tiny-dcgan repeat 2: batch_1 p50 3.00 ms",
            "files": ["pi-1/tiny-dcgan/repeat-1.json", "pi-1/tiny-dcgan/repeat-2.json"]}
    display({"event": "runner_on_ok", "event_data": {
        "host": "pi-1", "task": "Report the benchmark",
        "res": {"ansible_facts": {"edge_bench_result": done}}}})
    display({"event": "runner_on_failed", "event_data": {
        "host": "pi-2", "task": "Fail on a device without a running server container",
        "res": {"msg": "no running edgegen-edge container on pi-2: deploy first "
                       "(make deploy DEVICE=pi)"}}})
    rows = reports({"ok": {"pi-1": 9, "pi-2": 2}, "failures": {"pi-2": 1}}, display,
                   ["pi-1", "pi-2"])
    table = render_table(rows, {"pi-1": "pi", "pi-2": "pi"})
    assert table.splitlines()[0].split() == ["HOST", "CLASS", "RESULT", "FILES", "LAST"]
    assert "pi-1  pi     done    2      [2/2] tiny-dcgan repeat 2: batch_1 p50 3.00 ms" in table
    assert "pi-2  pi     failed  0      -" in table
    assert "pi-2: no running edgegen-edge container on pi-2: deploy first" in table


@pytest.mark.parametrize("args, message", [
    (["--device", "pixel", "--sensor", "rapl"], "a phone's power sensor is one of"),
    (["--device", "toaster"], "unknown device class 'toaster'"),
    (["--device", "pi", "--runs", "0"], "--runs must be at least 1"),
    (["--device", "pi", "--batches", "1,x"], "--batches: expected sizes like 1,8"),
    (["--device", "pi", "-e", "novalue"], "-e expects KEY=VALUE"),
])
def test_bench_cli_errors_are_one_line(args, message):
    result = subprocess.run([sys.executable, "-m", "fleet", "bench", "--inventory", str(EXAMPLE),
                             *args], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_phone_is_measured_over_adb_and_says_when_adb_is_missing(tmp_path, monkeypatch):
    """DEVICE=pixel goes to the phone path (fleet/phonebench.py), not Ansible; with no adb on
    this machine it names the phone that failed and why, and exits 1."""
    from fleet.bench import bench

    monkeypatch.setenv("ADB", str(tmp_path / "no-adb"))
    out = io.StringIO()
    rc = bench("pixel", EXAMPLE, results=tmp_path / "results", out=out,
               workload_args=["--repeats", "2", "--runs", "3"], bundles_dir=tmp_path)
    lines = out.getvalue().splitlines()
    assert rc == 1, lines
    assert lines == [
        "benchmarking 1 phone(s) over adb: pixel6-01",
        "pixel6-01: benchmarking dcgan-digits over adb (1A2B3C4D5E6F)",
        f"pixel6-01: failed: adb is not installed ({tmp_path / 'no-adb'}): apt-get install adb",
        "1 of 1 phone(s) failed: pixel6-01"]
