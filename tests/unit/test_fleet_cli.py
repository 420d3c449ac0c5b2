"""`python -m fleet` as one table of commands: every command in it, one error path (a FleetError
printed as one line, exit 2), and `make deploy` choosing how to roll a class out from the
class's `edgegen_deploy` setting, not from its name."""

from __future__ import annotations

import pytest

import fleet.__main__ as cli
from fleet.bench import BenchError
from fleet.deploy import DeployError
from fleet.errors import FleetError
from fleet.images import ImageError
from fleet.inventory import InventoryError, device_class
from fleet.monitoring import MonitoringError
from fleet.report import ReportError
from fleet.reproduce import ReproduceError

from ..conftest import REPO

EXAMPLE = REPO / "ansible" / "inventory" / "example.yml"


def test_the_table_holds_every_command_the_makefile_calls():
    assert [c.name for c in cli.COMMANDS] == [
        "status", "targets", "report", "measured", "images", "deploy", "bench",
        "monitoring-images", "monitoring-config", "monitoring", "reproduce"]
    assert {c.name for c in cli.COMMANDS if c.needs_inventory} == {"status", "targets",
                                                                   "deploy", "bench", "monitoring"}


def test_every_command_error_is_a_fleet_error():
    for error in (InventoryError, DeployError, BenchError, ImageError, ReportError,
                  ReproduceError, MonitoringError):
        assert issubclass(error, FleetError), error


@pytest.mark.parametrize("argv, message", [
    (["status", "--inventory", "{missing}"], "cannot read"),
    (["targets", "--inventory", "{example}", "--limit", "nowhere"],
     "--limit nowhere matches no host or class"),
    (["report", "--results", "{missing}", "--out", "{tmp}"], "no results under"),
    (["deploy", "--device", "pi", "--inventory", "{example}", "-e", "novalue"],
     "-e expects KEY=VALUE, got 'novalue'"),
    (["deploy", "--device", "toaster", "--inventory", "{example}"],
     "unknown device class 'toaster'"),
    (["images", "--device", "pixel"], "edgegen_platform must be one of"),
    (["monitoring-images", "--platform", "linux/riscv64"], "platform 'linux/riscv64': one of"),
    (["monitoring-config", "--out", "{tmp}", "--port", "grafana"],
     "--port grafana: expected COMPONENT=PORT"),
    (["monitoring", "--inventory", "{example}", "--limit", "nowhere"],
     "has no hosts in group 'monitoring' matching --limit nowhere"),
])
def test_a_failing_command_prints_one_error_line(argv, message, tmp_path, capsys):
    paths = {"missing": str(tmp_path / "missing"), "example": str(EXAMPLE), "tmp": str(tmp_path)}
    assert cli.main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("fleet: error: "), err
    assert message in err


@pytest.fixture
def deployed(monkeypatch):
    """The deploy methods replaced by recorders: (method, class) of each deploy."""
    calls = []
    monkeypatch.setattr(cli, "DEPLOY_METHODS", {
        method: (lambda args, m=method: calls.append((m, args.device)) or 0)
        for method in cli.DEPLOY_METHODS})
    return calls


def test_deploy_follows_the_class_setting(deployed):
    assert device_class("pixel")["edgegen_deploy"] == "companion-apk"
    assert device_class("pi")["edgegen_deploy"] == "container"  # group_vars/all.yml
    for name in ("pi", "pixel", "jetson"):
        assert cli.main(["deploy", "--device", name, "--inventory", str(EXAMPLE)]) == 0
    assert deployed == [("container", "pi"), ("companion-apk", "pixel"),
                        ("container", "jetson")]


def test_a_phone_class_of_another_name_deploys_the_companion(deployed, monkeypatch):
    import fleet.inventory

    settings = {"tablet": {"edgegen_deploy": "companion-apk"},
                "toaster": {"edgegen_deploy": "carrier-pigeon"}}
    monkeypatch.setattr(fleet.inventory, "device_class", settings.__getitem__)
    assert cli.main(["deploy", "--device", "tablet", "--inventory", str(EXAMPLE)]) == 0
    assert deployed == [("companion-apk", "tablet")]
    assert cli.main(["deploy", "--device", "toaster", "--inventory", str(EXAMPLE)]) == 2


def test_an_unknown_deploy_method_is_refused(deployed, monkeypatch, capsys):
    import fleet.inventory

    monkeypatch.setattr(fleet.inventory, "device_class",
                        lambda name: {"edgegen_deploy": "carrier-pigeon"})
    assert cli.main(["deploy", "--device", "pi", "--inventory", str(EXAMPLE)]) == 2
    assert "class 'pi': edgegen_deploy must be one of ['companion-apk', 'container'], got " \
           "'carrier-pigeon'" in capsys.readouterr().err
    assert not deployed


@pytest.mark.parametrize("command", ["deploy", "bench"])
def test_both_ansible_commands_take_a_vault_password_file(command, tmp_path, monkeypatch):
    # The devices' sudo password (ansible_become_password) may be in Vault for either playbook.
    import fleet.bench
    import fleet.deploy
    from fleet.playbook import cmdline

    seen = {}
    monkeypatch.setattr(getattr(fleet, command), command,
                        lambda *a, **kw: seen.update(kw) or 0)
    secret = tmp_path / "vault-pass"
    assert cli.main([command, "--device", "pi", "--inventory", str(EXAMPLE),
                     "--vault-password-file", str(secret)]) == 0
    assert seen["vault_password_file"] == str(secret)
    assert cmdline(vault_password_file=seen["vault_password_file"]) == [
        "--vault-password-file", str(secret.resolve())]
    assert cmdline(check=True) == ["--check"]
