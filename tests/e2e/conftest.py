"""The e2e tier needs a Docker engine; each module skips with the reason when there is none.
Its images are built once per run (prebuild.py), beside the other tiers when the session
started that (tests/conftest.py), else here when a test first needs them. The simulated fleet
(`fleet`) is started once and shared by the deploy tests."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from .. import background
from ..conftest import free_port
from .devices import ok, run_cmd, wait_ssh
from .prebuild import ready_line
from .simfleet import JETSON_STAND_IN, NANO_STAND_IN, SIM_IMAGE, SIMS

IMAGES_JOB = "e2e-images"
IMAGES_TIMEOUT_S = 3600  # debootstrap, apt and pip under qemu on a slow host, beside the tests


def prebuilt(group: str) -> None:
    """Wait for the session's image builds that include `group` (prebuild.py), or build that
    group now; AssertionError with the build log's tail when that group failed."""
    job = background.JOBS.get(IMAGES_JOB)
    if job is None or group not in job.argv:
        job = background.job(f"{IMAGES_JOB}-{group}",
                             background.python_module("tests.e2e.prebuild", group))
    job.wait(IMAGES_TIMEOUT_S, check=False)  # another group's failure is not this one's
    assert ready_line(group) in job.tail(chars=10**7), \
        f"the {group} images were not built ({job.log}):\n{job.tail()}"


def docker_missing() -> str | None:
    """Why Docker cannot be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker client installed"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=30)
    return None if info.returncode == 0 else f"no Docker engine reachable: {info.stderr.strip()}"


def arm64_missing() -> str | None:
    """Why arm64 containers cannot run here (qemu-user-static through binfmt_misc), or None."""
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not handler.exists():
        return "no binfmt_misc handler for arm64: run images/base/qemu-arm64.sh (as root)"
    flags = next((ln.split(":", 1)[1] for ln in handler.read_text().splitlines()
                  if ln.startswith("flags:")), "")
    if "C" not in flags:
        return ("the arm64 binfmt handler lacks the C (credentials) flag, so sudo cannot work "
                "in arm64 containers: run images/base/qemu-arm64.sh")
    return None


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, dcgan_bundle):
    """The simulated devices (simfleet.SIMS), each a container running sshd on a loopback port
    with this machine's Docker engine, and two inventories: `inventory` (the pi and jetson
    stand-ins and a monitoring host) and `nano_inventory` (the jetson_nano stand-in alone, so
    `make bench DEVICE=all` on the first measures what test_deploy.py deployed)."""
    reason = docker_missing() or arm64_missing()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("fleet")
    ok(run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "id_ed25519")]))
    bundles = root / "bundles"
    shutil.copytree(dcgan_bundle, bundles / "tiny-dcgan")
    # The debootstrap bases, the simulated devices' images and both edge images (prebuild.py).
    prebuilt("fleet")
    sims = {name: (sim.arch, free_port(), free_port()) for name, sim in SIMS.items()}
    names = []
    for name, (arch, ssh_port, _) in sims.items():
        data = root / name
        data.mkdir()
        names.append(f"edgegen-sim-{name}")
        subprocess.run(["docker", "rm", "-f", names[-1], f"edgegen-edge-{name}"],
                       capture_output=True)
        ok(run_cmd(["docker", "run", "-d", "--name", names[-1], "--network", "host",
                    "--platform", f"linux/{arch}", "-e", f"SSH_PORT={ssh_port}",
                    "-v", f"{root / 'id_ed25519.pub'}:/home/deploy/.ssh/authorized_keys:ro",
                    "-v", "/var/run/docker.sock:/var/run/docker.sock",
                    "-v", f"{data}:{data}", SIM_IMAGE.format(arch=arch)]))
    # JetPack registers NVIDIA's runtime in daemon.json; the docker role must keep it.
    ok(run_cmd(["docker", "exec", "edgegen-sim-jetson-sim", "sh", "-c",
                "mkdir -p /etc/docker && echo '{\"runtimes\": {\"nvidia\": {\"path\": "
                "\"nvidia-container-runtime\", \"runtimeArgs\": []}}}' > /etc/docker/daemon.json"]))
    for _, ssh_port, _ in sims.values():
        wait_ssh(ssh_port)

    def host(name, **overrides):
        # Host vars: in Ansible they outrank the class files (playbook group_vars), which an
        # inventory file's group vars do not.
        _, ssh_port, edge_port = sims[name]
        return {"ansible_host": "127.0.0.1", "ansible_port": ssh_port, "edgegen_port": edge_port,
                "edgegen_root": f"{root / name}/opt/edgegen",
                "edgegen_container_name": f"edgegen-edge-{name}",
                "edgegen_bundles": ["tiny-dcgan"],
                # No init system in a simulated device; its engine is this machine's.
                "edgegen_docker_service_manage": False,
                # Tests reach the servers on loopback only.
                "edgegen_server_config": {"host": "127.0.0.1"}, **overrides}

    key_file = root / "api_key"
    key_file.write_text(secrets.token_hex(24) + "\n")
    access = {"ansible_user": "deploy", "ansible_ssh_private_key_file": str(root / "id_ed25519"),
              # Fresh host keys on every run of these throwaway devices.
              "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                         "-o UserKnownHostsFile=/dev/null",
              "ansible_python_interpreter": "/usr/bin/python3"}
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": access,
        "children": {
            "pi": {"hosts": {"pi-sim": host("pi-sim")}},
            # The BASE_IMAGE override (simfleet.JETSON_STAND_IN): a Debian base on amd64, ONNX
            # Runtime's CPU build and no NVIDIA runtime; the operator's API key file (never in
            # the inventory itself).
            "jetson": {"hosts": {"jetson-sim": host(
                "jetson-sim", **JETSON_STAND_IN, edgegen_docker_runtime="",
                edgegen_api_key_file=str(key_file))}},
            "monitoring": {"hosts": {"prometheus-sim": {
                "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "edgegen_targets_file": str(root / "targets" / "edge.json"),
                "edgegen_monitoring_become": False}}}}}}, sort_keys=False))
    nano_inventory = root / "nano-inventory.yml"
    nano_inventory.write_text(yaml.safe_dump({"all": {
        "vars": access,
        "children": {"jetson_nano": {"hosts": {"nano-sim": host(
            "nano-sim", **NANO_STAND_IN)}}}}}, sort_keys=False))
    yield SimpleNamespace(root=root, inventory=inventory, nano_inventory=nano_inventory,
                          bundles=bundles, key=key_file.read_text().strip(), archive={},
                          port={n: p for n, (_, _, p) in sims.items()})
    subprocess.run(["docker", "rm", "-f", *names, *(f"edgegen-edge-{name}" for name in sims)],
                   capture_output=True)
