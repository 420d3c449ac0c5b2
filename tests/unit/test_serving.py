"""Production behaviour of the server, in-process on the real tiny bundles: bounded admission,
bearer keys, reload with validation, execution-provider fallback, the per-request timeout,
OpenAPI document and playground page."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from edge_app.state import of
from edge_app import create_app
from edge_app.admission import Admission
from edge_app.bundle import load_bundle, write_bundle
from edge_app.config import ConfigError, load_config
from edge_app.errors import Overloaded
from edge_app.runtime import CPU, ProviderError, open_session, provider_chain

KEY = "k3y-for-tests-0123456789abcdef"


def _images(client, headers=None, **body):
    return client.post("/v1/images/generations", json={"n": 1, "seed": 1, **body},
                       headers=headers or {})


# ------------------------------------------------------------------ admission

def test_admission_queues_in_order_then_refuses_with_retry_after():
    adm = Admission(max_concurrent=1, max_queue=1, queue_timeout_s=5)
    adm.acquire()  # the one slot
    order = []

    def waiter():
        order.append(("waited", adm.acquire()))
        adm.release(0.2)

    t = threading.Thread(target=waiter)
    t.start()
    while adm.waiting == 0:
        time.sleep(0.001)
    with pytest.raises(Overloaded) as full:  # one running, one waiting: the queue is full
        adm.acquire()
    assert full.value.status == 503 and int(full.value.headers["Retry-After"]) >= 1
    assert adm.saturated
    time.sleep(0.05)
    adm.release(0.05)
    t.join(5)
    assert order and order[0][1] >= 0.04  # the waiter got the slot once it was released
    assert (adm.active, adm.waiting) == (0, 0)


def test_queue_wait_runs_out():
    adm = Admission(max_concurrent=1, max_queue=4, queue_timeout_s=0.2)
    adm.acquire()
    started = time.monotonic()
    with pytest.raises(Overloaded, match="waited 0.2 s in the queue"):
        adm.acquire()
    assert 0.19 <= time.monotonic() - started < 2 and adm.waiting == 0
    adm.release()


def test_busy_server_answers_503_with_retry_after_and_counts_it(dcgan_bundle):
    app = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                      "max_concurrent": 1, "max_queue": 0})
    client, adm = app.test_client(), of(app).admission
    adm.acquire()  # a generation in progress
    try:
        r = _images(client)
        assert r.status_code == 503 and r.get_json()["error"]["code"] == "server_busy"
        assert int(r.headers["Retry-After"]) >= 1
        ready = client.get("/ready")
        assert ready.status_code == 503 and "Saturated" in ready.get_json()["error"]["message"]
    finally:
        adm.release()
    assert _images(client).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert 'edgegen_requests_rejected_total{reason="queue_full"} 1.0' in text
    assert "edgegen_queue_depth 0.0" in text


# ------------------------------------------------------------------ auth

@pytest.fixture(scope="module")
def keyed(dcgan_bundle, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys"
    key_file.write_text(f"# rotated keys\n{KEY}\n")
    app = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                      "api_key_file": str(key_file), "metrics_auth": False})
    return app.test_client()


def test_generation_needs_the_bearer_key(keyed):
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"},
                    {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer \u00e9t\u00e9"}):
        r = _images(keyed, headers=headers)
        assert r.status_code == 401, headers
        assert r.get_json()["error"]["code"] == "invalid_api_key"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert _images(keyed, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed.post("/admin/reload").status_code == 401
    assert keyed.get("/v1/models").status_code == 401


def test_probes_docs_and_metrics_stay_public(keyed):
    for path in ("/health", "/ready", "/", "/openapi.json", "/metrics"):
        assert keyed.get(path).status_code == 200, path
    text = keyed.get("/metrics").get_data(as_text=True)
    assert re.search(r'edgegen_requests_rejected_total\{reason="unauthorized"\} [1-9]', text)
    doc = keyed.get("/openapi.json").get_json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/completions"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_metrics_can_be_protected(dcgan_bundle):
    client = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                         "api_keys": [KEY], "metrics_auth": True}).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/health").status_code == 200


def test_key_file_problems_stop_the_boot(tmp_path):
    with pytest.raises(ConfigError, match="cannot read api_key_file"):
        load_config({"api_key_file": str(tmp_path / "none")}, environ={}).all_api_keys()
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_config({"api_key_file": str(tmp_path / "empty")}, environ={}).all_api_keys()


# ------------------------------------------------------------------ reload

def _renamed_copy(src: Path, dst: Path, name: str) -> Path:
    manifest = json.loads((src / "manifest.json").read_text())
    files = {f: src / f for f in manifest.pop("files")}
    manifest.pop("schema_version")
    manifest["name"] = name
    return write_bundle(dst, manifest, files).path


def test_reload_swaps_only_after_validation_and_refuses_tampered(bundle_copy, tmp_path):
    app = create_app({"bundles": [str(bundle_copy)], "power_sensor": "none",
                      "api_keys": [KEY], "bundle_root": str(tmp_path)})
    client, auth = app.test_client(), {"Authorization": f"Bearer {KEY}"}
    before = of(app).models.models["tiny-dcgan"]

    same = client.post("/admin/reload", headers=auth,  # nothing changed: nothing reloaded
                       content_type="application/json")
    assert same.status_code == 200 and same.get_json()["unchanged"] == ["tiny-dcgan"]
    assert of(app).models.models["tiny-dcgan"] is before
    # a body of whitespace is not an empty one: it is not JSON (schemathesis found it accepted)
    blank = client.post("/admin/reload", headers=auth, data="\r", content_type="application/json")
    assert blank.status_code == 400 and "JSON object" in blank.get_json()["error"]["message"]

    other = _renamed_copy(bundle_copy, tmp_path / "other", "tiny-dcgan-b")
    tampered = Path(shutil.copytree(other, tmp_path / "tampered"))
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(data))
    r = client.post("/admin/reload", json={"bundles": [str(tampered)]}, headers=auth)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_bundle"
    assert "checksum mismatch for 'model.onnx'" in r.get_json()["error"]["message"]
    assert sorted(of(app).models.models) == ["tiny-dcgan"]
    assert _images(client, headers=auth).status_code == 200  # the old model keeps serving

    r = client.post("/admin/reload", json={"bundles": ["bundle", str(other)]},  # a name, a path
                    headers=auth)
    assert r.status_code == 200, r.get_json()
    assert r.get_json() | {"seconds": 0} == {"status": "reloaded", "models": [
        "tiny-dcgan", "tiny-dcgan-b"], "loaded": ["tiny-dcgan-b"], "unchanged": ["tiny-dcgan"],
        "seconds": 0}
    assert _images(client, model="tiny-dcgan-b", headers=auth).status_code == 200
    text = client.get("/metrics", headers=auth).get_data(as_text=True)
    assert 'model="tiny-dcgan-b"' in text.split("edgegen_model_info", 1)[1]
    assert 'edgegen_reloads_total{result="failure"} 1.0' in text
    assert 'edgegen_reloads_total{result="success"} 2.0' in text

    r = client.post("/admin/reload", json={"bundles": "not-a-list"}, headers=auth)
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "bundles"


# ------------------------------------------------------------------ execution providers

def test_provider_chain_falls_back_to_cpu_and_says_why(dcgan_bundle, caplog):
    assert provider_chain(()) [0][-1] == CPU
    chain, skipped = provider_chain(("TensorrtExecutionProvider", "CUDAExecutionProvider"))
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert chain == [CPU] and any("CUDAExecutionProvider is not in this" in s for s in skipped)
    with pytest.raises(ProviderError, match="unknown execution provider"):
        provider_chain(("FastestExecutionProvider",))
    cfg = load_config({"bundles": [str(dcgan_bundle)],
                       "execution_providers": ["CUDAExecutionProvider"]}, environ={})
    with caplog.at_level(logging.INFO, logger="edge_app.runtime"):
        session = open_session(load_bundle(dcgan_bundle), 0, cfg)
    active = session.get_providers()
    assert active[-1] == CPU
    assert f"execution providers {active}" in caplog.text
    if active == [CPU]:
        assert "falling back" in caplog.text


def test_device_and_model_info_name_the_runtime(client):
    text = client.get("/metrics").get_data(as_text=True)
    info = next(ln for ln in text.splitlines() if ln.startswith("edgegen_device_info{"))
    assert 'providers="' in info and 'cpus="' in info and info.endswith(" 1.0")
    model = client.get("/v1/models").get_json()["data"][0]
    assert model["providers"][-1] == CPU and model["runtime"] == model["providers"][0]


def test_model_info_shows_a_fallback_from_the_requested_providers(dcgan_bundle):
    # A Jetson class asks for TensorRT and CUDA; this ONNX Runtime build has neither.
    chain = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]
    client = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                         "execution_providers": chain}).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    info = next(ln for ln in text.splitlines() if ln.startswith("edgegen_model_info{"))
    assert f'requested_providers="{",".join(chain)}"' in info
    assert f'runtime="{CPU}"' in info


# ------------------------------------------------------------------ timeout

def test_request_timeout_stops_a_generation_early(gpt2_bundle):
    client = create_app({"bundles": [str(gpt2_bundle)], "power_sensor": "none",
                         "request_timeout_s": 1e-6}).test_client()
    r = client.post("/v1/completions", json={"prompt": "The", "max_tokens": 40,
                                             "temperature": 0})
    body = r.get_json()
    assert r.status_code == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["timings"]["stopped_by"] == "request_timeout"
    assert 1 <= body["usage"]["completion_tokens"] < 40


# ------------------------------------------------------------------ documents

def test_openapi_documents_exactly_the_routes(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    app = client.application
    served = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":  # Flask's <name> is OpenAPI's {name}
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served.setdefault(path, set()).update(
                m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(item) for path, item in doc["paths"].items()}
    assert documented == served
    request = doc["paths"]["/v1/images/generations"]["post"]["requestBody"]
    props = request["content"]["application/json"]["schema"]["properties"]
    assert props["model"]["enum"] == ["tiny-dcgan", None] and props["n"]["maximum"] == 8


def test_playground_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "/v1/completions" in html and "/v1/images/generations" in html
    external = re.findall(r'(?:src|href)\s*=\s*["\'](?:https?:)?//', html)
    assert not external and "@import" not in html and "url(" not in html
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
