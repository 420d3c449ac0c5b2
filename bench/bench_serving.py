"""Serving overhead, side by side in one run: the same bundle through HTTP (the real gunicorn
server on 127.0.0.1) and through the runtime called directly in this process.

Usage (from the repo root):

    .venv/bin/python bench/bench_serving.py [--rounds 30] [--new 128] [--threads 2]
        [--image-seconds 8] [--out bench/results/serving.json]

Text: the paper's student shape as an INT8 bundle (bench/serving.py), a fixed prompt, greedy,
`--new` tokens. Each round times one HTTP completion (client wall time: request to parsed
response) and one direct `TextModel.generate` (the server's own decode loop, no HTTP), the order alternating
by round with a pause before each run; the figure is the median over rounds, and the target is HTTP p50 within 5% of
direct. Images: the default DCGAN bundle, sequential requests at batch (n) 1 and 8 for
`--image-seconds` each, through HTTP (PNG-encoded, base64 JSON) and direct (the ONNX Runtime
run alone). Both sides use the same ONNX Runtime thread count, and only one side runs at a
time. Raw numbers and the environment go to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "The while statement is used for repeated execution as long as an expression is true"
TARGET = 1.05
# Between timed runs: ONNX Runtime's worker threads spin briefly after a run, and the other
# side's spinning threads must not steal this side's cores.
PAUSE_S = 0.2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image-seconds", type=float, default=8.0)
    p.add_argument("--port", type=int, default=18181)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    return p.parse_args(argv)


def bench_text(server, bundle: Path, args) -> dict:
    from edge_app.bundle import load_bundle
    from edge_app.textgen import TextModel

    model = TextModel.load(load_bundle(bundle), args.threads)
    ids = model.encode(PROMPT)
    body = {"model": "student-int8", "prompt": PROMPT, "max_tokens": args.new,
            "temperature": 0}
    http, direct, served = [], [], []
    with requests.Session() as session:
        def over_http():
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            r = session.post(server.base + "/v1/completions", json=body, timeout=300)
            elapsed = time.perf_counter() - t0
            r.raise_for_status()
            return elapsed, r.json()

        def in_process():
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            gen = model.generate(ids, args.new)
            return time.perf_counter() - t0, gen

        for i in range(args.rounds + 1):  # round 0 warms both sides
            if i % 2:  # alternate which side goes first
                (t_http, got), (t_direct, gen) = over_http(), in_process()
            else:
                (t_direct, gen), (t_http, got) = in_process(), over_http()
            if got["usage"]["completion_tokens"] != len(gen.tokens):
                raise SystemExit(f"HTTP generated {got['usage']['completion_tokens']} tokens, "
                                 f"direct {len(gen.tokens)}: not the same work")
            if i:
                http.append(t_http)
                direct.append(t_direct)
                served.append(got["timings"])
    tokens = len(gen.tokens)
    p50_http, p50_direct = statistics.median(http), statistics.median(direct)
    ratios = [h / d for h, d in zip(http, direct)]
    return {"prompt_tokens": len(ids), "new_tokens": tokens,
            "paired_ratio_median": statistics.median(ratios),
            "http_s": http, "direct_s": direct,
            "p50_http_s": p50_http, "p50_direct_s": p50_direct,
            "http_tok_s": tokens / p50_http, "direct_tok_s": tokens / p50_direct,
            "ratio_http_over_direct": p50_http / p50_direct,
            "server_decode_tok_s_p50": statistics.median(t["tokens_per_second"] for t in served),
            "server_ttft_ms_p50": statistics.median(t["time_to_first_token_ms"] for t in served)}


def bench_images(server, bundle: Path, args) -> dict:
    from edge_app.bundle import load_bundle
    from edge_app.config import load_config
    from edge_app.runtime import load_model

    model = load_model(load_bundle(bundle), load_config({"intra_op_threads": args.threads},
                                                        environ={}), placement=False)
    name = model.name
    out = {}
    with requests.Session() as session:
        for n in (1, 8):
            body = {"model": name, "n": n, "seed": 1}
            session.post(server.base + "/v1/images/generations", json=body, timeout=60)
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.image_seconds:
                r = session.post(server.base + "/v1/images/generations", json=body, timeout=60)
                r.raise_for_status()
                count += 1
            http_rps = count / (time.perf_counter() - t0)
            model.generate(n, 1)
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.image_seconds:
                model.generate(n, 1)
                count += 1
            direct_rps = count / (time.perf_counter() - t0)
            out[f"batch_{n}"] = {"http_req_s": http_rps, "http_images_s": http_rps * n,
                                 "direct_req_s": direct_rps, "direct_images_s": direct_rps * n,
                                 "http_share_of_direct": http_rps / direct_rps}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from bench.machine import cpu_info, cpu_load
    from bench.serving import WORK, Server, image_bundle, text_bundle

    WORK.mkdir(parents=True, exist_ok=True)
    text, image = text_bundle(args.threads), image_bundle()
    load_before = cpu_load()
    server = Server([text, image], args.port,
                    env={"EDGEGEN_INTRA_OP_THREADS": str(args.threads),
                         "EDGEGEN_POWER_SENSOR": "none"})
    try:
        text_result = bench_text(server, text, args)
        image_result = bench_images(server, image, args)
    finally:
        server.stop()
    import onnxruntime

    method = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
              "cpu": cpu_info(), "load_before": load_before, "load_after": cpu_load(),
              "threads": args.threads, "rounds": args.rounds,
              "text": f"student shape INT8, greedy, {args.new} new tokens; HTTP = client wall "
                      f"time of POST /v1/completions (non-streamed); direct = "
                      f"TextModel.generate in process; median over rounds, alternating",
              "images": f"sequential requests for {args.image_seconds} s per batch size; "
                        f"HTTP includes PNG encoding and base64; direct = ORT run only"}
    t = text_result
    print(f"\nText, {t['new_tokens']} new tokens after a {t['prompt_tokens']}-token prompt "
          f"(median of {args.rounds} rounds):")
    print(f"  {'path':<10} {'p50 s':>8} {'tok/s':>8}")
    print(f"  {'direct':<10} {t['p50_direct_s']:>8.4f} {t['direct_tok_s']:>8.1f}")
    print(f"  {'HTTP':<10} {t['p50_http_s']:>8.4f} {t['http_tok_s']:>8.1f}")
    print(f"  HTTP / direct: p50s {t['ratio_http_over_direct']:.3f}, median of per-round ratios "
          f"{t['paired_ratio_median']:.3f}  (server-side decode "
          f"{t['server_decode_tok_s_p50']:.1f} tok/s, TTFT {t['server_ttft_ms_p50']:.1f} ms)")
    print("\nImages (DCGAN digits), sequential requests:")
    print(f"  {'batch':<6} {'HTTP req/s':>11} {'direct req/s':>13} {'HTTP images/s':>14} "
          f"{'HTTP/direct':>12}")
    for key, r in image_result.items():
        print(f"  {key.split('_')[1]:<6} {r['http_req_s']:>11.1f} {r['direct_req_s']:>13.1f} "
              f"{r['http_images_s']:>14.1f} {r['http_share_of_direct']:>12.2f}")
    ok = t["ratio_http_over_direct"] <= TARGET
    print(f"\n{'PASS' if ok else 'FAIL'}: text HTTP p50 within 5% of direct "
          f"(ratio {t['ratio_http_over_direct']:.3f}, target <= {TARGET})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"method": method, "text": text_result,
                                    "images": image_result}, indent=1) + "\n")
    print(f"raw numbers: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
