"""Read device classes (ansible/group_vars/<class>.yml) and an Ansible YAML inventory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ANSIBLE_DIR = Path(__file__).resolve().parent.parent / "ansible"


class InventoryError(Exception):
    """The inventory or a device class file cannot be used; the message says where."""


@dataclass(frozen=True)
class Device:
    name: str
    device_class: str  # the inventory group, e.g. "pi", "jetson", "local"
    address: str  # ansible_host, else the inventory name
    port: int
    vars: dict[str, Any]

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InventoryError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path} is not valid YAML: {exc}") from None


def device_class(name: str, ansible_dir: Path = ANSIBLE_DIR) -> dict[str, Any]:
    """The settings of one device class; a class without a group_vars file is unknown."""
    path = ansible_dir / "group_vars" / f"{name}.yml"
    if not path.is_file():
        known = sorted(p.stem for p in (ansible_dir / "group_vars").glob("*.yml") if p.stem != "all")
        raise InventoryError(f"unknown device class {name!r}: no {path}; known classes: {known}")
    data = _yaml(path) or {}
    if not isinstance(data, dict):
        raise InventoryError(f"{path} must be a mapping of edgegen_* settings")
    return data


def load_inventory(path: Path, ansible_dir: Path = ANSIBLE_DIR) -> list[Device]:
    """Devices of every class group under `all.children`, class settings merged under host vars."""
    data = _yaml(Path(path))
    groups = (data or {}).get("all", {}).get("children") if isinstance(data, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise InventoryError(f"{path}: expected 'all: children: <class>: hosts: ...'")
    devices = []
    for group, body in groups.items():
        hosts = (body or {}).get("hosts") or {}
        if not hosts:
            continue
        settings = device_class(group, ansible_dir)
        for name, host_vars in hosts.items():
            merged = {**settings, **(host_vars or {})}
            port = merged.get("edgegen_port")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise InventoryError(f"{path}: host {name!r}: edgegen_port must be a port "
                                     f"number, got {port!r}")
            devices.append(Device(name, group, str(merged.get("ansible_host", name)), port,
                                  merged))
    return devices
