"""The deploy side that needs no Docker engine: image specs from class data, archives and
their checksums, the rollout summary, and CLI errors."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import pytest

from edge_app import __version__
from fleet.deploy import render_table
from fleet.playbook import Display, reports
from fleet.images import ImageError, ImageSpec, constraints, load_archive, serve_requirements
from fleet.inventory import class_hosts, device_class

from ..conftest import REPO

EXAMPLE = REPO / "ansible" / "inventory" / "example.yml"


@pytest.mark.parametrize("name, tag, platform, ort", [
    ("pi", f"edgegen-edge:{__version__}-pi-arm64", "linux/arm64", "onnxruntime"),
    ("jetson", f"edgegen-edge:{__version__}-jetson-arm64", "linux/arm64", "onnxruntime-gpu"),
    ("local", f"edgegen-edge:{__version__}-local-amd64", "linux/amd64", "onnxruntime"),
])
def test_image_spec_of_each_class(name, tag, platform, ort):
    spec = ImageSpec.from_settings(name, device_class(name))
    assert (spec.tag, spec.platform, spec.ort_package) == (tag, platform, ort)
    assert spec.dockerfile.is_file()


def test_jetson_builds_on_l4t_with_its_own_python_and_index():
    spec = ImageSpec.from_settings("jetson", device_class("jetson"))
    assert spec.base_image.startswith("nvcr.io/nvidia/l4t-jetpack:")
    assert spec.pythons == ("3.10",) and spec.find_links == ""
    # pypi.jetson-ai-lab.dev has been down since mid-2025.
    assert spec.extra_index_url == "https://pypi.jetson-ai-lab.io/jp6/cu126"
    assert "numpy==2.2.6" in constraints(spec.pins).splitlines()
    assert spec.dockerfile == REPO / "images" / "jetson" / "Dockerfile"


def test_host_vars_override_the_class_as_in_ansible(tmp_path):
    inv = tmp_path / "inv.yml"
    override = "{edgegen_base_image: 'debian:bookworm-slim', edgegen_platform: linux/amd64}"
    inv.write_text("all:\n  vars: {ansible_user: nvidia, edgegen_port: 1}\n  children:\n"
                   "    jetson:\n      vars: {edgegen_port: 2}\n"
                   f"      hosts:\n        j1: {override}\n        j2: {override}\n")
    hosts = class_hosts(inv, "jetson")
    spec = ImageSpec.for_hosts("jetson", hosts)
    assert spec.tag == f"edgegen-edge:{__version__}-jetson-amd64" and list(hosts) == ["j1", "j2"]
    settings = hosts["j1"]
    assert settings["edgegen_docker_runtime"] == "nvidia"  # the class file still applies
    assert settings["ansible_user"] == "nvidia"
    # Playbook group_vars (the class file) outrank the inventory file's group vars.
    assert settings["edgegen_port"] == 8080


def test_an_inventory_names_the_jetson_wheel_sources(tmp_path):
    """A mirror and a directory of wheels the operator controls, in place of NVIDIA's index."""
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  children:\n    jetson:\n      hosts:\n        j1: {edgegen_find_links: "
                   "/srv/wheels, edgegen_extra_index_url: 'http://127.0.0.1:3141/jp6/cu126'}\n")
    spec = ImageSpec.for_hosts("jetson", class_hosts(inv, "jetson"))
    assert (spec.find_links, spec.extra_index_url) == ("/srv/wheels",
                                                       "http://127.0.0.1:3141/jp6/cu126")


def test_hosts_of_a_class_must_agree_on_the_image(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  children:\n    pi:\n      hosts:\n        a:\n"
                   "        b: {edgegen_platform: linux/amd64}\n")
    with pytest.raises(ImageError, match="hosts of class 'pi' need different images"):
        ImageSpec.for_hosts("pi", class_hosts(inv, "pi"))


def test_pixel_is_not_a_container_class():
    with pytest.raises(ImageError, match="not deployed as a container image"):
        ImageSpec.from_settings("pixel", {**device_class("pixel"), "edgegen_platform": "linux/arm64"})


def test_image_requirements_come_from_pyproject():
    reqs = serve_requirements("onnxruntime-gpu")
    assert "onnxruntime-gpu" in reqs and "onnxruntime" not in reqs
    assert {"numpy", "pyyaml", "flask", "gunicorn"} <= set(reqs) and "tokenizers" not in reqs
    assert "torch" not in reqs and "ai-edge-litert" not in reqs
    # a class serving LiteRT bundles: its image carries LiteRT too, in a wheelhouse of its own
    assert "ai-edge-litert" in serve_requirements("onnxruntime", litert=True)
    litert = ImageSpec.from_settings("pi", {**device_class("pi"), "edgegen_litert": True})
    assert litert.wheelhouse_name == "edge-arm64-onnxruntime-litert"
    assert ImageSpec.from_settings("pi", device_class("pi")).litert is False
    # one serving LiteRT bundles only: no ONNX Runtime (nor onnxruntime-web for the companion)
    only = serve_requirements(None, litert=True)
    assert "ai-edge-litert" in only and not [r for r in only if r.startswith("onnxruntime")]
    only = ImageSpec.from_settings("pi", {**device_class("pi"), "edgegen_litert": True,
                                          "edgegen_onnxruntime": False})
    assert only.wheelhouse_name == "edge-arm64-litert"
    assert (litert.tag.endswith("-pi-arm64-ort-litert") and only.tag.endswith("-pi-arm64-litert")
            and ImageSpec.from_settings("pi", device_class("pi")).tag.endswith("-pi-arm64"))
    with pytest.raises(ImageError, match="class 'pi': an image needs a runtime"):
        ImageSpec.from_settings("pi", {**device_class("pi"), "edgegen_onnxruntime": False})


def test_archive_checksum_is_verified(tmp_path):
    path = tmp_path / "img.tar.gz"
    path.write_bytes(b"archive bytes")
    meta = {"tag": "edgegen-edge:x", "image_id": "sha256:" + "0" * 64,
            "sha256": hashlib.sha256(b"archive bytes").hexdigest(), "archive_bytes": 13}
    (tmp_path / "img.tar.gz.json").write_text(json.dumps(meta))
    assert load_archive(path).tag == "edgegen-edge:x"
    path.write_bytes(b"tampered")
    with pytest.raises(ImageError, match="damaged or was replaced"):
        load_archive(path)
    (tmp_path / "img.tar.gz.json").unlink()
    with pytest.raises(ImageError, match="needs its sidecar"):
        load_archive(path)


def _event(kind, host, task, **res):
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def test_display_and_table_from_runner_events():
    out = io.StringIO()
    display = Display(out)
    display(_event("runner_on_ok", "pi-1", "Run the server container", changed=True))
    display(_event("runner_on_ok", "pi-1", "Report the deployment", ansible_facts={
        "edge_node_result": {"tag": f"edgegen-edge:{__version__}-pi-arm64", "url": "http://10.0.0.5:8080",
                             "ready": {"status": "ready", "models": ["dcgan-digits"]}}}))
    display(_event("runner_retry", "pi-2", "Wait until the server is alive (/health)",
                   attempts=3, retries=60))
    display(_event("runner_on_failed", "pi-2", "Fail the host",
                   msg="pi-2: edgegen-edge:x failed its health check; rolled back to y"))
    lines = out.getvalue().splitlines()
    assert "pi-1               changed   Run the server container" in lines[0]
    assert "waiting   Wait until the server is alive (/health) (3/60)" in lines[2]
    stats = {"ok": {"pi-1": 20, "pi-2": 10}, "changed": {"pi-1": 4}, "failures": {"pi-2": 1}}
    rows = reports(stats, display, ["pi-1", "pi-2", "pi-3"])
    assert [(r.host, r.status) for r in rows] == [("pi-1", "changed"), ("pi-2", "failed"),
                                                  ("pi-3", "not run")]
    table = render_table(rows)
    assert f"pi-1  changed  4        edgegen-edge:{__version__}-pi-arm64  http://10.0.0.5:8080  " \
           "ready (dcgan-digits)" in table
    assert "pi-2: pi-2: edgegen-edge:x failed its health check; rolled back to y" in table
    assert "pi-3: the rollout stopped before this host" in table


@pytest.mark.parametrize("args, message", [
    (["--device", "toaster"], "unknown device class 'toaster'"),
    (["--device", "pi", "-e", "novalue"], "-e expects KEY=VALUE"),
])
def test_deploy_cli_errors_are_one_line(args, message):
    result = subprocess.run([sys.executable, "-m", "fleet", "deploy", "--inventory", str(EXAMPLE),
                             *args], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_image_wheel_carries_edge_app_only_and_is_reproducible(tmp_path):
    import zipfile

    from fleet.images import _edgegen_wheel

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _edgegen_wheel(tmp_path, pip)
    (wheel,) = tmp_path.glob("edgegen-*.whl")
    first = wheel.read_bytes()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        listed = [line.split(",")[0] for line in z.read(record).decode().splitlines()]
        assert z.testzip() is None
    assert "edge_app/benchmark.py" in names and "edge_app/static/companion/index.html" in names
    # The optimizer and fleet code never runs on a device: a change there makes no new image.
    assert not [n for n in names if n.startswith(("optimizer/", "fleet/"))]
    assert sorted(listed) == sorted(names)
    wheel.unlink()
    _edgegen_wheel(tmp_path, pip)
    assert wheel.read_bytes() == first
