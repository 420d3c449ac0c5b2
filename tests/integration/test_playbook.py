"""The ansible-runner driver (fleet.playbook) running a real playbook: deploy.yml's monitoring
play on this machine (local connection), which writes the Prometheus targets file."""

from __future__ import annotations

import io
import json
import sys

import pytest
import yaml

from fleet import playbook

pytestmark = pytest.mark.integration


def _monitoring_play(tmp_path, *cmdline: str):
    targets = tmp_path / "targets" / "edge.json"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "pi": {"hosts": {"pi-01": {"ansible_host": "127.0.0.1", "edgegen_port": 8080}}},
        "monitoring": {"hosts": {"prometheus": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "edgegen_targets_file": str(targets), "edgegen_monitoring_become": False}}}}}}))
    out = io.StringIO()
    runner = playbook.run("deploy.yml", inventory, tmp_path / "private", {"edgegen_class": "pi"},
                          playbook.Display(out), limit="monitoring", cmdline=list(cmdline))
    assert runner.status == "successful", out.getvalue()
    return targets, out.getvalue()


def test_a_run_after_a_check_run_changes_things_again(tmp_path):
    # ansible-runner stores a run's command line in its private directory and reuses it when the
    # next run passes none: a deploy after `--check` must not stay a dry run.
    targets, out = _monitoring_play(tmp_path, "--check")
    assert "changed   Write the Prometheus file_sd targets" in out and not targets.exists()
    targets, out = _monitoring_play(tmp_path)
    assert "changed   Write the Prometheus file_sd targets" in out, out
    assert [e["labels"]["device"] for e in json.loads(targets.read_text())] == ["pi-01"]
