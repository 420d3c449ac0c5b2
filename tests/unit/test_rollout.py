"""Rollouts at fleet scale (fleet/rollout.py): forks sized for the controller, the tally under
the table, the compact live display, and the record a halted rollout is resumed from. The
rollout itself (Ansible's batches, the halt, --resume, faults) runs in tests/e2e/test_rollout.py
and tests/e2e/test_fleet_faults.py."""

from __future__ import annotations

import io
import json

import pytest

from fleet import rollout
from fleet.playbook import Display, reports


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


def test_each_host_that_did_not_finish_has_its_fault_named():
    """The events ansible-runner sends for the four faults of tests/e2e/test_fleet_faults.py
    (there for real): a copy that lost the connection counts the host as failed in Ansible's
    stats, and is reported unreachable; a loop's own message gives way to its failed item's."""
    display = Display(io.StringIO())
    for host in ("dev-1", "dev-2", "dev-3", "dev-4"):
        display(_event("runner_on_ok", host, "Gathering Facts"))
    display(_event("runner_on_unreachable", "dev-5", "Run sudo", unreachable=True,
                   msg="Failed to connect to the host via ssh: Connection refused"))
    full = ("Failed to replace file: b'/home/deploy/.ansible/tmp/x' to /opt/edgegen/bundles/b: "
            "[Errno 28] No space left on device")
    display(_event("runner_on_failed", "dev-2", "Sync the bundles", msg="One or more items failed",
                   results=[{"failed": False}, {"failed": True, "msg": full}]))
    # as copy reports it: a failure, not flagged unreachable
    display(_event("runner_on_failed", "dev-3", "Sync the bundles",
                   msg="Failed to connect to the host via ssh: Connection refused"))
    display(_event("runner_on_failed", "dev-4", "Fail the host", msg=(
        "dev-4: edgegen-edge:2 failed its health check (timed out); rolled back to "
        "edgegen-edge:1 (1be516535634), which is serving again")))
    stats = {"ok": dict.fromkeys(["dev-1", "dev-2", "dev-3", "dev-4"], 5),
             "changed": {"dev-1": 3}, "failures": dict.fromkeys(["dev-2", "dev-3", "dev-4"], 1),
             "dark": {"dev-5": 1}}
    rows = reports(stats, display, ["dev-1", "dev-2", "dev-3", "dev-4", "dev-5", "dev-6"])
    assert [(r.host, r.status, r.fault) for r in rows] == [
        ("dev-1", "changed", ""), ("dev-2", "failed", "disk full"),
        ("dev-3", "unreachable", "connection lost"), ("dev-4", "failed", "unhealthy, rolled back"),
        ("dev-5", "unreachable", "unreachable"), ("dev-6", "not run", "not run")]
    assert rows[1].message == full


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
