"""fetch_wheels with the real pip: a tiny wheel built here, served from a 127.0.0.1 index or a
find-links directory; fetched once, locked, reused without pip, and one-line errors for a wheel
that exists nowhere, an unreachable index and a wheelhouse changed after its fetch."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from fleet import images
from fleet.images import ImageError, fetch_wheels

WHEEL = "edgegen_probe-1.0-py3-none-any.whl"
PLATFORM, PYTHONS = "linux/arm64", ("3.10",)  # a py3-none-any wheel fits any platform


@pytest.fixture(scope="module")
def probe_wheel(tmp_path_factory):
    """edgegen-probe 1.0, a pure-Python wheel (pip wheel from a two-file project)."""
    src = tmp_path_factory.mktemp("probe-src")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "edgegen-probe"\nversion = "1.0"\n')
    (src / "edgegen_probe").mkdir()
    (src / "edgegen_probe" / "__init__.py").write_text("")
    out = tmp_path_factory.mktemp("probe-wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(src)],
                   check=True, capture_output=True)
    return out / WHEEL


@pytest.fixture(autouse=True)
def pip_alone(monkeypatch):
    """pip sees only what a test gives it, not this machine's pip.conf or PIP_* variables."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def _serve(root):
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def index(tmp_path, probe_wheel, monkeypatch):
    """pip's index: a 127.0.0.1 simple index (directory listings) that has edgegen-probe."""
    root = tmp_path / "index"
    (root / "edgegen-probe").mkdir(parents=True)
    shutil.copy(probe_wheel, root / "edgegen-probe")
    server = _serve(root)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture
def links(tmp_path, probe_wheel):
    """An operator's edgegen_find_links directory with edgegen-probe."""
    path = tmp_path / "links"
    path.mkdir()
    shutil.copy(probe_wheel, path)
    return path


def closed_port_url(path="/simple/"):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_first_fetch_gets_the_wheel_and_locks_it(tmp_path, index, probe_wheel):
    dest = tmp_path / "wheelhouse" / "edge"
    dest.mkdir(parents=True)
    (dest / "edgegen-0.1.0-py3-none-any.whl").write_bytes(b"built here")
    fetch_wheels(dest, ["edgegen-probe"], PLATFORM, PYTHONS,
                 built_here=("edgegen-*.whl",), log=lambda _: None)
    digest = hashlib.sha256(probe_wheel.read_bytes()).hexdigest()
    assert (dest / WHEEL).read_bytes() == probe_wheel.read_bytes()
    assert (dest / "SHA256SUMS").read_text() == f"{digest}  {WHEEL}\n"  # sha256sum's format


def test_a_second_fetch_runs_no_pip_and_needs_no_source(tmp_path, links, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", closed_port_url())
    dest = tmp_path / "wheelhouse" / "edge"
    dest.mkdir(parents=True)
    fetch = functools.partial(fetch_wheels, dest, ["edgegen-probe"], PLATFORM, PYTHONS,
                              find_links=str(links), log=lambda _: None)
    fetch()
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    shutil.rmtree(links)
    ran = []
    real_run = subprocess.run

    def run(cmd, **kwargs):
        ran.append(cmd)
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(images.subprocess, "run", run)
    fetch()
    assert ran == []  # no pip: it would have failed, with neither index nor links to look in
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before


@pytest.mark.parametrize("change, message", [
    (lambda dest: (dest / WHEEL).write_bytes(b"not the wheel"),
     rf"{WHEEL} has sha256 \w+, not \w+ as in SHA256SUMS: it changed after it was fetched"),
    (lambda dest: (dest / WHEEL).unlink(), rf"{WHEEL} is missing but listed in SHA256SUMS"),
    (lambda dest: (dest / "other-1.0-py3-none-any.whl").write_bytes(b"x"),
     "other-1.0-py3-none-any.whl is not in SHA256SUMS"),
], ids=["changed", "missing", "extra"])
def test_a_changed_wheelhouse_is_refused(tmp_path, index, change, message):
    dest = tmp_path / "wheelhouse" / "edge"
    dest.mkdir(parents=True)
    fetch = functools.partial(fetch_wheels, dest, ["edgegen-probe"], PLATFORM, PYTHONS,
                              log=lambda _: None)
    fetch()
    change(dest)
    with pytest.raises(ImageError, match=message) as err:
        fetch()
    assert "\n" not in str(err.value) and str(err.value).endswith(
        f"delete {dest} to fetch the wheels again")


def test_deleting_the_wheelhouse_fetches_it_again(tmp_path, index):
    dest = tmp_path / "wheelhouse" / "edge"
    dest.mkdir(parents=True)
    fetch = functools.partial(fetch_wheels, dest, ["edgegen-probe"], PLATFORM, PYTHONS,
                              log=lambda _: None)
    fetch()
    shutil.rmtree(dest)
    dest.mkdir()
    fetch()
    assert (dest / WHEEL).is_file() and (dest / "SHA256SUMS").is_file()


def test_a_wheel_no_source_has_is_one_line_saying_how_to_supply_it(tmp_path, index, links):
    with pytest.raises(ImageError) as err:
        fetch_wheels(tmp_path / "dest", ["edgegen-nowhere==2.0"], PLATFORM, PYTHONS,
                     find_links=str(links), log=lambda _: None)
    message = str(err.value)
    assert message == (
        f"no wheel of edgegen-nowhere==2.0 for linux/arm64 / CPython 3.10 on {index} and "
        f"find-links {links}: put its wheel file in {links} (edgegen_find_links), or point "
        f"edgegen_extra_index_url at a mirror that has it")


def test_an_unreachable_index_is_one_line_naming_it_and_fails_fast(tmp_path, index):
    extra = closed_port_url("/jp6/cu126")
    start = time.monotonic()
    with pytest.raises(ImageError) as err:
        # edgegen-other is on no index: pip would find it on the extra one if it answered.
        fetch_wheels(tmp_path / "dest", ["edgegen-other"], PLATFORM, PYTHONS,
                     extra_index_url=extra, log=lambda _: None)
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert "\n" not in message and index not in message
    assert message.startswith(f"could not reach {extra} (Connection refused) looking for "
                              f"edgegen-other for linux/arm64 / CPython 3.10: ")
    assert "edgegen_find_links" in message


def test_a_missing_find_links_directory_is_named(tmp_path):
    with pytest.raises(ImageError, match=f"edgegen_find_links {tmp_path}/none is not a "
                                         f"directory: create it"):
        fetch_wheels(tmp_path / "dest", ["edgegen-probe"], PLATFORM, PYTHONS,
                     find_links=str(tmp_path / "none"), log=lambda _: None)
