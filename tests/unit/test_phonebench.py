"""`make bench DEVICE=pixel` without a phone: the bench spec, the collector of pulled result
files, the driver's refusals, and the exact adb command lines.

adb cannot run here (no phone and no emulator on this machine): the driver tests use a
stand-in with fleet.adb.Adb's methods, and the adb command lines are checked against a fake
adb binary that records its arguments. The whole path with the real page runs in
tests/browser/test_companion_bench.py."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path

import pytest

from edge_app.benchrecord import RecordError, check_record
from edge_app.workload import Workload
from fleet.adb import MAX_EXTRA, Adb, AdbError
from fleet.phonebench import (REMOTE, PhoneBenchError, bench_phone, bench_spec, collect,
                              encode_spec)


def record(device="pixel6-01", bundle="tiny-dcgan", repeat=1) -> dict:
    """A result file as the page writes it (values made up, shape real)."""
    lat = {"n": 3, "p50_s": 0.002, "p95_s": 0.003, "mean_s": 0.0021, "std_s": 0.0004}
    return {
        "device": device, "device_class": "pixel", "repeat": repeat,
        "bundle_dir": f"https://appassets.androidplatform.net/assets/bundles/{bundle}/",
        "manifest_sha256": "ab" * 32, "bundle": bundle, "task": "image-generation",
        "manifest": {"name": bundle, "task": "image-generation", "family": "dcgan",
                     "precision": "fp32", "techniques": ["train", "export"], "metrics": {},
                     "model_sha256": "cd" * 32, "recipe": {"path": None, "sha256": None}},
        "runtime": "onnxruntime-web-1.30.0-wasm", "providers": ["wasm"],
        "workloads": {"batch_1": {"batch": 1, "latency": lat, "images_per_s": 476.0, "power": {
            "power_w": None, "energy_j": None, "energy_note": "no power sensor on this device"}}},
        "memory": {"peak_rss_bytes": 30e6, "rss_before_load_bytes": 20e6},
        "method": {"tool": "edgegen (companion bench mode)", "repeats": 2,
                   "workload": {"runs": 3, "warmup": 1, "image_batches": [1], "new_tokens": 8,
                                "window_s": 0.0, "seed": 0, "threads": 0, "prompts": ["a"]},
                   "power": {"sensor": None, "note": "no power sensor on this device"},
                   "latency": "performance.now()", "peak_rss": "wasm memory + JS heap",
                   "runtime": {"onnxruntime": "web 1.30.0"},
                   "cpu": {"model": "Tensor", "arch": "aarch64", "logical_cpus": 8}},
        "measured_at": "2026-11-26T16:00:00Z"}


def pulled_dir(root: Path, records: list[dict]) -> Path:
    for r in records:
        path = root / r["device"] / r["bundle"] / f"repeat-{r['repeat']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    return root


def test_the_schema_names_every_mismatch():
    check_record(record())
    bad = record()
    del bad["memory"]["peak_rss_bytes"]
    bad["workloads"]["batch_1"]["latency"]["n"] = "3"
    bad["workloads"]["batch_1"]["power"] = {"power_w": None, "energy_j": None}
    with pytest.raises(RecordError) as err:
        check_record(bad, "pixel6-01/tiny-dcgan/repeat-1.json")
    message = str(err.value)
    assert "record.memory.peak_rss_bytes: missing" in message
    assert "record.workloads.batch_1.latency.n: expected int, got str '3'" in message
    assert "batch_1.power: no power_w and no energy_note saying why" in message


def test_collect_moves_checked_files_into_the_results_tree(tmp_path):
    pulled = pulled_dir(tmp_path / "pulled", [record(repeat=1), record(repeat=2)])
    (pulled / "status.json").write_text("{}")  # the run's status stays behind
    written = collect(pulled, tmp_path / "results", "pixel6-01")
    assert [p.relative_to(tmp_path / "results").as_posix() for p in written] == [
        "pixel6-01/tiny-dcgan/repeat-1.json", "pixel6-01/tiny-dcgan/repeat-2.json"]
    assert json.loads(written[1].read_text()) == record(repeat=2)


@pytest.mark.parametrize("damage, message", [
    (lambda r: r.pop("workloads"), "record.workloads: missing"),
    (lambda r: r.update(repeat=5), "says device 'pixel6-01', bundle 'tiny-dcgan', repeat 5"),
    (lambda r: r.update(device="other"), "says device 'other'"),
])
def test_collect_writes_nothing_when_one_file_is_wrong(tmp_path, damage, message):
    bad = record(repeat=2)
    damage(bad)
    pulled = pulled_dir(tmp_path / "pulled", [record(repeat=1)])
    (pulled / "pixel6-01" / "tiny-dcgan" / "repeat-2.json").write_text(json.dumps(bad))
    with pytest.raises(PhoneBenchError, match=message):
        collect(pulled, tmp_path / "results", "pixel6-01")
    assert not (tmp_path / "results").exists()


def test_the_spec_is_one_shell_safe_word_the_page_decodes():
    spec = bench_spec(Workload(), 3, "pixel6-01", "pixel", ["dcgan-digits", "gpt2-int8"])
    word = encode_spec(spec)
    assert len(word) < MAX_EXTRA and word.replace("-", "").replace("_", "").rstrip("=").isalnum()
    back = json.loads(base64.urlsafe_b64decode(word))
    assert back["workload"]["prompts"] == list(Workload().prompts)
    assert back["sensor"] == "android-battery" and back["no_sensor"] == \
        "no power sensor on this device"
    with pytest.raises(PhoneBenchError, match="a phone's power sensor is one of"):
        bench_spec(Workload(), 3, "p", "pixel", ["b"], sensor="rapl")


class StandIn:
    """fleet.adb.Adb's methods over a dict of the app's files; `page` plays the page."""

    def __init__(self, state="device", installed=True, page=None):
        self.serial, self._state, self._installed, self.page = "SERIAL", state, installed, page
        self.files: dict[str, bytes] = {}
        self.calls: list[str] = []

    def state(self):
        return self._state

    def installed(self):
        return self._installed

    def remove(self, path):
        self.calls.append(f"remove {path}")
        self.files = {k: v for k, v in self.files.items() if not k.startswith(path + "/")}

    def start(self, extras):
        self.calls.append("start")
        if self.page:
            self.page(self, json.loads(base64.urlsafe_b64decode(extras["bench"])))

    def stop(self):
        self.calls.append("stop")

    def read(self, path):
        return self.files.get(path)


def _spec():
    return bench_spec(Workload(runs=3), 2, "pixel6-01", "pixel", ["tiny-dcgan"], "none")


def test_the_driver_pulls_and_collects_what_the_page_listed(tmp_path):
    def page(adb, spec):
        names = [f"pixel6-01/tiny-dcgan/repeat-{k}.json" for k in (1, 2)]
        for k, name in enumerate(names, 1):
            adb.files[f"{REMOTE}/{name}"] = json.dumps(record(repeat=k)).encode()
        adb.files[f"{REMOTE}/status.json"] = json.dumps({
            "run": spec["run"], "state": "done", "progress": "[2/2] all measured",
            "files": names}).encode()

    adb, log = StandIn(page=page), []
    adb.files[f"{REMOTE}/pixel6-01/old/repeat-1.json"] = b"{}"  # a previous run's, cleared
    written = bench_phone(adb, "pixel6-01", _spec(), tmp_path, log.append, poll_s=0)
    assert adb.calls == [f"remove {REMOTE}", "start"]
    assert len(written) == 2 and log == ["pixel6-01: [2/2] all measured"]


@pytest.mark.parametrize("adb, message", [
    (StandIn(state="unauthorized"), "adb serial SERIAL is unauthorized: attach it"),
    (StandIn(installed=False), "not installed: deploy first (make deploy DEVICE=pixel)"),
    (StandIn(page=lambda adb, spec: adb.files.update({f"{REMOTE}/status.json": json.dumps({
        "run": spec["run"], "state": "failed", "error": "bundle x: 404"}).encode()})),
     "the page's bench failed: bundle x: 404"),
    (StandIn(page=lambda adb, spec: adb.files.update({f"{REMOTE}/status.json": json.dumps({
        "run": "an-older-run", "state": "done", "files": []}).encode()})),
     "did not finish in 0.2 s"),
])
def test_the_driver_says_what_went_wrong(tmp_path, adb, message):
    with pytest.raises(PhoneBenchError, match=re.escape(message)):
        bench_phone(adb, "pixel6-01", _spec(), tmp_path, timeout_s=0.2, poll_s=0.05)


FAKE_ADB = """#!/bin/sh
echo "$@" >> "$ADB_LOG"
case "$*" in
  *get-state*) echo device ;;
  *"pm path"*) echo package:/data/app/net.edgegen.companion/base.apk ;;
  *"cat files/bench/status.json"*) echo '{"state": "done"}' ;;
  *"cat "*) echo "cat: no such file" >&2; exit 1 ;;
esac
"""


def test_the_adb_command_lines(tmp_path, monkeypatch):
    fake = tmp_path / "adb"
    fake.write_text(FAKE_ADB)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ADB_LOG", str(tmp_path / "log"))
    adb = Adb("1A2B3C4D5E6F", binary=str(fake))
    assert adb.state() == "device" and adb.installed()
    adb.remove(REMOTE)
    adb.start({"bench": "eyJhIjoxfQ=="})
    assert adb.read(f"{REMOTE}/status.json") == b'{"state": "done"}\n'
    assert adb.read(f"{REMOTE}/missing.json") is None
    adb.stop()
    with pytest.raises(AdbError, match="base64url only"):
        adb.start({"bench": "a b; reboot"})
    assert (tmp_path / "log").read_text().splitlines() == [
        "-s 1A2B3C4D5E6F get-state",
        "-s 1A2B3C4D5E6F shell pm path net.edgegen.companion",
        "-s 1A2B3C4D5E6F shell run-as net.edgegen.companion rm -rf files/bench",
        "-s 1A2B3C4D5E6F shell am start -S -n net.edgegen.companion/.MainActivity "
        "--es bench eyJhIjoxfQ==",
        "-s 1A2B3C4D5E6F shell run-as net.edgegen.companion cat files/bench/status.json",
        "-s 1A2B3C4D5E6F shell run-as net.edgegen.companion cat files/bench/missing.json",
        "-s 1A2B3C4D5E6F shell am force-stop net.edgegen.companion"]
    with pytest.raises(AdbError, match="adb is not installed"):
        Adb("x", binary=os.fspath(tmp_path / "nowhere")).installed()
