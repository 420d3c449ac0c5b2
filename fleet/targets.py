"""Prometheus file_sd targets from an inventory: one entry per device, labelled with its name,
class and architecture, so every series a device exports carries `device`, `device_class`
and `arch` (the same file the `monitoring_target` Ansible role renders on a deploy).

Prometheus re-reads the file when it changes (monitoring/prometheus/prometheus.yml globs
targets/*.json), so writing it is how a deploy adds devices to monitoring.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .inventory import Device


def file_sd(devices: list[Device]) -> list[dict]:
    entries = []
    for d in devices:
        host = f"[{d.address}]" if ":" in d.address else d.address
        arch = str(d.vars.get("edgegen_platform", "unknown/unknown")).rsplit("/", 1)[-1]
        entries.append({"targets": [f"{host}:{d.port}"],
                        "labels": {"device": d.name, "device_class": d.device_class,
                                   "arch": arch}})
    return entries


def write_file_sd(devices: list[Device], path: Path) -> Path:
    """Write atomically (Prometheus may read while we write), readable by all: Prometheus runs
    as a user of its own (in the stack's image, Debian's `prometheus`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(file_sd(devices), f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600
    os.replace(tmp, path)
    return path
