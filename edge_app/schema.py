"""JSON validation for manifests: a typed reader whose errors name the field, and the graph
I/O section every task shares. The bundle contract itself is in bundle.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")
RUNTIMES = ("onnxruntime", "litert")  # what runs a bundle's graph file


class BundleError(Exception):
    """A bundle that must not be served: malformed, unknown schema, or tampered files."""


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
    # the oldest ONNX Runtime that loads the graph (edge_app/compat.py); "" in bundles made
    # before the optimizer recorded it (then derived from the opset)
    min_onnxruntime: str = ""
    ir_version: int = 0  # the file's ONNX IR version; 0 where not recorded
    # what runs the graph file: "onnxruntime" (a .onnx graph) or "litert" (a .tflite graph,
    # edge_app/litert.py); a LiteRT graph has no ONNX opset (0) and names the oldest
    # ai-edge-litert that ran it instead
    runtime: str = "onnxruntime"
    min_litert: str = ""


# --------------------------------------------------------------------------- validation


_MISSING = object()


class Obj:
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

    def positive(self, key: str, high: int | None = None) -> int:
        """A positive integer, at most `high` (bounds what a hostile manifest can make the
        server allocate)."""
        value = self.get(key, int)
        if value <= 0:
            raise BundleError(f"{self.origin}: field '{self._path(key)}' must be > 0, got {value}")
        if high is not None and value > high:
            raise BundleError(f"{self.origin}: field '{self._path(key)}' must be at most {high}, "
                              f"got {value}")
        return value

    def obj(self, key: str, default=_MISSING) -> "Obj":
        value = self.get(key, dict, default=default)
        return Obj(value, self._path(key), self.origin)

    def items(self, key: str) -> list[tuple[str, Any]]:
        values = self.get(key, list)
        return [(f"{self._path(key)}[{i}]", v) for i, v in enumerate(values)]


def _as_tuple(types) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_name(t: type) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer",
            float: "a number", bool: "a boolean", type(None): "null"}.get(t, t.__name__)


def _kind(value: Any) -> str:
    return f"{_type_name(type(value))} ({json.dumps(value)[:40]})"


def tensor_spec(where: str, value: Any, origin: str) -> TensorSpec:
    obj = Obj(value, where, origin)
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


def graph_spec(obj: Obj) -> GraphSpec:
    inputs = tuple(tensor_spec(w, v, obj.origin) for w, v in obj.items("inputs"))
    outputs = tuple(tensor_spec(w, v, obj.origin) for w, v in obj.items("outputs"))
    if not inputs or not outputs:
        raise BundleError(f"{obj.origin}: 'graph' needs at least one input and one output")
    runtime = obj.get("runtime", str, default="onnxruntime", choices=RUNTIMES)
    versions = {key: obj.get(key, str, default="") for key in ("min_onnxruntime", "min_litert")}
    for key, version in versions.items():
        if version and not re.fullmatch(r"\d+\.\d+\.\d+", version):
            raise BundleError(f"{obj.origin}: 'graph.{key}' must be a version like 1.20.0, got "
                              f"{version!r}")
    if runtime == "litert":
        if not versions["min_litert"]:
            raise BundleError(f"{obj.origin}: a LiteRT graph needs 'graph.min_litert' (the "
                              f"ai-edge-litert release it was validated with)")
        return GraphSpec(inputs, outputs, 0, runtime=runtime, min_litert=versions["min_litert"])
    ir_version = obj.get("ir_version", int, default=0)
    if ir_version < 0:
        raise BundleError(f"{obj.origin}: 'graph.ir_version' must be >= 0, got {ir_version}")
    return GraphSpec(inputs, outputs, obj.positive("opset"), versions["min_onnxruntime"],
                     ir_version)
