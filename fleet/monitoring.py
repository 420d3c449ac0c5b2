"""The fleet's monitoring stack, air-gapped: Prometheus, Alertmanager and the Pushgateway as
images built from Debian's packages on the debootstrap base (images/monitoring/Dockerfile) and
saved as checksummed archives, as the edge images are; their configuration rendered from the
kit's own files (monitoring/) for each monitoring host; and `python -m fleet monitoring`, which
deploys both to the inventory's `monitoring` hosts with ansible/monitoring.yml (the
`monitoring` role). `make monitor` runs the same images on the controller (compose/).

A host's settings are its `edgegen_monitoring` mapping (see STACK_DEFAULTS): ports, listen
address, intervals, Alertmanager's webhook receiver and timers, and per-alert `for` durations
(a lab fleet may want EdgeGenDeviceDown after 1m rather than 5m). Grafana is not built here:
Debian has no package of it. The operator loads its official image from an archive (or pulls it
where a registry is reachable); the dashboards are provisioned either way (docs/monitoring.md).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from edge_app import __version__

from . import images, playbook
from .errors import FleetError
from .inventory import rollout_hosts
from .paths import REPO
from .playbook import Display, reports

DOCKERFILE = REPO / "images" / "monitoring" / "Dockerfile"
MONITORING = REPO / "monitoring"
ARTIFACTS = REPO / "build" / "monitoring"
# component -> (its Debian package, the binary that package installs)
PACKAGES = {"prometheus": ("prometheus", "prometheus"),
            "alertmanager": ("prometheus-alertmanager", "prometheus-alertmanager"),
            "pushgateway": ("prometheus-pushgateway", "prometheus-pushgateway")}
COMPONENTS = tuple(PACKAGES)
BASE_IMAGE = "debian:bookworm-slim"
STACK_DEFAULTS: dict[str, Any] = {
    "listen": "0.0.0.0",  # where the three listen (host networking)
    "ports": {"prometheus": 9090, "alertmanager": 9093, "pushgateway": 9091, "grafana": 3000},
    # Grafana (no Debian package: not built here): the image to run, "" = none; and a `docker
    # save` archive of it on the controller to load first (an air-gapped host), "" = the host
    # has it already (loaded by hand, or pulled where a registry is reachable)
    "grafana_image": "", "grafana_archive": "",
    "scrape_interval": "15s", "evaluation_interval": "15s", "retention": "30d",
    # Alertmanager: where alerts go (a webhook: a chat bridge, an incident tool); none = they are
    # kept in Alertmanager's UI and API only
    "webhook_url": "", "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
    "resolve_timeout": "5m",
    "alert_for": {},  # alert name -> its `for` here, e.g. {EdgeGenDeviceDown: 1m}
}


class MonitoringError(FleetError):
    """The monitoring stack cannot be built, configured or deployed; the message says why."""


def tag(component: str, arch: str, version: str = __version__) -> str:
    return f"edgegen-{component}:{version}-{arch}"


def build_images(platform: str = "linux/amd64", base_image: str = BASE_IMAGE,
                 log=print) -> dict[str, images.Archive]:
    """The three images for `platform` (Docker's cache makes a rebuild quick), each saved as an
    archive under build/images/ (reused while the image is unchanged)."""
    if platform not in images.WHEEL_PLATFORMS:
        raise MonitoringError(f"platform {platform!r}: one of {sorted(images.WHEEL_PLATFORMS)}")
    arch = platform.split("/", 1)[1]
    images.ensure_base(base_image, platform, "the monitoring host", log)
    archives = {}
    for component, (package, binary) in PACKAGES.items():
        name = tag(component, arch)
        log(f"building {name} ({platform}, Debian's {package} on {base_image})")
        images._run(["docker", "build", "--network", "host", "--platform", platform, "--quiet",
                     "-f", str(DOCKERFILE), "-t", name,
                     "--label", f"org.opencontainers.image.version={__version__}",
                     "--build-arg", f"BASE_IMAGE={base_image}",
                     "--build-arg", f"PACKAGE={package}", "--build-arg", f"BINARY={binary}",
                     str(DOCKERFILE.parent)], f"docker build {name}", capture_output=True)
        archives[component] = images.save(name, log=log)
    return archives


@dataclass(frozen=True)
class Stack:
    """One monitoring host's settings: STACK_DEFAULTS overridden by its `edgegen_monitoring`."""

    settings: dict[str, Any]

    @classmethod
    def of(cls, host: str, hostvars: dict[str, Any]) -> "Stack":
        given = hostvars.get("edgegen_monitoring") or {}
        if not isinstance(given, dict):
            raise MonitoringError(f"{host}: edgegen_monitoring must be a mapping")
        unknown = sorted(set(given) - set(STACK_DEFAULTS))
        if unknown:
            raise MonitoringError(f"{host}: unknown edgegen_monitoring key(s) {unknown}; known: "
                                  f"{sorted(STACK_DEFAULTS)}")
        ports = {**STACK_DEFAULTS["ports"], **(given.get("ports") or {})}
        bad = [k for k, v in ports.items() if k not in STACK_DEFAULTS["ports"]
               or not isinstance(v, int) or not 0 < v < 65536]
        if bad:
            raise MonitoringError(f"{host}: edgegen_monitoring.ports: {bad} must be ports of "
                                  f"{list(STACK_DEFAULTS['ports'])}")
        archive = given.get("grafana_archive")
        if archive and not Path(archive).is_file():
            raise MonitoringError(f"{host}: edgegen_monitoring.grafana_archive {archive}: no such "
                                  f"file (a `docker save` of the Grafana image)")
        if archive and not given.get("grafana_image"):
            raise MonitoringError(f"{host}: edgegen_monitoring.grafana_archive needs "
                                  f"grafana_image, the tag the archive holds")
        settings = {**STACK_DEFAULTS, **given, "ports": ports}
        for key in ("scrape_interval", "evaluation_interval", "group_wait", "group_interval",
                    "repeat_interval", "resolve_timeout", "retention"):
            try:
                _seconds(settings[key])
            except MonitoringError as exc:
                raise MonitoringError(f"{host}: edgegen_monitoring.{key}: {exc}") from None
        return cls(settings)

    def address(self, component: str) -> str:
        """host:port where the stack's own components reach `component` (loopback when they
        listen everywhere)."""
        listen = self.settings["listen"]
        host = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
        return f"{host}:{self.settings['ports'][component]}"


def render(stack: Stack, out: Path) -> Path:
    """The stack's configuration under `out`: prometheus/ (the kit's prometheus.yml with this
    host's intervals and its Alertmanager; rules with this host's `for` overrides; targets/ with
    the Pushgateway, beside which the monitoring_target role writes the devices),
    alertmanager/alertmanager.yml, and grafana/ (provisioning and dashboards, its datasource at
    this Prometheus). Replaces what `out` held."""
    s = stack.settings
    shutil.rmtree(out, ignore_errors=True)
    prom = out / "prometheus"
    (prom / "rules").mkdir(parents=True)
    (prom / "targets" / "pushgateway").mkdir(parents=True)
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=s["scrape_interval"],
                            evaluation_interval=s["evaluation_interval"])
    config["alerting"] = {"alertmanagers": [{"static_configs": [
        {"targets": [stack.address("alertmanager")]}]}]}
    for job in config["scrape_configs"]:
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [stack.address("prometheus")]}]
        # a scrape may not outlast its interval (Prometheus refuses the config)
        if "scrape_timeout" in job and \
                _seconds(job["scrape_timeout"]) > _seconds(s["scrape_interval"]):
            job["scrape_timeout"] = s["scrape_interval"]
    _write_yaml(prom / "prometheus.yml", config)
    overrides, seen = dict(s["alert_for"]), set()
    for path in sorted((MONITORING / "prometheus" / "rules").glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") in overrides:
                    rule["for"] = str(overrides[rule["alert"]])
                    seen.add(rule["alert"])
        _write_yaml(prom / "rules" / path.name, rules)
    if set(overrides) - seen:
        raise MonitoringError(f"edgegen_monitoring.alert_for names no alert of the kit's rules: "
                              f"{sorted(set(overrides) - seen)}")
    (prom / "targets" / "pushgateway" / "stack.json").write_text(json.dumps(
        [{"targets": [stack.address("pushgateway")], "labels": {"source": "pushgateway"}}],
        indent=2) + "\n")
    receiver = {"name": "edgegen"}
    if s["webhook_url"]:
        receiver["webhook_configs"] = [{"url": s["webhook_url"], "send_resolved": True}]
    alertmanager = {
        "global": {"resolve_timeout": s["resolve_timeout"]},
        "route": {"receiver": "edgegen", "group_by": ["alertname", "device"],
                  "group_wait": s["group_wait"], "group_interval": s["group_interval"],
                  "repeat_interval": s["repeat_interval"]},
        "receivers": [receiver]}
    (out / "alertmanager").mkdir()
    _write_yaml(out / "alertmanager" / "alertmanager.yml", alertmanager)
    # Grafana's provisioning: the dashboards, and the datasource at this stack's Prometheus
    grafana = out / "grafana"
    shutil.copytree(MONITORING / "grafana" / "provisioning", grafana / "provisioning")
    shutil.copytree(MONITORING / "grafana" / "dashboards", grafana / "dashboards")
    source = grafana / "provisioning" / "datasources" / "prometheus.yml"
    datasources = yaml.safe_load(source.read_text())
    for each in datasources["datasources"]:
        if each["uid"] == "edgegen-prometheus":
            each["url"] = f"http://{stack.address('prometheus')}"
            each["jsonData"]["timeInterval"] = s["scrape_interval"]
    _write_yaml(source, datasources)
    return out


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(duration: str) -> float:
    """A Prometheus duration ("15s", "1m30s") in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        raise MonitoringError(f"{duration!r} is not a Prometheus duration (e.g. 15s, 1m30s)")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def _write_yaml(path: Path, data: Any) -> None:
    path.write_text("# Rendered by fleet/monitoring.py from the kit's monitoring/ files: edit "
                    "those, or the host's edgegen_monitoring.\n"
                    + yaml.safe_dump(data, sort_keys=False, width=100))


def deploy(inventory: Path, *, check: bool = False, limit: str = "",
           vault_password_file: str = "", out: TextIO = sys.stdout) -> int:
    """Build (or reuse) the images for the monitoring hosts' platform, render each host's
    configuration and run ansible/monitoring.yml; print a table of hosts and return 0 when
    every host's stack is up and ready."""

    def log(text: str) -> None:
        print(text, file=out, flush=True)

    hosts = rollout_hosts(inventory, "monitoring", limit)
    stacks = {host: Stack.of(host, hostvars) for host, hostvars in hosts.items()}
    configs = ARTIFACTS / "config"
    for host, stack in stacks.items():  # settings refused before anything is built
        render(stack, configs / host)
    platforms = {str(v.get("edgegen_monitoring_platform", "linux/amd64")) for v in hosts.values()}
    archives = {p: build_images(p, log=log) for p in sorted(platforms)}
    extravars = {
        "monitoring_config_root": str(configs.resolve()),
        "monitoring_stacks": {host: stack.settings for host, stack in stacks.items()},
        "monitoring_image_sets": {
            p: {c: {"tag": a.tag, "image_id": a.image_id, "archive": str(a.path.resolve()),
                    "sha256": a.sha256} for c, a in set_.items()}
            for p, set_ in archives.items()}}
    display = Display(out)
    log(f"deploying the monitoring stack to {len(hosts)} host(s): {', '.join(hosts)}"
        f"{' (check mode: nothing changes)' if check else ''}")
    runner = playbook.run("monitoring.yml", inventory, ARTIFACTS / "runs", extravars, display,
                          limit=",".join(hosts),
                          cmdline=playbook.cmdline(check=check,
                                                   vault_password_file=vault_password_file))
    rows = reports(runner.stats or {}, display, list(hosts))
    log("")
    for row in rows:
        urls = row.result.get("urls") or {}
        log(f"{row.host:<20} {row.status:<12} {row.changed:>3} changes  "
            + "  ".join(f"{c} {u}" for c, u in urls.items()) + (f"  {row.message}"
                                                                  if row.message else ""))
    summary = {"hosts": [r.__dict__ for r in rows], "status": runner.status, "rc": runner.rc}
    return playbook.conclude(runner, rows, summary, f"monitoring stack ready on {len(rows)} "
                             f"host(s)", log)
