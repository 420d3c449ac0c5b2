"""The monitoring stack, air-gapped (issue 24, items 3-4): `python -m fleet monitoring` builds
Prometheus, Alertmanager and the Pushgateway from Debian's packages on the debootstrap base
(tests/e2e/prebuild.py built them beside the other tiers), ships them as archives and deploys
them with the `monitoring` role to the simulated fleet's monitoring host (this machine, over
Ansible's local connection; no registry). Its Prometheus scrapes the simulated devices and the
Pushgateway; stopping one device's server fires EdgeGenDeviceDown, which reaches a webhook
receiver in this test through Alertmanager, and restarting it resolves the alert. A second run
changes nothing."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml

from ..conftest import free_port
from .devices import make_deploy, ok, run_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.docker_images("fleet")]
DEVICE = "jetson-sim"  # amd64: it stops and starts in seconds
CONTAINER = f"edgegen-edge-{DEVICE}"


class Receiver(ThreadingHTTPServer):
    """Alertmanager's webhook receiver: each notification's alerts, in arrival order."""

    def __init__(self):
        alerts: queue.Queue[dict] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for alert in body["alerts"]:
                    alerts.put(alert)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.alerts = alerts
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def wait_for(self, status: str, timeout: float) -> dict:
        """The first EdgeGenDeviceDown notification of DEVICE with `status` (firing, resolved)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                alert = self.alerts.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            labels = alert["labels"]
            if (labels.get("alertname"), labels.get("device"), alert["status"]) == \
                    ("EdgeGenDeviceDown", DEVICE, status):
                return alert
        raise AssertionError(f"no {status} EdgeGenDeviceDown for {DEVICE} within {timeout} s")


def _running(name: str) -> bool:
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                           capture_output=True, text=True)
    return state.stdout.strip() == "true"


def _up(base: str) -> dict[str, float]:
    """up of every scraped target, by device (or job for those without one); none while
    Prometheus is still starting (not listening, or its API answering 503)."""
    try:
        answer = requests.get(f"{base}/api/v1/query", params={"query": "up"}, timeout=10)
    except requests.ConnectionError:  # not listening yet
        return {}
    if answer.status_code == 503:
        return {}
    return {r["metric"].get("device") or r["metric"]["job"]: float(r["value"][1])
            for r in answer.json()["data"]["result"]}


def _scraped(base: str, timeout: float, *also: str) -> dict[str, float]:
    """_up once the device's and the Pushgateway's first scrapes (they come at their own times)
    and those of `also` are in, or when `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        up = _up(base)
        if all(up.get(t) == 1 for t in (DEVICE, "edgegen-phones", *also)) or \
                time.monotonic() > deadline:
            return up
        time.sleep(2)


def test_the_stack_deploys_air_gapped_scrapes_the_fleet_and_alerts_reach_a_webhook(fleet,
                                                                                  tmp_path):
    if not _running(CONTAINER):  # the earlier e2e tests leave it serving; alone, deploy it
        ok(make_deploy(fleet, "jetson"))
    receiver = Receiver()
    ports = {"prometheus": free_port(), "alertmanager": free_port(), "pushgateway": free_port()}
    prefix = f"edgegen-test-{os.getpid()}-"
    data = yaml.safe_load(fleet.inventory.read_text())
    data["all"]["children"]["monitoring"]["hosts"] = {"prometheus-sim": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "edgegen_monitoring_become": False, "edgegen_monitoring_root": str(tmp_path / "stack"),
        "edgegen_monitoring_name_prefix": prefix,
        # the controller's own engine, as it is: nothing installed, no daemon.json merged
        "edgegen_docker_install": False, "edgegen_docker_service_manage": False,
        "edgegen_docker_daemon_options": {}, "edgegen_docker_python_packages": [],
        "edgegen_monitoring": {
            "listen": "127.0.0.1", "ports": ports, "scrape_interval": "2s",
            "evaluation_interval": "2s",
            "webhook_url": f"http://127.0.0.1:{receiver.server_port}/hook",
            "group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h",
            "alert_for": {"EdgeGenDeviceDown": "6s"}}}}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    command = [sys.executable, "-m", "fleet", "monitoring", "--inventory", str(inventory)]
    base = f"http://127.0.0.1:{ports['prometheus']}"
    try:
        out = ok(run_cmd(command, timeout=900))
        assert "monitoring stack ready on 1 host(s)" in out, out[-3000:]
        assert f"prometheus {base}" in out, out[-3000:]
        # what runs is the stack's images, Debian's releases
        for component in ports:
            image = json.loads(ok(run_cmd(["docker", "inspect", prefix + component])))[0]
            assert image["Config"]["Labels"]["io.edgegen.image-tag"].startswith(
                f"edgegen-{component}:"), image["Config"]["Labels"]
        build = requests.get(f"{base}/api/v1/status/buildinfo", timeout=10).json()["data"]
        print(f"Prometheus {build['version']} (Debian's package) on 127.0.0.1:{ports['prometheus']}")
        rules = requests.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        down = next(r for g in rules for r in g["rules"] if r["name"] == "EdgeGenDeviceDown")
        assert down["duration"] == 6  # the host's `for`, over the kit's 5m

        # the devices the inventory lists, the Pushgateway and Prometheus itself are scraped
        up = _scraped(base, 90, "prometheus")
        assert up.get(DEVICE) == 1 and up.get("edgegen-phones") == 1, up
        assert "pi-sim" in up, up  # listed (whatever the earlier tests left serving there)

        # a second run: nothing to change
        again = ok(run_cmd(command, timeout=900))
        assert re.search(r"^prometheus-sim\s+ok\s+0 changes", again, re.M), again[-3000:]

        # the alert, end to end: device down -> Prometheus -> Alertmanager -> webhook
        ok(run_cmd(["docker", "stop", CONTAINER]))
        started = time.monotonic()
        try:
            firing = receiver.wait_for("firing", timeout=120)
            print(f"EdgeGenDeviceDown reached the webhook {time.monotonic() - started:.0f} s "
                  f"after the server stopped")
            assert firing["labels"]["severity"] == "critical"
            assert firing["annotations"]["summary"].startswith(f"EdgeGen device {DEVICE} ")
        finally:
            ok(run_cmd(["docker", "start", CONTAINER]))
        started = time.monotonic()
        resolved = receiver.wait_for("resolved", timeout=180)
        print(f"resolved {time.monotonic() - started:.0f} s after the server started again")
        assert resolved["endsAt"] >= firing["startsAt"]
    finally:
        receiver.shutdown()
        receiver.server_close()
        subprocess.run(["docker", "rm", "-f", *(prefix + c for c in ports)], capture_output=True)
        subprocess.run(["docker", "volume", "rm", *(f"{prefix}{c}-data" for c in ports)],
                       capture_output=True)


def test_make_monitor_runs_the_same_images_here_without_a_registry(fleet, tmp_path):
    """`make monitor` on the controller: the stack's images with compose (host networking), its
    configuration rendered into build/monitoring/local, the inventory's devices as targets;
    Grafana's image is not here, and make says so rather than pulling."""
    if not _running(CONTAINER):
        ok(make_deploy(fleet, "jetson"))
    ports = {"PROMETHEUS_PORT": free_port(), "ALERTMANAGER_PORT": free_port(),
             "PUSHGATEWAY_PORT": free_port(), "GRAFANA_PORT": free_port()}
    settings = [f"{k}={v}" for k, v in ports.items()]
    base = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    try:
        out = ok(run_cmd(["make", "--no-print-directory", "monitor",
                          f"INVENTORY={fleet.inventory}", *settings,
                          "GRAFANA_IMAGE=edgegen-test/no-such-grafana:0"], timeout=900))
        assert "edgegen-test/no-such-grafana:0 is not in the local Docker store" in out, out
        # both targets' first scrapes: the device's and the Pushgateway's come at their own times
        up = _scraped(base, 60)
        assert up.get(DEVICE) == 1 and up.get("edgegen-phones") == 1, up
        managers = requests.get(f"{base}/api/v1/alertmanagers", timeout=10).json()["data"]
        assert [m["url"] for m in managers["activeAlertmanagers"]] == [
            f"http://127.0.0.1:{ports['ALERTMANAGER_PORT']}/api/v2/alerts"]
    finally:
        run_cmd(["make", "--no-print-directory", "monitor-down", *settings])
        subprocess.run(["docker", "volume", "rm", *(f"edgegen-monitoring_{c}-data" for c in (
            "prometheus", "alertmanager", "pushgateway", "grafana"))], capture_output=True)
