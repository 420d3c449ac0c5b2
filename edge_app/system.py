"""Device gauges read at scrape time: process and system memory, thermal zones.

Stdlib only (a Pi image stays small): /proc/self/status (VmRSS, VmHWM), /proc/meminfo
(MemAvailable, MemTotal), and /sys/class/thermal/thermal_zone*/{type,temp} (millidegrees C).
`root` lets tests read recorded trees. A value that cannot be read is left out, not zeroed.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_STATUS = {"VmRSS": "rss", "VmHWM": "peak_rss"}
_MEMINFO = {"MemAvailable": "available", "MemTotal": "total"}


def _kib_fields(path: Path, wanted: dict[str, str]) -> dict[str, int]:
    """Lines like 'VmRSS:   12345 kB' -> {kind: bytes} for the wanted keys."""
    out = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in wanted and parts and parts[0].isdigit():
            out[wanted[key]] = int(parts[0]) * 1024
    return out


def memory(root: Path) -> dict[str, int]:
    return {**_kib_fields(root / "proc/self/status", _STATUS),
            **_kib_fields(root / "proc/meminfo", _MEMINFO)}


def temperatures(root: Path) -> dict[str, float]:
    """{zone type: degrees C}; zones that do not read (e.g. powered down) are skipped."""
    out = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip() or zone.name
            out[kind] = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return out


class SystemCollector(Collector):
    def __init__(self, root: str | Path = "/", thermal_root: str | Path | None = None):
        self.root = Path(root)
        self.thermal_root = Path(thermal_root) if thermal_root is not None else self.root

    def collect(self) -> Iterator[GaugeMetricFamily]:
        mem = GaugeMetricFamily("edgegen_memory_bytes", "Process resident memory (rss, "
                                "peak_rss) and system memory (available, total).",
                                labels=["kind"])
        for kind, value in memory(self.root).items():
            mem.add_metric([kind], value)
        yield mem
        temp = GaugeMetricFamily("edgegen_temperature_celsius", "Thermal zone temperatures.",
                                 labels=["zone"])
        for zone, value in temperatures(self.thermal_root).items():
            temp.add_metric([zone], value)
        yield temp


def _first_line(*paths: Path) -> str:
    for path in paths:
        try:
            text = path.read_bytes().replace(b"\0", b"").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if text:
            return text.splitlines()[0]
    return ""


def device_facts(root: Path, device_class: str, providers: list[str]) -> dict[str, str]:
    """Labels of edgegen_device_info. `hardware` is the board as the firmware names it
    (device tree on Pi and Jetson, DMI on PCs); `device_class` the fleet class (configured, or
    guessed from that name when not)."""
    hardware = _first_line(root / "proc/device-tree/model", root / "sys/firmware/devicetree/base/model",
                           root / "sys/class/dmi/id/product_name") or "unknown"
    if not device_class:
        lowered = hardware.lower()
        device_class = ("jetson" if "jetson" in lowered or (root / "etc/nv_tegra_release").exists()
                        else "pi" if "raspberry pi" in lowered else "local")
    total = memory(root).get("total")
    return {"device_class": device_class, "hardware": hardware, "arch": platform.machine(),
            "cpus": str(os.cpu_count() or 0), "memory_bytes": str(total or 0),
            "providers": ",".join(providers)}


# CPU features that decide whether INT8 can beat FP32: x86 VNNI (8-bit dot products), ARM
# dot-product (asimddp, Armv8.2) and int8 matrix multiply (i8mm, Armv8.6).
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm", "sve")


def cpu_info(root: Path = Path("/")) -> dict:
    """The CPU's model name, logical CPUs and INT8-relevant features, from /proc/cpuinfo
    (x86 `flags`, ARM `Features`)."""
    try:
        text = (root / "proc/cpuinfo").read_text()
    except OSError:
        text = ""
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines
                  if ln.split(":")[0].strip() in ("model name", "Model", "Hardware")), "") \
        or platform.processor() or platform.machine()
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines
                      if ln.split(":")[0].strip() in ("flags", "Features")), []))
    return {"model": model, "arch": platform.machine(), "logical_cpus": os.cpu_count(),
            **{f: f in flags for f in CPU_FEATURES}}
