"""Helpers shared by the serving benchmarks: the bundles they serve and a server process.

The text bundle is the paper's student shape (6 layers, 384 hidden, 6 heads, GPT-2's
50257-token vocabulary, 1024 positions), randomly initialised (weights do not change speed),
exported and INT8-quantized by the kit's own pipeline (bench_text_decode.build, cached), with
a byte-level BPE tokenizer trained on Python's bundled documentation. The image bundle is the
default DCGAN (`make bundles`), built when missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench-serving"


def text_bundle(threads: int = 2) -> Path:
    """build/bench-serving/student-int8: the student INT8 graph + a trained tokenizer."""
    from edge_app.bundle import load_bundle, write_bundle

    out = WORK / "student-int8"
    if (out / "manifest.json").exists():
        return load_bundle(out).path
    from bench.bench_text_decode import build, parse_args
    from optimizer.text.corpus import load_corpus
    from optimizer.text.tokenizer import eos_id, train_tokenizer

    info = build("student", parse_args(["--threads", str(threads)]))
    graphs = ROOT / "build" / "bench-text" / "student-seed0"
    sections = json.loads((graphs / "sections.json").read_text())
    corpus = load_corpus("pydoc", None)
    tok = train_tokenizer(corpus.train, sections["generation"]["vocab_size"])
    WORK.mkdir(parents=True, exist_ok=True)
    tok_file = WORK / "tokenizer.json"
    tok.save(str(tok_file))
    eos = eos_id(tok)  # the trained tokenizer's, in place of the random-init config's
    gen = dict(sections["generation"], eos_token_id=eos, eos_token_ids=[eos], bos_token_id=eos)
    now = datetime.now(timezone.utc)
    manifest = {
        "name": "student-int8", "task": "text-generation", "family": "gpt2", "precision": "int8",
        "techniques": [
            {"name": "random-init", "params": {"shape": info["shape"], "seed": 0,
                                               "note": "benchmark only: weights do not change "
                                                       "speed"}},
            {"name": "quantize", "params": info["quantize"]["ORT INT8"]}],
        "graph": sections["graph"], "generation": gen,
        "metrics": {"params": info["params"]},
        "provenance": {"tool": "bench/serving.py", "created_at": now.isoformat(timespec="seconds"),
                       "created_unix": int(now.timestamp())},
    }
    return write_bundle(out, manifest, {"model.onnx": graphs / info["graphs"]["ORT INT8"],
                                        "tokenizer.json": tok_file}).path


def image_bundle() -> Path:
    path = ROOT / "bundles" / "dcgan-digits"
    if not (path / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "optimizer", "run",
                        str(ROOT / "recipes" / "dcgan-digits-quick.yaml"), "--out", str(path)],
                       cwd=ROOT, check=True)
    return path


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> str:
    """Poll GET /ready until 200: "ready", or "exited" (the process died), or "timeout"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "exited"
        try:
            if requests.get(base + "/ready", timeout=2).status_code == 200:
                return "ready"
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    return "timeout"


class Server:
    """`python -m edge_app serve` on 127.0.0.1 with the given bundles and config (env)."""

    def __init__(self, bundles: list[Path], port: int, env: dict[str, str] | None = None):
        self.base = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "edge_app", "serve", "--port", str(port)]
        for b in bundles:
            args += ["--bundle", str(b)]
        self.log = open(WORK / f"server-{port}.log", "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "EDGEGEN_POWER_BASELINE_S": "0",
                                          **(env or {})}, start_new_session=True)
        state = wait_ready(self.base, self.proc, 300)
        if state == "exited":
            raise RuntimeError(f"server exited {self.proc.returncode}; see {self.log.name}")
        if state == "timeout":
            self.stop()
            raise TimeoutError(f"server not ready in 300 s; see {self.log.name}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def worker_rss(base: str) -> int:
    """The serving worker's resident memory, as the server exports it on /metrics."""
    text = requests.get(base + "/metrics", timeout=10).text
    line = next(ln for ln in text.splitlines() if ln.startswith('edgegen_memory_bytes{kind="rss"}'))
    return int(float(line.split()[-1]))
