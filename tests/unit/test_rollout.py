"""Rollouts at fleet scale (fleet/rollout.py): forks sized for the controller, the tally under
the table, the compact live display, and the record a halted rollout is resumed from. The
rollout itself (Ansible's batches, the halt, --resume) runs in tests/e2e/test_rollout.py."""

from __future__ import annotations

import io
import json

import pytest

from fleet import rollout
from fleet.playbook import Display


def test_forks_follow_the_hosts_the_cores_and_the_free_memory():
    assert rollout.forks_for(1, cpus=2, available_mb=8000) == 1
    assert rollout.forks_for(12, cpus=2, available_mb=8000) == 12
    assert rollout.forks_for(50, cpus=2, available_mb=8000) == 16  # 8 per core
    assert rollout.forks_for(50, cpus=2, available_mb=900) == 6  # 150 MB each
    assert rollout.forks_for(1000, cpus=64, available_mb=10**6) == rollout.MAX_FORKS
    assert rollout.forks_for(3, cpus=1, available_mb=10) == 1
    assert 1 <= rollout.forks_for(50) <= 50  # this machine's own figures


def test_the_tally_counts_each_outcome_in_a_fixed_order():
    statuses = ["changed"] * 45 + ["failed", "unreachable"] + ["not run"] * 3
    assert rollout.tally(statuses) == \
        "50 hosts: 45 changed, 1 failed, 1 unreachable, 3 not run"
    assert rollout.tally(["ok"]) == "1 host: 1 ok"
    assert rollout.batches([1, "25%", "100%"]) == "1, 25%, 100%" and rollout.batches(1) == "1"


def _event(kind, host, task, **res):
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def test_a_compact_display_shows_changes_waits_and_failures_only():
    out = io.StringIO()
    display = Display(out, compact=True)
    display(_event("runner_on_ok", "pi-01", "Create the directories"))
    display(_event("runner_on_ok", "pi-02", "Copy the image archive", changed=True))
    display(_event("runner_retry", "pi-03", "Wait until the server is alive", attempts=2,
                   retries=60))
    display(_event("runner_on_failed", "pi-04", "Start the server", msg="port in use"))
    display(_event("runner_on_ok", "pi-05", "Report the deployment",
                   ansible_facts={"edge_node_result": {"tag": "edgegen-edge:x"}}))
    lines = out.getvalue().splitlines()
    assert [line.split("s] ", 1)[1].split()[:2] for line in lines] == [
        ["pi-02", "changed"], ["pi-03", "waiting"], ["pi-04", "failed"]]
    assert display.results == {"pi-05": {"tag": "edgegen-edge:x"}}  # still collected
    assert display.failures == {"pi-04": "port in use"}


def test_a_halted_rollout_is_resumed_on_the_hosts_that_did_not_finish(tmp_path):
    image = {"tag": "edgegen-edge:1", "image_id": "sha256:" + "a" * 64}
    with pytest.raises(rollout.ResumeError, match=r"^class pi: no rollout to resume \(build/"
                                                  r"deploy/pi/rollout.json is missing\)"):
        rollout.pending(rollout.load(tmp_path), "pi", ["pi-1"])
    first = rollout.save(tmp_path, image, ["gen"], {"pi-1": "changed", "pi-2": "failed",
                                                    "pi-3": "changed", "pi-4": "not run"})
    assert first["finished"] is False
    record = rollout.load(tmp_path)
    # pi-5 joined the inventory since: not part of this rollout.
    assert rollout.pending(record, "pi", ["pi-1", "pi-2", "pi-3", "pi-4", "pi-5"]) == \
        ["pi-2", "pi-4"]
    rollout.check_same_release(record, image["image_id"], ["gen"], "pi")
    with pytest.raises(rollout.ResumeError, match=r"the halted rollout was of edgegen-edge:1 "
                                                  r"\(aaaaaaaaaaaa\) with bundles \['gen'\]; "
                                                  r"this one is bbbbbbbbbbbb with \['gen'\]"):
        rollout.check_same_release(record, "sha256:" + "b" * 64, ["gen"], "pi")
    done = rollout.save(tmp_path, image, ["gen"], {"pi-2": "changed", "pi-4": "changed"},
                        record)
    assert done["finished"] is True and rollout.pending(done, "pi", list(done["hosts"])) == []
    assert json.loads((tmp_path / "rollout.json").read_text())["hosts"]["pi-1"] == "changed"
    (tmp_path / "rollout.json").write_text("{")
    with pytest.raises(rollout.ResumeError, match="cannot read the last rollout"):
        rollout.load(tmp_path)
