"""The artifact bundle contract (schema_version 1).

A bundle is the only thing that crosses from build (``optimizer``) to run (``edge_app``)::

    bundles/<name>/manifest.json
    bundles/<name>/model.onnx        (+ model.onnx.data for external weights)
    bundles/<name>/tokenizer.json    (text models)

The schema lives here, with its consumer (field-level validation in schema.py, each task's
`generation` section in generation.py). ``optimizer`` writes bundles through
:func:`write_bundle`; the server loads them through :func:`load_bundle`, which refuses a
bundle whose schema_version is unknown, whose manifest is malformed, or whose files do not
match their recorded sha256 and size. Files are opened without following symbolic links and
must be regular files (a FIFO would block the reader forever, a link could lead anywhere).
Every refusal is a :class:`BundleError` whose message names the bundle, the field or file, and
what was expected.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .generation import GENERATION_PARSERS, ImageGeneration, TextGeneration
from .schema import BundleError, GraphSpec, Obj, graph_spec

__all__ = ["Bundle", "BundleError", "Manifest", "load_bundle", "read_manifest", "write_bundle",
           "parse_manifest", "sha256_file", "verify_files"]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

TASKS = ("image-generation", "text-generation")
FAMILIES = ("dcgan", "beta-vae", "gpt2", "llama")
PRECISIONS = ("fp32", "fp16", "int8", "int4")
# Bundle and file names: a conservative set, since they become URL parts, paths, Prometheus
# labels and JSON (a lone surrogate in a name once made /metrics fail for good).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_MANIFEST_BYTES = 1 << 20


# --------------------------------------------------------------------------- typed manifest


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Technique:
    name: str  # "train", "prune", "quantize", "distill", "export", ...
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    name: str
    task: str
    family: str
    precision: str
    techniques: tuple[Technique, ...]
    graph: GraphSpec
    generation: ImageGeneration | TextGeneration
    files: dict[str, FileEntry]
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    model_file: str = "model.onnx"


# --------------------------------------------------------------------------- validation


def _files(obj: Obj) -> dict[str, FileEntry]:
    files = obj.obj("files")
    out = {}
    for name in files.value:
        if not NAME.fullmatch(name) or name == MANIFEST:
            raise BundleError(f"{obj.origin}: 'files' may only list plain file names (letters, "
                              f"digits, '.', '_', '-'), got {name!r}")
        entry = files.obj(name)
        sha = entry.get("sha256", str)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BundleError(f"{obj.origin}: 'files.{name}.sha256' must be 64 lowercase hex "
                              f"digits, got {sha!r}")
        size = entry.get("size", int)
        if size < 0:
            raise BundleError(f"{obj.origin}: 'files.{name}.size' must be >= 0, got {size}")
        out[name] = FileEntry(sha, size)
    return out


def parse_manifest(data: Any, origin: str = MANIFEST) -> Manifest:
    """Validate a manifest dict and return it typed; raise BundleError naming the bad field."""
    root = Obj(data, "", origin)
    version = root.get("schema_version", int)
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{origin}: unsupported schema_version {version}; this edge_app reads "
            f"schema_version {SCHEMA_VERSION} only (rebuild the bundle with a matching optimizer)"
        )
    task = root.get("task", str, choices=TASKS)
    parser = GENERATION_PARSERS[task]
    graph = graph_spec(root.obj("graph"))
    techniques = tuple(
        Technique(t.get("name", str), t.get("params", dict, default={}))
        for t in (Obj(v, w, origin) for w, v in root.items("techniques"))
    )
    files = _files(root)
    model_file = root.get("model_file", str, default="model.onnx")
    if model_file not in files:
        raise BundleError(f"{origin}: model_file '{model_file}' is not listed in 'files'")
    generation = parser(root.obj("generation"), graph)
    if isinstance(generation, TextGeneration) and generation.tokenizer_file not in files:
        raise BundleError(f"{origin}: 'generation.tokenizer_file' '{generation.tokenizer_file}' "
                          f"is not listed in 'files'")
    name = root.get("name", str)
    if not NAME.fullmatch(name):
        raise BundleError(f"{origin}: 'name' must be a non-empty word of letters, digits, '.', "
                          f"'_' and '-' (at most 128, starting with a letter or digit), got "
                          f"{name!r}")
    return Manifest(
        schema_version=version,
        name=name,
        task=task,
        family=root.get("family", str, choices=FAMILIES),
        precision=root.get("precision", str, choices=PRECISIONS),
        techniques=techniques,
        graph=graph,
        generation=generation,
        files=files,
        metrics=root.get("metrics", dict, default={}),
        provenance=root.get("provenance", dict),
        model_file=model_file,
    )


# --------------------------------------------------------------------------- files


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        return _sha256(f, chunk)


def _sha256(f, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    while block := f.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def open_regular(path: Path, what: str):
    """Open a file of a bundle for reading: not through a symbolic link, and only if it is a
    regular file (O_NONBLOCK: opening a FIFO then returns at once instead of waiting for a
    writer). Raises BundleError naming `what`; FileNotFoundError when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError(f"{what} is a symbolic link; a bundle holds regular files "
                              f"only") from None
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(path) from None
        raise BundleError(f"{what} cannot be opened: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) \
            else "a special file"
        raise BundleError(f"{what} is {kind}; a bundle holds regular files only")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file


def verify_files(path: Path, manifest: Manifest) -> None:
    """Check that every listed file exists with its recorded size and sha256."""
    for name, entry in manifest.files.items():
        try:
            f = open_regular(path / name, f"bundle {path}: file '{name}'")
        except FileNotFoundError:
            raise BundleError(f"bundle {path}: file '{name}' listed in the manifest is "
                              f"missing") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size != entry.size:
                raise BundleError(f"bundle {path}: file '{name}' has size {size}, manifest "
                                  f"says {entry.size}")
            actual = _sha256(f)
        if actual != entry.sha256:
            raise BundleError(f"bundle {path}: checksum mismatch for '{name}': manifest sha256 "
                              f"{entry.sha256}, file sha256 {actual}")


def read_manifest(path: Path) -> Manifest:
    path = Path(path)
    origin = str(path / MANIFEST)
    if not path.is_dir():
        raise BundleError(f"bundle {path}: not a directory (expected <bundle>/{MANIFEST})")
    try:
        with open_regular(path / MANIFEST, origin) as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"bundle {path}: no {MANIFEST}") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{origin}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{origin}: not valid JSON ({str(exc)[:200]})") from None
    return parse_manifest(data, origin)


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read, validate and (by default) checksum a bundle directory. The bundle keeps its path
    made absolute (not resolved), so that files are found whatever the working directory of
    whoever opens them later (Flask's send_file resolves relative paths against the package)."""
    path = Path(os.path.abspath(path))
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    return Bundle(path, manifest)


def write_bundle(out_dir: str | os.PathLike, manifest: dict[str, Any],
                 files: dict[str, str | os.PathLike]) -> Bundle:
    """Write a bundle atomically: copy `files`, record their sha256/size, validate, rename.

    `manifest` is everything but "files" and "schema_version", which are filled in here. The
    directory appears complete or not at all; an existing bundle of the same name is replaced.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        entries = {}
        for name, src in files.items():
            dst = staging / name
            shutil.copyfile(src, dst)
            entries[name] = {"sha256": sha256_file(dst), "size": dst.stat().st_size}
        full = {"schema_version": SCHEMA_VERSION, **manifest, "files": entries}
        parse_manifest(full, origin=f"{out_dir}/{MANIFEST} (being written)")
        (staging / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n",
                                        encoding="utf-8")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            staging.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out_dir)
