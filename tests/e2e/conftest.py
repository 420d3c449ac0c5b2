"""The e2e tier needs a Docker engine; each module skips with the reason when there is none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def docker_missing() -> str | None:
    """Why Docker cannot be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker client installed"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=30)
    return None if info.returncode == 0 else f"no Docker engine reachable: {info.stderr.strip()}"


def arm64_missing() -> str | None:
    """Why arm64 containers cannot run here (qemu-user-static through binfmt_misc), or None."""
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not handler.exists():
        return "no binfmt_misc handler for arm64: run images/base/qemu-arm64.sh (as root)"
    flags = next((ln.split(":", 1)[1] for ln in handler.read_text().splitlines()
                  if ln.startswith("flags:")), "")
    if "C" not in flags:
        return ("the arm64 binfmt handler lacks the C (credentials) flag, so sudo cannot work "
                "in arm64 containers: run images/base/qemu-arm64.sh")
    return None
