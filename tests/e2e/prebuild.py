"""The e2e tier's Docker images, built once per run and reused by every test that needs them:
`python -m tests.e2e.prebuild GROUP...` (tests/background.py starts it beside the other tiers).

Groups: `fleet` (debootstrap bases for both architectures, the simulated devices, the Pi's arm64
edge images, the amd64 Jetson stand-ins' and the monitoring stack's) and `optimizer` (the
optimizer image through `make image-optimizer`). Steps run one at a time: the store holds one
architecture per name (debian:bookworm-slim), re-tagged per step by images/base/debian-base.sh.
Every step is what the tests would otherwise run themselves, through the same commands, so the
tests' own calls find the images in Docker's cache.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .simfleet import BASE, SIM_DOCKERFILE_DIR, SIM_IMAGE, SIMS

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("fleet", "optimizer")


def base(arch: str) -> list[str]:
    return ["bash", "images/base/debian-base.sh", BASE, BASE.split(":")[1].split("-")[0], arch]


def simdevice(arch: str) -> list[str]:
    return ["docker", "build", "--quiet", "--network", "host", "--platform", f"linux/{arch}",
            "-t", SIM_IMAGE.format(arch=arch), str(SIM_DOCKERFILE_DIR)]


def image_inventory(directory: Path, extra: dict | None = None, name: str = "images") -> Path:
    """An inventory with the simulated devices' image settings only (fleet images reads those),
    and `extra` host vars."""
    path = directory / f"{name}-inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {
        sim.device_class: {"hosts": {host: {**sim.image_vars, **(extra or {})}}}
        for host, sim in SIMS.items()}}}))
    return path


# The image of a Pi class whose bundles are all LiteRT graphs (what fleet.deploy.with_runtimes
# sets for one): LiteRT and no ONNX Runtime (tests/e2e/test_deploy.py).
LITERT_ONLY = {"edgegen_litert": True, "edgegen_onnxruntime": False}


def steps(group: str, workdir: Path) -> list[tuple[str, list[str]]]:
    if group == "fleet":
        inventory, out = image_inventory(workdir), []
        litert = image_inventory(workdir, LITERT_ONLY, "litert")
        for name, sim in sorted(SIMS.items(), key=lambda s: s[1].arch != "arm64"):
            out += [(f"debootstrap base {sim.arch}", base(sim.arch)),
                    (f"simulated device {sim.arch}", simdevice(sim.arch)),
                    (f"edge image of {name} ({sim.device_class}, {sim.arch})",
                     [sys.executable, "-m", "fleet", "images", "--device", sim.device_class,
                      "--inventory", str(inventory)])]
            if name == "pi-sim":  # while the base is arm64
                out.append(("edge image of pi-sim for LiteRT bundles only",
                            [sys.executable, "-m", "fleet", "images", "--device", "pi",
                             "--inventory", str(litert)]))
        # the monitoring stack's images (Debian's packages), on the amd64 base the loop ends on
        return out + [("monitoring stack images (amd64)",
                       [sys.executable, "-m", "fleet", "monitoring-images", "--platform",
                        "linux/amd64"])]
    return [("debootstrap base amd64", base("amd64")),
            ("optimizer image", ["make", "--no-print-directory", "image-optimizer"])]


def ready_line(group: str) -> str:
    """The log line that says a group's images are built (tests/e2e/conftest.py waits for it)."""
    return f"=== {group}: ready"


def build(group: str, workdir: Path) -> bool:
    started = time.monotonic()
    for what, cmd in steps(group, workdir):
        t0 = time.monotonic()
        print(f"--- {what}: {' '.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, cwd=REPO).returncode
        print(f"--- {what}: {time.monotonic() - t0:.0f} s, exit {rc}", flush=True)
        if rc != 0:
            print(f"=== {group}: failed at {what}", flush=True)
            return False
    print(f"{ready_line(group)} in {time.monotonic() - started:.0f} s", flush=True)
    return True


def main(groups: list[str]) -> int:
    """Each group in turn; a failed one does not stop the next (its tests fail, not theirs)."""
    if not groups or set(groups) - set(GROUPS):
        print(f"usage: python -m tests.e2e.prebuild {'|'.join(GROUPS)} ...")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        failed = [g for g in groups if not build(g, Path(tmp))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
