"""The HTTP API in-process: generation, determinism, models, health, metrics, error mapping."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from edge_app.state import of


def _generate(client, **body):
    return client.post("/v1/images/generations", json=body)


def _pngs(response) -> list[bytes]:
    return [base64.b64decode(d["b64_json"]) for d in response.get_json()["data"]]


def test_same_seed_same_bytes_different_seed_differs(client):
    first = _generate(client, seed=42)
    second = _generate(client, seed=42, model="tiny-dcgan", response_format="b64_json")
    other = _generate(client, seed=43)
    assert first.status_code == second.status_code == other.status_code == 200
    assert _pngs(first) == _pngs(second)
    assert _pngs(first) != _pngs(other)
    assert first.get_json()["seed"] == 42


def test_pngs_decode_to_the_manifest_shape(client, manifest):
    image = manifest.generation.image
    response = _generate(client, n=3, seed=7, size=f"{image.width}x{image.height}")
    body = response.get_json()
    assert body["usage"] == {"images": 3} and body["model"] == "tiny-dcgan"
    assert set(body["timings"]) == {"queue_ms", "generate_ms", "encode_ms", "energy_j",
                                   "energy_note"}
    # this machine has no power sensor: the response says so instead of reporting zero
    assert body["timings"]["energy_j"] is None
    assert body["timings"]["energy_note"] == "no power sensor on this device"
    pngs = _pngs(response)
    assert len(pngs) == 3 and len(set(pngs)) == 3
    for png in pngs:
        decoded = Image.open(io.BytesIO(png))
        assert decoded.format == "PNG" and decoded.mode == "L"  # 1 channel -> grayscale
        assert np.asarray(decoded).shape == (image.height, image.width)


def test_image_i_of_a_batch_uses_the_latent_of_the_same_seed(client, app):
    model = of(app).models.models["tiny-dcgan"]
    batch = model.generate(3, seed=5)
    single = model.generate(1, seed=5)
    np.testing.assert_allclose(batch[0], single[0], atol=1e-5)


def test_without_seed_the_server_picks_and_reports_one(client):
    a, b = _generate(client).get_json(), _generate(client).get_json()
    assert isinstance(a["seed"], int) and a["seed"] != b["seed"]


@pytest.mark.parametrize("kwargs, status, code, fragment", [
    ({"data": "not json", "content_type": "application/json"}, 400, "invalid_request",
     "must be a JSON object"),
    ({"json": [1, 2]}, 400, "invalid_request", "must be a JSON object"),
    ({"json": {"n": 0}}, 400, "invalid_request", "'n' must be between 1 and 8, got 0"),
    ({"json": {"n": -3}}, 400, "invalid_request", "'n' must be between 1 and 8, got -3"),
    ({"json": {"n": 9}}, 400, "invalid_request", "'n' must be between 1 and 8, got 9"),
    ({"json": {"n": "2"}}, 400, "invalid_request", "'n' must be an integer, got str"),
    ({"json": {"n": 1.5}}, 400, "invalid_request", "'n' must be an integer, got float"),
    ({"json": {"n": True}}, 400, "invalid_request", "'n' must be an integer, got bool"),
    ({"json": {"seed": -1}}, 400, "invalid_request", "'seed' must be between 0 and"),
    ({"json": {"seed": 2**60}}, 400, "invalid_request", "'seed' must be between 0 and"),
    ({"json": {"seed": "7"}}, 400, "invalid_request", "'seed' must be an integer"),
    ({"json": {"model": 5}}, 400, "invalid_request", "'model' must be a string"),
    ({"json": {"model": "gpt-9"}}, 404, "model_not_found", "model 'gpt-9' is not loaded"),
    ({"json": {"response_format": "url"}}, 400, "invalid_request", "use 'b64_json'"),
    ({"json": {"size": "1024x1024"}}, 400, "invalid_request", "generates 32x32 images only"),
    ({"json": {"prompt": ["a"]}}, 400, "invalid_request", "'prompt' must be a string"),
    ({"json": {"prompt": "x" * 5000}}, 400, "invalid_request", "longer than 4000"),
    ({"json": {"sead": 1}}, 400, "invalid_request", "unknown parameter(s) ['sead']"),
])
def test_bad_input_gets_a_json_4xx(client, kwargs, status, code, fragment):
    response = client.post("/v1/images/generations", **kwargs)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code and fragment in error["message"]
    assert set(error) >= {"message", "type", "code"}
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize("method, path, status", [
    ("get", "/no/such/route", 404), ("get", "/v1/images/generations", 405),
    ("delete", "/health", 405),
])
def test_routing_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.get_json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413_json(dcgan_bundle):
    from edge_app import create_app

    client = create_app({"bundles": [str(dcgan_bundle)], "max_body_bytes": 1024}).test_client()
    response = client.post("/v1/images/generations", json={"prompt": "x" * 2000})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


def test_models_lists_manifest_facts(client, manifest):
    data = client.get("/v1/models").get_json()["data"]
    assert [m["id"] for m in data] == ["tiny-dcgan"]
    assert data[0]["image"] == {"channels": 1, "height": 32, "width": 32}
    assert data[0]["runtime"] == "CPUExecutionProvider"
    assert data[0]["metrics"]["params"] == manifest.metrics["params"]


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").get_json() == {
        "status": "ready", "models": ["tiny-dcgan"],
        "admission": {"active": 0, "waiting": 0, "max_concurrent": 2, "max_queue": 16}}


def test_metrics_count_requests_with_bounded_labels(client):
    _generate(client, n=2, seed=1)
    _generate(client, n=0)
    _generate(client, model="attacker-chosen-name")
    text = client.get("/metrics").get_data(as_text=True)
    ep = "/v1/images/generations"
    assert (f'edgegen_requests_total{{endpoint="{ep}",model="tiny-dcgan",status="200"}} 1.0'
            in text)
    assert f'edgegen_requests_total{{endpoint="{ep}",model="tiny-dcgan",status="400"}} 1.0' in text
    assert f'edgegen_requests_total{{endpoint="{ep}",model="none",status="404"}} 1.0' in text
    assert 'edgegen_generated_images_total{model="tiny-dcgan"} 2.0' in text
    assert f'edgegen_request_duration_seconds_bucket{{endpoint="{ep}",le="300.0",model="tiny-dcgan"}} 2.0' in text
    assert 'edgegen_model_info{family="dcgan",model="tiny-dcgan",precision="fp32",' \
           'requested_providers="auto",runtime="CPUExecutionProvider",schema_version="1",' \
           'task="image-generation"} 1.0' in text
    assert "attacker-chosen-name" not in text


def test_energy_per_request_and_power_metrics_with_a_sensor(dcgan_bundle):
    from edge_app import create_app

    from ..conftest import REPO

    tree = REPO / "tests" / "data" / "power" / "hwmon-generic"
    app = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "hwmon",
                      "power_root": str(tree), "power_baseline_s": 0.3})
    try:
        client = app.test_client()
        timings = _generate(client, seed=1, n=4).get_json()["timings"]
        assert timings["power_sensor"] == "hwmon"
        # a constant 21.25 W source, idle baseline 21.25 W: nothing above the baseline
        assert timings["energy_j"] == pytest.approx(0.0, abs=1e-6)
        text = client.get("/metrics").get_data(as_text=True)
        assert 'edgegen_power_watts{rail="total",sensor="hwmon"} 21.25' in text
        assert 'edgegen_power_watts{rail="amdgpu/PPT",sensor="hwmon"} 15.25' in text
        assert 'edgegen_request_energy_joules_count{endpoint="/v1/images/generations",' \
               'model="tiny-dcgan"} 1.0' in text
        energy = [line for line in text.splitlines()
                  if line.startswith('edgegen_energy_joules_total{sensor="hwmon"}')]
        assert float(energy[0].split()[-1]) > 21.25 * 0.2  # ~0.3 s of 21.25 W counted
    finally:
        of(app).power.close()


def test_named_power_sensor_must_exist(dcgan_bundle, tmp_path):
    from edge_app import create_app
    from edge_app.power import SensorError

    with pytest.raises(SensorError, match="'rapl' is not present under"):
        create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "rapl",
                    "power_root": str(tmp_path)})


def test_device_gauges_from_a_recorded_tree_and_this_machine(client):
    from prometheus_client import CollectorRegistry, generate_latest

    from edge_app.system import SystemCollector, memory, temperatures

    from ..conftest import REPO

    tree = REPO / "tests" / "data" / "system" / "jetson-orin"
    assert memory(tree) == {"rss": 287004 * 1024, "peak_rss": 301220 * 1024,
                            "available": 5120448 * 1024, "total": 7834272 * 1024}
    assert temperatures(tree) == {"cpu-thermal": 45.5, "gpu-thermal": 43.031}  # cv0: no reading
    registry = CollectorRegistry()
    registry.register(SystemCollector(tree))
    text = generate_latest(registry).decode()
    assert 'edgegen_temperature_celsius{zone="gpu-thermal"} 43.031' in text
    # the live server on this machine: its own memory, and the in-flight gauge back at 0
    client.get("/health")
    live = client.get("/metrics").get_data(as_text=True)
    rss = [line for line in live.splitlines() if line.startswith('edgegen_memory_bytes{kind="rss"}')]
    assert rss and float(rss[0].split()[-1]) > 10e6
    assert "edgegen_inflight_requests 0.0" in live
