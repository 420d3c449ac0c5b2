"""A rollout in batches on a class of four devices (conftest.py's `fleet`: four deployments of
their own - root, container and port - on the `jetson` stand-in, each its own inventory host),
with the class's canary batches `[1, "50%", "100%"]` and no failure tolerated:

- a device whose server cannot start (its port is taken) fails in the second batch: the
  rollout halts there, the devices after it are not touched, the table and its tally say so,
  and `--resume` carries the same release on to exactly the devices that did not get it.

A release the canary stops, and faults at fleet scale: test_fleet_faults.py.
"""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
import yaml

from edge_app import __version__

from ..conftest import free_port
from .devices import deploy_summary, fleet_deploy, ok, serving, table_rows

pytestmark = [pytest.mark.e2e, pytest.mark.docker_images("fleet")]
GOOD = f"edgegen-edge:{__version__}-jetson-amd64"
HOSTS = [f"jet-{i}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def four(fleet, tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout")
    data = yaml.safe_load(fleet.inventory.read_text())["all"]
    base = {**data["children"]["jetson"]["hosts"]["jetson-sim"]}
    base.pop("edgegen_api_key_file", None)  # open servers, for brevity
    ports = {h: free_port() for h in HOSTS}
    hosts = {h: {**base, "edgegen_root": str(fleet.root / "jetson-sim" / "opt" / h),
                 "edgegen_container_name": f"edgegen-{h}", "edgegen_port": ports[h],
                 "edgegen_serial": [1, "50%", "100%"], "edgegen_max_fail_percentage": 0}
             for h in HOSTS}
    # The faulty device gives up quickly: 3 probes 1 s apart, 2 s each.
    hosts["jet-2"].update({"edgegen_health_retries": 3, "edgegen_health_delay": 1,
                           "edgegen_health_timeout": 2})
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": data["vars"], "children": {
        "jetson": {"hosts": hosts}}}}, sort_keys=False))
    yield inventory, ports, fleet, fleet.bundles
    subprocess.run(["docker", "rm", "-f", *(f"edgegen-{h}" for h in HOSTS)], capture_output=True)


def _rows(out: str) -> dict[str, str]:
    return table_rows(out, r"jet-\d")


def test_a_failed_batch_halts_the_rollout_and_resume_finishes_it(four):
    inventory, ports, fleet, bundles = four
    with socket.create_server(("127.0.0.1", ports["jet-2"])):  # taken, and never answers
        result = fleet_deploy(fleet, "jetson", inventory=inventory, bundles=bundles)
    out = result.stdout
    assert result.returncode == 1, out[-5000:]
    assert "in batches of 1, 50%, 100%, halting past 0% failed" in out
    assert _rows(out) == {"jet-1": "changed", "jet-2": "failed", "jet-3": "changed",
                          "jet-4": "not run"}, out[-5000:]
    assert "4 hosts: 2 changed, 1 failed, 1 not run" in out
    assert "DEPLOY_ARGS=--resume` carries it on" in out
    # The canary went alone, then the next batch: two plays of the deploy, the halt after them.
    plays = out.split("PLAY Deploy the edge server")[1:]
    assert len(plays) == 2 and set(re.findall(r"jet-\d", plays[0])) == {"jet-1"}, out[-6000:]
    assert {h for h in HOSTS if serving(ports[h])} == {"jet-1", "jet-3"}

    result = fleet_deploy(fleet, "jetson", "--resume", inventory=inventory, bundles=bundles)
    out = ok(result)
    assert "resuming the rollout of " + GOOD + " on 2 of 4 device(s): jet-2, jet-4" in out
    assert _rows(out) == {"jet-2": "changed", "jet-4": "changed"}, out[-4000:]
    assert deploy_summary(out)["resumed"] is True
    assert all(serving(ports[h]) for h in HOSTS)
    again = ok(fleet_deploy(fleet, "jetson", "--resume", inventory=inventory, bundles=bundles))
    assert "nothing to resume: every jetson device finished the rollout of " + GOOD in again
