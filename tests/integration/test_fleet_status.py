"""`python -m fleet status` against a small fleet of real servers on loopback ports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import REPO, free_port
from .serverproc import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(dcgan_bundle):
    servers = [ServerProcess(dcgan_bundle), ServerProcess(dcgan_bundle)]
    for server in servers:
        server.wait_ready()
    yield servers
    for server in servers:
        assert server.stop()[0] == 0


def _status(inventory, *args):
    return subprocess.run([sys.executable, "-m", "fleet", "status", "--inventory", str(inventory),
                           "--timeout", "3", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_status_table_names_ready_and_down_devices(fleet, tmp_path):
    down_port = free_port()  # nothing listens there
    inventory = tmp_path / "fleet.yml"
    hosts = "".join(f"        node{i}: {{ansible_host: 127.0.0.1, edgegen_port: {s.port}}}\n"
                    for i, s in enumerate(fleet))
    inventory.write_text("all:\n  children:\n    local:\n      hosts:\n" + hosts +
                         f"        dead: {{ansible_host: 127.0.0.1, edgegen_port: {down_port}}}\n")
    result = _status(inventory)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for i, server in enumerate(fleet):
        (row,) = [line for line in lines if line.startswith(f"node{i} ")]
        assert f"http://127.0.0.1:{server.port}" in row
        assert row.split()[3:6] == ["yes", "yes", "tiny-dcgan"] and "CPUExecutionProvider" in row
    (dead,) = [line for line in lines if line.startswith("dead ")]
    assert dead.split()[3:5] == ["NO", "NO"] and "unreachable" in dead
    assert "1 of 3 device(s) not ready: dead" in result.stdout

    healthy = _status(inventory, "--limit", "node0,node1")
    assert healthy.returncode == 0 and "all 2 device(s) ready" in healthy.stdout


def test_status_bad_inventory_is_one_line(tmp_path):
    result = _status(tmp_path / "missing.yml")
    assert result.returncode == 2 and result.stderr.startswith("fleet: error: cannot read")
    assert len(result.stderr.strip().splitlines()) == 1
