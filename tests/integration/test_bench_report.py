"""`python -m edge_app bench` then `python -m fleet report` on real tiny bundles: measured on
this machine as two "devices" (one reading a recorded Jetson power tree, one with no sensor),
resumed without re-measuring, and every number of the report traced back to a raw file."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from edge_app.bundle import load_bundle

from ..conftest import REPO
from ..reportcheck import trace_report

pytestmark = pytest.mark.integration


def _bench(bundles, out, device, *extra):
    args = [sys.executable, "-m", "edge_app", "bench", "--out", str(out), "--device", device,
            "--repeats", "3", "--runs", "5", "--warmup", "1", "--new-tokens", "24",
            "--window", "1", "--baseline", "0.5", *extra]
    for b in bundles:
        args += ["--bundle", str(b)]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def measured(gpt2_run, dcgan_bundle, tmp_path_factory):
    result, _ = gpt2_run
    bundles = [dcgan_bundle] + [b.path for b in result.bundles]  # tiny-gpt2 and tiny-gpt2-int8
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results"
    jetson = _bench(bundles, out, "jetson-sim", "--sensor", "jetson-ina3221-hwmon",
                    "--sensor-root", str(REPO / "tests/data/power/jetson-orin-nano-jp6"))
    assert jetson.returncode == 0, jetson.stderr
    plain = _bench(bundles, out, "no-sensor", "--sensor", "none")
    assert plain.returncode == 0, plain.stderr
    here = tmp / "bundles"  # as under the operator's bundles/: the report draws samples there
    for b in bundles:
        shutil.copytree(b, here / Path(b).name)
    report = subprocess.run([sys.executable, "-m", "fleet", "report", "--results", str(out),
                             "--out", str(tmp / "report"), "--bundles", str(here)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    return bundles, out, tmp / "report", jetson.stdout


def test_results_carry_their_method(measured):
    _, out, _, log = measured
    assert "idle baseline" in log and "[9/9]" in log
    record = json.loads((out / "jetson-sim" / "tiny-gpt2-int8" / "repeat-2.json").read_text())
    method = record["method"]
    assert method["power"]["sensor"] == "jetson-ina3221-hwmon" and method["repeats"] == 3
    assert {"avx512_vnni", "asimddp", "logical_cpus"} <= set(method["cpu"])
    assert method["runtime"]["onnxruntime"] and record["providers"][-1] == "CPUExecutionProvider"
    gen = record["workloads"]["generate"]
    assert gen["latency"]["n"] == 5 and gen["tokens_per_s_mean"] > 0
    assert gen["power"]["items"] > 0 and gen["power"]["energy_per_item_j"] is not None
    assert record["memory"]["peak_rss_bytes"] > record["memory"]["rss_before_load_bytes"]
    none = json.loads((out / "no-sensor" / "tiny-dcgan" / "repeat-1.json").read_text())
    assert none["workloads"]["batch_8"]["power"] == {
        "power_w": None, "energy_j": None, "energy_note": "no power sensor on this device"}


def test_an_interrupted_run_resumes_without_remeasuring(measured, tmp_path):
    bundles, measured_out, _, _ = measured
    out = Path(shutil.copytree(measured_out, tmp_path / "results"))  # the report's stay intact
    files = sorted((out / "no-sensor").rglob("repeat-*.json"))
    before = {f: f.stat().st_mtime_ns for f in files}
    files[-1].unlink()  # as if the run had stopped before its last repeat
    again = _bench(bundles, out, "no-sensor", "--sensor", "none")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already measured, kept") == len(files) - 1
    for f in files[:-1]:
        assert f.stat().st_mtime_ns == before[f]
    assert files[-1].exists()


def test_every_number_of_the_report_traces_to_a_raw_measurement(measured):
    _, out, report, _ = measured
    checked, unmeasured = trace_report(report, out)
    assert checked >= 20
    # The device without a sensor: every power and energy cell says so instead of a number.
    assert {(r["device"], r["table"], r["vs_baseline"]) for r in unmeasured} == {
        ("no-sensor", t, "no power sensor on this device") for t in ("power", "energy")}
    with open(report / "tables" / "latency.csv") as f:
        int8 = [r for r in csv.DictReader(f) if r["bundle"] == "tiny-gpt2-int8"]
    assert all("vs tiny-gpt2 (n=3)" in r["vs_baseline"] and r["p"] for r in int8)
    md = (report / "report.md").read_text()
    assert "no power sensor on this device" in md and "jetson-ina3221-hwmon" in md
    for png in ("latency", "power", "quality_vs_compression", "pareto"):
        data = (report / "figures" / f"{png}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


def _embedded(png: Path, page: str) -> bool:
    return f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" in page


def test_figure_1_charts_each_bundles_size_against_its_baseline(measured):
    _, _, report, _ = measured
    with open(report / "tables" / "size.csv") as f:
        size = {r["bundle"]: r for r in csv.DictReader(f)}
    int8, fp32 = size["tiny-gpt2-int8"], size["tiny-gpt2"]
    assert (int8["baseline"], fp32["baseline"]) == ("tiny-gpt2", "tiny-gpt2")
    assert float(int8["params_pct_of_baseline"]) == 100.0  # quantized, not pruned
    assert float(int8["file_size_pct_of_baseline"]) == pytest.approx(
        100 * float(int8["file_size_mb"]) / float(fp32["file_size_mb"]), rel=1e-12)
    assert float(int8["file_size_pct_of_baseline"]) < 50
    assert float(fp32["flops_pct_of_baseline"]) == 100.0
    chart = report / "figures" / "size_reduction.png"
    assert chart.read_bytes().startswith(b"\x89PNG") and chart.stat().st_size > 10_000
    md, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    # Met before the tables, with the samples.
    assert md.index("![size](figures/size_reduction.png)") < md.index("## Samples") < \
        md.index("## Tables")
    assert _embedded(chart, page) and page.index("Figure 1") < page.index("<h2>Tables")


def test_the_report_shows_what_each_bundle_generated_as_the_server_does(measured):
    from PIL import Image

    from edge_app import create_app
    from fleet.samples import GRID, IMAGE_SEED, NEW_TOKENS, PROMPTS

    bundles, _, report, _ = measured
    md, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    samples = {s["bundle"]: s for s in json.loads((report / "report.json").read_text())["samples"]}
    assert sorted(samples) == ["tiny-dcgan", "tiny-gpt2", "tiny-gpt2-int8"]
    assert not any(s["note"] for s in samples.values())
    client = create_app({"bundles": [str(b) for b in bundles],
                         "power_sensor": "none"}).test_client()
    # The image bundle: a GRID x GRID grid whose tile i is the server's image i for the seed.
    grid_png = report / "figures" / "samples-tiny-dcgan.png"
    assert f"![samples of tiny-dcgan](figures/{grid_png.name})" in md and _embedded(grid_png, page)
    grid = np.asarray(Image.open(grid_png))
    image = load_bundle(bundles[0]).manifest.generation.image
    assert grid.shape[:2] == (GRID * image.height, GRID * image.width)
    assert grid.min() < grid.max()
    r = client.post("/v1/images/generations",
                    json={"model": "tiny-dcgan", "seed": IMAGE_SEED, "n": GRID * GRID})
    assert r.status_code == 200, r.get_json()
    for i, item in enumerate(r.get_json()["data"]):
        row, col = divmod(i, GRID)
        tile = grid[row * image.height:(row + 1) * image.height,
                    col * image.width:(col + 1) * image.width]
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))))
        assert np.array_equal(tile, served), f"tile {i}"
    assert f"seed {IMAGE_SEED}" in samples["tiny-dcgan"]["method"]
    assert "splitmix64-box-muller-v1" in samples["tiny-dcgan"]["method"]
    # The text bundles: each prompt's completion is the server's at temperature 0, escaped.
    for name in ("tiny-gpt2", "tiny-gpt2-int8"):
        done = samples[name]["completions"]
        assert [c["prompt"] for c in done] == list(PROMPTS)
        for c in done:
            r = client.post("/v1/completions", json={"model": name, "prompt": c["prompt"],
                                                     "max_tokens": NEW_TOKENS,
                                                     "temperature": 0})
            assert r.status_code == 200, r.get_json()
            assert c["completion"] == r.get_json()["choices"][0]["text"]
            assert (f'<span class="prompt">{html.escape(c["prompt"])}</span>'
                    f'{html.escape(c["completion"])}</pre>') in page
            assert c["prompt"] + c["completion"] in md
    assert "if a &lt; b and" in page and "if a < b" not in page


def test_a_bundle_not_here_says_why_it_has_no_samples(measured, tmp_path, monkeypatch):
    from fleet.report import build_report

    bundles, out, _, _ = measured
    here = tmp_path / "bundles"  # tiny-dcgan missing, tiny-gpt2-int8 rebuilt (another model)
    shutil.copytree(bundles[1], here / "tiny-gpt2")
    shutil.copytree(bundles[1], here / "tiny-gpt2-int8")

    def notes(bundles_dir):
        summary = build_report(out, tmp_path / "report", bundles_dir)
        return {s["bundle"]: s["note"] for s in summary["samples"]}

    got = notes(here)
    assert got["tiny-gpt2"] == ""
    assert got["tiny-dcgan"].startswith(f"no samples: the bundle is not under {here}")
    assert "has another model file than the one measured" in got["tiny-gpt2-int8"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"#### tiny-dcgan\n\n{got['tiny-dcgan']}." in md
    assert not (tmp_path / "report" / "figures" / "samples-tiny-dcgan.png").exists()
    assert set(notes(None).values()) == {
        "no samples: no bundles directory was given (--bundles DIR)"}
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as in an install without it
    assert notes(here)["tiny-gpt2"] == \
        "no samples: ONNX Runtime is not installed here (pip install 'edgegen[report]')"


@pytest.mark.browser
def test_the_html_report_opens_in_chromium_without_errors(measured, browser):
    from selenium.webdriver.common.by import By

    _, _, report, _ = measured
    browser.get((report / "report.html").as_uri())
    assert browser.title == "EdgeGen benchmark report"
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 6  # Figure 1, the sample grid of tiny-dcgan, four figures
    assert all(browser.execute_script("return arguments[0].complete && "
                                      "arguments[0].naturalWidth > 0", i) for i in images)
    assert len(browser.find_elements(By.TAG_NAME, "table")) == 8
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_bad_bench_input_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "edge_app", "bench", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert "no bundles" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "edge_app", "bench", "--bundle",
                          str(tmp_path), "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "no manifest.json" in run.stderr


def _with_measured_figures(measured, tmp_path) -> tuple[Path, str]:
    """Copies of the measured bundles with `fleet measured` run on them: (their directory,
    its output)."""
    bundles, out, _, _ = measured
    copies = tmp_path / "bundles"
    for b in bundles:
        shutil.copytree(b, copies / Path(b).name)
    run = subprocess.run([sys.executable, "-m", "fleet", "measured", "--results", str(out),
                          "--bundles", str(copies)], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return copies, run.stdout


def test_measured_figures_go_into_the_manifests_of_the_bundles_measured(measured, tmp_path):
    _, out, report, _ = measured
    copies, written = _with_measured_figures(measured, tmp_path)
    assert "6 measured entries written" in written  # 3 bundles x 2 devices
    gpt2 = load_bundle(copies / "tiny-gpt2")  # still a valid bundle: file checksums hold
    entry = gpt2.manifest.metrics["measured"]["jetson-sim"]["jetson-sim"]
    with open(report / "tables" / "latency.csv") as f:
        row = next(r for r in csv.DictReader(f)
                   if (r["device"], r["bundle"]) == ("jetson-sim", "tiny-gpt2"))
    assert entry["workloads"]["generate"]["latency_p50_ms"]["mean"] == \
        pytest.approx(float(row["mean"]), rel=1e-12)
    assert entry["repeats"] == 3 and entry["method"]["power"] == "jetson-ina3221-hwmon"
    none = gpt2.manifest.metrics["measured"]["no-sensor"]["no-sensor"]
    assert none["workloads"]["generate"]["energy_note"] == "no power sensor on this device"
    # A rebuilt bundle (another model file) gets nothing measured on the old one.
    dcgan = copies / "tiny-dcgan"
    data = json.loads((dcgan / "manifest.json").read_text())
    data["files"]["model.onnx"]["sha256"] = "0" * 64
    data["metrics"].pop("measured")
    (dcgan / "manifest.json").write_text(json.dumps(data))
    again = subprocess.run([sys.executable, "-m", "fleet", "measured", "--results", str(out),
                            "--bundles", str(copies)], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "4 measured entries" in again.stdout
    assert "measured" not in json.loads((dcgan / "manifest.json").read_text())["metrics"]


def test_real_measurements_choose_a_bundle_and_the_report_marks_it(measured, tmp_path):
    from fleet.slo import Slo, SloError, choose

    out = measured[1]
    copies, _ = _with_measured_figures(measured, tmp_path)
    candidates = {"tiny-gpt2": ["tiny-gpt2", "tiny-gpt2-int8"]}
    # The recorded Jetson sensor gives energy per token: the lower one is chosen.
    sel = choose("jetson-sim", candidates, Slo.parse({"objective": "energy_per_item"}, "x"),
                 copies)
    energy = {r.figures.bundle: r.figures.energy_j for r in sel.rows}
    assert sel.chosen == {"tiny-gpt2": min(energy, key=energy.get)}, energy
    # No sensor on the other device: an energy objective cannot be met there.
    with pytest.raises(SloError, match=r"energy per item unknown \(no power sensor"):
        choose("no-sensor", candidates, Slo.parse({"objective": "energy_per_item"}, "x"),
               copies)
    deployments = tmp_path / "deploy"
    (deployments / "jetson-sim").mkdir(parents=True)
    (deployments / "jetson-sim" / "selection.json").write_text(json.dumps(sel.record()))
    report = subprocess.run([sys.executable, "-m", "fleet", "report", "--results", str(out),
                             "--out", str(tmp_path / "report"), "--bundles", str(copies),
                             "--deployments", str(deployments)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "### Bundles chosen per device class (SLO and measurements)" in md
    winner = sel.chosen["tiny-gpt2"]
    assert re.search(rf"^\| jetson-sim \| tiny-gpt2 \| {winner} \| yes \| jetson-sim \|", md,
                     re.M), md
    with open(tmp_path / "report" / "tables" / "choices.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["chosen"] for r in rows if r["bundle"] == winner] == ["yes"] and len(rows) == 2
    assert (tmp_path / "report" / "figures" / "pareto.png").stat().st_size > 0


def _status(out: Path) -> dict:
    run = subprocess.run([sys.executable, "-m", "edge_app", "bench", "--status", "--out",
                          str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _wait(out: Path, predicate, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while not predicate(status := _status(out)):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    return status


def _workers(bundle: Path) -> list[int]:
    """Live worker processes measuring `bundle` (zombies excluded)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            zombie = " Z " in (proc / "stat").read_text().split(")", 1)[1][:4]
        except OSError:
            continue
        if "--worker" in cmdline and str(bundle) in cmdline and not zombie:
            pids.append(int(proc.name))
    return pids


def test_a_background_run_is_the_only_one_and_a_killed_one_resumes(dcgan_bundle, tmp_path):
    """What `make bench DEVICE=<class>` relies on inside a device's container."""
    out = tmp_path / "results"
    assert _status(out)["state"] == "none"
    # Long enough to be caught running: many timed runs per repeat (about 10 s each).
    args = [sys.executable, "-m", "edge_app", "bench", "--bundle", str(dcgan_bundle), "--out",
            str(out), "--device", "dev", "--repeats", "2", "--runs", "100000", "--warmup", "0",
            "--batches", "1", "--window", "0", "--sensor", "none"]
    started = json.loads(subprocess.run(args + ["--background"], cwd=REPO, capture_output=True,
                                        text=True, timeout=60, check=True).stdout)
    assert started["started"] and started["state"] == "running" and started["pid"]
    joined = json.loads(subprocess.run(args + ["--background"], cwd=REPO, capture_output=True,
                                       text=True, timeout=60, check=True).stdout)
    assert (joined["started"], joined["pid"]) == (False, started["pid"])
    clash = _bench([dcgan_bundle], out, "dev", "--sensor", "none")
    assert clash.returncode == 2 and "another benchmark is running on" in clash.stderr
    # Killed after its first repeat (as by the OOM killer): the status says so.
    status = _wait(out, lambda s: "[1/2]" in s["progress"])
    assert status["argv"][:2] == ["--bundle", str(dcgan_bundle)]
    deadline = time.monotonic() + 30
    while not _workers(dcgan_bundle):  # the worker measuring repeat 2
        assert time.monotonic() < deadline, "no worker process for repeat 2"
        time.sleep(0.05)
    os.kill(started["pid"], signal.SIGKILL)
    status = _wait(out, lambda s: s["state"] != "running")
    assert status["state"] == "died" and "run it again to resume" in status["progress"]
    assert status["files"] == []
    # Its worker went with it (well before its repeat could have ended): nothing keeps
    # measuring beside the run that resumes.
    deadline = time.monotonic() + 3
    while _workers(dcgan_bundle):
        assert time.monotonic() < deadline, "the worker of a killed benchmark kept running"
        time.sleep(0.2)
    first = out / "dev" / "tiny-dcgan" / "repeat-1.json"
    kept = first.stat().st_mtime_ns
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "[1/2] tiny-dcgan repeat 1: already measured, kept" in again.stdout
    assert first.stat().st_mtime_ns == kept
    status = _status(out)
    assert (status["state"], status["rc"]) == ("done", 0)
    assert status["files"] == [f"dev/tiny-dcgan/repeat-{k}.json" for k in (1, 2)]


def test_the_traffic_its_own_server_answered_meanwhile_is_recorded(dcgan_bundle, tmp_path):
    """In a device's container the benchmark runs beside the deployed server: each repeat
    records the generation requests that server answered while it was measured."""
    from fleet.report import build_report

    from .serverproc import ServerProcess

    server = ServerProcess(dcgan_bundle)
    try:
        server.wait_ready()
        out = tmp_path / "results"
        # The server's container environment names it (EDGEGEN_HOST / EDGEGEN_PORT).
        env = {**os.environ, "EDGEGEN_HOST": "0.0.0.0", "EDGEGEN_PORT": str(server.port)}
        args = [sys.executable, "-m", "edge_app", "bench", "--bundle", str(dcgan_bundle),
                "--out", str(out), "--device", "dev", "--repeats", "2", "--runs", "50000",
                "--warmup", "0", "--batches", "1", "--window", "0", "--sensor", "none"]
        subprocess.run(args + ["--background"], cwd=REPO, env=env, check=True, timeout=60,
                       capture_output=True)
        deadline = time.monotonic() + 60
        while not _workers(dcgan_bundle):  # repeat 1 is being measured
            assert time.monotonic() < deadline, "no worker process for repeat 1"
            time.sleep(0.05)
        for seed in range(4):
            r = requests.post(f"{server.base}/v1/images/generations", timeout=30,
                              json={"model": "tiny-dcgan", "seed": seed})
            assert r.status_code == 200, r.text
        _wait(out, lambda s: s["state"] != "running", timeout=300)
    finally:
        server.stop()
    first, second = (json.loads((out / f"dev/tiny-dcgan/repeat-{k}.json").read_text())
                     for k in (1, 2))
    assert first["server"] == {"url": f"http://127.0.0.1:{server.port}",
                               "generation_requests_during": 4}
    assert second["server"]["generation_requests_during"] == 0
    build_report(out, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "its server answered 4 generation requests during the measurements" in md
    # A server that does not answer: the repeat says its traffic is unknown, and why.
    gone = _bench([dcgan_bundle], tmp_path / "again", "dev", "--sensor", "none",
                  "--server", server.base)
    assert gone.returncode == 0, gone.stderr
    record = json.loads((tmp_path / "again/dev/tiny-dcgan/repeat-1.json").read_text())
    assert record["server"]["generation_requests_during"] is None
    assert f"could not read {server.base}/metrics" in record["server"]["note"]
