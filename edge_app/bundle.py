"""The artifact bundle contract (schema_version 1).

A bundle is the only thing that crosses from build (``optimizer``) to run (``edge_app``)::

    bundles/<name>/manifest.json
    bundles/<name>/model.onnx        (+ model.onnx.data for external weights)
    bundles/<name>/tokenizer.json    (text models)

The schema lives here, with its consumer. ``optimizer`` writes bundles through
:func:`write_bundle`; the server loads them through :func:`load_bundle`, which refuses a
bundle whose schema_version is unknown, whose manifest is malformed, or whose files do not
match their recorded sha256 and size. Every refusal is a :class:`BundleError` whose message
names the bundle, the field or file, and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

TASKS = ("image-generation", "text-generation")
FAMILIES = ("dcgan", "beta-vae", "gpt2")
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")
# How a seed becomes a latent vector; edge_app/latent.py implements each name exactly, so that
# every runtime (server, benchmark, browser companion) draws the same latent for the same seed.
LATENT_RNGS = ("splitmix64-box-muller-v1",)


class BundleError(Exception):
    """A bundle that must not be served: malformed, unknown schema, or tampered files."""


# --------------------------------------------------------------------------- typed manifest


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]  # ints are fixed sizes, strings are symbolic axes ("batch")


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Technique:
    name: str  # "train", "prune", "quantize", "distill", "export", ...
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LatentSpec:
    dim: int
    distribution: str  # "normal": standard normal, one vector per image
    rng: str  # one of LATENT_RNGS


@dataclass(frozen=True)
class ImageSpec:
    channels: int  # 1 (grayscale) or 3 (RGB), channel-first in the graph output
    height: int
    width: int
    value_range: tuple[float, float]  # what the graph outputs; mapped linearly to 0..255


@dataclass(frozen=True)
class ImageGeneration:
    latent: LatentSpec
    image: ImageSpec
    latent_input: str  # graph input that takes the (batch, dim) latent
    image_output: str  # graph output that gives (batch, C, H, W)


@dataclass(frozen=True)
class CacheLayer:
    heads: int  # attention heads kept in this layer (head pruning makes layers differ)
    key_input: str  # graph input "past" key, (batch, heads, past, head_dim)
    value_input: str
    key_output: str  # graph output "present" key, (batch, heads, past + seq, head_dim)
    value_output: str


@dataclass(frozen=True)
class TextGeneration:
    """A decoder with a KV cache: feed the prompt once, then one token per step.

    Inputs: token ids (batch, seq), the positions whose logits are wanted (keep) and one past
    key and value per layer. Outputs: logits (batch, keep, vocab) and the present keys and
    values, which are the next step's past. An empty past (length 0) starts a sequence; the
    graph derives positions from the past length, so a sequence must not exceed
    context_length tokens.
    """

    tokenizer_file: str  # HF `tokenizers` JSON, listed in files
    vocab_size: int
    context_length: int
    eos_token_id: int
    bos_token_id: int
    head_dim: int
    cache_dtype: str
    layers: tuple[CacheLayer, ...]
    input_ids: str
    logits_index: str
    logits_output: str


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


_MISSING = object()


class _Obj:
    """A JSON object being read, with the dotted path used in error messages."""

    def __init__(self, value: Any, where: str, origin: str):
        if not isinstance(value, dict):
            raise BundleError(f"{origin}: '{where}' must be an object, got {_kind(value)}")
        self.value, self.where, self.origin = value, where, origin

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, types: type | tuple[type, ...], *, choices=None, default=_MISSING):
        if key not in self.value:
            if default is _MISSING:
                raise BundleError(f"{self.origin}: missing required field '{self._path(key)}'")
            return default
        value = self.value[key]
        # bool is an int in Python; a manifest that says `"size": true` is still wrong.
        if isinstance(value, bool) and bool not in _as_tuple(types):
            value_ok = False
        else:
            value_ok = isinstance(value, types)
        if not value_ok:
            want = " or ".join(_type_name(t) for t in _as_tuple(types))
            raise BundleError(
                f"{self.origin}: field '{self._path(key)}' must be {want}, got {_kind(value)}"
            )
        if choices is not None and value not in choices:
            raise BundleError(
                f"{self.origin}: field '{self._path(key)}' must be one of {list(choices)}, "
                f"got {value!r}"
            )
        return value

    def positive(self, key: str) -> int:
        value = self.get(key, int)
        if value <= 0:
            raise BundleError(f"{self.origin}: field '{self._path(key)}' must be > 0, got {value}")
        return value

    def obj(self, key: str, default=_MISSING) -> "_Obj":
        value = self.get(key, dict, default=default)
        return _Obj(value, self._path(key), self.origin)

    def items(self, key: str) -> list[tuple[str, Any]]:
        values = self.get(key, list)
        return [(f"{self._path(key)}[{i}]", v) for i, v in enumerate(values)]


def _as_tuple(types) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_name(t: type) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer",
            float: "a number", bool: "a boolean"}.get(t, t.__name__)


def _kind(value: Any) -> str:
    return f"{_type_name(type(value))} ({json.dumps(value)[:40]})"


def _tensor(where: str, value: Any, origin: str) -> TensorSpec:
    obj = _Obj(value, where, origin)
    shape = obj.get("shape", list)
    for i, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, (int, str)) or (
            isinstance(dim, int) and dim <= 0
        ):
            raise BundleError(
                f"{origin}: '{where}.shape[{i}]' must be a positive integer or an axis name, "
                f"got {dim!r}"
            )
    return TensorSpec(obj.get("name", str), obj.get("dtype", str, choices=DTYPES), tuple(shape))


def _graph(obj: _Obj) -> GraphSpec:
    inputs = tuple(_tensor(w, v, obj.origin) for w, v in obj.items("inputs"))
    outputs = tuple(_tensor(w, v, obj.origin) for w, v in obj.items("outputs"))
    if not inputs or not outputs:
        raise BundleError(f"{obj.origin}: 'graph' needs at least one input and one output")
    return GraphSpec(inputs, outputs, obj.positive("opset"))


def _image_generation(obj: _Obj, graph: GraphSpec) -> ImageGeneration:
    latent_obj, image_obj = obj.obj("latent"), obj.obj("image")
    latent = LatentSpec(
        dim=latent_obj.positive("dim"),
        distribution=latent_obj.get("distribution", str, choices=("normal",)),
        rng=latent_obj.get("rng", str, choices=LATENT_RNGS),
    )
    lo_hi = image_obj.get("value_range", list)
    if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi) or lo_hi[0] >= lo_hi[1]:
        raise BundleError(
            f"{obj.origin}: 'generation.image.value_range' must be [low, high] with low < high, "
            f"got {lo_hi!r}"
        )
    image = ImageSpec(
        channels=image_obj.get("channels", int, choices=(1, 3)),
        height=image_obj.positive("height"),
        width=image_obj.positive("width"),
        value_range=(float(lo_hi[0]), float(lo_hi[1])),
    )
    gen = ImageGeneration(
        latent, image, obj.get("latent_input", str), obj.get("image_output", str)
    )
    by_name = {t.name: t for t in graph.inputs + graph.outputs}
    for role, name, want in (
        ("latent_input", gen.latent_input, (latent.dim,)),
        ("image_output", gen.image_output, (image.channels, image.height, image.width)),
    ):
        spec = by_name.get(name)
        if spec is None:
            raise BundleError(f"{obj.origin}: 'generation.{role}' names '{name}', "
                              f"which is not in graph inputs/outputs")
        if tuple(spec.shape[1:]) != want:
            raise BundleError(f"{obj.origin}: graph tensor '{name}' has shape {list(spec.shape)}, "
                              f"but generation declares [batch, {', '.join(map(str, want))}]")
    return gen


def _text_generation(obj: _Obj, graph: GraphSpec) -> TextGeneration:
    cache = obj.obj("kv_cache")
    layers = tuple(
        CacheLayer(heads=o.positive("heads"), key_input=o.get("key_input", str),
                   value_input=o.get("value_input", str), key_output=o.get("key_output", str),
                   value_output=o.get("value_output", str))
        for o in (_Obj(v, w, obj.origin) for w, v in cache.items("layers")))
    if not layers:
        raise BundleError(f"{obj.origin}: 'generation.kv_cache.layers' must not be empty")
    gen = TextGeneration(
        tokenizer_file=obj.get("tokenizer_file", str),
        vocab_size=obj.positive("vocab_size"),
        context_length=obj.positive("context_length"),
        eos_token_id=obj.get("eos_token_id", int),
        bos_token_id=obj.get("bos_token_id", int),
        head_dim=cache.positive("head_dim"),
        cache_dtype=cache.get("dtype", str, choices=("float32", "float16")),
        layers=layers,
        input_ids=obj.get("input_ids", str),
        logits_index=obj.get("logits_index", str),
        logits_output=obj.get("logits_output", str),
    )
    for key in ("eos_token_id", "bos_token_id"):
        if not 0 <= getattr(gen, key) < gen.vocab_size:
            raise BundleError(f"{obj.origin}: 'generation.{key}' must be within the vocabulary "
                              f"(0..{gen.vocab_size - 1}), got {getattr(gen, key)}")
    ins = {t.name: t for t in graph.inputs}
    outs = {t.name: t for t in graph.outputs}

    def expect(table, kind, role, name, want):
        spec = table.get(name)
        if spec is None:
            raise BundleError(f"{obj.origin}: 'generation.{role}' names '{name}', which is not a "
                              f"graph {kind}")
        if want is not None and (len(spec.shape) != len(want) or any(
                w is not None and d != w for d, w in zip(spec.shape, want))):
            shown = ["*" if w is None else w for w in want]
            raise BundleError(f"{obj.origin}: graph {kind} '{name}' has shape {list(spec.shape)}, "
                              f"generation declares {shown}")

    expect(ins, "input", "input_ids", gen.input_ids, (None, None))
    expect(ins, "input", "logits_index", gen.logits_index, (None,))
    expect(outs, "output", "logits_output", gen.logits_output, (None, None, gen.vocab_size))
    for i, layer in enumerate(layers):
        want = (None, layer.heads, None, gen.head_dim)
        for table, kind, role in ((ins, "input", "key_input"), (ins, "input", "value_input"),
                                  (outs, "output", "key_output"),
                                  (outs, "output", "value_output")):
            expect(table, kind, f"kv_cache.layers[{i}].{role}", getattr(layer, role), want)
    return gen


def parse_text_generation(generation: dict, graph: dict, origin: str = "generation") -> TextGeneration:
    """A manifest's `generation` and `graph` sections -> TextGeneration (validated), for tools
    that run a decoder graph before its bundle exists (export checks, probes)."""
    return _text_generation(_Obj(generation, "generation", origin), _graph(_Obj(graph, "graph", origin)))


# Per-task generation parsers.
_GENERATION_PARSERS: dict[str, Callable[[_Obj, GraphSpec], Any]] = {
    "image-generation": _image_generation,
    "text-generation": _text_generation,
}


def _files(obj: _Obj) -> dict[str, FileEntry]:
    files = obj.obj("files")
    out = {}
    for name in files.value:
        if "/" in name or "\\" in name or name in ("", ".", "..", MANIFEST):
            raise BundleError(f"{obj.origin}: 'files' may only list plain file names, got {name!r}")
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
    root = _Obj(data, "", origin)
    version = root.get("schema_version", int)
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{origin}: unsupported schema_version {version}; this edge_app reads "
            f"schema_version {SCHEMA_VERSION} only (rebuild the bundle with a matching optimizer)"
        )
    task = root.get("task", str, choices=TASKS)
    parser = _GENERATION_PARSERS[task]
    graph = _graph(root.obj("graph"))
    techniques = tuple(
        Technique(t.get("name", str), t.get("params", dict, default={}))
        for t in (_Obj(v, w, origin) for w, v in root.items("techniques"))
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
    if not name or any(c in name for c in "/\\ \t\n"):
        raise BundleError(f"{origin}: 'name' must be a non-empty word without slashes, got {name!r}")
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
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle {path}: file '{name}' listed in the manifest is missing")
        size = file.stat().st_size
        if size != entry.size:
            raise BundleError(f"bundle {path}: file '{name}' has size {size}, manifest says "
                              f"{entry.size}")
        actual = sha256_file(file)
        if actual != entry.sha256:
            raise BundleError(f"bundle {path}: checksum mismatch for '{name}': manifest sha256 "
                              f"{entry.sha256}, file sha256 {actual}")


def read_manifest(path: Path) -> Manifest:
    path = Path(path)
    origin = str(path / MANIFEST)
    if not path.is_dir():
        raise BundleError(f"bundle {path}: not a directory (expected <bundle>/{MANIFEST})")
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle {path}: no {MANIFEST}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{origin}: not valid JSON ({exc})") from None
    return parse_manifest(data, origin)


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read, validate and (by default) checksum a bundle directory."""
    path = Path(path)
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
