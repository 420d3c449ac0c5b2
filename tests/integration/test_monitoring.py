"""Fleet monitoring against real components: two edge servers on loopback ports (their power
and thermal sensors read from recorded sysfs trees), a real Prometheus (Debian's package) on
the kit's own prometheus.yml and rules, and a real Pushgateway for phones.

Every PromQL expression of every dashboard panel, every template variable and every recording
rule is run through Prometheus' HTTP API and must return data. promtool checks the config and
rules and runs the alert tests (every alert: one case that fires, one that must not).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from ..conftest import REPO, free_port
from .serverproc import Proc, ServerProcess

pytestmark = pytest.mark.integration
MONITORING = REPO / "monitoring"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
KEY = "sk-monitoring-0123456789abcdef"
needs_prometheus = pytest.mark.skipif(
    not (PROMETHEUS and PROMTOOL and PUSHGATEWAY),
    reason="Prometheus, promtool or the Pushgateway is not installed (apt-get install "
           "prometheus prometheus-pushgateway; .ci/run does)")


def _rules(kind: str) -> list[dict]:
    out = []
    for path in sorted((MONITORING / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [r for r in group["rules"] if kind in r]
    return out


def _dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())
            for p in sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))}


# --------------------------------------------------------------------------- promtool

@needs_prometheus
def test_promtool_checks_config_and_rules_and_every_alert_is_tested():
    prom = MONITORING / "prometheus"
    for args in (["check", "config", str(prom / "prometheus.yml")],
                 ["check", "rules", *map(str, sorted((prom / "rules").glob("*.yml")))],
                 ["test", "rules", str(prom / "tests" / "alerts_test.yml")]):
        run = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCESS" in run.stdout + run.stderr
    tests = yaml.safe_load((prom / "tests" / "alerts_test.yml").read_text())["tests"]
    tests = [t for t in tests if "alert_rule_test" in t]  # (the others test recording rules)
    cases = [case for t in tests for case in t["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    alerts = {r["alert"] for r in _rules("alert")}
    assert fired == alerts  # every alert has a case where it fires...
    for t in tests:  # ...beside series that must not fire it (the 'not' half of each test)
        firing = {json.dumps(a["exp_labels"], sort_keys=True)
                  for c in t["alert_rule_test"] for a in c["exp_alerts"]}
        assert len(t["input_series"]) > len(firing), t["name"]
    assert any(not c["exp_alerts"] for c in cases)  # and pending periods that must not fire
    for rule in _rules("alert"):
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert f"## {rule['alert']}".lower() == f"## {anchor}", rule["alert"]
        assert f"## {rule['alert']}" in (MONITORING / "RUNBOOKS.md").read_text()


# --------------------------------------------------------------------------- live fleet

def _sensor_tree(tmp: Path, power: str, thermal: str | None) -> Path:
    root = Path(shutil.copytree(REPO / "tests/data/power" / power, tmp / f"root-{power}"))
    if thermal:
        shutil.copytree(REPO / "tests/data/system" / thermal / "sys/class/thermal",
                        root / "sys/class/thermal", dirs_exist_ok=True)
    return root


class Prometheus(Proc):
    def __init__(self, config: Path, data: Path, port: int):
        self.port = port
        self.base = f"http://127.0.0.1:{self.port}"
        super().__init__([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}",
                          f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"])

    def query(self, expr: str) -> list:
        r = requests.get(self.base + "/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]


@pytest.fixture(scope="module")
def fleet(gpt2_bundle, dcgan_bundle, tmp_path_factory):
    if not (PROMETHEUS and PUSHGATEWAY):
        pytest.skip("Prometheus or the Pushgateway is not installed (apt-get install "
                    "prometheus prometheus-pushgateway; .ci/run does)")
    tmp = tmp_path_factory.mktemp("monitoring")
    servers = {
        "jetson-sim": ServerProcess(gpt2_bundle, dcgan_bundle, env={
            "EDGEGEN_POWER_ROOT": str(_sensor_tree(tmp, "jetson-orin-nano-jp6", "jetson-orin")),
            "EDGEGEN_API_KEYS": KEY, "EDGEGEN_BUNDLE_ROOT": str(tmp)}),
        "hwmon-sim": ServerProcess(gpt2_bundle, dcgan_bundle, env={
            "EDGEGEN_POWER_ROOT": str(_sensor_tree(tmp, "hwmon-generic", None)),
            "EDGEGEN_API_KEYS": KEY, "EDGEGEN_BUNDLE_ROOT": str(tmp)}),
    }
    for s in servers.values():
        s.wait_ready()
    pushgateway_port = free_port()
    pushgateway = Proc([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{pushgateway_port}",
                        "--persistence.file=",  # in memory (Debian's default persists)
                        "--log.level=warn"])

    # The kit's Prometheus config, with the device list written by `fleet targets` from an
    # inventory, and 1 s intervals instead of 15 s so a test sees rates within seconds.
    prom_dir = Path(shutil.copytree(MONITORING / "prometheus", tmp / "prometheus"))
    inventory = tmp / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"local": {"hosts": {
        name: {"ansible_host": "127.0.0.1", "edgegen_port": s.port}
        for name, s in servers.items()}}}}}))
    run = subprocess.run([sys.executable, "-m", "fleet", "targets", "--inventory",
                          str(inventory), "--out", str(prom_dir / "targets" / "edge.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    (prom_dir / "targets" / "pushgateway" / "local.json").write_text(json.dumps(
        [{"targets": [f"127.0.0.1:{pushgateway_port}"], "labels": {"device_class": "pixel"}}]))
    config = yaml.safe_load((prom_dir / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        job.pop("scrape_timeout", None)
        for sd in job.get("file_sd_configs", []):
            sd["refresh_interval"] = "1s"
    port = free_port()
    for job in config["scrape_configs"]:
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    prom = Prometheus(prom_dir / "prometheus.yml", tmp / "tsdb", port)
    yield servers, prom, pushgateway_port, prom_dir
    prom.stop()
    pushgateway.stop()
    for s in servers.values():
        s.stop()


def _traffic(servers: dict, seconds: float) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        for s in servers.values():
            post = lambda route, body: requests.post(s.base + route, json=body, headers=auth,  # noqa: E731
                                                     timeout=60)
            assert post("/v1/images/generations", {"model": "tiny-dcgan", "n": 2, "seed": i}).ok
            assert post("/v1/completions", {"model": "tiny-gpt2", "prompt": "The", "seed": i,
                                            "max_tokens": 24, "stream": i % 2 == 0}).ok
        i += 1
        time.sleep(0.2)
    for s in servers.values():
        assert requests.post(s.base + "/v1/completions", json={"prompt": "x"},
                             timeout=10).status_code == 401  # a refusal, counted
        assert requests.post(s.base + "/admin/reload", json={}, headers=auth, timeout=60).ok
        assert requests.post(s.base + "/admin/reload", json={"bundles": ["nonexistent"]},
                             headers=auth, timeout=60).status_code == 400


def _push_phone_metrics(port: int) -> None:
    """What a phone sends: its metrics under one group per device (the receiving side)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway

    registry = CollectorRegistry()
    Counter("edgegen_generated_images", "Images generated.", ["model"],
            registry=registry).labels("dcgan-digits-int8").inc(12)
    Gauge("edgegen_power_watts", "Power.", ["sensor", "rail"],
          registry=registry).labels("android-battery", "total").set(3.2)
    push_to_gateway(f"127.0.0.1:{port}", job="edgegen-phone", registry=registry,
                    grouping_key={"device": "pixel6-test"})


def _substitute(expr: str, instance: str) -> str:
    """Template variables as Grafana fills them ('All' is the regex .*)."""
    return (expr.replace("$__rate_interval", "1m").replace("$device_class", ".*")
            .replace("$model", ".*").replace("$instance", instance))


@needs_prometheus
def test_every_panel_rule_and_variable_returns_data_from_a_live_fleet(fleet):
    servers, prom, pushgateway_port, prom_dir = fleet
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(prom.query('up{job="edgegen"} == 1')) == 2:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail(f"Prometheus did not scrape both devices:\n{prom.output}")
    _push_phone_metrics(pushgateway_port)
    _traffic(servers, seconds=20)
    time.sleep(4)  # a few scrapes and rule evaluations after the last request

    # Device labels from the targets file are carried onto every series.
    up = {(r["metric"]["device"], r["metric"]["device_class"]) for r in prom.query('up{job="edgegen"}')}
    assert up == {("jetson-sim", "local"), ("hwmon-sim", "local")}
    assert {r["metric"]["device"] for r in prom.query("edgegen_generated_tokens_total")} == \
        {"jetson-sim", "hwmon-sim"}

    # Rules load and evaluate without error.
    groups = requests.get(prom.base + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(_rules("record")) + len(_rules("alert"))
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]

    empty = [rule["record"] for rule in _rules("record") if not prom.query(rule["record"])]
    assert not empty, f"recording rules without data: {empty}"

    instance = f"127.0.0.1:{servers['jetson-sim'].port}"
    missing = []
    for name, dash in _dashboards().items():
        for panel in dash["panels"]:
            for target in panel["targets"]:
                if not prom.query(_substitute(target["expr"], instance)):
                    missing.append(f"{name} / {panel['title']} / {target['expr']}")
        for var in dash["templating"]["list"]:
            if var["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
            assert match, var
            values = requests.get(f"{prom.base}/api/v1/label/{match[2]}/values", timeout=10,
                                  params={"match[]": _substitute(match[1], instance)}).json()
            if not values["data"]:
                missing.append(f"{name} / variable {var['name']}")
    assert not missing, "queries without data:\n" + "\n".join(missing)

    # The phone path: pushed metrics reach Prometheus with the phone's own labels.
    pushed = prom.query('push_time_seconds{job="edgegen-phone"}')
    assert [r["metric"]["device"] for r in pushed] == ["pixel6-test"]
    assert pushed[0]["metric"]["device_class"] == "pixel"
    assert prom.query('edgegen_power_watts{job="edgegen-phone", device="pixel6-test"}')
    assert not prom.query('ALERTS{alertname="EdgeGenPhoneSilent"}')
    # A reload that failed on each device is an alert now (no `for`).
    firing = prom.query('ALERTS{alertname="EdgeGenBundleReloadFailed", alertstate="firing"}')
    assert {r["metric"]["device"] for r in firing} == {"jetson-sim", "hwmon-sim"}
