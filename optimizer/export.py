"""ONNX export described as data, and validation that reports every failed check.

A family states its export once, as an ExportSpec (as optimum's model configs do): the graph's
inputs and outputs in forward-argument order with their symbolic axes, the opset and the reason
for it, the tolerance, and the names of the validation checks that run on the exported graph
(and on graphs a graph pass derives from it, such as a quantized one). `export_module` turns a
spec into one torch.onnx.export call; `run_checks` runs every named check, collects the
failures, and raises one ExportError naming them all: a graph that fails gets no bundle.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import onnx
import torch

from .errors import CheckFailed, ExportError, export_error

log = logging.getLogger(__name__)
EXPORTER = "torch.onnx.export(dynamo=True)"


@dataclass(frozen=True)
class IO:
    """One graph input or output. Per-layer tensors (a decoder's KV cache) name the layer `{i}`;
    per-layer inputs are passed together as one forward argument of (key, value) pairs."""

    name: str
    axes: tuple[tuple[int, str], ...]  # (axis, symbolic name) of every dynamic axis
    per_layer: bool = False

    def names(self, layers: int) -> list[str]:
        return [self.name.format(i=i) for i in range(layers)] if self.per_layer else [self.name]


@dataclass(frozen=True)
class ExportSpec:
    inputs: tuple[IO, ...]
    outputs: tuple[IO, ...]
    opset: int
    opset_reason: str
    atol: float  # max |ORT - PyTorch| the graph may differ by
    checks: tuple[str, ...]  # validation of the exported graph; every one runs
    graph_checks: tuple[str, ...] = ()  # validation of graphs graph passes derive from it
    dims: tuple[tuple[str, int, int], ...] = ()  # (axis, min, max) bounds for the exporter
    per_layer_argument: str = "past"  # the forward argument holding the per-layer inputs

    def input_names(self, layers: int = 0) -> list[str]:
        return _interleave(self.inputs, layers)

    def output_names(self, layers: int = 0) -> list[str]:
        return _interleave(self.outputs, layers)

    def dynamic_shapes(self, layers: int = 0) -> dict[str, Any]:
        """torch.export's dynamic_shapes for the forward arguments (one Dim per axis name)."""
        bounds = {name: (lo, hi) for name, lo, hi in self.dims}
        dims: dict[str, Any] = {}

        def dim(name: str):
            if name not in dims:
                lo, hi = bounds.get(name, (None, None))
                kwargs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
                dims[name] = torch.export.Dim(name.replace(" ", "_"), **kwargs)
            return dims[name]

        out: dict[str, Any] = {}
        per_layer = [io for io in self.inputs if io.per_layer]
        for io in self.inputs:
            if not io.per_layer:
                out[io.name] = {axis: dim(name) for axis, name in io.axes}
        if per_layer:
            out[self.per_layer_argument] = tuple(
                tuple({axis: dim(name) for axis, name in io.axes} for io in per_layer)
                for _ in range(layers))
        return out

    def describe(self) -> dict:
        """The spec as the manifest's `export` technique records it."""
        return {"format": "onnx", "opset": self.opset, "opset_reason": self.opset_reason,
                "exporter": EXPORTER, "checks": list(self.checks)}


def _interleave(ios: tuple[IO, ...], layers: int) -> list[str]:
    """Names in graph order: plain tensors, then per layer each per-layer tensor in turn."""
    plain = [io.name for io in ios if not io.per_layer]
    per_layer = [io for io in ios if io.per_layer]
    return plain + [io.name.format(i=i) for i in range(layers) for io in per_layer]


def export_module(module: torch.nn.Module, spec: ExportSpec, args: tuple, path: Path,
                  layers: int = 0, opset: int | None = None, external: bool = False) -> Path:
    """One torch.onnx.export call as the spec says; ExportError (one line) if the exporter fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation chatter, not our concern
            torch.onnx.export(module.eval(), args, str(path), dynamo=True,
                              dynamic_shapes=spec.dynamic_shapes(layers),
                              input_names=spec.input_names(layers),
                              output_names=spec.output_names(layers),
                              opset_version=opset or spec.opset, external_data=external,
                              verbose=False)
    except Exception as exc:  # the exporter raises many types; its first line is what matters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed for {type(module).__name__}: {first}") \
            from None
    strip_debug_metadata(path)
    return path


def strip_debug_metadata(path: Path) -> None:
    """Drop what the exporter records per node for debugging (the Python stack trace, FX node
    and module path): a third of a small decoder's file, and it made the graph's bytes depend
    on our source lines. The computation is untouched. And stamp the file with the oldest IR
    version its opsets allow (torch writes IR 10 whatever the opset, which ONNX Runtime before
    1.18 refuses to load): an opset-18 graph then runs on 1.14 too."""
    model = onnx.load(str(path), load_external_data=False)
    for graph in _graphs(model.graph):
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    _lowest_ir_version(model)
    onnx.save(model, str(path))  # external weights (model.onnx.data) stay referenced as they are


def _lowest_ir_version(model: onnx.ModelProto) -> None:
    """Lower model.ir_version to what its opset imports need (onnx.helper's version table), kept
    only if the checker accepts the model at that version (a feature of a newer IR stays)."""
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    try:
        lowest = onnx.helper.find_min_ir_version_for(default)
    except ValueError:
        return
    if lowest >= model.ir_version:
        return
    original, model.ir_version = model.ir_version, lowest
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError:
        model.ir_version = original


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def run_checks(names: tuple[str, ...], checks: dict[str, Callable[[Any], dict]], probe: Any,
               graph: str) -> dict:
    """Run every named check on `probe`; return what they measured, or raise one ExportError
    naming each failure (its class the failures' kind when they share one)."""
    measured: dict = {}
    failures: list[tuple[str, CheckFailed]] = []
    for name in names:
        try:
            measured.update(checks[name](probe))
        except CheckFailed as failed:
            failures.append((name, failed))
    if failures:
        raise export_error(graph, failures)
    log.info("%s validated: %s", graph, ", ".join(names))
    return measured
