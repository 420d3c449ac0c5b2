"""Device classes as data, and Ansible inventories."""

from __future__ import annotations

import pytest

from fleet.inventory import InventoryError, device_class, load_inventory

from ..conftest import REPO


def test_example_inventory_merges_class_settings():
    devices = {d.name: d for d in load_inventory(REPO / "ansible" / "inventory" / "example.yml")}
    # Phones (no server) and the monitoring host are not devices to probe or scrape.
    assert sorted(devices) == ["nano-01", "orin-nano-01", "pi-lab-01", "pi-lab-02", "workstation"]
    device = devices["workstation"]
    assert (device.name, device.device_class, device.url) == (
        "workstation", "local", "http://127.0.0.1:8080")
    assert device.vars["edgegen_providers"] == ["CPUExecutionProvider"]
    assert devices["orin-nano-01"].vars["edgegen_docker_runtime"] == "nvidia"
    # The JetPack 4 Nano: the generic arm64 image on its CPU, JetPack's own Docker engine.
    nano = devices["nano-01"]
    assert (nano.device_class, nano.vars["edgegen_platform"], nano.vars["edgegen_dockerfile"],
            nano.vars["edgegen_providers"], nano.vars["edgegen_docker_install"]) == (
        "jetson_nano", "linux/arm64", "images/edge/Dockerfile", ["CPUExecutionProvider"], False)
    assert devices["pi-lab-01"].vars["edgegen_platform"] == "linux/arm64"


def test_host_vars_override_class_settings(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  children:\n    local:\n      hosts:\n"
                    "        a: {ansible_host: 127.0.0.1, edgegen_port: 9001}\n        b:\n")
    a, b = load_inventory(path)
    assert a.url == "http://127.0.0.1:9001" and b.url == "http://b:8080"


@pytest.mark.parametrize("text, message", [
    ("all:\n  children:\n    toaster:\n      hosts: {t1: }\n",
     r"unknown device class 'toaster': no .*toaster.yml; known classes: "
     r"\['jetson', 'jetson_nano', 'local', 'pi', 'pixel'\]"),
    ("all:\n  children:\n    local:\n      hosts: {x: {edgegen_port: http}}\n",
     "host 'x': edgegen_port must be a port number, got 'http'"),
    ("hosts: [a]\n", "expected 'all: children: <class>: hosts: ...'"),
    ("all: [\n", "is not valid YAML"),
])
def test_bad_inventory_is_refused_with_location(tmp_path, text, message):
    path = tmp_path / "inv.yml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=message):
        load_inventory(path)


def test_an_inventory_may_hold_vault_values(tmp_path):
    # `ansible-vault encrypt_string --name ansible_become_password` pasted into the inventory.
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  children:\n    pi:\n      hosts:\n        pi-01:\n"
                    "          ansible_become_password: !vault |\n"
                    "            $ANSIBLE_VAULT;1.1;AES256\n            3033363636\n"
                    "          edgegen_note: !unsafe '{{ not a template }}'\n")
    [device] = load_inventory(path)
    assert device.vars["ansible_become_password"].startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert device.vars["edgegen_note"] == "{{ not a template }}"


def test_every_class_file_is_a_mapping():
    for path in (REPO / "ansible" / "group_vars").glob("*.yml"):
        if path.stem == "all":
            continue
        settings = device_class(path.stem)
        assert all(key.startswith("edgegen_") for key in settings), path


def test_every_class_names_a_power_sensor_the_server_has():
    """A class's power sensor is a backend name of edge_app.power (or auto / none): pixel.yml
    once said android_battery, which no backend is."""
    from edge_app.power.sensors import BACKENDS

    classes = [p.stem for p in (REPO / "ansible" / "group_vars").glob("*.yml") if p.stem != "all"]
    for name in classes:
        sensor = device_class(name).get("edgegen_power_sensor", "auto")
        assert sensor in {*BACKENDS, "auto", "none"}, f"{name}.yml: {sensor!r}"


def test_the_example_inventory_reaches_no_real_network():
    """Its hosts are documentation addresses (RFC 5737) or this machine: a user who runs a
    command on it by mistake sends nothing to a real network."""
    import ipaddress

    docs = ipaddress.ip_network("192.0.2.0/24")
    for device in load_inventory(REPO / "ansible" / "inventory" / "example.yml"):
        address = ipaddress.ip_address(device.url.split("//")[1].rsplit(":", 1)[0])
        assert address in docs or address.is_loopback, device


@pytest.mark.parametrize("command", [["status"], ["targets"], ["deploy", "--device", "pi"],
                                     ["bench", "--device", "pi"]])
def test_fleet_commands_without_an_inventory_refuse_in_one_line(command, capsys):
    """No default inventory: nothing is probed, written or deployed; one line says what to do."""
    from fleet.__main__ import main

    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--inventory FILE" in err and "example.yml" in err
