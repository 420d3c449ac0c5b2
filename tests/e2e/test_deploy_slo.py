"""Bundles chosen by measurement on the simulated fleet (conftest.py's `fleet`): two classes,
the `jetson` and `jetson_nano` stand-ins, name the same two candidates of one model - a tiny
DCGAN and a lean variant of it (90 % of its channels pruned, no fine-tuning) - and different
service-level objectives (fleet/slo.py). The test walks the operator's path:

1. `make deploy` without measurements is refused in one line naming `make bench`;
2. `--allow-unmeasured` serves the declared default and ships the candidates beside it;
3. `make bench DEVICE=all` measures both candidates in both devices' containers;
4. `make deploy` per class serves what its SLO and the measurements dictate: the two classes
   end up serving different candidates; the choice is printed and recorded;
5. an SLO no candidate meets is refused, naming the closest and what it missed;
6. a redeploy with unchanged measurements changes nothing.

The deployments are the test's own (their own root, container and port on the simulated
devices), so the other e2e tests' servers are left as they were.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import requests
import yaml

from fleet.slo import Slo, choose

from ..conftest import REPO, TINY_RECIPE, free_port
from .devices import deploy_summary, fleet_deploy, ok, run_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.docker_images("fleet")]
REF, LEAN = "slo-dcgan", "slo-dcgan-lean"
# Pruning 90 % of a generator's channels without fine-tuning costs it FID for certain (the
# quality gate test in test_recipes.py relies on the same), and most of its bytes.
LEAN_POINT = """points:
  - name: lean
    passes:
      - {pass: prune_channels, ratio: 0.9}
gate:
  max_fid_increase: 1000.0
"""
CLASSES = {"jetson": "jetson-sim", "jetson_nano": "nano-sim"}


@pytest.fixture(scope="module")
def slo(fleet, recipe_runs, fid_extractors, tmp_path_factory):
    root = tmp_path_factory.mktemp("slo")
    recipe = root / "slo-dcgan.yaml"
    recipe.write_text(TINY_RECIPE.read_text().replace("name: tiny-dcgan", f"name: {REF}")
                      + LEAN_POINT)
    run = recipe_runs.run(recipe, fid_extractors)
    assert run.returncode == 0, run.stderr[-3000:]
    # The fleet's hosts, each deployed a second time under its own root, name and port.
    hosts = {}
    for inventory in (fleet.inventory, fleet.nano_inventory):
        data = yaml.safe_load(inventory.read_text())["all"]
        access = data["vars"]
        for group, host in CLASSES.items():
            if group in data["children"]:
                hosts[group] = {**data["children"][group]["hosts"][host]}
                hosts[group].pop("edgegen_api_key_file", None)  # open servers, for brevity
    ports = {}
    for group, host in CLASSES.items():
        ports[group] = free_port()
        hosts[group].update({"edgegen_root": str(fleet.root / host / "opt" / "edgegen-slo"),
                             "edgegen_container_name": f"edgegen-slo-{host}",
                             "edgegen_port": ports[group], "edgegen_bundles": [REF],
                             "edgegen_candidates": {"slo-dcgan": [REF, LEAN]}})

    def inventory(**slos) -> str:
        path = root / "inventory.yml"
        path.write_text(yaml.safe_dump({"all": {"vars": access, "children": {
            group: {"hosts": {CLASSES[group]: {**hosts[group], **(
                {"edgegen_slo": slos[group]} if group in slos else {})}}}
            for group in CLASSES}}}, sort_keys=False))
        return str(path)

    yield fleet, root, run.bundles, inventory, ports
    subprocess.run(["docker", "rm", "-f", *(f"edgegen-slo-{h}" for h in CLASSES.values())],
                   capture_output=True)


def _served(port: int) -> list[str]:
    models = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).json()["data"]
    return [m["id"] for m in models]


def test_classes_serve_the_candidate_their_slo_and_measurements_dictate(slo):
    fleet, root, bundles, inventory, ports = slo
    inv = inventory()
    # 1. Nothing measured yet: refused in one line, before anything is built or changed.
    refused = fleet_deploy(fleet, "jetson", inventory=inv, bundles=bundles)
    assert refused.returncode == 2, refused.stdout[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert "none of its candidate bundles has been measured" in line
    assert "make bench DEVICE=jetson" in line and "--allow-unmeasured" in line

    # 2. The declared default is served; the candidates travel beside it.
    for group, host in CLASSES.items():
        out = ok(fleet_deploy(fleet, group, "--allow-unmeasured", inventory=inv, bundles=bundles))
        assert "no measurements of its candidates" in out
        assert deploy_summary(out)["selection"]["unmeasured"] is True
        assert _served(ports[group]) == [REF]
        mounted = ok(run_cmd(["docker", "exec", f"edgegen-slo-{host}", "ls", "/bundles"]))
        assert mounted.split() == [REF, LEAN]

    # 3. Both candidates measured in both containers (their figures land in the manifests).
    results = root / "results"
    out = ok(run_cmd([sys.executable, "-m", "fleet", "bench", "--device", "all",
                      "--inventory", inv, "--results", str(results), "--bundles", str(bundles),
                      "--repeats", "1", "--runs", "5", "--warmup", "1", "--batches", "1",
                      "--window", "0", "--baseline", "0.5", "--serial", "1",
                      "-e", "edgegen_bench_poll_delay=1"]))
    manifests = {b: json.loads((bundles / b / "manifest.json").read_text()) for b in (REF, LEAN)}
    for group, host in CLASSES.items():
        for m in manifests.values():
            assert list(m["metrics"]["measured"][group]) == [host], out[-3000:]

    # 4. Two SLOs: the Jetson class keeps quality (FID within half the lean variant's loss),
    # the Nano class must fit its storage (bundle size under the midpoint of the two). Both
    # also bound p95 latency, at ten times the slowest candidate's measured p95.
    fid = {b: m["metrics"]["quality"]["fid"] for b, m in manifests.items()}
    size = {b: sum(f["size"] for f in m["files"].values()) / 1e6 for b, m in manifests.items()}
    assert fid[LEAN] > fid[REF] and size[LEAN] < size[REF], (fid, size)
    p95 = max(e["workloads"]["batch_1"]["latency_p95_ms"]["mean"]
              for m in manifests.values() for c in m["metrics"]["measured"].values()
              for e in c.values())
    slos = {"jetson": {"max_fid_increase": (fid[LEAN] - fid[REF]) / 2,
                       "p95_latency_ms": 10 * p95, "objective": "latency"},
            "jetson_nano": {"max_bundle_mb": (size[LEAN] + size[REF]) / 2,
                            "p95_latency_ms": 10 * p95, "objective": "memory"}}
    inv = inventory(**slos)
    chosen = {}
    for group in CLASSES:
        out = ok(fleet_deploy(fleet, group, inventory=inv, bundles=bundles))
        expected = choose(group, {"slo-dcgan": [REF, LEAN]}, Slo.parse(slos[group], group),
                          bundles).chosen["slo-dcgan"]
        summary = deploy_summary(out)
        chosen[group] = summary["selection"]["chosen"]["slo-dcgan"]
        assert chosen[group] == expected and summary["changes"] > 0, out[-4000:]
        assert _served(ports[group]) == [expected]
        # The table names every candidate with the reason it won or lost.
        assert re.search(rf"^slo-dcgan\s+{expected}\s.*chosen: meets the SLO", out, re.M), out
        loser = LEAN if expected == REF else REF
        assert re.search(rf"^slo-dcgan\s+{loser}\s.*misses: (FID increase|bundle size)", out,
                         re.M), out
        # ...and the deployment state keeps the choice, which the report marks.
        record = json.loads((REPO / "build/deploy" / group / "selection.json").read_text())
        assert record["chosen"] == {"slo-dcgan": expected} and record["served"] == [expected]
    assert chosen == {"jetson": REF, "jetson_nano": LEAN}

    # 5. An SLO no candidate meets: refused, naming the closest and what it missed.
    refused = fleet_deploy(fleet, "jetson_nano", bundles=bundles,
                           inventory=inventory(jetson_nano={"p95_latency_ms": 0.001}))
    assert refused.returncode == 2, refused.stdout[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert re.search(r"slo-dcgan: no candidate meets the SLO; the closest, slo-dcgan(-lean)?, "
                     r"misses p95 latency [\d.]+ ms > 0\.001 ms", line), line
    assert _served(ports["jetson_nano"]) == [LEAN]  # still serving what it served

    # 6. Unchanged measurements: nothing changes.
    out = ok(fleet_deploy(fleet, "jetson", inventory=inventory(**slos), bundles=bundles))
    summary = deploy_summary(out)
    assert summary["changes"] == 0 and summary["selection"]["chosen"] == {"slo-dcgan": REF}, \
        out[-4000:]
