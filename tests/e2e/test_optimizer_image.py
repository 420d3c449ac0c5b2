"""The optimizer image: built from the host wheelhouse on a debootstrap base, run offline."""

from __future__ import annotations

import json
import subprocess

import pytest

from edge_app import __version__
from edge_app.bundle import load_bundle

from ..conftest import REPO
from .conftest import docker_missing, prebuilt

pytestmark = [pytest.mark.e2e, pytest.mark.docker_images("optimizer")]
IMAGE = f"edgegen-optimizer:{__version__}"


@pytest.fixture(scope="module")
def optimizer_image():
    reason = docker_missing()
    if reason:
        pytest.skip(reason)
    prebuilt("optimizer")  # debian-base.sh, then `make image-optimizer` (prebuild.py)
    return IMAGE


def test_image_metadata(optimizer_image):
    (info,) = json.loads(subprocess.run(["docker", "image", "inspect", optimizer_image],
                                        capture_output=True, text=True, check=True).stdout)
    assert info["Config"]["User"] == "edgegen"
    assert info["Config"]["Labels"]["org.opencontainers.image.title"] == "edgegen-optimizer"
    assert info["Architecture"] == "amd64"


def test_image_builds_a_bundle_offline(optimizer_image, tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the image runs as a non-root user
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{out}:/work/out",
         "-v", f"{REPO / 'tests' / 'data'}:/work/tests-data:ro", optimizer_image,
         "run", "/work/tests-data/tiny-dcgan.yaml", "--out", "/work/out/bundles/tiny-dcgan",
         "--runs-dir", "/work/out/runs", "--no-progress"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bundle = load_bundle(out / "bundles" / "tiny-dcgan")  # checksums verified on the host
    assert bundle.manifest.family == "dcgan" and bundle.manifest.metrics["quality"]["fid"] > 0
    assert bundle.manifest.provenance["versions"]["torch"].startswith("2.13.0")
