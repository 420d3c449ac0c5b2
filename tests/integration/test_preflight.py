"""ansible/preflight.yml run for real (ansible-runner, as fleet runs it) on this machine over the
local connection. Each inventory host is a "device" whose Python interpreter is a wrapper that
gives the modules it runs a PATH of the device's own: a directory with `sh`, an `id` that says
which user the device connects as, and a `sudo` that behaves as the test needs (prompting,
passwordless, or absent). The task's command itself is the one the playbooks run."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import yaml

from fleet import playbook
from fleet.bench import bench
from fleet.deploy import deploy

pytestmark = pytest.mark.integration

PROMPTS = "sudo: a password is required"
ASKS = ("{host}: sudo asks pi for a password: give it as ansible_become_password (Ansible Vault, "
        "see docs/deploying.md) or allow passwordless sudo")
NO_SUDO = "{host}: sudo is not installed and pi is not root: install sudo, or connect as root " \
          "(ansible_user: root)"


def _device(root: Path, name: str, sudo: str | None, uid: int = 1000) -> dict:
    """Host vars of a local "device": `sudo` is the fake sudo's body (None: no sudo at all)."""
    bin_dir = root / name / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "sh").symlink_to("/bin/sh")
    user = "root" if uid == 0 else "pi"
    _script(bin_dir / "id", f'case "$1" in -u) echo {uid};; -un) echo {user};; *) exit 1;; esac')
    calls = root / name / "sudo-calls"
    if sudo is not None:
        _script(bin_dir / "sudo", f'echo "$*" >> {calls}\n{sudo}')
    python = root / name / "python"
    _script(python, f'PATH={bin_dir} exec {sys.executable} "$@"')
    return {"ansible_connection": "local", "ansible_python_interpreter": str(python)}


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _inventory(root: Path, devices: dict[str, dict]) -> Path:
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"pi": {"hosts": devices}}}}))
    return inventory


def _preflight(tmp_path, devices: dict[str, dict], *cmdline: str):
    out = io.StringIO()
    display = playbook.Display(out)
    runner = playbook.run("preflight.yml", _inventory(tmp_path, devices), tmp_path / "private",
                          {"edgegen_preflight_hosts": "pi"}, display, cmdline=list(cmdline))
    return runner, display, out.getvalue()


def _sudo_calls(tmp_path, name: str) -> list[str]:
    calls = tmp_path / name / "sudo-calls"
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
def test_sudo_that_would_prompt_fails_in_one_line(tmp_path, check):
    devices = {"pi-01": _device(tmp_path, "pi-01", f"echo '{PROMPTS}' >&2; exit 1")}
    runner, display, out = _preflight(tmp_path, devices, *(["--check"] if check else []))
    assert runner.status == "failed", out
    assert display.failures == {"pi-01": ASKS.format(host="pi-01")}
    assert _sudo_calls(tmp_path, "pi-01") == ["-n true"]  # asked once, never allowed to prompt
    # The live display: one line for the device's failure, carrying the whole message.
    failed = [line for line in out.splitlines() if " failed " in line]
    assert len(failed) == 1 and failed[0].endswith(ASKS.format(host="pi-01")), out
    # And the host's report (the note under fleet's tables) is that same single line.
    [row] = playbook.reports(runner.stats, display, ["pi-01"])
    assert (row.status, row.message) == ("failed", ASKS.format(host="pi-01"))
    assert "\n" not in row.message


def test_passwordless_sudo_passes(tmp_path):
    devices = {"pi-01": _device(tmp_path, "pi-01", "exit 0")}
    runner, display, out = _preflight(tmp_path, devices)
    assert runner.status == "successful" and not display.failures, out
    assert _sudo_calls(tmp_path, "pi-01") == ["-n true"]


def test_a_become_password_skips_the_check(tmp_path):
    # Ansible answers the prompt itself with ansible_become_password (e.g. from Vault).
    devices = {"pi-01": {**_device(tmp_path, "pi-01", f"echo '{PROMPTS}' >&2; exit 1"),
                         "ansible_become_password": "from-the-vault"}}
    runner, display, out = _preflight(tmp_path, devices)
    assert runner.status == "successful" and not display.failures, out
    assert _sudo_calls(tmp_path, "pi-01") == []
    assert "pi-01" in runner.stats["skipped"]


def test_a_become_password_from_vault_skips_the_check(tmp_path):
    # As docs/deploying.md says: encrypted into a group_vars file beside the inventory, and the
    # vault password given as fleet gives it (--vault-password-file).
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    secret = tmp_path / "vault-pass"
    secret.write_text("vault-pass\n")
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(b"vault-pass"))])
    ciphertext = vault.encrypt("the-sudo-password").decode()
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "pi.yml").write_text(
        "ansible_become_password: !vault |\n" + "".join(f"  {line}\n"
                                                        for line in ciphertext.splitlines()))
    devices = {"pi-01": _device(tmp_path, "pi-01", f"echo '{PROMPTS}' >&2; exit 1")}
    runner, display, out = _preflight(
        tmp_path, devices, *playbook.cmdline(vault_password_file=str(secret)))
    assert runner.status == "successful" and not display.failures, out
    assert _sudo_calls(tmp_path, "pi-01") == []


def test_hosts_that_passed_moments_ago_are_not_asked_again(tmp_path):
    # fleet deploy checks before its image build, then passes the hosts that passed to deploy.yml.
    devices = {"pi-01": _device(tmp_path, "pi-01", f"echo '{PROMPTS}' >&2; exit 1")}
    inventory = _inventory(tmp_path, devices)
    runner = playbook.run("preflight.yml", inventory, tmp_path / "private",
                          {"edgegen_preflight_hosts": "pi", "edgegen_preflight_passed": ["pi-01"]},
                          playbook.Display(io.StringIO()))
    assert runner.status == "successful" and _sudo_calls(tmp_path, "pi-01") == []


def test_an_inventory_become_does_not_put_the_check_itself_under_sudo(tmp_path):
    devices = {"pi-01": {**_device(tmp_path, "pi-01", f"echo '{PROMPTS}' >&2; exit 1"),
                         # Another user than this test's: Ansible skips become to the same user.
                         "ansible_become": True, "ansible_become_user": "edgegen"}}
    runner, display, out = _preflight(tmp_path, devices)
    assert display.failures == {"pi-01": ASKS.format(host="pi-01")}, out
    assert _sudo_calls(tmp_path, "pi-01") == ["-n true"]


def test_a_device_without_sudo_is_named_in_its_own_line(tmp_path):
    devices = {"pi-01": _device(tmp_path, "pi-01", None)}
    runner, display, out = _preflight(tmp_path, devices)
    assert runner.status == "failed", out
    assert display.failures == {"pi-01": NO_SUDO.format(host="pi-01")}


def test_root_needs_no_sudo(tmp_path):
    devices = {"pi-01": _device(tmp_path, "pi-01", None, uid=0)}
    runner, display, out = _preflight(tmp_path, devices)
    assert runner.status == "successful" and not display.failures, out


def test_sudo_refusing_for_another_reason_says_what_sudo_said(tmp_path):
    said = "sudo: sorry, you must have a tty to run sudo"
    devices = {"pi-01": _device(tmp_path, "pi-01", f"echo '{said}' >&2; exit 1")}
    runner, display, out = _preflight(tmp_path, devices)
    assert display.failures == {"pi-01": f"pi-01: `sudo -n true` failed for pi (rc 1): {said}"}


def test_fleet_deploy_stops_before_the_image_build(tmp_path):
    devices = {"pi-01": _device(tmp_path, "pi-01", "exit 0"),
               "pi-02": _device(tmp_path, "pi-02", f"echo '{PROMPTS}' >&2; exit 1")}
    out = io.StringIO()
    # No image of that name (nor, maybe, a Docker engine): reaching the image step would raise.
    status = deploy("pi", _inventory(tmp_path, devices), image="edgegen-edge:never-built",
                    artifacts=tmp_path / "artifacts", out=out)
    text = out.getvalue()
    assert status == 1, text
    assert f"  pi-02: {ASKS.format(host='pi-02')}" in text.splitlines()  # the table's note
    assert "the rollout did not start: nothing was built or changed" in text
    assert "1 of 2 host(s) failed: pi-02" in text
    assert not any(line.startswith(("image ", "deploying ")) for line in text.splitlines())
    assert _sudo_calls(tmp_path, "pi-01") == ["-n true"]


def test_fleet_bench_checks_sudo_first_through_bench_yml(tmp_path):
    # bench.yml's first play is preflight.yml: the device fails there with the one line, and
    # the benchmark play never reaches it.
    devices = {"pi-01": _device(tmp_path, "pi-01", f"echo '{PROMPTS}' >&2; exit 1")}
    out = io.StringIO()
    status = bench("pi", _inventory(tmp_path, devices), results=tmp_path / "results",
                   workload_args=[], artifacts=tmp_path / "artifacts", out=out)
    text = out.getvalue()
    assert status == 1, text
    assert f"  pi-01: {ASKS.format(host='pi-01')}" in text.splitlines()
    assert "Look up the server container" not in text


def test_fleet_deploy_goes_on_within_max_fail_percentage(tmp_path):
    # A fleet that tolerates failed devices (edgegen_max_fail_percentage 50): the preflight names
    # the one that failed and the deploy goes on to the image step (here a missing archive).
    from fleet.images import ImageError

    devices = {"pi-01": _device(tmp_path, "pi-01", "exit 0"),
               "pi-02": _device(tmp_path, "pi-02", f"echo '{PROMPTS}' >&2; exit 1")}
    out = io.StringIO()
    with pytest.raises(ImageError, match="needs its sidecar"):
        deploy("pi", _inventory(tmp_path, devices), archive_path=tmp_path / "missing.tar.gz",
               extra_vars={"edgegen_max_fail_percentage": 50}, artifacts=tmp_path / "artifacts",
               out=out)
    assert "preflight: pi-02 failed; the rollout goes on without them " \
           "(edgegen_max_fail_percentage 50)" in out.getvalue().splitlines()
