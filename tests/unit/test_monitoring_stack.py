"""The monitoring stack's configuration (fleet/monitoring.py) as each monitoring host gets it:
the kit's prometheus.yml and rules with the host's intervals, Alertmanager and `for` overrides,
checked by promtool (Debian's package, as the stack's own image runs it); bad settings are
refused in one line before anything is built."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from fleet.monitoring import MonitoringError, Stack, render

from ..conftest import REPO

PROMTOOL = shutil.which("promtool")


def test_a_host_gets_the_kit_config_with_its_own_settings(tmp_path):
    stack = Stack.of("mon", {"edgegen_monitoring": {
        "listen": "127.0.0.1", "ports": {"prometheus": 19090}, "scrape_interval": "5s",
        "webhook_url": "http://127.0.0.1:9/hook", "alert_for": {"EdgeGenDeviceDown": "20s"}}})
    out = render(stack, tmp_path / "mon")
    prom = yaml.safe_load((out / "prometheus/prometheus.yml").read_text())
    kit = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.yml").read_text())
    assert prom["global"]["scrape_interval"] == "5s"
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"]
    assert [j["job_name"] for j in prom["scrape_configs"]] == [
        j["job_name"] for j in kit["scrape_configs"]]
    own = next(j for j in prom["scrape_configs"] if j["job_name"] == "prometheus")
    assert own["static_configs"] == [{"targets": ["127.0.0.1:19090"]}]
    edge = next(j for j in prom["scrape_configs"] if j["job_name"] == "edgegen")
    assert edge["scrape_timeout"] == "5s"  # the kit's 10 s would outlast the interval
    rules = {r["alert"]: r for path in (out / "prometheus/rules").glob("*.yml")
             for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
             if "alert" in r}
    assert rules["EdgeGenDeviceDown"]["for"] == "20s"
    kit_rules = {r["alert"]: r for path in (REPO / "monitoring/prometheus/rules").glob("*.yml")
                 for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
                 if "alert" in r}
    assert {k: v for k, v in rules.items() if k != "EdgeGenDeviceDown"} == \
        {k: v for k, v in kit_rules.items() if k != "EdgeGenDeviceDown"}
    assert json.loads((out / "prometheus/targets/pushgateway/stack.json").read_text())[0][
        "targets"] == ["127.0.0.1:9091"]
    am = yaml.safe_load((out / "alertmanager/alertmanager.yml").read_text())
    assert am["receivers"] == [{"name": "edgegen", "webhook_configs": [
        {"url": "http://127.0.0.1:9/hook", "send_resolved": True}]}]
    assert am["route"]["receiver"] == "edgegen"
    source = yaml.safe_load((out / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://127.0.0.1:19090"
    assert source["datasources"][0]["jsonData"]["timeInterval"] == "5s"
    assert sorted(p.name for p in (out / "grafana/dashboards").glob("*.json")) == sorted(
        p.name for p in (REPO / "monitoring/grafana/dashboards").glob("*.json"))
    if PROMTOOL:  # the CI host has Debian's prometheus package: the image's own release
        checked = subprocess.run([PROMTOOL, "check", "config", str(out / "prometheus/prometheus.yml")],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # without a webhook, alerts stay in Alertmanager (its UI and API)
    bare = render(Stack.of("mon", {}), tmp_path / "bare")
    assert yaml.safe_load((bare / "alertmanager/alertmanager.yml").read_text())["receivers"] == [
        {"name": "edgegen"}]


@pytest.mark.parametrize("settings, message", [
    ({"webhook": "http://x"}, r"mon: unknown edgegen_monitoring key\(s\) \['webhook'\]"),
    ({"ports": {"prometheus": 0}}, r"mon: edgegen_monitoring.ports: \['prometheus'\] must be"),
    ({"ports": {"loki": 3100}}, r"mon: edgegen_monitoring.ports: \['loki'\] must be"),
    ({"grafana_archive": "/nonexistent.tar"}, r"grafana_archive /nonexistent.tar: no such file"),
    ("fast", "mon: edgegen_monitoring must be a mapping"),
    ({"scrape_interval": "5 s"}, r"mon: edgegen_monitoring.scrape_interval: '5 s' is not a "
                                 r"Prometheus duration"),
])
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(MonitoringError, match=message):
        Stack.of("mon", {"edgegen_monitoring": settings})


def test_an_override_of_an_alert_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(MonitoringError, match=r"alert_for names no alert .*\['DeviceDown'\]"):
        render(Stack.of("mon", {"edgegen_monitoring": {"alert_for": {"DeviceDown": "1m"}}}),
               tmp_path / "x")
