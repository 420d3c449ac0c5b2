"""Probe every device of an inventory: live (/health), ready (/ready), and what it serves."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .inventory import Device


@dataclass(frozen=True)
class DeviceStatus:
    device: Device
    live: bool
    ready: bool
    models: tuple[str, ...]
    detail: str  # why not live/ready, or the edge server's runtime

    @property
    def ok(self) -> bool:
        return self.live and self.ready


def _get(url: str, timeout: float) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:  # 503 from /ready is an answer, not a failure
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def probe(device: Device, timeout: float = 5.0) -> DeviceStatus:
    try:
        live_code, _ = _get(device.url + "/health", timeout)
        ready_code, ready = _get(device.url + "/ready", timeout)
        models_code, models = _get(device.url + "/v1/models", timeout)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return DeviceStatus(device, False, False, (), f"unreachable: {reason}")
    listed = models.get("data", []) if models_code == 200 else []
    names = tuple(m.get("id", "?") for m in listed)
    runtimes = sorted({m.get("runtime", "?") for m in listed})
    if ready_code != 200:
        detail = ready.get("error", {}).get("message", f"/ready answered {ready_code}")
    else:
        detail = ", ".join(runtimes) or "no models"
    return DeviceStatus(device, live_code == 200, ready_code == 200, names, detail)


def probe_all(devices: list[Device], timeout: float = 5.0) -> list[DeviceStatus]:
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(devices)))) as pool:
        return list(pool.map(lambda d: probe(d, timeout), devices))


def render_table(statuses: list[DeviceStatus]) -> str:
    rows = [("host", "class", "url", "live", "ready", "models", "detail")]
    for s in statuses:
        rows.append((s.device.name, s.device.device_class, s.device.url, "yes" if s.live else "NO",
                     "yes" if s.ready else "NO", ",".join(s.models) or "-", s.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
