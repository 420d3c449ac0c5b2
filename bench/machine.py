"""What every benchmark records about the machine it ran on (the host is often shared)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), platform.processor())
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                      if ln.startswith("flags")), []))
    return {"model": model, "logical_cpus": os.cpu_count(),
            **{f: f in flags for f in ("avx512_vnni", "avx_vnni", "avxvnni", "avx512f", "avx2")}}


def cpu_load() -> dict:
    """Load average and CPU pressure (PSI): the machine is shared, so record how busy it was."""
    psi = Path("/proc/pressure/cpu")
    some = psi.read_text().splitlines()[0].split()[1:] if psi.exists() else []
    return {"loadavg_1m": round(os.getloadavg()[0], 2),
            "psi_some": {k: float(v) for k, v in (f.split("=") for f in some)}}
