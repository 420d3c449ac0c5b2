"""Reload and admin on the real server with two workers (issue 18, items 2, 4, 5, 8, 10): a key
rotation or a new bundle set reaches both workers, survives a worker's respawn, and admin is
its own role; hostile bundles are refused at once, without wedging later reloads."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from ..integration.serverproc import ServerProcess

pytestmark = pytest.mark.adversarial
OLD, NEW = "sk-old-0123456789abcdef01", "sk-new-0123456789abcdef01"
ADMIN = "sk-admin-0123456789abcdef01"
ROUNDS = 24  # fresh connections, spread over both workers by the kernel


@pytest.fixture(scope="module")
def setup(dcgan_bundle, gpt2_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle-root")
    for bundle in (dcgan_bundle, gpt2_bundle):
        shutil.copytree(bundle, root / bundle.name)
    keys = root.parent / "api-keys"
    keys.write_text(OLD + "\n")
    server = ServerProcess(root / "tiny-dcgan", env={
        "EDGEGEN_WORKERS": "2", "EDGEGEN_POWER_SENSOR": "none", "EDGEGEN_API_KEY_FILE": str(keys),
        "EDGEGEN_ADMIN_KEYS": ADMIN, "EDGEGEN_BUNDLE_ROOT": str(root),
        # every request comes from 127.0.0.1: the brake on wrong keys is tested elsewhere
        "EDGEGEN_AUTH_FAILURES_PER_MINUTE": "0"})
    server.wait_ready()
    _loaded(server, _workers(server))  # /ready was 200 from one of them
    yield server, root, keys
    code, output = server.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


def _as(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _reload(server, body=None, key=ADMIN, headers=None):
    return requests.post(server.base + "/admin/reload", json={} if body is None else body,
                         headers={**_as(key), **(headers or {})}, timeout=60)


def _served(server, key=NEW) -> set[tuple[str, ...]]:
    """What the workers answer to /v1/models, over ROUNDS fresh connections."""
    return {tuple(sorted(m["id"] for m in requests.get(server.base + "/v1/models", headers=_as(
        key), timeout=10).json()["data"])) for _ in range(ROUNDS)}


def _log(server) -> str:
    server.wait_for("\0(collect what was printed so far)", 1.0)
    return server.output


def _workers(server) -> list[int]:
    master = server.proc.pid
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def _loaded(server, pids) -> None:
    """Wait until each of these workers has loaded its models: until then it answers 503
    "loading" (a worker answers from its start, edge_app/serve.py)."""
    deadline = time.monotonic() + 60
    while not all(re.search(rf"\[{pid}\] \[INFO\] loaded \d+ model\(s\) in ", server.output)
                  for pid in pids):
        assert time.monotonic() < deadline, server.output[-3000:]
        server.wait_for("\0(collect what was printed so far)", 0.2)


def test_a_rotated_key_is_revoked_in_every_worker(setup):
    server, _, keys = setup
    assert len(_workers(server)) == 2
    assert {requests.get(server.base + "/v1/models", headers=_as(OLD),
                         timeout=10).status_code for _ in range(ROUNDS)} == {200}
    keys.write_text(NEW + "\n")
    r = _reload(server)
    assert r.status_code == 200 and r.json()["workers"] == 2, r.text
    assert [requests.get(server.base + "/v1/models", headers=_as(OLD), timeout=10).status_code
            for _ in range(ROUNDS)] == [401] * ROUNDS
    assert _served(server) == {("tiny-dcgan",)}


def test_a_new_bundle_set_reaches_both_workers_and_survives_a_respawn(setup):
    server, _, _ = setup
    r = _reload(server, {"bundles": ["tiny-dcgan", "tiny-gpt2"]})
    assert r.status_code == 200 and r.json()["workers"] == 2, r.text
    assert _served(server) == {("tiny-dcgan", "tiny-gpt2")}
    victim = _workers(server)[0]
    os.kill(victim, signal.SIGKILL)  # gunicorn respawns it
    deadline = time.monotonic() + 60
    while (victim in _workers(server) or len(_workers(server)) < 2) and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    _loaded(server, _workers(server))  # (the new one answers "loading" until then)
    assert _served(server) == {("tiny-dcgan", "tiny-gpt2")}  # not the configured set
    r = requests.post(server.base + "/v1/completions", headers=_as(NEW), timeout=30,
                      json={"model": "tiny-gpt2", "prompt": "The", "max_tokens": 4})
    assert r.status_code == 200


def test_sighup_returns_every_worker_to_the_configured_set(setup):
    server, _, _ = setup
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while _served(server) != {("tiny-dcgan",)} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _served(server) == {("tiny-dcgan",)}


def test_admin_is_its_own_role_and_refuses_cross_site_and_rebinding(setup):
    server, root, _ = setup
    assert _reload(server, key=NEW).status_code == 401  # an API key does not open /admin
    before = _log(server).count("reload")
    for kind, data in (("text/plain", "{}"), ("application/x-www-form-urlencoded", "a=b")):
        r = requests.post(server.base + "/admin/reload", data=data, timeout=10,
                          headers={**_as(ADMIN), "Content-Type": kind})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = _reload(server, headers={"Host": "rebind.attacker.example"})
    assert r.status_code == 403
    r = requests.get(server.base + "/v1/models", timeout=10,
                     headers={**_as(NEW), "Host": "rebind.attacker.example:8080"})
    assert r.status_code == 403
    messages = {_reload(server, {"bundles": [p]}).json()["error"]["message"].replace(repr(p), "B")
                for p in ("/etc", "/no/such/dir", "../..", str(root.parent))}
    assert messages == {"bundle B is not inside bundle_root"}
    assert _log(server).count("reload") == before  # nothing was reloaded, or tried


def test_a_fifo_is_refused_at_once_and_the_next_reload_works(setup):
    server, root, _ = setup
    fifo = Path(shutil.copytree(root / "tiny-gpt2", root / "with-fifo"))
    (fifo / "tokenizer.json").unlink()
    os.mkfifo(fifo / "tokenizer.json")
    started = time.monotonic()
    r = _reload(server, {"bundles": ["tiny-dcgan", "with-fifo"]})
    assert r.status_code == 400 and "'tokenizer.json' is a FIFO" in r.json()["error"]["message"]
    assert time.monotonic() - started < 10
    assert _reload(server).status_code == 200  # not 409: nothing is stuck on the FIFO


def test_a_name_no_label_can_carry_is_refused_and_metrics_keep_answering(setup):
    server, root, _ = setup
    odd = Path(shutil.copytree(root / "tiny-dcgan", root / "odd-name"))
    manifest = json.loads((odd / "manifest.json").read_text())
    manifest["name"] = "\ud800"
    (odd / "manifest.json").write_text(json.dumps(manifest))  # ASCII JSON: "\\ud800"
    r = _reload(server, {"bundles": ["tiny-dcgan", "odd-name"]})
    assert r.status_code == 400 and "'name' must be" in r.json()["error"]["message"]
    for _ in range(4):
        assert requests.get(server.base + "/metrics", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def impatient(dcgan_bundle, gpt2_bundle, tmp_path_factory):
    """One worker that answers /admin/reload after 10 ms at most."""
    root = tmp_path_factory.mktemp("root-impatient")
    for bundle in (dcgan_bundle, gpt2_bundle):
        shutil.copytree(bundle, root / bundle.name)
    server = ServerProcess(root / "tiny-dcgan", env={
        "EDGEGEN_POWER_SENSOR": "none", "EDGEGEN_BUNDLE_ROOT": str(root),
        "EDGEGEN_RELOAD_TIMEOUT_S": "0.01"})
    server.wait_ready()
    yield server
    code, output = server.stop()
    assert code == 0, output[-3000:]


def test_a_reload_answers_within_its_timeout_and_goes_on(impatient):
    started = time.monotonic()
    r = requests.post(impatient.base + "/admin/reload", timeout=10,
                      json={"bundles": ["tiny-dcgan", "tiny-gpt2"]})
    assert time.monotonic() - started < 2
    assert r.status_code == 202 and r.json()["status"] == "reloading"
    deadline = time.monotonic() + 30
    while _served(impatient, key=None) != {("tiny-dcgan", "tiny-gpt2")}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
