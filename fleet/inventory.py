"""Read device classes (ansible/group_vars/<class>.yml) and an Ansible YAML inventory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import FleetError
from .paths import ANSIBLE_DIR


class InventoryError(FleetError):
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


class _Loader(yaml.SafeLoader):
    """YAML with Ansible's own tags: a `!vault` value (ansible-vault encrypt_string, e.g. a
    sudo password inline in the inventory) stays its ciphertext, `!unsafe` its text. Fleet reads
    no secret; Ansible decrypts them itself."""


_Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as exc:
        raise InventoryError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path} is not valid YAML: {exc}") from None


# Inventory groups that are not device classes: the monitoring host(s) of deploy.yml.
SERVICE_GROUPS = frozenset({"monitoring"})


def device_class(name: str, ansible_dir: Path = ANSIBLE_DIR) -> dict[str, Any]:
    """The settings of one device class (group_vars/all.yml under <class>.yml); a class without
    a group_vars file is unknown."""
    path = ansible_dir / "group_vars" / f"{name}.yml"
    if name == "all" or not path.is_file():
        known = sorted(p.stem for p in (ansible_dir / "group_vars").glob("*.yml")
                       if p.stem not in ("all", *SERVICE_GROUPS))
        raise InventoryError(f"unknown device class {name!r}: no {path}; known classes: {known}")
    merged: dict[str, Any] = {}
    for p in (ansible_dir / "group_vars" / "all.yml", path):
        data = (_yaml(p) if p.is_file() else None) or {}
        if not isinstance(data, dict):
            raise InventoryError(f"{p} must be a mapping of edgegen_* settings")
        merged.update(data)
    return merged


def _groups(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the inventory's `all.vars`, its `all.children` groups)."""
    data = _yaml(Path(path))
    top = (data or {}).get("all") if isinstance(data, dict) else None
    groups = top.get("children") if isinstance(top, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise InventoryError(f"{path}: expected 'all: children: <class>: hosts: ...'")
    top_vars = top.get("vars") or {}
    if not isinstance(top_vars, dict):
        raise InventoryError(f"{path}: all: 'vars' must be a mapping")
    return top_vars, groups


def class_names(path: Path) -> list[str]:
    """The device-class groups of an inventory, in its order (service groups left out)."""
    return [g for g in _groups(path)[1] if g not in SERVICE_GROUPS]


def class_hosts(path: Path, name: str, ansible_dir: Path = ANSIBLE_DIR
                ) -> dict[str, dict[str, Any]]:
    """{host: its settings} for the hosts of one class, merged as Ansible does: the inventory
    file's `all` and group vars, then group_vars/all.yml and group_vars/<class>.yml (playbook
    group vars outrank inventory-file group vars), then the host's own vars."""
    settings = device_class(name, ansible_dir)
    top_vars, groups = _groups(path)
    body = groups.get(name) or {}
    group_vars = body.get("vars") or {}
    if not isinstance(group_vars, dict):
        raise InventoryError(f"{path}: {name}: 'vars' must be a mapping")
    base = {**top_vars, **group_vars, **settings}
    return {host: {**base, **(v or {})} for host, v in (body.get("hosts") or {}).items()}


def rollout_hosts(path: Path, name: str, limit: str = "") -> dict[str, dict[str, Any]]:
    """class_hosts narrowed to `limit` (comma-separated host names); none left is an error."""
    hosts = class_hosts(path, name)
    if limit:
        wanted = set(limit.split(","))
        hosts = {h: v for h, v in hosts.items() if h in wanted}
    if not hosts:
        raise InventoryError(f"{path} has no hosts in group {name!r}"
                             + (f" matching --limit {limit}" if limit else ""))
    return hosts


def load_inventory(path: Path, ansible_dir: Path = ANSIBLE_DIR) -> list[Device]:
    """The served devices of every class group under `all.children`, with their settings (see
    class_hosts). Service groups, and classes that run no server (phones push their figures),
    are left out."""
    devices = []
    for group in class_names(path):
        if "edgegen_port" not in device_class(group, ansible_dir):
            continue
        for name, merged in class_hosts(path, group, ansible_dir).items():
            port = merged.get("edgegen_port")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise InventoryError(f"{path}: host {name!r}: edgegen_port must be a port "
                                     f"number, got {port!r}")
            devices.append(Device(name, group, str(merged.get("ansible_host", name)), port,
                                  merged))
    return devices
