"""The e2e tier needs a Docker engine; each module skips with the reason when there is none.
Its images are built once per run (prebuild.py), beside the other tiers when the session
started that (tests/conftest.py), else here when a test first needs them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .. import background
from .prebuild import ready_line

IMAGES_JOB = "e2e-images"
IMAGES_TIMEOUT_S = 3600  # debootstrap, apt and pip under qemu on a slow host, beside the tests


def prebuilt(group: str) -> None:
    """Wait for the session's image builds that include `group` (prebuild.py), or build that
    group now; AssertionError with the build log's tail when that group failed."""
    job = background.JOBS.get(IMAGES_JOB)
    if job is None or group not in job.argv:
        job = background.job(f"{IMAGES_JOB}-{group}",
                             background.python_module("tests.e2e.prebuild", group))
    job.wait(IMAGES_TIMEOUT_S, check=False)  # another group's failure is not this one's
    assert ready_line(group) in job.tail(chars=10**7), \
        f"the {group} images were not built ({job.log}):\n{job.tail()}"


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
