"""64 concurrent clients against the real server, two identical rounds (bench/bench_load.py
with shorter rounds; `make bench-load` runs 60 s rounds on the student model): overload is
refused with 503 + Retry-After, nothing else fails, and memory does not creep."""

from __future__ import annotations

import os

import pytest

from bench.bench_load import MAX_RSS_GROWTH, load_test

from .serverproc import ServerProcess

pytestmark = pytest.mark.integration


def test_64_clients_get_only_200_or_503_with_retry_after_and_rss_holds(gpt2_bundle,
                                                                        dcgan_bundle):
    server = ServerProcess(gpt2_bundle, dcgan_bundle, env={"EDGEGEN_POWER_SENSOR": "none"})
    server.wait_ready()
    try:
        result = load_test(server.base, "tiny-gpt2", "tiny-dcgan", clients=64,
                           seconds=float(os.environ.get("EDGEGEN_LOAD_SECONDS", "20")))
    finally:
        code, output = server.stop()
    for r in result["rounds"]:
        assert r["problem_count"] == 0 and r["hung_clients"] == 0, r["problems"]
        assert set(r["statuses"]) <= {"200", "503"}, r["statuses"]
        assert r["statuses"].get("200", 0) > 0
    assert any(r["statuses"].get("503") for r in result["rounds"])  # overload was reached
    assert result["rss_growth"] <= MAX_RSS_GROWTH, result
    assert code == 0 and "Traceback" not in output, output[-3000:]
