"""The simulated fleet of the deploy tests, described once: read by the fleet fixture
(test_deploy.py) and by the image prebuild (prebuild.py), so both build the same images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BASE = "debian:bookworm-slim"  # made by images/base/debian-base.sh (no registry here)
SIM_IMAGE = "edgegen-simdevice:{arch}"
SIM_DOCKERFILE_DIR = Path(__file__).resolve().parent / "simdevice"


@dataclass(frozen=True)
class Sim:
    device_class: str
    arch: str  # the container platform: arm64 runs under qemu-user-static
    image_vars: dict = field(default_factory=dict)  # host vars choosing its image (ImageSpec)


# The BASE_IMAGE override of the Jetson stand-in: no L4T image here (nor NVIDIA's package
# index), so a Debian base on amd64 with its Python, ONNX Runtime's CPU build from PyPI.
JETSON_STAND_IN = {"edgegen_base_image": BASE, "edgegen_platform": "linux/amd64",
                   "edgegen_ort_package": "onnxruntime", "edgegen_extra_index_url": "",
                   "edgegen_pythons": ["3.11"], "edgegen_pins": {}}

# One arm64 device (under qemu) as a `pi`, one amd64 standing in for a `jetson`.
SIMS = {"pi-sim": Sim("pi", "arm64"), "jetson-sim": Sim("jetson", "amd64", JETSON_STAND_IN)}
