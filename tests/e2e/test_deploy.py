"""`make deploy` against simulated devices on this machine (the session's `fleet`, see
conftest.py): containers running sshd on loopback ports, one arm64 (under qemu-user-static) as a
`pi`, one amd64 standing in for a `jetson` with the BASE_IMAGE override. Ansible reaches them
over SSH with a key; their Docker engine is this machine's (through its socket), so the servers
they start listen on 127.0.0.1 here.

The tests run in order and share the fleet: the Pi's deploy, the Jetson stand-in loaded from
an archive, its redeploy (no changes) and check mode, the targets file, then the benchmarks
inside the deployed containers. A broken release rolled back: test_rollout.py (its canary).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from edge_app import __version__

from ..conftest import REPO
from ..reportcheck import trace_report
from .devices import (deploy_summary, fleet_deploy, generate, make_deploy, ok, read_metrics,
                      run_cmd)

pytestmark = [pytest.mark.e2e, pytest.mark.docker_images("fleet")]
GOOD_JETSON = f"edgegen-edge:{__version__}-jetson-amd64"


def test_deploy_pi_serves_from_an_arm64_container(fleet):
    out = ok(make_deploy(fleet, "pi"))
    summary = deploy_summary(out)
    (pi,) = summary["hosts"][:1]
    assert (pi["host"], pi["status"]) == ("pi-sim", "changed"), out[-4000:]
    assert pi["result"]["ready"]["models"] == ["tiny-dcgan"]
    assert re.search(r"^pi-sim\s+changed\s+\d+\s+edgegen-edge:0\.1\.0-pi-arm64\s+"
                     r"http://127\.0\.0\.1:\d+\s+ready \(tiny-dcgan\)$", out, re.M), out[-3000:]
    image = generate(fleet.port["pi-sim"])
    shape = json.loads((fleet.bundles / "tiny-dcgan/manifest.json").read_text())["generation"]
    assert image.size == (shape["image"]["width"], shape["image"]["height"])
    # The server runs arm64 code (under qemu here): its own view of the machine says so.
    assert re.search(r'edgegen_device_info\{[^}]*arch="aarch64"[^}]*device_class="pi"',
                     read_metrics(fleet.port["pi-sim"]))
    # The companion page's onnxruntime-web ships in the image (gzipped).
    wasm = requests.get(f"http://127.0.0.1:{fleet.port['pi-sim']}/companion/"
                        "ort-wasm-simd-threaded.wasm", timeout=60)
    assert wasm.status_code == 200 and wasm.headers["Content-Encoding"] == "gzip"
    assert wasm.content[:4] == b"\0asm"
    info = json.loads(ok(run_cmd(["docker", "image", "inspect", summary["image"]])))[0]
    assert info["Architecture"] == "arm64" and info["Config"]["User"] == "edgegen"
    assert info["Config"]["Healthcheck"]["Test"][0] == "CMD"
    print(f"pi image: {info['Size'] / 1e6:.0f} MB")
    assert info["Size"] < 300e6, "the Pi image must stay under 300 MB"


def test_jetson_stand_in_loads_its_archive_and_says_it_fell_back_to_cpu(fleet):
    out = ok(run_cmd([sys.executable, "-m", "fleet", "images", "--device", "jetson",
                      "--inventory", str(fleet.inventory)]))
    archive = re.search(r"(\S+\.tar\.gz)$", out.strip(), re.M).group(1)
    fleet.archive["jetson"] = archive  # the redeploy below rolls out the same release
    # The controller's engine and the simulated device's are one: drop the image so the device
    # has to load it from the archive, as a real one does.
    subprocess.run(["docker", "rmi", "--no-prune", GOOD_JETSON], capture_output=True)
    out = ok(fleet_deploy(fleet, "jetson", "--archive", archive))
    assert re.search(r"jetson-sim\s+changed\s+Load the image", out), out[-4000:]
    metrics = read_metrics(fleet.port["jetson-sim"])
    line = next(ln for ln in metrics.splitlines() if ln.startswith("edgegen_model_info{"))
    assert 'runtime="CPUExecutionProvider"' in line
    assert ('requested_providers="TensorrtExecutionProvider,CUDAExecutionProvider,'
            'CPUExecutionProvider"') in line
    # The operator's key reached the device as a file only the server's user can read.
    port = fleet.port["jetson-sim"]
    assert requests.post(f"http://127.0.0.1:{port}/v1/images/generations",
                         json={"model": "tiny-dcgan"}, timeout=30).status_code == 401
    generate(port, fleet.key)
    key_on_device = fleet.root / "jetson-sim/opt/edgegen/config/api_keys"
    assert key_on_device.read_text().strip() == fleet.key
    assert (key_on_device.stat().st_mode & 0o777, key_on_device.stat().st_uid) == (0o400, 10001)
    daemon = json.loads(ok(run_cmd(["docker", "exec", "edgegen-sim-jetson-sim", "cat",
                                  "/etc/docker/daemon.json"])))
    assert "nvidia" in daemon["runtimes"] and daemon["log-opts"]["max-size"] == "10m"


# Idempotence and check mode are the roles' properties, not the CPU's: shown on the amd64
# device, where a playbook takes seconds rather than minutes under qemu. The arm64 Pi proves the
# deploy, its image and its server (above), and the benchmark in its container (below).
def test_redeploy_reports_no_changes(fleet):
    out = ok(make_deploy(fleet, "jetson", "--archive", fleet.archive["jetson"]))
    summary = deploy_summary(out)
    assert summary["changes"] == 0, out[-5000:]
    assert "no changes" in out


def test_check_mode_runs_clean(fleet):
    out = ok(fleet_deploy(fleet, "jetson", "--archive", fleet.archive["jetson"], "--check"))
    assert deploy_summary(out)["check"] is True and "check mode" in out


def test_targets_file_lists_every_deployed_device(fleet):
    entries = json.loads((fleet.root / "targets" / "edge.json").read_text())
    by_device = {e["labels"]["device"]: e for e in entries}
    assert by_device["pi-sim"] == {
        "targets": [f"127.0.0.1:{fleet.port['pi-sim']}"],
        "labels": {"device": "pi-sim", "device_class": "pi", "arch": "arm64"}}
    assert by_device["jetson-sim"]["labels"] == {"device": "jetson-sim",
                                                 "device_class": "jetson", "arch": "amd64"}


def _make_bench(fleet, results: Path, bundles: Path, device: str, *args: str
                ) -> subprocess.CompletedProcess:
    return run_cmd(["make", "--no-print-directory", "bench", f"DEVICE={device}",
                 f"INVENTORY={fleet.inventory}", f"RESULTS={results}",
                 f"BENCH_ARGS=--bundles {bundles} {' '.join(args)}"])


# Small workloads: the Pi runs under qemu here. One device at a time, since both simulated
# devices share this machine's cores; status polled every 2 s.
BENCH_WORKLOAD = ("--runs", "3", "--warmup", "1", "--batches", "1,4", "--window", "1",
                  "--baseline", "0.5", "--serial", "1", "-e", "edgegen_bench_poll_delay=2")


def test_bench_measures_every_device_inside_its_container_and_resumes(fleet, tmp_path):
    results, bundles = tmp_path / "results", tmp_path / "bundles"
    shutil.copytree(fleet.bundles, bundles)  # the measured figures land in these manifests
    out = ok(_make_bench(fleet, results, bundles, "all", "--repeats", "2", *BENCH_WORKLOAD))
    assert re.search(r"^pi-sim\s+pi\s+done\s+2\s+\[2/2\] tiny-dcgan repeat 2: batch_1 p50",
                     out, re.M), out[-4000:]
    assert re.search(r"^jetson-sim\s+jetson\s+done\s+2\s", out, re.M), out[-4000:]
    pi = json.loads((results / "bench/pi-sim/tiny-dcgan/repeat-2.json").read_text())
    # Measured inside the deployed arm64 container, on the bundle it serves.
    assert (pi["device"], pi["device_class"]) == ("pi-sim", "pi")
    assert pi["bundle_dir"] == "/bundles/tiny-dcgan" and pi["method"]["repeats"] == 2
    assert pi["method"]["cpu"]["arch"] == "aarch64", pi["method"]["cpu"]
    assert pi["workloads"]["batch_4"]["latency"]["n"] == 3
    # The deployed server ran beside it, and answered nothing meanwhile.
    assert pi["server"] == {"url": f"http://127.0.0.1:{fleet.port['pi-sim']}",
                            "generation_requests_during": 0}
    jetson = json.loads((results / "bench/jetson-sim/tiny-dcgan/repeat-1.json").read_text())
    # The Jetson class's provider chain applies (the server's settings): CPU fallback here.
    assert jetson["providers"] == ["CPUExecutionProvider"]
    assert jetson["method"]["cpu"]["arch"] == "x86_64"
    manifest = json.loads((bundles / "tiny-dcgan/manifest.json").read_text())
    measured = manifest["metrics"]["measured"]
    assert set(measured) == {"pi", "jetson"} and set(measured["pi"]) == {"pi-sim"}
    assert measured["pi"]["pi-sim"]["sources"] == ["pi-sim/tiny-dcgan/repeat-1.json",
                                                   "pi-sim/tiny-dcgan/repeat-2.json"]

    # Resume: a third repeat measures only that one; the first two stay as they were.
    first = (results / "bench/pi-sim/tiny-dcgan/repeat-1.json")
    before = first.stat().st_mtime_ns
    out = ok(_make_bench(fleet, results, bundles, "pi", "--repeats", "3", *BENCH_WORKLOAD))
    assert re.search(r"^pi-sim\s+pi\s+done\s+3\s", out, re.M), out[-4000:]
    log = (fleet.root / "pi-sim/opt/edgegen/cache/bench/bench.log").read_text()
    last_run = log[log.rindex("--- "):]
    assert last_run.count("already measured, kept") == 2 and "[3/3] tiny-dcgan repeat 3: batch_1" \
        in last_run, last_run
    assert first.stat().st_mtime_ns == before

    # The report from the fleet's results: every number traces to a fetched raw file.
    ok(run_cmd(["make", "--no-print-directory", "report", f"RESULTS={results}",
                f"BUNDLES_DIR={bundles}"]))
    report = results / "report"
    checked, unmeasured = trace_report(report, results / "bench")
    assert checked == 2 * 3 + 2 * 1 + 2 * 1  # latency and throughput per batch, memory; 2 devices
    assert {r["vs_baseline"] for r in unmeasured} == {"no power sensor on this device"}
    md = (report / "report.md").read_text()
    assert "pi-sim" in md and "jetson-sim" in md
    assert md.count("its server answered no generation requests during the measurements") == 2
    assert "![samples of tiny-dcgan](figures/samples-tiny-dcgan.png)" in md  # from BUNDLES_DIR


def _signal_bench(pid: int, name: str, check: bool = True) -> None:
    """SIGSTOP / SIGCONT the benchmark on the Jetson stand-in and its workers (its own process
    group, started with a new session), as the server's user inside the container."""
    result = run_cmd(["docker", "exec", "edgegen-edge-jetson-sim", "python3", "-c",
                      f"import os, signal; os.killpg({pid}, signal.SIG{name})"])
    if check:
        ok(result)


def _until(proc: subprocess.Popen, text: bytes, timeout: float) -> bytes:
    """proc's output (an unbuffered pipe) until it shows `text`, ends, or `timeout` passes."""
    deadline, out = time.monotonic() + timeout, b""
    while text not in out and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            out += chunk
    return out


def test_a_stopped_controller_leaves_the_benchmark_running_and_the_next_run_joins_it(
        fleet, tmp_path):
    results, bundles = tmp_path / "results", tmp_path / "bundles"
    shutil.copytree(fleet.bundles, bundles)
    args = [sys.executable, "-m", "fleet", "bench", "--device", "jetson", "--inventory",
            str(fleet.inventory), "--results", str(results), "--bundles", str(bundles),
            "--repeats", "3", "--runs", "5000", "--warmup", "1", "--batches", "1,4",
            "--window", "0", "-e", "edgegen_bench_poll_delay=1", "-e", "edgegen_bench_timeout=600"]
    state = fleet.root / "jetson-sim/opt/edgegen/cache/bench/bench.state.json"
    state.unlink(missing_ok=True)
    controller = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (state.exists() and json.loads(state.read_text())["rc"] is None):
        assert time.monotonic() < deadline and controller.poll() is None, "no benchmark started"
        time.sleep(0.1)
    pid = json.loads(state.read_text())["pid"]
    # The benchmark is held still until the next controller has joined it, so it is running
    # however fast this host measures (rather than sized to outlast both controllers: minutes).
    # A controller that killed it on Ctrl-C is still caught: SIGKILL ends a stopped process
    # now, and a pending SIGTERM or SIGHUP ends it at SIGCONT, before the run it joined is done.
    _signal_bench(pid, "STOP")
    try:
        controller.send_signal(2)  # Ctrl-C
        out = controller.communicate(timeout=120)[0]
        assert "interrupted: benchmarks already started keep running" in out, out[-3000:]
        status = json.loads(ok(run_cmd(["docker", "exec", "edgegen-edge-jetson-sim", "python3",
                                        "-m", "edge_app", "bench", "--status", "--out",
                                        "/var/lib/edgegen/cache/bench"])))
        assert (status["state"], status["pid"]) == ("running", pid), status
        again = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, bufsize=0)
        joined = _until(again, b"Start the benchmark", timeout=300)
    finally:
        _signal_bench(pid, "CONT", check=False)
    out = (joined + again.communicate(timeout=900)[0]).decode()
    assert again.returncode == 0, out[-6000:]
    assert re.search(r"jetson-sim\s+ok\s+Start the benchmark", out), out[-4000:]  # joined
    assert json.loads(state.read_text())["pid"] == pid
    assert re.search(r"^jetson-sim\s+jetson\s+done\s+3\s", out, re.M), out[-4000:]
    assert len(list((results / "jetson-sim" / "tiny-dcgan").glob("repeat-*.json"))) == 3


def test_bench_on_a_device_without_the_server_says_deploy_first(fleet, tmp_path):
    result = run_cmd([sys.executable, "-m", "fleet", "bench", "--device", "jetson",
                      "--inventory", str(fleet.inventory), "--results", str(tmp_path / "results"),
                      "-e", "edgegen_container_name=edgegen-not-deployed"])
    assert result.returncode == 1, result.stdout[-3000:]
    assert re.search(r"^jetson-sim\s+jetson\s+failed\s+0\s+-$", result.stdout, re.M)
    assert "jetson-sim: no running edgegen-not-deployed container on jetson-sim: deploy first " \
           "(make deploy DEVICE=jetson)" in result.stdout
    assert "1 of 1 device(s) failed: jetson-sim" in result.stdout


ARM64_LITERT = """
import importlib.util, json, sys
import numpy as np
from edge_app.bundle import load_bundle
from edge_app.config import Config
from edge_app.runtime import load_model
model = load_model(load_bundle(sys.argv[1]), Config())
images = model.generate(4, seed=7)
print(json.dumps({"runtime": model.runtime, "placement": model.placement,
                  "images": images.tolist(),
                  "onnxruntime": importlib.util.find_spec("onnxruntime") is not None}))
"""


def test_a_pi_class_serving_litert_bundles_only_gets_an_image_without_onnx_runtime(
        fleet, dcgan_bundle, tmp_path):
    """LiteRT on arm64 (under qemu: correctness only, not Pi timings). A Pi class serving the
    tiny DCGAN's FP32 and INT8 LiteRT bundles gets, as a deploy builds it, an image with LiteRT
    and without ONNX Runtime, under 300 MB (built beside the other tiers by tests/e2e/prebuild.py,
    so from Docker's cache here). In it the bundles draw seeded images that match the ONNX
    bundle run here, and its server serves both over HTTP."""
    from edge_app.bundle import load_bundle
    from edge_app.config import Config
    from edge_app.runtime import load_model
    from fleet.deploy import with_runtimes
    from fleet.images import LITERT_LABEL, RUNTIME_LABEL, ImageSpec, build
    from fleet.inventory import rollout_hosts

    from .. import litert_graphs
    from ..conftest import free_port

    checkpoint = dcgan_bundle.parent / "runs" / "tiny-dcgan" / "seed0" / "baseline.pt"
    source = fleet.bundles / "tiny-dcgan"
    bundles = {precision: Path(path) for precision, path in json.loads(litert_graphs.run(
        "bundles", str(checkpoint), str(source), str(tmp_path))).items()}
    hosts = {host: {**settings, "edgegen_bundles": [b.name for b in bundles.values()]}
             for host, settings in rollout_hosts(fleet.inventory, "pi").items()}
    spec = ImageSpec.for_hosts("pi", with_runtimes(hosts, bundles["fp32"].parent))
    assert spec.tag == f"edgegen-edge:{__version__}-pi-arm64-litert"
    build(spec)
    info = json.loads(ok(run_cmd(["docker", "image", "inspect", spec.tag])))[0]
    labels = info["Config"]["Labels"]
    assert labels[RUNTIME_LABEL] == "none" and labels[LITERT_LABEL].startswith("ai-edge-litert ")
    print(f"pi image for LiteRT bundles: {info['Size'] / 1e6:.0f} MB")
    assert info["Size"] <= 300e6, "the Pi image must stay within 300 MB"

    reference = load_model(load_bundle(source), Config(), placement=False).generate(4, seed=7)
    mounts = [a for b in bundles.values() for a in ("-v", f"{b}:/bundles/{b.name}:ro")]
    for precision, bundle in bundles.items():
        out = json.loads(ok(run_cmd([
            # root: the test's directories are private to this machine's user
            "docker", "run", "--rm", "--platform", "linux/arm64", "--network", "none", "--user",
            "0:0", *mounts, "--entrypoint", "/opt/edgegen/bin/python", spec.tag, "-c",
            ARM64_LITERT, f"/bundles/{bundle.name}"])).strip().splitlines()[-1])
        assert out["runtime"] == "LiteRT-XNNPACK" and out["placement"].get("XNNPACK"), out
        assert out["onnxruntime"] is False
        images = np.asarray(out["images"], np.float32)
        if precision == "fp32":
            assert np.max(np.abs(images - reference)) <= 1e-4
        else:
            assert 10 * np.log10(4.0 / np.mean((images - reference) ** 2)) >= 20

    port, name = free_port(), f"edgegen-litert-only-{os.getpid()}"
    ok(run_cmd(["docker", "run", "-d", "--name", name, "--platform", "linux/arm64",
                "--network", "host", "--user", "0:0", *mounts, "-e", "EDGEGEN_HOST=127.0.0.1",
                "-e", f"EDGEGEN_PORT={port}", "-e", "EDGEGEN_BUNDLES=" + ",".join(
                    f"/bundles/{b.name}" for b in bundles.values()), spec.tag]))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(2)
        for bundle in bundles.values():
            name_of = json.loads((bundle / "manifest.json").read_text())["name"]
            r = requests.post(f"http://127.0.0.1:{port}/v1/images/generations", timeout=120,
                              json={"model": name_of, "n": 2, "seed": 7})
            assert r.status_code == 200 and len(r.json()["data"]) == 2, r.text
    finally:
        logs = run_cmd(["docker", "logs", name])
        run_cmd(["docker", "rm", "-f", name])
    assert "Traceback" not in logs.stdout + logs.stderr, (logs.stdout + logs.stderr)[-3000:]
