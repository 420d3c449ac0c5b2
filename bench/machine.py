"""What every benchmark records about the machine it ran on (the host is often shared)."""

from __future__ import annotations

import os
from pathlib import Path

from edge_app.system import cpu_info

__all__ = ["cpu_info", "cpu_load"]


def cpu_load() -> dict:
    """Load average and CPU pressure (PSI): the machine is shared, so record how busy it was."""
    psi = Path("/proc/pressure/cpu")
    some = psi.read_text().splitlines()[0].split()[1:] if psi.exists() else []
    return {"loadavg_1m": round(os.getloadavg()[0], 2),
            "psi_some": {k: float(v) for k, v in (f.split("=") for f in some)}}
