"""The monitoring artifacts as files: dashboards valid against the Grafana 11 dashboard schema
(schemaVersion 39) with a unit on every panel and no overlapping panels, provisioning that
points at them, compose files that validate, and `fleet targets` output Prometheus reads."""

from __future__ import annotations

import json
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from fleet.inventory import Device
from fleet.targets import file_sd, write_file_sd

from ..conftest import REPO

GRAFANA = REPO / "monitoring" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SCHEMA = json.loads((GRAFANA / "dashboard.schema.json").read_text())


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_valid_grafana_json(path):
    dash = json.loads(path.read_text())
    jsonschema.validate(dash, SCHEMA)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    used = {name for p in dash["panels"] for t in p["targets"]
            for name in variables if f"${name}" in t["expr"]}
    assert used == variables - {"datasource"}  # every variable used, none undefined


def test_the_schema_rejects_what_grafana_would_not_load():
    dash = json.loads(DASHBOARDS[0].read_text())
    for breaks in (lambda d: d.pop("panels"), lambda d: d.update(schemaVersion=16),
                   lambda d: d["panels"][0]["fieldConfig"]["defaults"].pop("unit"),
                   lambda d: d["panels"][0]["gridPos"].update(w=30),
                   lambda d: d["panels"][0]["targets"][0].pop("expr")):
        broken = json.loads(json.dumps(dash))
        breaks(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


def test_provisioning_points_at_the_dashboards_and_prometheus():
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"].endswith(":9090")
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/edgegen.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((REPO / "compose/monitoring.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../build/monitoring/local/grafana/dashboards:{path}:ro" in mounts  # rendered


@pytest.mark.parametrize("files", [["monitoring.yml"], ["monitoring.yml", "dev.yml"]])
def test_compose_files_validate(files):
    compose = shutil.which("docker-compose")
    if compose:
        cmd = [compose]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                   capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    else:
        pytest.skip("neither docker-compose nor the compose plugin is installed "
                    "(apt-get install docker-compose; .ci/run does)")
    args = [a for f in files for a in ("-f", str(REPO / "compose" / f))]
    env = {"PATH": "/usr/bin:/bin", "EDGEGEN_VERSION": "0.1.0"}
    run = subprocess.run([*cmd, *args, "config", "-q"], capture_output=True, text=True,
                         env={**env, "GRAFANA_ADMIN_PASSWORD": "x" * 16}, timeout=60)
    assert run.returncode == 0, run.stderr
    missing = subprocess.run([*cmd, *args, "config", "-q"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert missing.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in missing.stderr
    # the stack's images are the kit's (Debian's packages): no registry, no Docker Hub
    images = yaml.safe_load(subprocess.run(
        [*cmd, *args, "--profile", "grafana", "config"], capture_output=True, text=True,
        env={**env, "GRAFANA_ADMIN_PASSWORD": "x" * 16}, timeout=60, check=True).stdout)
    kit = {name: s["image"] for name, s in images["services"].items() if name != "grafana"}
    assert {kit[c] for c in ("prometheus", "alertmanager", "pushgateway")} == {
        f"edgegen-{c}:0.1.0-amd64" for c in ("prometheus", "alertmanager", "pushgateway")}


def test_fleet_targets_label_every_device(tmp_path):
    devices = [Device("pi-01", "pi", "10.0.0.5", 8080, {"edgegen_platform": "linux/arm64"}),
               Device("jetson-01", "jetson", "fd00::7", 8081, {"edgegen_platform": "linux/arm64"})]
    assert file_sd(devices) == [
        {"targets": ["10.0.0.5:8080"], "labels": {"device": "pi-01", "device_class": "pi",
                                                  "arch": "arm64"}},
        {"targets": ["[fd00::7]:8081"], "labels": {"device": "jetson-01",
                                                   "device_class": "jetson", "arch": "arm64"}}]
    path = write_file_sd(devices, tmp_path / "targets" / "edge.json")
    assert json.loads(path.read_text()) == file_sd(devices)
    assert [p.name for p in path.parent.iterdir()] == ["edge.json"]  # no temp file left
