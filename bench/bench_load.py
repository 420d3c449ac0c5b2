"""Bounded load: many concurrent clients against the real server, twice, to show that
overload is refused cleanly (only 200, or 503 with Retry-After; never another 5xx, a reset or
a hang) and that memory does not creep (the worker's RSS after an identical second round
within 5% of the first).

Usage (from the repo root):

    .venv/bin/python bench/bench_load.py [--clients 64] [--seconds 60] [--out bench/results/load.json]

Serves the student INT8 text bundle and the default DCGAN (bench/serving.py) with the default
admission settings (2 generations at once, 16 waiting). Each client loops until the round
ends over a seeded mix: images (n = 1 or 8), completions (16 or 64 tokens, a quarter of them
streamed); a 503 is retried after its Retry-After (capped at 1 s), as a polite client would.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_RSS_GROWTH = 0.05


def _bodies(text_model: str, image_model: str) -> list[tuple[str, dict]]:
    prompt = "The import statement"
    return [
        ("/v1/images/generations", {"model": image_model, "n": 1}),
        ("/v1/images/generations", {"model": image_model, "n": 8}),
        ("/v1/completions", {"model": text_model, "prompt": prompt, "max_tokens": 16}),
        ("/v1/completions", {"model": text_model, "prompt": prompt, "max_tokens": 64}),
        ("/v1/completions", {"model": text_model, "prompt": prompt, "max_tokens": 64,
                             "stream": True}),
    ]


def _client(base: str, bodies, seed: int, deadline: float, out: dict, lock) -> None:
    rng = random.Random(seed)
    statuses, problems, latencies = Counter(), [], []
    with requests.Session() as session:
        while time.monotonic() < deadline:
            route, body = bodies[rng.randrange(len(bodies))]
            body = {**body, "seed": rng.randrange(1 << 30)}
            t0 = time.monotonic()
            try:
                r = session.post(base + route, json=body, timeout=120, stream=True)
                if body.get("stream") and r.status_code == 200:
                    lines = [ln for ln in r.iter_lines() if ln]
                    if not lines or lines[-1] != b"data: [DONE]":
                        problems.append(f"stream ended without [DONE]: {lines[-1:]}")
                else:
                    r.content  # read the whole answer
            except requests.RequestException as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.monotonic() - t0)
            statuses[r.status_code] += 1
            if r.status_code == 503:
                retry = r.headers.get("Retry-After")
                if retry is None or not retry.isdigit():
                    problems.append(f"503 without a valid Retry-After: {retry!r}")
                    continue
                time.sleep(min(int(retry), 1) * rng.uniform(0.5, 1.0))
            elif r.status_code != 200:
                problems.append(f"{r.status_code}: {r.text[:200]}")
    with lock:
        out["statuses"].update(statuses)
        out["problems"] += problems
        out["latencies"] += latencies


def run_round(base: str, bodies, clients: int, seconds: float, seed: int = 0) -> dict:
    out = {"statuses": Counter(), "problems": [], "latencies": []}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_client, args=(base, bodies, seed * 1000 + i, deadline,
                                                      out, lock)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 180)
    hung = sum(t.is_alive() for t in threads)
    lat = sorted(out["latencies"])
    return {"clients": clients, "seconds": round(time.monotonic() - started, 1),
            "statuses": {str(k): v for k, v in sorted(out["statuses"].items())},
            "problems": out["problems"][:20], "problem_count": len(out["problems"]),
            "hung_clients": hung,
            "latency_p50_s": statistics.median(lat) if lat else None,
            "latency_p99_s": lat[int(0.99 * (len(lat) - 1))] if lat else None}


def load_test(base: str, text_model: str, image_model: str, clients: int,
              seconds: float) -> dict:
    """Two identical rounds; the worker's RSS after each (settled)."""
    from bench.serving import worker_rss

    bodies = _bodies(text_model, image_model)
    rounds = []
    for i in range(2):
        result = run_round(base, bodies, clients, seconds, seed=0)
        time.sleep(1.0)
        result["worker_rss_bytes"] = worker_rss(base)
        rounds.append(result)
    growth = rounds[1]["worker_rss_bytes"] / rounds[0]["worker_rss_bytes"] - 1
    bad = [r for r in rounds if r["problem_count"] or r["hung_clients"]
           or set(r["statuses"]) - {"200", "503"}]
    return {"rounds": rounds, "rss_growth": growth, "clean": not bad,
            "rss_ok": growth <= MAX_RSS_GROWTH}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--port", type=int, default=18182)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = p.parse_args(argv)
    import onnxruntime

    from bench.machine import cpu_info, cpu_load
    from bench.serving import WORK, Server, image_bundle, text_bundle
    from edge_app.config import Config

    WORK.mkdir(parents=True, exist_ok=True)
    text, image = text_bundle(), image_bundle()
    server = Server([text, image], args.port, env={"EDGEGEN_POWER_SENSOR": "none"})
    try:
        result = load_test(server.base, "student-int8", image.name, args.clients, args.seconds)
    finally:
        code = server.stop()
    defaults = Config()
    result["method"] = {
        "cpu": cpu_info(), "load_after": cpu_load(), "onnxruntime": onnxruntime.__version__,
        "admission": {"max_concurrent": defaults.max_concurrent,
                      "max_queue": defaults.max_queue,
                      "queue_timeout_s": defaults.queue_timeout_s,
                      "threads": defaults.gunicorn_threads},
        "rss": "edgegen_memory_bytes{kind=rss} of the worker, 1 s after each round",
        "mix": "images n=1|8, completions 16|64 tokens, 1 in 5 streamed; 503 retried after "
               "Retry-After (capped at 1 s)"}
    result["server_exit_code"] = code
    for i, r in enumerate(result["rounds"], 1):
        print(f"round {i}: {r['clients']} clients, {r['seconds']} s, statuses {r['statuses']}, "
              f"p50 {r['latency_p50_s']:.3f} s, p99 {r['latency_p99_s']:.3f} s, problems "
              f"{r['problem_count']}, hung {r['hung_clients']}, worker RSS "
              f"{r['worker_rss_bytes'] / 2**20:.1f} MiB")
        for problem in r["problems"][:5]:
            print(f"    {problem}")
    print(f"RSS growth round 1 -> 2: {100 * result['rss_growth']:+.2f}% (limit "
          f"+{100 * MAX_RSS_GROWTH:.0f}%); server exit code {code}")
    print(f"{'PASS' if result['clean'] else 'FAIL'}: only 200 or 503 with Retry-After, no "
          f"errors or hangs")
    print(f"{'PASS' if result['rss_ok'] else 'FAIL'}: RSS growth within 5%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"raw numbers: {args.out}")
    return 0 if result["clean"] and result["rss_ok"] and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
