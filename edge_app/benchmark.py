"""`python -m edge_app bench`: the device-side benchmark (the paper's method), torch-free so it
runs inside a device image.

For each bundle and each repeat, in a fresh process (so peak RSS is that bundle's own):
warm-up, then `runs` timed runs of a fixed workload:
- images: batch 1 and a larger batch; latency p50/p95/mean ± std, images/s;
- text: a fixed prompt set, `new_tokens` greedy tokens each; latency, time to first token,
  decode tokens/s.
Where a power sensor exists, the idle baseline is measured first (before any bundle loads),
then each workload runs back to back for a fixed window (`window_s`, 60 s in the paper) while
the sensor is sampled at 10 Hz: mean power above the baseline, and energy per image / per token
(the window's energy above baseline over the items produced). With no sensor, the power fields
are null and say why.

Results: `<out>/<device>/<bundle>/repeat-<k>.json`, each carrying its method (sensor and scope,
repeats, seed, runtime and providers, CPU features). A run interrupted halfway resumes: a
repeat whose file exists with the same workload is not run again.

One run at a time per results directory, detached if asked: see edge_app.benchrun. The
workload and its options: edge_app.workload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .benchrun import exclusive, now, start_background, status
from .bundle import MANIFEST, BundleError, Manifest, load_bundle
from .config import ConfigError, load_config
from .litert import litert_version
from .power import NO_SENSOR, PowerSampler, SensorError, detect
from .system import cpu_info, memory
from .workload import Workload, add_workload_args, workload_from_args


def latency_stats(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(seconds), "p50_s": statistics.median(seconds), "p95_s": p95,
            "mean_s": statistics.fmean(seconds),
            "std_s": statistics.stdev(seconds) if len(seconds) > 1 else 0.0}


def _window(sampler: PowerSampler | None, work, window_s: float) -> dict:
    """Run `work()` (returns items produced) back to back for window_s; energy above baseline."""
    if sampler is None or window_s <= 0:
        return {"power_w": None, "energy_j": None,
                "energy_note": NO_SENSOR if sampler is None else "power window disabled"}
    items, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < window_s:
        items += work()
    t1 = time.monotonic()
    time.sleep(2 * sampler.period)  # a sample after the window's end
    joules = sampler.energy(t0, t1)
    if joules is None:
        return {"power_w": None, "energy_j": None, "energy_note": "no samples in the window"}
    return {"power_w": joules / (t1 - t0), "energy_j": joules, "window_s": t1 - t0,
            "items": items, "energy_per_item_j": joules / items if items else None}


def _bench_images(model, w: Workload, sampler) -> dict:
    out = {}
    for batch in w.image_batches:
        for i in range(w.warmup):
            model.generate(batch, w.seed + i)
        times = []
        for i in range(w.runs):
            t0 = time.perf_counter()
            model.generate(batch, w.seed + i)
            times.append(time.perf_counter() - t0)
        stats = latency_stats(times)
        seeds = iter(range(w.seed, w.seed + 10**9))
        out[f"batch_{batch}"] = {
            "batch": batch, "latency": stats, "images_per_s": batch / stats["mean_s"],
            "power": _window(sampler, lambda: (model.generate(batch, next(seeds)), batch)[1],
                             w.window_s)}
    return out


def _bench_text(model, w: Workload, sampler) -> dict:
    ctx = model.spec.context_length
    # Prompts keep at most half the context, so every run has room for new tokens.
    prompts = [model.encode(p)[: max(1, ctx // 2)] for p in w.prompts]
    new = [min(w.new_tokens, ctx - len(p)) for p in prompts]

    def run(i: int):
        k = i % len(prompts)
        return model.generate(prompts[k], new[k], stop_at_eos=False)

    for i in range(w.warmup):
        run(i)
    latency, ttft, tps = [], [], []
    for i in range(w.runs):
        t0 = time.perf_counter()
        gen = run(i)
        latency.append(time.perf_counter() - t0)
        ttft.append(gen.prompt_ms / 1000.0)
        if gen.tokens_per_second:
            tps.append(gen.tokens_per_second)
    counter = iter(range(10**9))
    return {"generate": {
        "new_tokens": new, "prompt_tokens": [len(p) for p in prompts],
        "latency": latency_stats(latency), "time_to_first_token": latency_stats(ttft),
        "tokens_per_s_mean": statistics.fmean(tps) if tps else None,
        "tokens_per_s_std": statistics.stdev(tps) if len(tps) > 1 else 0.0,
        "power": _window(sampler, lambda: len(run(next(counter)).tokens), w.window_s)}}


def run_worker(bundle_dir: str, w: Workload, sensor_name: str, sensor_root: str,
               baseline_w: float | None) -> dict:
    """One bundle, one repeat, in this (fresh) process."""
    from .runtime import load_model

    # The device's own server settings (EDGEGEN_* or EDGEGEN_CONFIG: execution providers,
    # TensorRT cache) apply, so the benchmark runs what the server would.
    config = load_config({"intra_op_threads": w.threads} if w.threads else {})
    before = memory(Path("/")).get("rss", 0)
    model = load_model(load_bundle(bundle_dir), config, placement=False)  # its own memory only
    sampler = None
    if sensor_name != "none":
        sampler = PowerSampler(detect(sensor_root, sensor_name)).start()
        sampler.baseline_w = baseline_w or 0.0
    try:
        task = model.bundle.manifest.task
        results = (_bench_text if task == "text-generation" else _bench_images)(model, w, sampler)
    finally:
        if sampler is not None:
            sampler.stop()
    mem = memory(Path("/"))
    return {"bundle": model.name, "task": task, "runtime": model.runtime,
            "providers": model.session.get_providers(), "workloads": results,
            "memory": {"peak_rss_bytes": mem.get("peak_rss"), "rss_before_load_bytes": before}}


def _method(w: Workload, sensor, baseline_w: float | None, repeats: int) -> dict:
    from . import onnxrt

    return {
        "tool": f"edgegen {__version__} (python -m edge_app bench)",
        "workload": {k: v for k, v in asdict(w).items()}, "repeats": repeats,
        "power": ({"sensor": sensor.name, "scope": sensor.scope, "hz": 10.0,
                   "idle_baseline_w": baseline_w, "method": "energy above the idle baseline "
                   "over a back-to-back window, trapezoid rule"} if sensor else
                  {"sensor": None, "note": NO_SENSOR}),
        "latency": "time.perf_counter around each run; p95 by nearest rank",
        "peak_rss": "VmHWM of a fresh process per bundle and repeat",
        "runtime": {"onnxruntime": onnxrt.version(),
                    "available_providers": onnxrt.available_providers(),
                    **({"ai-edge-litert": litert_version()} if litert_version() else {}),
                    "python": platform.python_version()},
        "cpu": cpu_info(),
    }


def served(url: str) -> tuple[float | None, str]:
    """(generation requests the server at `url` has answered, from its /metrics; or None and
    why not)."""
    import urllib.error
    import urllib.request

    from .api import ROUTE_OF_TASK

    routes = [f'endpoint="{r}"' for r in ROUTE_OF_TASK.values()]
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return None, f"could not read {url}/metrics: {exc}"
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("edgegen_requests_total{") and any(r in line for r in routes))
    return total, ""


def _traffic(url: str, before: tuple[float | None, str], after: tuple[float | None, str]
             ) -> dict:
    """What the device's server answered while a repeat was measured (they share the device)."""
    if before[0] is None or after[0] is None:
        return {"url": url, "generation_requests_during": None, "note": before[1] or after[1]}
    return {"url": url, "generation_requests_during": after[0] - before[0]}


def server_url() -> str:
    """The server of the device this runs on, as its container environment describes it
    (EDGEGEN_PORT, EDGEGEN_HOST); "" outside one."""
    port = os.environ.get("EDGEGEN_PORT", "")
    if not port:
        return ""
    host = os.environ.get("EDGEGEN_HOST", "")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def benchmark(bundles: list[str], out: Path, device: str, w: Workload, repeats: int,
              sensor_name: str = "auto", sensor_root: str = "/", baseline_s: float = 10.0,
              log=print, device_class: str = "", server: str = "") -> list[Path]:
    """Every bundle x repeat, each in a fresh process; skips repeats already on disk. With a
    `server` URL, each repeat records the generation requests that server answered meanwhile."""
    loaded = [load_bundle(b) for b in bundles]  # refuse a bad bundle before measuring anything
    sensor = detect(sensor_root, sensor_name)
    baseline_w = None
    if sensor is not None and w.window_s > 0:
        sampler = PowerSampler(sensor).start()
        try:
            baseline_w = sampler.measure_baseline(baseline_s)
        finally:
            sampler.stop()
        log(f"power: {sensor.name}, idle baseline {baseline_w:.3f} W over {baseline_s:g} s")
    else:
        log(f"power: {NO_SENSOR if sensor is None else 'window disabled'}")
    method = _method(w, sensor, baseline_w, repeats)
    stored_workload = json.loads(json.dumps(method["workload"]))  # tuples as stored (lists)
    written, total, done = [], len(bundles) * repeats, 0
    started = time.monotonic()
    for bundle in loaded:
        name = bundle.manifest.name
        facts = {"bundle_dir": str(bundle.path.resolve()),
                 "manifest_sha256": _manifest_sha(bundle.path),
                 "manifest": _manifest_facts(bundle.manifest)}
        for k in range(1, repeats + 1):
            path = out / device / name / f"repeat-{k}.json"
            done += 1
            if _measured(path, stored_workload, facts["manifest_sha256"]):
                log(f"[{done}/{total}] {name} repeat {k}: already measured, kept")
                written.append(path)
                continue
            before = served(server) if server else None
            result = _spawn(str(bundle.path), w, sensor.name if sensor else "none",
                            sensor_root, baseline_w)
            if server:
                result["server"] = _traffic(server, before, served(server))
            record = {"device": device, "device_class": device_class or device, "repeat": k,
                      **facts, **result, "method": method,
                      "measured_at": now()}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(path)  # a repeat is on disk whole or not at all
            written.append(path)
            elapsed = time.monotonic() - started
            log(f"[{done}/{total}] {name} repeat {k}: {_headline(result)} "
                f"({elapsed:.0f} s elapsed)")
    return written


def _measured(path: Path, workload: dict, manifest_sha256: str) -> bool:
    """Whether `path` holds a repeat of this workload on this very bundle (a rebuilt bundle,
    same name, is measured again)."""
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text())
        return (old["method"]["workload"] == workload
                and old.get("manifest_sha256") == manifest_sha256)
    except (ValueError, KeyError, TypeError):
        return False  # unreadable: measured again, and replaced whole


def _manifest_facts(m: Manifest) -> dict:
    """What the report needs of the bundle: family, precision, techniques, the optimizer's
    measured metrics (size, complexity, quality)."""
    recipe = m.provenance.get("recipe") or {}
    return {"name": m.name, "task": m.task, "family": m.family, "precision": m.precision,
            "techniques": [t.name for t in m.techniques],
            "metrics": {k: v for k, v in m.metrics.items() if k != "measured"},
            "model_sha256": m.files[m.model_file].sha256,
            "recipe": {"path": recipe.get("path"), "sha256": recipe.get("sha256")}}


def _manifest_sha(bundle_dir: Path) -> str:
    import hashlib

    return hashlib.sha256((bundle_dir / MANIFEST).read_bytes()).hexdigest()


def _headline(result: dict) -> str:
    parts = []
    for key, wl in result["workloads"].items():
        parts.append(f"{key} p50 {wl['latency']['p50_s'] * 1e3:.2f} ms")
        if wl.get("tokens_per_s_mean"):
            parts.append(f"{wl['tokens_per_s_mean']:.0f} tok/s")
    return ", ".join(parts)


def _die_with_parent(parent: int | None) -> None:
    """Linux: a worker is killed with its benchmark process (PR_SET_PDEATHSIG), so a killed
    run leaves nothing measuring beside the run that resumes it."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def _spawn(bundle_dir: str, w: Workload, sensor_name: str, sensor_root: str,
           baseline_w: float | None) -> dict:
    args = json.dumps({"bundle": bundle_dir, "workload": asdict(w), "sensor": sensor_name,
                       "root": sensor_root, "baseline_w": baseline_w, "parent": os.getpid()})
    run = subprocess.run([sys.executable, "-m", "edge_app", "bench", "--worker", args],
                         capture_output=True, text=True, env={**os.environ})
    if run.returncode != 0:
        raise RuntimeError(f"benchmark of {bundle_dir} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[2:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m edge_app bench", allow_abbrev=False,
                                description="Measure bundles on this device (the paper's method).")
    p.add_argument("--bundle", action="append", dest="bundles", metavar="DIR")
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.add_argument("--device", default=platform.node() or "device",
                   help="device name for the results (default: the hostname)")
    p.add_argument("--device-class", default="",
                   help="the device's fleet class (default: the device name)")
    add_workload_args(p)
    p.add_argument("--sensor", default="auto", help="power sensor: auto, none or a backend")
    p.add_argument("--sensor-root", default="/", help="sysfs root of the sensor (tests)")
    p.add_argument("--server", default=None,
                   help="the device's edge server, whose generation requests during each repeat "
                        "are recorded (default: from EDGEGEN_HOST/EDGEGEN_PORT, as in the "
                        "server's container; '' for none)")
    p.add_argument("--background", action="store_true",
                   help="run detached (log: <out>/bench.log) unless one already runs on --out; "
                        "prints its status as JSON")
    p.add_argument("--status", action="store_true",
                   help="print the status of the latest run on --out as JSON and exit")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        _die_with_parent(job.get("parent"))
        w = Workload.from_dict(job["workload"])
        print(json.dumps(run_worker(job["bundle"], w, job["sensor"], job["root"],
                                    job["baseline_w"])))
        return 0
    if args.status:
        print(json.dumps(status(args.out)))
        return 0
    try:
        if not args.bundles:
            raise BundleError("no bundles: pass --bundle DIR (repeatable)")
        w = workload_from_args(args)
        if args.background:
            for b in args.bundles:  # a bad bundle is refused here, not in a log on the device
                load_bundle(b)
            print(json.dumps(start_background(args.out, [a for a in argv
                                                         if a != "--background"])))
            return 0
        with exclusive(args.out, argv) as state:
            state["rc"] = 1  # anything below but a clean end
            try:
                written = benchmark(args.bundles, args.out, args.device, w, args.repeats,
                                    args.sensor, args.sensor_root, args.baseline,
                                    device_class=args.device_class,
                                    server=server_url() if args.server is None else args.server)
                state["files"] = [str(f.relative_to(args.out)) for f in written]
                state["rc"] = 0
            except (BundleError, ConfigError, SensorError, RuntimeError):
                state["rc"] = 2
                raise
    except (BundleError, ConfigError, SensorError, RuntimeError) as exc:
        print(f"edgegen bench: error: {exc}", file=sys.stderr)
        return 2
    return 0
