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

# The `jetson_nano` stand-in runs a real ONNX Runtime of an older era: 1.15.1 (opset 19, IR 9;
# the oldest with CPython 3.11 wheels, built against numpy 1.x), pinned the way a class pins
# its own versions. The class itself ships today's runtime on the Nano's CPU; this one stands
# for a route with an older runtime (JetPack 4's GPU wheels stop at 1.11), whose limits a
# deploy must respect and which must really load what the deploy lets through.
NANO_STAND_IN = {"edgegen_platform": "linux/amd64",
                 "edgegen_pins": {"onnxruntime": "1.15.1", "numpy": "1.26.4"}}
NANO_RUNTIME = "onnxruntime 1.15.1"

# One arm64 device (under qemu) as a `pi`, one amd64 standing in for a `jetson`, one for a
# `jetson_nano`.
SIMS = {"pi-sim": Sim("pi", "arm64"), "jetson-sim": Sim("jetson", "amd64", JETSON_STAND_IN),
        "nano-sim": Sim("jetson_nano", "amd64", NANO_STAND_IN)}
