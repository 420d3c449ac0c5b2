"""Edge server images per device class: a wheelhouse for the class's platform, `docker build`,
`docker save` to a checksummed archive the devices load (they need no registry).

Everything a class needs is data in ansible/group_vars/<class>.yml (`edgegen_platform`,
`edgegen_base_image`, `edgegen_dockerfile`, `edgegen_ort_package`, ...); an inventory's host
vars may override it (the same for every host of the class), e.g. to build the Jetson image on
a Debian base where NVIDIA's L4T image cannot be had. Tags encode class, platform and version
like jetson-containers': `edgegen-edge:0.1.0-pi-arm64`.
"""

from __future__ import annotations

import fnmatch
import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_app import __version__
from edge_app.bundle import sha256_file

from .errors import FleetError
from .paths import REPO

BUILD = REPO / "build"
IMAGE_NAME = "edgegen-edge"

# pip's platform tags per container platform (newest glibc first); Debian bookworm has glibc
# 2.36, L4T r36 (Ubuntu 22.04) 2.35.
WHEEL_PLATFORMS = {
    "linux/amd64": ("manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    # linux_aarch64 last: NVIDIA's Jetson wheels (onnxruntime-gpu) carry that plain tag; PyPI
    # takes no such uploads, so it only matters for wheels from a Jetson index or find-links.
    "linux/arm64": ("manylinux_2_35_aarch64", "manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                    "manylinux_2_17_aarch64", "manylinux2014_aarch64", "linux_aarch64"),
}
# The image label naming the ONNX Runtime build inside ("onnxruntime-gpu 1.23.0"): a deploy
# checks each bundle's needs against it (edge_app/compat.py).
RUNTIME_LABEL = "io.edgegen.onnxruntime"
# The image of a class whose bundles are all LiteRT graphs has no ONNX Runtime: its label says
# "none" ("" is an image that does not say).
NO_RUNTIME = "none"
# Its LiteRT ("ai-edge-litert 2.3.0"), in the images of classes that serve LiteRT bundles.
LITERT_LABEL = "io.edgegen.litert"
LITERT_PACKAGE = "ai-edge-litert"
# tokenizers goes in without its dependencies: huggingface_hub (and hf_xet, ~20 MB) serve only
# Tokenizer.from_pretrained downloads; bundles carry their tokenizer.json.
NODEPS_REQUIREMENTS = ("tokenizers",)


def serve_requirements(ort_package: str | None, litert: bool = False) -> list[str]:
    """pyproject's dependencies plus its `serve` extra, with the class's ONNX Runtime build
    (none when `ort_package` is None), and its `litert` extra when the class serves LiteRT
    bundles."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = project["dependencies"] + extras["serve"] + (extras["litert"] if litert else [])
    return [ort_package if n == "onnxruntime" else n for n in names
            if n not in NODEPS_REQUIREMENTS and (ort_package or n != "onnxruntime")]


class ImageError(FleetError):
    """An image cannot be built or saved; the message says what to do."""


@dataclass(frozen=True)
class ImageSpec:
    device_class: str
    platform: str  # linux/amd64 | linux/arm64
    base_image: str
    dockerfile: Path
    ort_package: str = "onnxruntime"
    pythons: tuple[str, ...] = ("3.11",)  # CPython versions of the base images it may use
    extra_index_url: str = ""  # e.g. NVIDIA's Jetson AI Lab index for onnxruntime-gpu
    find_links: str = ""  # a controller directory of wheels the operator supplies
    pins: tuple[tuple[str, str], ...] = ()  # constraints.txt pins replaced for this class
    version: str = __version__
    # The runtimes, set from the bundles the class serves and ships (fleet.deploy.with_runtimes),
    # so an image carries those its bundles need, no more: LiteRT when any is a LiteRT graph
    # (edgegen_litert), ONNX Runtime unless all are (edgegen_onnxruntime)
    litert: bool = False
    onnxruntime: bool = True

    def __post_init__(self):
        if not (self.litert or self.onnxruntime):
            raise ImageError(f"class {self.device_class!r}: an image needs a runtime "
                             f"(edgegen_onnxruntime or edgegen_litert)")

    @property
    def arch(self) -> str:
        return self.platform.split("/", 1)[1]

    @property
    def wheelhouse_name(self) -> str:
        """edge-<arch>-<ort package>, plus a digest of the class's pins when it has any: classes
        pinning different versions (an older ONNX Runtime) never share a wheelhouse, whose
        wheels (and SHA256SUMS) are then one consistent set, the image label's runtime too."""
        runtimes = [self.ort_package] * self.onnxruntime + ["litert"] * self.litert
        base = "-".join([f"edge-{self.arch}", *runtimes])
        if not self.pins:
            return base
        return f"{base}-{hashlib.sha256(repr(self.pins).encode()).hexdigest()[:8]}"

    @property
    def tag(self) -> str:
        """edgegen-edge:<version>-<class>-<arch>, then the runtimes when they are not ONNX
        Runtime alone: `-ort-litert` (both), `-litert` (LiteRT only)."""
        runtimes = ["ort"] * self.onnxruntime + ["litert"] * self.litert
        suffix = "" if runtimes == ["ort"] else "-" + "-".join(runtimes)
        return f"{IMAGE_NAME}:{self.version}-{self.device_class}-{self.arch}{suffix}"

    @classmethod
    def for_hosts(cls, device_class: str, hosts: dict[str, dict[str, Any]]) -> "ImageSpec":
        """The one image of a class's hosts (fleet.inventory.class_hosts); they must agree."""
        specs = {host: cls.from_settings(device_class, s) for host, s in hosts.items()}
        distinct = set(specs.values())
        if len(distinct) > 1:
            each = ", ".join(sorted(f"{h}: {s.tag} from {s.base_image}" for h, s in specs.items()))
            raise ImageError(f"hosts of class {device_class!r} need different images ({each}); "
                             f"image settings (edgegen_platform, edgegen_base_image, ...) must be "
                             f"the same for the whole class")
        return distinct.pop()

    @classmethod
    def from_settings(cls, device_class: str, settings: dict[str, Any]) -> "ImageSpec":
        """From a class's edgegen_* settings (fleet.inventory.device_class or class_hosts)."""
        platform = settings.get("edgegen_platform")
        if platform not in WHEEL_PLATFORMS:
            raise ImageError(f"class {device_class!r}: edgegen_platform must be one of "
                             f"{sorted(WHEEL_PLATFORMS)}, got {platform!r}")
        base = settings.get("edgegen_base_image")
        dockerfile = settings.get("edgegen_dockerfile")
        if not base or not dockerfile:
            raise ImageError(f"class {device_class!r} has no edgegen_base_image / "
                             f"edgegen_dockerfile: it is not deployed as a container image")
        pythons = settings.get("edgegen_pythons", ["3.11"])
        pins = settings.get("edgegen_pins") or {}
        if not isinstance(pins, dict):
            raise ImageError(f"class {device_class!r}: edgegen_pins must map package to version")
        return cls(device_class, platform, str(base), REPO / str(dockerfile),
                   str(settings.get("edgegen_ort_package", "onnxruntime")),
                   tuple(str(p) for p in pythons), str(settings.get("edgegen_extra_index_url", "")),
                   str(settings.get("edgegen_find_links") or ""),
                   tuple(sorted((str(k).lower(), str(v)) for k, v in pins.items())),
                   litert=bool(settings.get("edgegen_litert")),
                   onnxruntime=bool(settings.get("edgegen_onnxruntime", True)))


@dataclass(frozen=True)
class Archive:
    """A `docker save` of one image, gzip-compressed (docker load reads it as is)."""
    tag: str
    image_id: str
    path: Path
    sha256: str
    image_bytes: int  # the image's unpacked size (docker image inspect .Size)
    archive_bytes: int
    runtime: str = ""  # its RUNTIME_LABEL ("onnxruntime 1.32.0"); "" when it has none
    litert: str = ""  # its LITERT_LABEL ("ai-edge-litert 2.3.0"); "" when it has no LiteRT


def _run(cmd: list[str], what: str, explain=None, **kwargs) -> subprocess.CompletedProcess:
    """`explain(output)` words the failures a caller knows in one line (None: the others end
    with the tail of the command's output)."""
    try:
        return subprocess.run(cmd, check=True, text=True, **kwargs)
    except FileNotFoundError:
        raise ImageError(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.CalledProcessError as exc:
        line = explain and explain(exc.stderr or exc.stdout or "")
        if line:
            raise ImageError(line) from None
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-15:]
        raise ImageError(f"{what} failed (exit {exc.returncode}): {' '.join(cmd[:6])} ...\n"
                         + "\n".join(tail)) from None


def image_id(ref: str) -> str:
    """The local image's ID (sha256:...), or "" when there is none by that name."""
    r = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], text=True,
                       capture_output=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def _inspect(ref: str, fmt: str) -> str:
    return _run(["docker", "image", "inspect", "-f", fmt, ref], f"docker image inspect {ref}",
                capture_output=True).stdout.strip()


def ensure_base(base_image: str, platform: str, who: str, log=print) -> None:
    """The base image in the local store for the platform's architecture. Debian bases are made
    with debootstrap when missing (no registry here); others must be loaded by the operator."""
    arch = platform.split("/", 1)[1]
    if image_id(base_image) and _inspect(base_image, "{{.Architecture}}") == arch:
        return
    name, _, suite_tag = base_image.partition(":")
    if name == "debian" and suite_tag:
        log(f"base image {base_image} ({arch}) not present: making it with debootstrap")
        _run(["bash", str(REPO / "images/base/debian-base.sh"), base_image,
              suite_tag.split("-")[0], arch], f"debootstrap {base_image} {arch}",
             capture_output=True)
        return
    raise ImageError(
        f"base image {base_image} ({platform}) for {who} is not in the local Docker store: "
        f"`docker pull --platform {platform} {base_image}` on a machine that reaches its "
        f"registry (then docker save / docker load it here), or set edgegen_base_image for it in "
        f"the inventory")


def wheelhouse(spec: ImageSpec, log=print) -> Path:
    """build/wheelhouse/<spec.wheelhouse_name>/: the edgegen wheel, every dependency as a
    binary wheel for the platform and each Python of the class (fetch_wheels: downloaded once,
    then checked against SHA256SUMS), requirements.txt and constraints.txt."""
    out = BUILD / "wheelhouse" / spec.wheelhouse_name
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _edgegen_wheel(out, pip)
    if spec.onnxruntime:
        _companion_files(out / "web", log)
    else:  # the companion page runs ONNX graphs (onnxruntime-web): none for LiteRT-only classes
        shutil.rmtree(out / "web", ignore_errors=True)
    requirements = serve_requirements(spec.ort_package if spec.onnxruntime else None,
                                      spec.litert)
    _write_if_changed(out / "requirements.txt", ("\n".join(requirements) + "\n").encode())
    _write_if_changed(out / "requirements-nodeps.txt",
                      ("\n".join(NODEPS_REQUIREMENTS) + "\n").encode())
    _write_if_changed(out / "constraints.txt", constraints(spec.pins).encode())
    for name in ("install-venv.sh", "litert-keep.txt"):
        _write_if_changed(out / name, (REPO / "images" / name).read_bytes())
    fetch_wheels(out, requirements, spec.platform, spec.pythons, nodeps=NODEPS_REQUIREMENTS,
                 extra_index_url=spec.extra_index_url, find_links=spec.find_links,
                 constraints_file=out / "constraints.txt", built_here=("edgegen-*.whl",), log=log)
    return out


LOCK = "SHA256SUMS"
# pip's defaults (5 retries, 15 s each, more with PIP_DEFAULT_TIMEOUT) make a down index cost
# minutes per package; one retry is still needed for pip to log which URL failed.
PIP_NETWORK = ("--retries", "1", "--timeout", "15")


def fetch_wheels(dest: Path, requirements: Sequence[str], platform: str,
                 pythons: Sequence[str], *, nodeps: Sequence[str] = (),
                 extra_index_url: str = "", find_links: str = "",
                 constraints_file: Path | None = None, built_here: Sequence[str] = (),
                 log=print) -> None:
    """Binary wheels of `requirements` (and `nodeps`, without their dependencies) for a
    container platform and each CPython in `pythons`, into `dest`, from pip's index (PyPI or
    the controller's pip configuration), `extra_index_url` and the local directory
    `find_links`, then locked: dest/SHA256SUMS lists every wheel but those matching the
    `built_here` globs. A request completed before (the same arguments and constraints) is
    not downloaded again but checked against the lock, so a rollout needs no index at all once
    the wheelhouse is filled, and builds an image from exactly the wheels fetched then."""
    constraints_text = constraints_file.read_text() if constraints_file else ""
    if find_links:
        find_links = str(Path(find_links).expanduser().resolve())
    request = json.dumps([list(requirements), list(nodeps), platform, list(pythons),
                          extra_index_url, find_links, constraints_text])
    stamp = dest.parent / f".{dest.name}.downloaded"  # outside the build context
    # A wheelhouse deleted to be fetched again has no lock, whatever its stamp says.
    if (dest / LOCK).is_file() and stamp.is_file() and stamp.read_text() == request:
        _check_lock(dest, built_here)
        return
    if find_links and not Path(find_links).is_dir():
        raise ImageError(f"edgegen_find_links {find_links} is not a directory: create it and "
                         f"put the wheels there that no index has, or unset edgegen_find_links")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download",
           "--progress-bar", "off", *PIP_NETWORK, "--dest", str(dest), "--only-binary=:all:",
           "--implementation", "cp"]
    for tag in WHEEL_PLATFORMS[platform]:
        pip += ["--platform", tag]
    if extra_index_url:
        pip += ["--extra-index-url", extra_index_url]
    if find_links:
        pip += ["--find-links", find_links]
    if constraints_file:
        pip += ["-c", str(constraints_file)]
    runs = [list(requirements)] + ([["--no-deps", *nodeps]] if nodeps else [])
    for python in pythons:
        log(f"wheelhouse: {platform} CPython {python} -> {dest}")
        explain = functools.partial(_pip_failure, platform=platform, python=python,
                                    find_links=find_links)
        for args in runs:
            _run(pip + ["--python-version", python, *args],
                 f"downloading wheels for {platform} / CPython {python}", explain,
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _write_if_changed(dest / LOCK, "".join(f"{digest}  {name}\n" for name, digest
                                           in sorted(_wheel_digests(dest, built_here).items()))
                      .encode())
    stamp.write_text(request)


def _wheel_digests(dest: Path, built_here: Sequence[str]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in dest.glob("*.whl")
            if not any(fnmatch.fnmatch(p.name, g) for g in built_here)}


def _check_lock(dest: Path, built_here: Sequence[str]) -> None:
    """Every wheel of the wheelhouse as fetched: one changed, missing or added since is refused
    (the image would not be made of what was downloaded and checked then)."""
    locked = {}
    for line in (dest / LOCK).read_text().splitlines():
        digest, _, name = line.partition("  ")
        locked[name] = digest
    present = _wheel_digests(dest, built_here)
    again = f"delete {dest} to fetch the wheels again"
    for name in sorted(locked.keys() | present.keys()):
        if name not in present:
            raise ImageError(f"{dest / name} is missing but listed in {LOCK}: {again}")
        if name not in locked:
            raise ImageError(f"{dest / name} is not in {LOCK} (it was added after the wheels "
                             f"were fetched): remove it, or {again}")
        if present[name] != locked[name]:
            raise ImageError(f"{dest / name} has sha256 {present[name]}, not {locked[name]} as "
                             f"in {LOCK}: it changed after it was fetched; {again}")


# What pip (with PIP_NETWORK's one retry) writes when a distribution is on no index it tried,
# and when a request to an index failed (urllib3's warning, with the URL's path).
_NOT_FOUND = re.compile(r"No matching distribution found for (.+)$", re.M)
_VERSIONS = re.compile(r"Could not find a version that satisfies the requirement .* "
                       r"\(from versions: (.*)\)$", re.M)
_LOOKING = re.compile(r"^Looking in (indexes|links): (.+)$", re.M)
_BROKEN = re.compile(r"Retrying \(.*\) after connection broken by '(.*)': (/\S*)$", re.M)
PYPI = "https://pypi.org/simple"


def _pip_failure(output: str, platform: str, python: str, find_links: str) -> str | None:
    """One line for the `pip download` failures an operator fixes by supplying a wheel or a
    reachable index; None for the others (the caller shows pip's own words)."""
    looking = dict(_LOOKING.findall(output))
    # pip names its indexes unless PyPI is the only one.
    indexes = looking["indexes"].split(", ") if "indexes" in looking else [PYPI]
    links = looking["links"].split(", ") if "links" in looking else []
    missing = _NOT_FOUND.search(output)
    wanted = missing.group(1).strip() if missing else "wheels"
    target = f"{platform} / CPython {python}"
    into = (f"{find_links} (edgegen_find_links)" if find_links
            else "a directory named by edgegen_find_links")
    down = {}
    for error, path in _BROKEN.findall(output):
        # "[Errno 111] Connection refused", else the exception's name (ConnectTimeoutError, ...)
        reason = re.search(r"\[Errno -?\d+\] ([^'\"]+)", error) or re.match(r"(\w+)", error)
        for url in _serving(path, indexes + links):
            down.setdefault(url, reason.group(1) if reason else error)
    if down:
        where = ", ".join(f"{url} ({reason})" for url, reason in down.items())
        return (f"could not reach {where} looking for {wanted} for {target}: check the network "
                f"and the URL, or put the wheel files in {into}, or point "
                f"edgegen_extra_index_url at a mirror that has them")
    if not missing:
        return None
    versions = _VERSIONS.search(output)
    there = (f" (versions there: {versions.group(1)})"
             if versions and versions.group(1) != "none" else "")
    tried = ", ".join(indexes) + (f" and find-links {', '.join(links)}" if links else "")
    return (f"no wheel of {wanted} for {target} on {tried}{there}: put its wheel file in {into}, "
            f"or point edgegen_extra_index_url at a mirror that has it")


def _serving(path: str, urls: list[str]) -> list[str]:
    """The index or find-links URLs a failed request's path belongs to (the longest match)."""
    def prefix(url: str) -> str:
        return urllib.parse.urlsplit(url).path.rstrip("/") + "/"
    hits = [u for u in urls if u.startswith(("http://", "https://"))
            and (path.rstrip("/") + "/").startswith(prefix(u))]
    longest = max((len(prefix(u)) for u in hits), default=0)
    return [u for u in hits if len(prefix(u)) == longest]


def constraints(pins: tuple[tuple[str, str], ...] = ()) -> str:
    """constraints.txt with a class's own pins in place of the kit's (e.g. numpy for the
    Python 3.10 of L4T, which numpy >= 2.3 no longer supports)."""
    wanted = dict(pins)
    lines = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name = line.split("==", 1)[0].strip().lower()
        lines.append(f"{name}=={wanted.pop(name)}" if name in wanted else line)
    return "\n".join(lines + [f"{k}=={v}" for k, v in sorted(wanted.items())]) + "\n"


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leave an identical file alone: the build context stays byte- and time-identical, so
    Docker's layer cache holds and an unchanged image keeps its ID (no new archive, no redeploy)."""
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def _companion_files(web: Path, log) -> None:
    """onnxruntime-web (and the page's Jinja) for the server's /companion/ page, gzipped (3.5 MB
    instead of 14 MB in the image; served with Content-Encoding). Fetched with
    android/fetch-web-deps.sh (npm) when missing; without it the image is built anyway and its
    page says what is missing."""
    from edge_app.companion import WEB_DEPS

    src = BUILD / "web-deps" / "onnxruntime-web"
    if not all((src / n).is_file() for n in WEB_DEPS):
        fetched = subprocess.run(["bash", str(REPO / "android" / "fetch-web-deps.sh"), str(src)],
                                 capture_output=True, text=True)
        if fetched.returncode != 0:
            log(f"note: onnxruntime-web is not available ({fetched.stderr.strip()[-200:]}); "
                f"the image's /companion/ page will say so")
            shutil.rmtree(web, ignore_errors=True)
            return
    web.mkdir(parents=True, exist_ok=True)
    for name in WEB_DEPS:
        packed = gzip.compress((src / name).read_bytes(), compresslevel=9, mtime=0)
        _write_if_changed(web / (name + ".gz"), packed)


# Packages of the project that never run on a device (the build box's and the operator's).
NOT_ON_DEVICES = ("optimizer/", "fleet/")


def _edgegen_wheel(out: Path, pip: list[str]) -> None:
    """The edgegen wheel in `out` with edge_app only, byte-identical when edge_app is (fixed
    zip timestamps, and an unchanged wheel is not replaced): Docker's layer cache holds across
    rebuilds, and a change to the optimizer or fleet code makes no new image to roll out."""
    with tempfile.TemporaryDirectory() as tmp:
        _run(pip + ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", tmp,
                    str(REPO)], "building the edgegen wheel", capture_output=True,
             env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
        (new,) = Path(tmp).glob("edgegen-*.whl")
        edge = Path(tmp) / "edge" / new.name
        edge.parent.mkdir()
        _strip_wheel(new, edge)
        for stale in out.glob("edgegen-*.whl"):
            if stale.name != new.name:
                stale.unlink()
        _write_if_changed(out / new.name, edge.read_bytes())


def _strip_wheel(src: Path, dst: Path) -> None:
    """Copy a wheel without the NOT_ON_DEVICES packages, their RECORD lines included; entries
    keep their order and timestamps."""
    dropped = tuple(p.encode() for p in NOT_ON_DEVICES)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename.startswith(NOT_ON_DEVICES):
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not line.startswith(dropped))
            zout.writestr(info, data)


def wheel_runtime(wheelhouse_dir: Path, package: str) -> str:
    """"<package> <version>" of the ONNX Runtime wheel(s) in a wheelhouse (the oldest, should
    the class's Pythons have got different ones), "" when there is none."""
    from edge_app.compat import CompatError, parse_version

    prefix = package.replace("-", "_").lower() + "-"
    found = set()
    for wheel in wheelhouse_dir.glob("*.whl"):
        if wheel.name.lower().startswith(prefix):
            version = wheel.name.split("-")[1]
            try:
                parse_version(version)
            except CompatError:
                continue
            found.add(version)
    return f"{package} {min(found, key=parse_version)}" if found else ""


def build(spec: ImageSpec, log=print) -> str:
    """Build (Docker's layer cache makes an unchanged rebuild quick); returns the image ID."""
    ensure_base(spec.base_image, spec.platform, f"class {spec.device_class!r}", log)
    context = wheelhouse(spec, log)
    log(f"building {spec.tag} ({spec.platform}, FROM {spec.base_image})")
    litert = wheel_runtime(context, LITERT_PACKAGE) if spec.litert else ""
    runtime = wheel_runtime(context, spec.ort_package) if spec.onnxruntime else NO_RUNTIME
    _run(["docker", "build", "--network", "host", "--platform", spec.platform, "--quiet",
          "-f", str(spec.dockerfile), "-t", spec.tag,
          "--label", f"{RUNTIME_LABEL}={runtime}",
          "--label", f"{LITERT_LABEL}={litert}",
          "--build-arg", f"BASE_IMAGE={spec.base_image}",
          "--build-arg", f"EDGEGEN_VERSION={spec.version}",
          "--build-arg", f"DEVICE_CLASS={spec.device_class}",
          "--build-arg", f"ORT_PACKAGE={spec.ort_package if spec.onnxruntime else NO_RUNTIME}",
          str(context)],
         f"docker build {spec.tag}", capture_output=True)
    return image_id(spec.tag)


def _label(tag: str, label: str) -> str:
    value = _inspect(tag, f'{{{{index .Config.Labels "{label}"}}}}')
    return "" if value == "<no value>" else value


def save(tag: str, out_dir: Path = BUILD / "images", log=print) -> Archive:
    """`docker save | gzip` to <out_dir>/<name>_<tag>.tar.gz with its sha256, reused while the
    image ID is unchanged (so a repeated deploy copies nothing)."""
    ident = image_id(tag)
    if not ident:
        raise ImageError(f"image {tag} is not in the local Docker store (build it with "
                         f"`make images DEVICE=<class>` or name an existing image)")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (tag.replace("/", "_").replace(":", "_") + ".tar.gz")
    meta_path = path.with_name(path.name + ".json")
    size = int(_inspect(tag, "{{.Size}}"))
    runtime, litert = (_label(tag, label) for label in (RUNTIME_LABEL, LITERT_LABEL))
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("image_id") == ident and meta.get("archive_bytes") == path.stat().st_size:
            return Archive(tag, ident, path, meta["sha256"], size, meta["archive_bytes"],
                           runtime, litert)
    log(f"saving {tag} -> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    tmp = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    proc = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    # mtime=0: the same image gives the same archive bytes, hence the same checksum.
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=_Hashing(raw, digest), mode="wb", compresslevel=3,
                           mtime=0) as gz:
            shutil.copyfileobj(proc.stdout, gz, 1 << 20)
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(f"docker save {tag} failed: {err.strip()}")
    os.replace(tmp, path)
    archive = Archive(tag, ident, path, digest.hexdigest(), size, path.stat().st_size, runtime,
                      litert)
    meta_path.write_text(json.dumps({"tag": tag, "image_id": ident, "sha256": archive.sha256,
                                     "archive_bytes": archive.archive_bytes,
                                     "image_bytes": size, "runtime": runtime, "litert": litert},
                                    indent=2) + "\n")
    return archive


def load_archive(path: Path) -> Archive:
    """A saved archive (from `save`, possibly on another machine) with its sidecar .json; its
    sha256 is checked, so a controller without a Docker engine can deploy it."""
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    try:
        meta = json.loads(meta_path.read_text())
        tag, ident, expected = meta["tag"], meta["image_id"], meta["sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise ImageError(f"{path}: needs its sidecar {meta_path.name} with tag, image_id and "
                         f"sha256 (written by `python -m fleet images`): {exc}") from None
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror}") from None
    if actual != expected:
        raise ImageError(f"{path}: sha256 {actual} differs from {meta_path.name} "
                         f"({expected}): the archive is damaged or was replaced")
    return Archive(tag, ident, path, expected, int(meta.get("image_bytes", 0)),
                   path.stat().st_size, str(meta.get("runtime", "")), str(meta.get("litert", "")))


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()
