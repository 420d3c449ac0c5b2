"""A fleet of twelve simulated devices, each its own amd64 container with sshd (the simulated
device image, as conftest.py's `fleet`), rolled out as a `jetson` class with canary batches
`[1, "25%", "100%"]` and up to half of a batch allowed to fail, through `python -m fleet deploy`:

- deploy wall time on 12 fresh devices, printed; `make bench-fleet` (EDGEGEN_BENCH_FLEET=1)
  measures 1 and 4 before it in the same run, as ratios (how a rollout grows with the fleet);
- a release whose bundle does not load is stopped by the canary, rolled back there, and no other
  device receives it;
- a good release meets four faults: a device that is down (unreachable from the start), one
  whose disk is full (the bundle sync fails), one whose new server fails its health check (its
  new port is held by another program) and one that loses its connection in the middle of the
  deploy (its sshd is killed). The release reaches every healthy device; the failed ones keep
  serving the old release (rolled back where the new one had started); the table names each
  fault (unreachable, disk full, unhealthy, connection lost);
- with the faults fixed, the same deploy again changes those four and nothing on the other
  eight, and leaves nothing to `--resume`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import threading
import time
from hashlib import sha256
from pathlib import Path

import pytest
import yaml

from edge_app import __version__

from ..conftest import free_port
from .devices import (cut_bundle, fleet_deploy, ok, rebundle, run_cmd, serving, table_rows,
                      wait_ssh)
from .simfleet import SIM_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.docker_images("fleet")]
GOOD = f"edgegen-edge:{__version__}-jetson-amd64"
HOSTS = [f"dev-{i:02d}" for i in range(1, 13)]
LOST, SICK, FULL, DOWN = HOSTS[-4:]  # the faults, all in the last batch
VOLUME = "edgegen-e2e-full-disk"  # a 200 MB tmpfs: the root of the device whose disk fills up


def _sim(host: str) -> str:
    return f"edgegen-sim-{host}"


def _edge(host: str) -> str:
    return f"edgegen-{host}"


def _release_dir(bundle: Path) -> str:
    """The directory a bundle version gets on a device (edge_node: name-<manifest sha256[:12]>)."""
    manifest = (bundle / "manifest.json").read_bytes().rstrip()  # as Ansible's file lookup reads it
    return f"{bundle.name}-{sha256(manifest).hexdigest()[:12]}"


def _cleanup() -> None:
    subprocess.run(["docker", "rm", "-f", *map(_sim, HOSTS), *map(_edge, HOSTS)],
                   capture_output=True)
    subprocess.run(["docker", "volume", "rm", "-f", VOLUME], capture_output=True)


def _start_sim(host: str, ssh_port: int, data: Path, key: Path, volume: bool = False) -> None:
    mount = f"{VOLUME}:{data}" if volume else f"{data}:{data}"
    ok(run_cmd(["docker", "run", "-d", "--name", _sim(host), "--network", "host",
                "--platform", "linux/amd64", "-e", f"SSH_PORT={ssh_port}",
                "-v", f"{key}:/home/deploy/.ssh/authorized_keys:ro",
                "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", mount,
                SIM_IMAGE.format(arch="amd64")]))


@pytest.fixture(scope="module")
def twelve(fleet, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet12")
    _cleanup()
    # The full disk: a tmpfs volume mounted in the device at the path the host's engine mounts
    # it on, so the server containers it starts (on this machine's engine) see the same files.
    ok(run_cmd(["docker", "volume", "create", "--driver", "local", "--opt", "type=tmpfs",
                "--opt", "device=tmpfs", "--opt", "o=size=200m", VOLUME]))
    volume = Path(ok(run_cmd(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}",
                              VOLUME])).strip())
    data = yaml.safe_load(fleet.inventory.read_text())["all"]
    jetson = {**data["children"]["jetson"]["hosts"]["jetson-sim"]}
    jetson.pop("edgegen_api_key_file", None)  # open servers, for brevity
    key = fleet.root / "id_ed25519.pub"
    hosts, ssh_ports = {}, {}
    for host in HOSTS:
        ssh_ports[host] = free_port()
        device = volume if host == FULL else root / host
        device.mkdir(exist_ok=True)
        _start_sim(host, ssh_ports[host], device, key, volume=host == FULL)
        hosts[host] = {**jetson, "ansible_port": ssh_ports[host], "edgegen_port": free_port(),
                       "edgegen_root": f"{device}/opt/edgegen",
                       "edgegen_container_name": _edge(host),
                       "edgegen_serial": [1, "25%", "100%"], "edgegen_max_fail_percentage": 50}
    for port in ssh_ports.values():
        wait_ssh(port)
    # The faulty server gives up quickly: 3 probes 1 s apart, 2 s each.
    hosts[SICK].update({"edgegen_health_retries": 3, "edgegen_health_delay": 1,
                        "edgegen_health_timeout": 2})

    def inventory(name: str, **overrides: dict) -> Path:
        path = root / f"{name}.yml"
        path.write_text(yaml.safe_dump({"all": {"vars": data["vars"], "children": {"jetson": {
            "hosts": {h: {**v, **overrides.get(h, {})} for h, v in hosts.items()}}}}},
            sort_keys=False))
        return path

    # Release A, the cut release (its model file cut in half, its manifest consistent with it:
    # only loading fails) beside it, and release B: A's files under a new manifest.
    bundles, later = root / "bundles", root / "bundles-b"
    shutil.copytree(fleet.bundles / "tiny-dcgan", bundles / "tiny-dcgan")
    cut_bundle(bundles / "tiny-dcgan", bundles / "tiny-dcgan-cut")
    manifest = json.loads((bundles / "tiny-dcgan" / "manifest.json").read_text())
    rebundle(bundles / "tiny-dcgan", later / "tiny-dcgan",
             {"provenance": {**manifest.get("provenance", {}), "release": "B"}})
    yield {"root": root, "hosts": hosts, "inventory": inventory, "ssh": ssh_ports, "key": key,
           "volume": volume, "fleet": fleet, "a": bundles, "b": later}
    _cleanup()


def _rows(out: str) -> dict[str, str]:
    return table_rows(out, r"dev-\d\d")


def _faults(out: str) -> dict[str, str]:
    """The HEALTH column of the hosts that did not finish: their faults, named."""
    return dict(re.findall(r"^(dev-\d\d)\s+(?:failed|unreachable)\s+\d+\s+-\s+-\s+(.+)$",
                           out, re.M))


def _notes(out: str) -> dict[str, str]:
    return dict(re.findall(r"^  (dev-\d\d): (.+)$", out, re.M))


def _release(t, host: str) -> str:
    """The bundle version a device's running deployment serves (its state record)."""
    state = Path(t["hosts"][host]["edgegen_root"]) / "state" / "current.json"
    return json.loads(state.read_text())["bundle_dirs"][0]


def _deploy(t, inventory: Path, *extra: str, bundles: Path | None = None):
    started = time.monotonic()
    result = fleet_deploy(t["fleet"], "jetson", *extra, inventory=inventory,
                          bundles=bundles or t["a"])
    return result, time.monotonic() - started


def _kill_when_syncing(t, host: str, release: str) -> threading.Thread:
    """Kill a device's sshd (its container) once the deploy starts copying `release` there:
    the connection is lost in the middle of the deploy, after its server was last touched."""
    target = Path(t["hosts"][host]["edgegen_root"]) / "bundles" / release

    def watch() -> None:
        deadline = time.monotonic() + 900
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["docker", "kill", _sim(host)], capture_output=True)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_twelve_devices_scale_canary_faults_resume(twelve, capsys):
    t = twelve
    plain = t["inventory"]("fleet")
    release_a, release_b = _release_dir(t["a"] / "tiny-dcgan"), _release_dir(t["b"] / "tiny-dcgan")

    # Deploy wall time for 12 fresh devices; with EDGEGEN_BENCH_FLEET=1 (`make bench-fleet`)
    # for 1 and 4 before, in the same run (those devices torn down after).
    took = {}
    if os.environ.get("EDGEGEN_BENCH_FLEET") == "1":
        for size, limit in ((1, HOSTS[:1]), (4, HOSTS[1:5])):
            result, took[size] = _deploy(t, plain, "--limit", ",".join(limit))
            assert _rows(ok(result)) == dict.fromkeys(limit, "changed")
        subprocess.run(["docker", "rm", "-f", *map(_edge, HOSTS[:5])], capture_output=True)
        for host in HOSTS[:5]:
            shutil.rmtree(Path(t["hosts"][host]["edgegen_root"]))
    result, took[12] = _deploy(t, plain)
    out = ok(result)
    assert _rows(out) == dict.fromkeys(HOSTS, "changed"), out[-5000:]
    assert "12 hosts: 12 changed" in out and "(only changes and failures are shown live)" in out
    with capsys.disabled():
        print(f"\nfleet deploy wall time on fresh devices ({platform.node()}, {os.cpu_count()} "
              f"CPUs; {len(HOSTS)} simulated amd64 devices on the same machine, jetson stand-in "
              "image, batches 1, 25%, 100%): "
              + ", ".join(f"{n} device(s) {s:.0f} s"
                          + (f" ({s / took[1]:.2f}x)" if len(took) > 1 else "")
                          for n, s in took.items()))
    ports = {h: t["hosts"][h]["edgegen_port"] for h in HOSTS}
    assert all(serving(ports[h]) for h in HOSTS)

    # A release whose bundle does not load: the canary takes it, fails, is rolled back; no other
    # device gets it.
    result, _ = _deploy(t, plain, "-e", 'edgegen_bundles=["tiny-dcgan-cut"]',
                        "-e", "edgegen_health_retries=3", "-e", "edgegen_health_delay=1",
                        "-e", "edgegen_ready_retries=3", "-e", "edgegen_ready_delay=1")
    out = result.stdout
    assert result.returncode == 1, out[-5000:]
    assert _rows(out) == {"dev-01": "failed", **dict.fromkeys(HOSTS[1:], "not run")}, out[-5000:]
    assert _faults(out)["dev-01"] == "unhealthy, rolled back"
    assert f"dev-01: {GOOD} failed its health check" in out and f"rolled back to {GOOD}" in out
    assert all(serving(ports[h]) for h in HOSTS)
    assert {_release(t, h) for h in HOSTS} == {release_a}

    # Release B, with four faults.
    ok(run_cmd(["docker", "stop", "-t", "1", _sim(DOWN)]))  # the device is down
    ok(run_cmd(["docker", "exec", _sim(FULL), "sh", "-c",  # its disk fills up
                f"dd if=/dev/zero of={t['volume']}/filler bs=64k 2>/dev/null; test -s "
                f"{t['volume']}/filler"]))
    moved = free_port()  # the sick device's server moves to a port another program holds
    faulty = t["inventory"]("faults", **{SICK: {"edgegen_port": moved}})
    lost = _kill_when_syncing(t, LOST, release_b)
    with socket.create_server(("127.0.0.1", moved)):  # taken, and never answers
        result, _ = _deploy(t, faulty, bundles=t["b"])
    lost.join(timeout=5)
    out = result.stdout
    assert result.returncode == 1, out[-6000:]
    assert _rows(out) == {**dict.fromkeys(HOSTS[:8], "changed"), LOST: "unreachable",
                          SICK: "failed", FULL: "failed", DOWN: "unreachable"}, out[-6000:]
    assert "12 hosts: 8 changed, 2 failed, 2 unreachable" in out, out[-3000:]
    # the table names each fault, and its notes say why
    assert _faults(out) == {LOST: "connection lost", SICK: "unhealthy, rolled back",
                            FULL: "disk full", DOWN: "unreachable"}, out[-3000:]
    notes = _notes(out)
    assert "No space left on device" in notes[FULL], notes
    assert "failed its health check" in notes[SICK] and "rolled back to" in notes[SICK], notes
    assert "ssh" in notes[DOWN].lower() and "ssh" in notes[LOST].lower(), notes
    # every device serves: the release on the healthy ones, the old one where it failed
    assert all(serving(ports[h]) for h in HOSTS)
    assert {h: _release(t, h) for h in HOSTS} == {
        **dict.fromkeys(HOSTS[:8], release_b), **dict.fromkeys(HOSTS[8:], release_a)}

    # The faults fixed, the same deploy again: it changes those four and nothing on the rest,
    # and the rollout's record has nothing left to resume.
    for host in (DOWN, LOST):
        ok(run_cmd(["docker", "start", _sim(host)]))
        wait_ssh(t["ssh"][host])
    ok(run_cmd(["docker", "exec", _sim(FULL), "rm", f"{t['volume']}/filler"]))
    result, _ = _deploy(t, faulty, bundles=t["b"])
    out = ok(result)
    assert _rows(out) == {**dict.fromkeys(HOSTS[:8], "ok"),
                          **dict.fromkeys(HOSTS[8:], "changed")}, out[-5000:]
    assert "12 hosts: 4 changed, 8 ok" in out
    ports[SICK] = moved
    assert all(serving(ports[h]) for h in HOSTS)
    assert {_release(t, h) for h in HOSTS} == {release_b}
    result, _ = _deploy(t, faulty, "--resume", bundles=t["b"])
    assert "nothing to resume: every jetson device finished the rollout of " + GOOD in ok(result)
