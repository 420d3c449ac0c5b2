"""The companion page's bench mode in headless Chromium, standing in for the phone, on a tiny
image bundle and a tiny text bundle, 2 repeats each, from the APK's own asset layout
(android/stage_assets.py):

- as a plain browser would (no app bridge: results in localStorage, no power sensor), the files
  collected into a results tree by fleet.phonebench.collect, the function the adb path uses
  after pulling;
- as the phone path runs it, end to end: fleet.phonebench.bench_phones for the example
  inventory's pixel host, with only adb stood in for. adb cannot run here (no phone, no
  emulator on this machine), so ChromiumAdb answers its few commands: `am start` opens the page
  with the intent's bench extra as MainActivity does, and `run-as cat` reads what the page
  wrote through a stand-in of the APK's bridge (BenchBridge.java: write, deviceInfo and a
  battery sampler giving 3.0 W idle and 4.5 W under load);
- beside `python -m edge_app bench` on the same bundles and workload.
Every file matches the one record schema (edge_app/benchrecord.py), and `fleet report` renders
the pixel devices with mean ± std over the repeats, every number traced back to its raw files.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge_app.benchrecord import check_record
from fleet.bench import fleet_hosts
from fleet.phonebench import REMOTE, bench_phones, bench_spec, collect, encode_spec, workload_of
from fleet.report import build_report

from ..conftest import REPO
from ..reportcheck import trace_report

pytestmark = [pytest.mark.browser, pytest.mark.integration]
EXAMPLE = REPO / "ansible" / "inventory" / "example.yml"
WORKLOAD = ["--repeats", "2", "--runs", "3", "--warmup", "1", "--batches", "1,2",
            "--new-tokens", "8", "--baseline", "0.5", "--threads", "0", "--seed", "0"]
BUNDLES = ["tiny-dcgan", "tiny-gpt2"]
PAGE = "/assets/companion/index.html"
BRIDGE_FILES = "edgegen-test-bridge-files"
# A stand-in of BenchBridge.java (window.EdgeGenBench) in every document the tab opens; its
# files and calls live in the origin's storage, so they outlast the page's job-to-job reloads.
FAKE_BRIDGE = """
(() => {
  const KEY = "%s";
  const files = () => JSON.parse(localStorage.getItem(KEY) || "{}");
  let started = null;
  window.EdgeGenBench = {
    reset() { localStorage.setItem(KEY, "{}"); sessionStorage.setItem("power-calls", "0"); return ""; },
    write(path, text) { localStorage.setItem(KEY, JSON.stringify({ ...files(), [path]: text })); return ""; },
    deviceInfo() {
      return JSON.stringify({ model: "Google Pixel 6 (oriole), simulated", arch: "aarch64",
        android: "Android 14 (API 34), simulated",
        cpuinfo: "processor\\t: 0\\nFeatures\\t: fp asimd asimddp i8mm\\nHardware\\t: Tensor\\n" });
    },
    powerStart() {
      started = performance.now();
      sessionStorage.setItem("power-calls", String(Number(sessionStorage.getItem("power-calls")) + 1));
      return "";
    },
    powerStop() {
      const watts = sessionStorage.getItem("power-calls") === "1" ? 3.0 : 4.5;  // the baseline first
      const samples = [];
      for (let t = 0; t <= (performance.now() - started) / 1000 + 0.1; t += 0.1) samples.push([t, watts]);
      return JSON.stringify({ samples, error: null });
    },
  };
})();
""" % BRIDGE_FILES


class _Assets(SimpleHTTPRequestHandler):
    extensions_map = {".html": "text/html", ".js": "text/javascript",
                      ".mjs": "text/javascript", ".json": "application/json",
                      ".wasm": "application/wasm", "": "application/octet-stream"}

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory, ort_web_dir, dcgan_bundle, gpt2_bundle):
    """The APK's asset tree (assets/companion, assets/bundles) over HTTP on 127.0.0.1."""
    sys.path.insert(0, str(REPO / "android"))
    from stage_assets import stage

    root = tmp_path_factory.mktemp("apk")
    stage(root / "assets", ort_web_dir, [dcgan_bundle, gpt2_bundle])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Assets, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def run_page(browser, url: str, timeout: float = 120) -> str:
    """Open the bench page and wait through its job-to-job reloads: the final state."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def finished(d):
        try:
            state = d.execute_script("return document.body && document.body.dataset.bench")
        except WebDriverException:  # between two pages
            return False
        return state if state in ("done", "failed") else False

    browser.get(url)
    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(finished)


class ChromiumAdb:
    """fleet.adb.Adb's commands, answered by Chromium with the bridge stand-in (adb cannot run
    here: no phone or emulator on this machine)."""

    def __init__(self, browser, site: str, serial: str):
        self.browser, self.site, self.serial = browser, site, serial
        self.started: list[dict] = []

    def state(self) -> str:
        return "device"

    def installed(self) -> bool:
        return True

    def remove(self, path: str) -> None:
        assert path == REMOTE
        self.browser.get(self.site + PAGE)
        self.browser.execute_script(f"localStorage.removeItem('{BRIDGE_FILES}')")

    def start(self, extras: dict[str, str]) -> None:
        # MainActivity: each extra becomes a query parameter of the page
        self.started.append(json.loads(base64.urlsafe_b64decode(extras["bench"])))
        run_page(self.browser, f"{self.site}{PAGE}?bench={extras['bench']}")

    def stop(self) -> None:
        pass

    def read(self, path: str) -> bytes | None:
        files = json.loads(self.browser.execute_script(
            f"return localStorage.getItem('{BRIDGE_FILES}')") or "{}")
        text = files.get(path.removeprefix(REMOTE + "/"))
        return None if text is None else text.encode()


@pytest.fixture(scope="module")
def measured(browser, site, dcgan_bundle, gpt2_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phonebench")
    results = tmp / "results"
    # 1. A plain browser: no bridge, no sensor; its files as adb would have pulled them.
    workload, repeats, baseline = workload_of(WORKLOAD + ["--window", "0"])
    spec = bench_spec(workload, repeats, "chromium-headless", "pixel", BUNDLES, "none", baseline)
    assert run_page(browser, f"{site}{PAGE}?bench={encode_spec(spec)}") == "done", \
        browser.execute_script("return localStorage.getItem('edgegen-bench')")
    files = json.loads(browser.execute_script("return localStorage.getItem('edgegen-bench')"))
    pulled = tmp / "pulled"
    for path, text in files.items():
        (pulled / path).parent.mkdir(parents=True, exist_ok=True)
        (pulled / path).write_text(text)
    plain = collect(pulled, results, "chromium-headless")
    # 2. The phone path, end to end, for the example inventory's pixel host.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FAKE_BRIDGE})
    adbs, log = [], []
    phones = fleet_hosts(EXAMPLE, "pixel")
    rc, count = bench_phones(
        phones, results=results, workload_args=WORKLOAD + ["--window", "0.5"], bundles=BUNDLES,
        sensor="", log=log.append,
        adb_for=lambda serial: adbs.append(ChromiumAdb(browser, site, serial)) or adbs[-1])
    assert rc == 0 and count == 4, log
    # 3. python -m edge_app bench, same bundles and workload, on this machine.
    run = subprocess.run([sys.executable, "-m", "edge_app", "bench", "--bundle", str(dcgan_bundle),
                          "--bundle", str(gpt2_bundle), "--out", str(results), "--device",
                          "x86-host", "--sensor", "none", *WORKLOAD, "--window", "0"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    build_report(results, tmp / "report")
    return {"results": results, "report": tmp / "report", "plain": plain, "adbs": adbs,
            "log": log}


def _rows(report: Path, table: str) -> list[dict]:
    with open(report / "tables" / f"{table}.csv") as f:
        return list(csv.DictReader(f))


def test_the_phone_drive_reaches_the_page_as_mainactivity_passes_it(measured):
    (adb,) = measured["adbs"]
    assert adb.serial == "1A2B3C4D5E6F"  # edgegen_phone_serial of pixel6-01
    (spec,) = adb.started
    assert spec["device"] == "pixel6-01" and spec["device_class"] == "pixel"
    assert spec["sensor"] == "android-battery" and spec["bundles"] == BUNDLES
    assert any("pixel6-01: [4/4] all measured" in line for line in measured["log"])


def test_every_file_matches_the_edge_app_bench_schema(measured):
    results = measured["results"]
    files = sorted(results.rglob("repeat-*.json"))
    assert {f.relative_to(results).parts[0] for f in files} == {
        "chromium-headless", "pixel6-01", "x86-host"}
    assert len(files) == 12
    records = {f.relative_to(results).as_posix(): json.loads(f.read_text()) for f in files}
    for path, record in records.items():
        check_record(record, path)
    for bundle in BUNDLES:
        page = records[f"pixel6-01/{bundle}/repeat-2.json"]
        python = records[f"x86-host/{bundle}/repeat-2.json"]
        # The same workloads, facts and method fields as edge_app bench writes.
        assert page["workloads"].keys() == python["workloads"].keys()
        for name, w in page["workloads"].items():
            assert w.keys() >= python["workloads"][name].keys() - {"power"}
            assert w["latency"]["n"] == 3 and w["latency"]["p50_s"] > 0
        assert page["manifest"] == python["manifest"]
        assert page["manifest_sha256"] == python["manifest_sha256"]
        # the same workload, prompts and all (the phone's had a power window)
        assert records[f"chromium-headless/{bundle}/repeat-2.json"]["method"]["workload"] == \
            python["method"]["workload"]
        assert page["method"]["workload"] == {**python["method"]["workload"], "window_s": 0.5}
        assert page["memory"]["wasm_memory_bytes"] > 0
        assert page["memory"]["peak_rss_bytes"] >= page["memory"]["rss_before_load_bytes"]
    text = records["pixel6-01/tiny-gpt2/repeat-1.json"]["workloads"]["generate"]
    assert text["new_tokens"] == records["x86-host/tiny-gpt2/repeat-1.json"]["workloads"][
        "generate"]["new_tokens"]
    assert text["prompt_tokens"] == records["x86-host/tiny-gpt2/repeat-1.json"]["workloads"][
        "generate"]["prompt_tokens"]  # the page tokenizes as `tokenizers` does
    assert text["tokens_per_s_mean"] > 0 and text["time_to_first_token"]["n"] == 3
    # Power through the bridge: 4.5 W under load over a 3.0 W idle baseline.
    phone = records["pixel6-01/tiny-dcgan/repeat-1.json"]
    assert phone["method"]["power"]["sensor"] == "android-battery"
    assert phone["method"]["power"]["idle_baseline_w"] == pytest.approx(3.0)
    assert phone["method"]["cpu"]["asimddp"] is True and phone["method"]["cpu"]["avx2"] is False
    # browsers coarsen performance.now(): the record says how much, as measured in the page
    assert 0 < phone["method"]["timer_resolution_s"] <= 1e-3
    assert "its resolution here: " in phone["method"]["latency"]
    window = phone["workloads"]["batch_2"]["power"]
    assert window["power_w"] == pytest.approx(1.5, rel=1e-6) and window["items"] > 0
    assert window["energy_per_item_j"] == pytest.approx(window["energy_j"] / window["items"])
    plain = records["chromium-headless/tiny-dcgan/repeat-1.json"]
    assert plain["workloads"]["batch_1"]["power"] == {
        "power_w": None, "energy_j": None, "energy_note": "no power sensor on this device"}
    assert plain["method"]["power"] == {"sensor": None, "note": "no power sensor on this device"}


def test_the_report_shows_the_pixel_column_with_mean_and_std(measured, capsys):
    report, results = measured["report"], measured["results"]
    checked, unmeasured = trace_report(report, results)  # every number from its raw files
    assert checked > 0
    latency = {(r["device"], r["bundle"], r["workload"]): r for r in _rows(report, "latency")}
    for device in ("pixel6-01", "chromium-headless"):
        for key in ((device, "tiny-dcgan", "batch_1"), (device, "tiny-dcgan", "batch_2"),
                    (device, "tiny-gpt2", "generate")):
            row = latency[key]
            assert row["repeats"] == "2" and float(row["mean"]) > 0 and row["std"] != ""
    ttft = {(r["device"], r["bundle"]): r for r in _rows(report, "ttft")}
    assert float(ttft["pixel6-01", "tiny-gpt2"]["mean"]) > 0
    power = {(r["device"], r["bundle"], r["workload"]): r for r in _rows(report, "power")}
    assert float(power["pixel6-01", "tiny-dcgan", "batch_1"]["mean"]) == pytest.approx(1.5)
    assert power["chromium-headless", "tiny-gpt2", "generate"]["vs_baseline"] == \
        "no power sensor on this device"
    memory = {(r["device"], r["bundle"]): r for r in _rows(report, "memory")}
    assert float(memory["pixel6-01", "tiny-gpt2"]["mean"]) > 0
    # The rendered table: the pixel rows with mean ± std.
    md = (report / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| pixel6-01 | tiny-dcgan | batch_1 |")]
    assert rows and all(" ± " in line for line in rows), rows
    assert "| pixel6-01 | tiny-gpt2 | generate | 2 | " in md
    assert "- **pixel6-01**: Tensor (aarch64" in md and "ONNX Runtime web 1.30.0 (wasm" in md
    html = (report / "report.html").read_text()
    assert "<td>pixel6-01</td><td>tiny-dcgan</td>" in html
    with capsys.disabled():
        print("\nthe pixel rows of the report:\n" + "\n".join(
            line for line in md.splitlines() if line.startswith(("### ", "| pixel6-01 "))))


def test_the_page_computes_its_statistics_as_edge_app_does(browser, site):
    """bench.js's latency statistics (p95 by nearest rank, Python's round half to even) and
    window energy (trapezoid, ends interpolated) against edge_app's own functions."""
    import random

    from edge_app.benchmark import latency_stats
    from edge_app.power.sampler import PowerSampler

    rng = random.Random(7)
    series = [[rng.uniform(0.001, 0.01) for _ in range(n)] for n in range(1, 42)]
    samples = [(0.1 * i + rng.uniform(-0.01, 0.01), rng.uniform(2.0, 5.0)) for i in range(30)]
    windows = [(0.05, 0.07), (0.33, 1.91), (-0.2, 0.5), (2.5, 3.5), (0.0, 2.9)]
    browser.get(site + PAGE)
    page = browser.execute_async_script("""
        const [series, samples, windows, done] = arguments;
        import("./bench.js").then((b) => done({
          latency: series.map((s) => b.latencyStats(s)),
          energy: windows.map(([t0, t1]) => b.energy(samples, t0, t1)) }));
        """, series, samples, windows)
    for got, values in zip(page["latency"], series):
        assert got == pytest.approx(latency_stats(values), rel=1e-12)
    sampler = PowerSampler(sensor=None)
    sampler.samples.extend(samples)
    for got, (t0, t1) in zip(page["energy"], windows):
        assert got == pytest.approx(sampler.energy(t0, t1, above_baseline=False), rel=1e-12)


def test_the_phone_figures_go_into_the_manifests_under_the_pixel_class(measured, dcgan_bundle,
                                                                       gpt2_bundle, tmp_path):
    import shutil

    from edge_app.bundle import load_bundle
    from fleet.measured import write_measured

    for b in (dcgan_bundle, gpt2_bundle):
        shutil.copytree(b, tmp_path / b.name)
    written = write_measured(measured["results"], tmp_path)
    assert ("tiny-dcgan", "pixel", "pixel6-01") in written
    assert ("tiny-gpt2", "pixel", "chromium-headless") in written
    manifest = load_bundle(tmp_path / gpt2_bundle.name).manifest  # still a valid bundle
    phone = manifest.metrics["measured"]["pixel"]["pixel6-01"]
    assert phone["repeats"] == 2 and phone["method"]["power"] == "android-battery"
    assert phone["workloads"]["generate"]["tokens_per_s"]["n"] == 2
    assert phone["method"]["onnxruntime"].startswith("web 1.30.0")
