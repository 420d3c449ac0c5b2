"""`make deploy DEVICE=<class>`: build (or reuse) the class's image, save it, and roll it out
with ansible/deploy.yml through ansible-runner's Python API. Events stream to a live
per-host display; the run ends with a table (host, result, version, URL, health), a
summary.json beside ansible-runner's artifacts, and a non-zero exit when any host failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import images
from .inventory import ANSIBLE_DIR, rollout_hosts

REPO = ANSIBLE_DIR.parent
ARTIFACTS = REPO / "build" / "deploy"
KEEP_RUNS = 10  # ansible-runner artifact directories kept per class


class DeployError(Exception):
    """The rollout cannot start; the message says what to fix."""


@dataclass
class HostReport:
    host: str
    status: str = "ok"  # ok | changed | failed | unreachable | not run
    changed: int = 0
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)  # edge_node_result of the role


class Display:
    """One line per task result and host as events arrive (ansible-runner event_handler)."""

    SHOWN = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable":
             "unreachable", "runner_retry": "waiting", "runner_item_on_failed": "failed"}

    def __init__(self, out: TextIO):
        self.out = out
        self.results: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}
        self.started = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> bool:
        kind, data = event.get("event", ""), event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self._line(f"PLAY {data.get('play', '')}")
        elif kind in self.SHOWN:
            host, res = data.get("host", "?"), data.get("res") or {}
            status = self.SHOWN[kind]
            if kind == "runner_on_ok" and res.get("changed"):
                status = "changed"
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                status = "failed (ignored)"
            note = ""
            if kind == "runner_retry":
                note = f" ({res.get('attempts', '?')}/{res.get('retries', '?')})"
            elif status == "failed" or kind == "runner_on_unreachable":
                note = f": {_message(res)}"
                if not data.get("ignore_errors"):
                    self.failures[host] = _message(res)
            facts = res.get("ansible_facts") or {}
            if "edge_node_result" in facts:
                self.results[host] = facts["edge_node_result"]
            self._line(f"  {host:<18} {status:<9} {data.get('task', '')}{note}")
        return True  # keep the event in the artifacts

    def _line(self, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.started:6.1f}s] {text}\n")
        self.out.flush()


def _message(res: dict[str, Any]) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if not msg and res.get("results"):  # a loop: the first failed item's message
        msg = next((r.get("msg", "") for r in res["results"] if r.get("failed")), "")
    return " ".join(str(msg).split())[:400]


def _check_bundles(hosts: dict[str, dict[str, Any]], bundles_dir: Path, log) -> None:
    """Every bundle the hosts serve is built; a note for those of another precision than their
    class prefers."""
    wanted = {(name, str(s.get("edgegen_precision", "")))
              for s in hosts.values() for name in s.get("edgegen_bundles") or []}
    for name, precision in sorted(wanted):
        manifest = bundles_dir / name / "manifest.json"
        if not manifest.is_file():
            raise DeployError(f"bundle {name!r} is not built ({manifest} missing): `make bundle` "
                              f"builds the default one, `make optimize RECIPE=...` others")
        try:
            got = json.loads(manifest.read_text()).get("precision", "")
        except (OSError, ValueError) as exc:
            raise DeployError(f"{manifest}: cannot read it ({exc})") from None
        if precision and got and not str(got).startswith(precision):
            log(f"note: bundle {name} is {got}; this class prefers {precision} bundles")


def _archive(device_class: str, hosts: dict[str, dict[str, Any]], image: str,
             archive_path: Path | None, log) -> images.Archive:
    """The image archive to roll out: a saved one, a named local image, or the class's image
    built (or reused) now."""
    if archive_path:
        archive = images.load_archive(archive_path)
    else:
        tag = image
        if not tag:
            spec = images.ImageSpec.for_hosts(device_class, hosts)
            images.build(spec, log=log)
            tag = spec.tag
        archive = images.save(tag, log=log)
    log(f"image {archive.tag}: {archive.image_bytes / 1e6:.0f} MB, archive "
        f"{archive.archive_bytes / 1e6:.0f} MB, sha256 {archive.sha256[:12]}")
    return archive


def reports(stats: dict[str, dict[str, int]], display: Display, hosts: list[str]
            ) -> list[HostReport]:
    out = []
    seen = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "processed"):
        seen.update((stats.get(key) or {}).keys())
    for host in hosts + sorted(seen - set(hosts)):
        r = HostReport(host, changed=(stats.get("changed") or {}).get(host, 0),
                       result=display.results.get(host, {}))
        if host in (stats.get("dark") or {}):
            r.status, r.message = "unreachable", display.failures.get(host, "")
        elif host in (stats.get("failures") or {}):
            r.status, r.message = "failed", display.failures.get(host, "")
        elif host not in seen:
            r.status = "not run"
            r.message = "the rollout stopped before this host (max_fail_percentage)"
        elif r.changed:
            r.status = "changed"
        out.append(r)
    return out


def render_table(rows: list[HostReport]) -> str:
    header = ("HOST", "RESULT", "CHANGES", "VERSION", "URL", "HEALTH")
    lines = [header]
    for r in rows:
        ready = r.result.get("ready") or {}
        health = (f"{ready.get('status')} ({', '.join(ready.get('models', []))})"
                  if ready.get("status") else ("-" if r.status == "ok" and not r.result else ""))
        if r.status in ("failed", "unreachable", "not run"):
            health = r.status
        lines.append((r.host, r.status, str(r.changed), r.result.get("tag", "-"),
                      r.result.get("url", "-"), health or "-"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)
    notes = [f"  {r.host}: {r.message}" for r in rows if r.message]
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def deploy(device_class: str, inventory: Path, *, limit: str = "", check: bool = False,
           image: str = "", archive_path: Path | None = None,
           bundles_dir: Path = REPO / "bundles", extra_vars: dict | None = None,
           vault_password_file: str = "", artifacts: Path = ARTIFACTS,
           out: TextIO = sys.stdout) -> int:
    def log(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    hosts = rollout_hosts(inventory, device_class, limit)
    settings = next(iter(hosts.values()))
    if "edgegen_dockerfile" not in settings:
        raise DeployError(f"class {device_class!r} does not run the edge server container")
    archive = _archive(device_class, hosts, image, archive_path, log)
    tag = archive.tag
    _check_bundles(hosts, bundles_dir, log)

    import ansible_runner  # the deploy extra; imported here so `fleet status` needs none of it

    extravars = {
        "edgegen_class": device_class,
        "edgegen_serial": settings.get("edgegen_serial", "25%"),
        "edgegen_max_fail_percentage": settings.get("edgegen_max_fail_percentage", 0),
        "edge_node_image_tag": tag, "edge_node_image_id": archive.image_id,
        "edge_node_image_archive": str(archive.path.resolve()),
        "edge_node_image_sha256": archive.sha256,
        "edge_node_bundles_src": str(bundles_dir.resolve()),
        **(extra_vars or {})}
    cmdline = []
    if check:
        cmdline.append("--check")
    if vault_password_file:
        cmdline += ["--vault-password-file", str(Path(vault_password_file).resolve())]
    private = artifacts / device_class
    private.mkdir(parents=True, exist_ok=True)
    # ansible-playbook lives beside this interpreter (the venv), which may not be on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    display = Display(out)
    log(f"deploying {tag} to {len(hosts)} {device_class} device(s)"
        f"{' (check mode: nothing changes)' if check else ''}")
    runner = ansible_runner.run(
        private_data_dir=str(private), project_dir=str(ANSIBLE_DIR), playbook="deploy.yml",
        # The monitoring play runs too, so its targets list the devices just deployed.
        inventory=str(Path(inventory).resolve()), extravars=extravars,
        limit=f"{limit},monitoring" if limit else None,
        cmdline=" ".join(cmdline) or None, event_handler=display, quiet=True,
        rotate_artifacts=KEEP_RUNS, ident=time.strftime("%Y%m%dT%H%M%S"),
        envvars={"PATH": path, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
                 "ANSIBLE_FORCE_COLOR": "0"})
    stats = runner.stats or {}
    rows = reports(stats, display, list(hosts))
    failed = [r for r in rows if r.status in ("failed", "unreachable", "not run")]
    log("")
    log(render_table(rows))
    changes = sum(r.changed for r in rows)
    summary = {"class": device_class, "image": tag, "image_id": archive.image_id,
               "check": check, "status": runner.status, "rc": runner.rc,
               "changes": changes, "hosts": [r.__dict__ for r in rows]}
    summary_path = Path(runner.config.artifact_dir) / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log("")
    if failed:
        log(f"{len(failed)} of {len(rows)} host(s) failed: {', '.join(r.host for r in failed)}")
    elif runner.status != "successful":
        log(f"ansible-runner ended {runner.status} (rc {runner.rc}); "
            f"see {runner.config.artifact_dir}")
    else:
        log(f"{len(rows)} host(s) ok; " + (f"{changes} change(s)" if changes else "no changes"))
    log(f"summary: {summary_path}")
    return 1 if failed or runner.status != "successful" else 0
