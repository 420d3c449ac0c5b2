"""Rollouts at fleet scale, around Ansible (which does the batching): how many hosts the
controller works on at once, the one-line tally under the per-host table, and the record that
lets a halted rollout be resumed.

Ansible rolls a class out in batches (`serial` from the class's `edgegen_serial`, by default a
canary, then a quarter, then the rest) and halts the play when a batch fails past
`edgegen_max_fail_percentage`. The hosts after the halt are "not run". Each rollout leaves
build/deploy/<class>/rollout.json: the image, the bundles served and each host's outcome;
`--resume` deploys the same release to the hosts that did not finish it, and no others.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import FleetError

# Ansible's worker processes hold ~60-100 MB each and mostly wait on SSH: several per core,
# bounded by the memory the controller has free, and never more than the hosts.
FORKS_PER_CPU = 8
MB_PER_FORK = 150
MAX_FORKS = 100
# Above this many hosts the live display shows what changed, waited or failed, not every
# unchanged task of every host (the table at the end still lists every host).
COMPACT_HOSTS = 8
RECORD = "rollout.json"
DONE = ("ok", "changed")


class ResumeError(FleetError):
    """A rollout cannot be resumed; the message says why."""


def _available_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def forks_for(hosts: int, cpus: int | None = None, available_mb: int | None = None) -> int:
    """Ansible forks for a rollout to `hosts` hosts from this controller."""
    cpus = cpus or os.cpu_count() or 1
    mem = available_mb if available_mb is not None else _available_mb()
    bound = min(FORKS_PER_CPU * cpus, MAX_FORKS)
    if mem is not None:
        bound = min(bound, max(1, mem // MB_PER_FORK))
    return max(1, min(hosts, bound))


def batches(serial: Any) -> str:
    """How `serial` reads in the rollout's header: "1, 25%, 100%"."""
    return ", ".join(map(str, serial)) if isinstance(serial, list) else str(serial)


def tally(statuses: list[str], noun: str = "host") -> str:
    """"12 hosts: 9 changed, 1 failed, 2 not run" (in a fixed order of outcomes)."""
    counts = Counter(statuses)
    order = ("changed", "ok", "failed", "unreachable", "not run")
    parts = [f"{counts[s]} {s}" for s in order if counts[s]]
    parts += [f"{n} {s}" for s, n in sorted(counts.items()) if s not in order]
    return f"{len(statuses)} {noun}{'' if len(statuses) == 1 else 's'}: {', '.join(parts)}"


def load(class_dir: Path) -> dict | None:
    path = class_dir / RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{path}: cannot read the last rollout ({exc})") from None


def save(class_dir: Path, image: dict[str, str], bundles: list[str],
         outcomes: dict[str, str], resumed: dict | None = None) -> dict:
    """Record this rollout's outcome per host; a resumed rollout updates the hosts it ran."""
    hosts = dict((resumed or {}).get("hosts", {}))
    hosts.update(outcomes)
    record = {**image, "bundles": bundles, "hosts": hosts,
              "finished": all(s in DONE for s in hosts.values())}
    class_dir.mkdir(parents=True, exist_ok=True)
    tmp = class_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, class_dir / RECORD)
    return record


def pending(record: dict | None, device_class: str, hosts: list[str]) -> list[str]:
    """The hosts of the class (those of `hosts`, as the inventory has them now) that the last
    rollout failed, could not reach or did not run; raises ResumeError when there is no
    rollout to resume."""
    if record is None:
        raise ResumeError(f"class {device_class}: no rollout to resume (build/deploy/"
                          f"{device_class}/{RECORD} is missing): deploy without --resume")
    outcome = record.get("hosts", {})
    return [h for h in hosts if h in outcome and outcome[h] not in DONE]


def check_same_release(record: dict, image_id: str, bundles: list[str],
                       device_class: str) -> None:
    """A resumed rollout carries on the release it started, not another one."""
    if record.get("image_id") != image_id or record.get("bundles") != bundles:
        raise ResumeError(
            f"class {device_class}: the halted rollout was of {record.get('tag')} "
            f"({str(record.get('image_id'))[7:19]}) with bundles {record.get('bundles')}; "
            f"this one is {image_id[7:19]} with {bundles}: deploy without --resume")
