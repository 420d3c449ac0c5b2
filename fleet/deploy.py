"""`make deploy DEVICE=<class>`: check that sudo will not ask the devices for a password
(ansible/preflight.yml, seconds), build (or reuse) the class's image, save it, and roll it out
with ansible/deploy.yml through ansible-runner's Python API. Events stream to a live
per-host display; the run ends with a table (host, result, version, URL, health), a
summary.json beside ansible-runner's artifacts, and a non-zero exit when any host failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from . import images, playbook, rollout, slo
from .errors import FleetError
from .inventory import rollout_hosts
from .paths import REPO
from .playbook import Display, HostReport, reports

ARTIFACTS = REPO / "build" / "deploy"
CANARY = [1, "25%", "100%"]  # the rollout's batches when a class names none


class DeployError(FleetError):
    """The rollout cannot start; the message says what to fix."""


def _wanted(hosts: dict[str, dict[str, Any]]) -> set[tuple[str, str]]:
    """(bundle, the precision its class prefers) of every bundle the hosts serve, and ("") of
    the candidates shipped beside them (make bench measures them there: they must load too)."""
    wanted = {(name, str(s.get("edgegen_precision", "")))
              for s in hosts.values() for name in s.get("edgegen_bundles") or []}
    served = {name for name, _ in wanted}
    return wanted | {(name, "") for s in hosts.values()
                     for name in s.get("edgegen_candidate_bundles") or [] if name not in served}


def with_runtimes(hosts: dict[str, dict[str, Any]], bundles_dir: Path) -> dict:
    """The hosts' settings with the runtimes of the bundles they serve and ship: edgegen_litert
    when any is a LiteRT graph, and edgegen_onnxruntime false when all are, so their image
    carries those (fleet/images.py), no more. A bundle that cannot be read keeps ONNX Runtime
    (_check_bundles says what is wrong with it)."""
    from edge_app.bundle import BundleError, read_manifest

    def runtime(name: str) -> str:
        try:
            return read_manifest(bundles_dir / name).graph.runtime
        except (BundleError, OSError):
            return ""

    runtimes = {runtime(name) for name, _ in _wanted(hosts)}
    if "litert" not in runtimes:
        return hosts
    return {host: {**s, "edgegen_litert": True, "edgegen_onnxruntime": runtimes != {"litert"}}
            for host, s in hosts.items()}


def _check_bundles(device_class: str, hosts: dict[str, dict[str, Any]], bundles_dir: Path,
                   log, runtime: str = "", litert: str | None = None,
                   litert_fix: str = "rebuild its image (a deploy that builds it adds LiteRT "
                                     "for LiteRT bundles)") -> None:
    """Every bundle the hosts serve is built and loads on the class's `runtime` ("onnxruntime
    1.32.0": its image's label, a phone's onnxruntime-web; "" = unknown, not checked; "none" =
    an image without ONNX Runtime, built for LiteRT bundles only), LiteRT
    bundles on its `litert` ("ai-edge-litert 2.3.0"; "" = the image has none; None = not
    known, not checked); a note for those of another precision than their class prefers."""
    from edge_app.bundle import BundleError, read_manifest
    from edge_app.compat import CompatError, bundle_needs, litert_refusal, refusal
    from edge_app.onnxrt import missing

    for name, precision in sorted(_wanted(hosts)):
        manifest = bundles_dir / name / "manifest.json"
        if not manifest.is_file():
            raise DeployError(f"bundle {name!r} is not built ({manifest} missing): `make bundles` "
                              f"builds the default one, `make optimize RECIPE=...` others")
        try:  # the schema the server reads, and what it needs (edge_app/compat.py)
            m = read_manifest(manifest.parent)
            needs = bundle_needs(m) if m.graph.runtime == "onnxruntime" else ""
        except (BundleError, CompatError) as exc:
            raise DeployError(f"{manifest}: cannot read what it needs ({exc})") from None
        if m.graph.runtime == "litert":
            why = litert is not None and litert_refusal(
                name, m.graph.min_litert, litert.partition(" ")[2], f"class {device_class}",
                fix=litert_fix)
            if why:
                raise DeployError(why)
        elif runtime == images.NO_RUNTIME:
            raise DeployError(missing(name, f"class {device_class}'s image", "let the deploy "
                                      "build the class's image (no --image or --archive)"))
        elif runtime:
            package, _, version = runtime.partition(" ")
            why = refusal(name, m.graph.opset, needs, package, version, m.graph.ir_version)
            if why:
                raise DeployError(f"class {device_class}: {why}")
        if precision and not m.precision.startswith(precision):
            log(f"note: bundle {name} is {m.precision}; this class prefers {precision} bundles")


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


def render_table(rows: list[HostReport]) -> str:
    header = ("HOST", "RESULT", "CHANGES", "VERSION", "URL", "HEALTH")
    lines = []
    for r in rows:
        ready = r.result.get("ready") or {}
        health = (f"{ready.get('status')} ({', '.join(ready.get('models', []))})"
                  if ready.get("status") else ("-" if r.status == "ok" and not r.result else ""))
        if r.status in playbook.FAILED:
            health = r.fault or r.status
        lines.append((r.host, r.status, str(r.changed), r.result.get("tag", "-"),
                      r.result.get("url", "-"), health or "-"))
    return playbook.table(header, lines, rows)


def _percentage(value: Any) -> float:
    try:
        return float(str(value).rstrip("%"))
    except ValueError:
        return 0.0


def _preflight(device_class: str, inventory: Path, hosts: list[str], extravars: dict[str, Any],
               limit: str, cmdline: list[str], private_dir: Path, out: TextIO, log, forks: int
               ) -> tuple[list[str], int | None]:
    """ansible/preflight.yml on the hosts of the rollout before the image build (minutes): a
    device on which sudo would stop for a password fails now, in one line. Returns the hosts
    that passed, and the exit status when the rollout must not start: more hosts failed than
    edgegen_max_fail_percentage allows (by default, any), or the run itself failed."""
    display = Display(out, compact=len(hosts) > rollout.COMPACT_HOSTS)
    log(f"checking sudo on {len(hosts)} {device_class} device(s) before the build "
        f"(ansible/preflight.yml)")
    max_fail = extravars.get("edgegen_max_fail_percentage", 0)
    runner = playbook.run("preflight.yml", inventory, private_dir, {
        "edgegen_preflight_hosts": device_class,
        "edgegen_preflight_max_fail_percentage": max_fail, **extravars}, display,
        limit=limit or None, cmdline=cmdline, forks=forks)
    rows = reports(runner.stats or {}, display, hosts,
                   stopped="not checked: the preflight stopped before this host")
    failed = [r.host for r in rows if r.status in playbook.FAILED]
    passed = [r.host for r in rows if r.host not in failed]
    if runner.status == "successful" or (
            passed and 100 * len(failed) <= _percentage(max_fail) * len(rows)):
        if failed:
            log(f"preflight: {', '.join(failed)} failed; the rollout goes on without them "
                f"(edgegen_max_fail_percentage {max_fail})")
        return passed, None
    log("")
    log(render_table(rows))
    log("")
    log("the rollout did not start: nothing was built or changed")
    summary = {"class": device_class, "preflight": True, "check": "--check" in cmdline,
               "status": runner.status, "rc": runner.rc, "hosts": [r.__dict__ for r in rows]}
    return passed, playbook.conclude(runner, rows, summary, "preflight ok", log)


def _select(device_class: str, settings: dict[str, Any], bundles_dir: Path,
            allow_unmeasured: bool, explicit: bool, log) -> tuple[dict[str, Any], dict | None]:
    """A class with `edgegen_candidates`: the bundles to serve, chosen by its measurements
    against its `edgegen_slo` (fleet/slo.py), and the candidates to ship beside them (so that
    `make bench` can measure them). Returns (extra vars, the choice's record) - ({}, None) for
    a class that names no candidates, or when the operator named the bundles (-e)."""
    candidates = slo.candidates_of(settings, device_class)
    if not candidates:
        return {}, None
    shipped = list(dict.fromkeys(b for names in candidates.values() for b in names))
    if explicit:
        log(f"class {device_class}: edgegen_bundles given on the command line; its candidates "
            f"are shipped but not chosen by measurement")
        return {"edgegen_candidate_bundles": shipped}, None
    objective = slo.Slo.parse(settings.get("edgegen_slo") or {}, device_class)
    try:
        selection = slo.choose(device_class, candidates, objective, bundles_dir)
    except slo.SloError as exc:
        if exc.selection is None and allow_unmeasured:
            default = list(settings.get("edgegen_bundles") or [])
            log(f"class {device_class}: no measurements of its candidates; deploying the declared "
                f"default {', '.join(default)} (--allow-unmeasured) and shipping "
                f"{', '.join(shipped)} for `make bench DEVICE={device_class}`")
            return {"edgegen_candidate_bundles": shipped}, {
                "class": device_class, "chosen": None, "unmeasured": True, "served": default}
        if exc.selection is not None:
            log(slo.render(exc.selection))
            log("")
        raise
    log(slo.render(selection))
    log("")
    served = list(selection.chosen.values()) + [
        b for b in settings.get("edgegen_bundles") or [] if b not in shipped]
    return ({"edgegen_bundles": served, "edgegen_candidate_bundles": shipped},
            {**selection.record(), "served": served})


def deploy(device_class: str, inventory: Path, *, limit: str = "", check: bool = False,
           image: str = "", archive_path: Path | None = None,
           bundles_dir: Path = REPO / "bundles", extra_vars: dict | None = None,
           allow_unmeasured: bool = False, resume: bool = False,
           vault_password_file: str = "", artifacts: Path = ARTIFACTS,
           out: TextIO = sys.stdout) -> int:
    def log(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    # extra variables win over every inventory value in Ansible: the checks below see them too
    # (e.g. -e edgegen_bundles=[...], as `make reproduce` deploys a table's bundles)
    hosts = {h: {**s, **(extra_vars or {})}
             for h, s in rollout_hosts(inventory, device_class, limit).items()}
    settings = next(iter(hosts.values()))
    if "edgegen_dockerfile" not in settings:
        raise DeployError(f"class {device_class!r} does not run the edge server container")
    # which bundles to serve: measured against the class's SLO, when it names candidates
    chosen_vars, choice = _select(device_class, settings, bundles_dir, allow_unmeasured,
                                  "edgegen_bundles" in (extra_vars or {}), log)
    extra_vars = {**chosen_vars, **(extra_vars or {})}
    hosts = {h: {**s, **extra_vars} for h, s in hosts.items()}
    record = None
    if resume:  # the hosts that did not finish the last rollout, and only those
        record = rollout.load(artifacts / device_class)
        todo = rollout.pending(record, device_class, list(hosts))
        if not todo:
            log(f"nothing to resume: every {device_class} device finished the rollout of "
                f"{record.get('tag')}")
            return 0
        log(f"resuming the rollout of {record.get('tag')} on {len(todo)} of {len(hosts)} "
            f"device(s): {', '.join(todo)}")
        hosts = {h: hosts[h] for h in todo}
        limit = ",".join(todo)
    plan = {"edgegen_class": device_class,
            "edgegen_serial": settings.get("edgegen_serial", CANARY),
            "edgegen_max_fail_percentage": settings.get("edgegen_max_fail_percentage", 0)}
    forks = rollout.forks_for(len(hosts))
    cmdline = playbook.cmdline(check=check, vault_password_file=vault_password_file)
    passed, stop = _preflight(device_class, inventory, list(hosts),
                              {**plan, **(extra_vars or {})}, limit, cmdline,
                              artifacts / device_class / "preflight", out, log, forks)
    if stop is not None:
        return stop
    hosts = with_runtimes(hosts, bundles_dir)
    archive = _archive(device_class, hosts, image, archive_path, log)
    tag = archive.tag
    served = list(next(iter(hosts.values())).get("edgegen_bundles") or [])
    if record is not None:
        rollout.check_same_release(record, archive.image_id, served, device_class)
    if not archive.runtime:
        log(f"note: image {tag} does not say which ONNX Runtime it has (no {images.RUNTIME_LABEL} "
            f"label): bundles are not checked against it")
    _check_bundles(device_class, hosts, bundles_dir, log, archive.runtime,
                   archive.litert if archive.runtime else None)

    extravars = {
        **plan,
        "edge_node_image_tag": tag, "edge_node_image_id": archive.image_id,
        "edge_node_image_archive": str(archive.path.resolve()),
        "edge_node_image_sha256": archive.sha256,
        "edge_node_bundles_src": str(bundles_dir.resolve()),
        # deploy.yml's own preflight play asks only the hosts that did not pass just now.
        "edgegen_preflight_passed": passed,
        **(extra_vars or {})}
    display = Display(out, compact=len(hosts) > rollout.COMPACT_HOSTS)
    log(f"deploying {tag} to {len(hosts)} {device_class} device(s) in batches of "
        f"{rollout.batches(plan['edgegen_serial'])}, halting past "
        f"{plan['edgegen_max_fail_percentage']}% failed, {forks} at a time"
        f"{' (check mode: nothing changes)' if check else ''}"
        + (" (only changes and failures are shown live)" if display.compact else ""))
    # The monitoring play runs too, so its targets list the devices just deployed.
    runner = playbook.run("deploy.yml", inventory, artifacts / device_class, extravars, display,
                          limit=f"{limit},monitoring" if limit else None, cmdline=cmdline,
                          forks=forks)
    stats = runner.stats or {}
    rows = reports(stats, display, list(hosts), play="Deploy the edge server")
    devices = [r for r in rows if r.host in hosts]  # not the monitoring host
    log("")
    log(render_table(rows))
    log(rollout.tally([r.status for r in devices]))
    if not check:
        done = rollout.save(artifacts / device_class,
                            {"tag": tag, "image_id": archive.image_id}, served,
                            {r.host: r.status for r in devices}, record)
        if not done["finished"]:
            log(f"the rollout did not finish: once the faults are fixed, "
                f"`make deploy DEVICE={device_class} DEPLOY_ARGS=--resume` carries it on to "
                f"the devices that did not get it")
    changes = sum(r.changed for r in rows)
    summary = {"class": device_class, "image": tag, "image_id": archive.image_id,
               "check": check, "status": runner.status, "rc": runner.rc,
               "changes": changes, "serial": plan["edgegen_serial"], "forks": forks,
               "resumed": record is not None, "hosts": [r.__dict__ for r in rows],
               **({"selection": choice} if choice else {})}
    if choice and not check and runner.status == "successful":
        # what the class serves and why, beside the deployment's summary: the report marks it
        path = artifacts / device_class / "selection.json"
        path.write_text(json.dumps(choice, indent=2) + "\n")
    log("")
    return playbook.conclude(runner, rows, summary, f"{len(rows)} host(s) ok; " + (
        f"{changes} change(s)" if changes else "no changes"), log)
