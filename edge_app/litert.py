"""LiteRT (the TFLite runtime) behind the interface the server already uses for ONNX Runtime
sessions: `run(output_names, feeds)`, `get_inputs()`, `get_outputs()`, `get_providers()`.

A `.tflite` bundle is one signature (`serving_default`) whose tensors carry the manifest's graph
names (the optimizer's `litert` pass writes them so). Its graphs are built for one item (the
converter cannot export a dynamic batch through a generator's reshape), so a batch is run item
by item here; the manifest still declares the `batch` axis the server feeds. A full-integer
graph takes and gives int8: values are quantized and dequantized at its edges with the graph's
own scale and zero point, so callers see float32 either way, as with ONNX Runtime's QDQ graphs.

The interpreter applies XNNPACK (LiteRT's CPU delegate, on Arm and x86) by default; the ops it
did not take run on LiteRT's reference CPU kernels (`placement` counts both). An interpreter is
not thread-safe: runs are serialized by a lock. Imports neither torch nor TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"
PROVIDER = "LiteRT-XNNPACK"
PACKAGE = "ai-edge-litert"
_TYPES = {np.float32: "tensor(float)", np.float16: "tensor(float16)", np.int64: "tensor(int64)",
          np.int32: "tensor(int32)"}


class LiteRTError(RuntimeError):
    """The graph cannot be opened or run in LiteRT; the message says why, in one line."""


def is_litert_graph(path: Path | str) -> bool:
    """A graph file LiteRT runs (.tflite), where ONNX Runtime runs the others."""
    return Path(path).suffix == ".tflite"


def litert_version() -> str:
    """The ai-edge-litert release this process can import ("2.3.0"); "" where it cannot."""
    try:
        importlib.import_module("ai_edge_litert")  # what the server would load
        return importlib.metadata.version(PACKAGE)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return ""


@dataclass(frozen=True)
class Arg:
    """A graph input or output as ONNX Runtime's NodeArg describes one."""

    name: str
    type: str
    shape: list


@dataclass(frozen=True)
class _Edge:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    scale: float  # 0: not quantized
    zero_point: int

    @classmethod
    def of(cls, name: str, details: dict) -> "_Edge":
        scale, zero = details.get("quantization") or (0.0, 0)
        return cls(name, np.dtype(details["dtype"]), tuple(int(d) for d in details["shape"]),
                   float(scale), int(zero))

    @property
    def quantized(self) -> bool:
        return self.scale > 0 and self.dtype.kind in "iu"

    def arg(self) -> Arg:
        shown = np.float32 if self.quantized else self.dtype.type
        return Arg(self.name, _TYPES.get(shown, f"tensor({self.dtype.name})"),
                   ["batch", *self.shape[1:]])

    def into(self, value: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.ascontiguousarray(value, self.dtype)
        limits = np.iinfo(self.dtype)
        q = np.rint(value / self.scale) + self.zero_point
        return np.clip(q, limits.min, limits.max).astype(self.dtype)

    def out_of(self, value: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return value
        return ((value.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


class LiteRTSession:
    """One `.tflite` graph in LiteRT's interpreter, run like an ONNX Runtime session."""

    def __init__(self, path: Path | str, threads: int = 0):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise LiteRTError(f"LiteRT is not installed here: `pip install {PACKAGE}` (or "
                              f"edgegen[litert]) to run .tflite bundles") from None
        try:
            self._interpreter = Interpreter(model_path=str(path),
                                            num_threads=threads or os.cpu_count() or 1)
            signatures = self._interpreter.get_signature_list()
            if SIGNATURE not in signatures:
                raise LiteRTError(f"the graph has no '{SIGNATURE}' signature (it has "
                                  f"{sorted(signatures)})")
            self._runner = self._interpreter.get_signature_runner(SIGNATURE)
            ins, outs = self._runner.get_input_details(), self._runner.get_output_details()
        except LiteRTError:
            raise
        except (ValueError, RuntimeError) as exc:  # the interpreter's own refusals
            raise LiteRTError(str(exc).strip().splitlines()[0][:300]) from None
        self._output_tensors = [int(d["index"]) for d in outs.values()]
        self._inputs = [_Edge.of(n, d) for n, d in ins.items()]
        self._outputs = {n: _Edge.of(n, d) for n, d in outs.items()}
        for edge in (*self._inputs, *self._outputs.values()):
            if not edge.shape or edge.shape[0] != 1:
                raise LiteRTError(f"tensor '{edge.name}' has shape {list(edge.shape)}; a LiteRT "
                                  f"bundle's graph runs one item (leading axis 1)")
        self._lock = threading.Lock()

    def get_inputs(self) -> list[Arg]:
        return [e.arg() for e in self._inputs]

    def get_outputs(self) -> list[Arg]:
        return [e.arg() for e in self._outputs.values()]

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def placement(self) -> dict[str, int]:
        """Ops per kernel provider in what runs: delegated partitions (XNNPACK; each counts as
        one op, as ONNX Runtime counts a fused TensorRT subgraph) and the ops left to LiteRT's
        own CPU kernels. The interpreter still lists the ops a delegate replaced, so what runs
        is walked back from the outputs, a delegate producing a tensor before any op it
        replaced. The delegate is applied when tensors are first allocated: ask after a run."""
        ops = self._interpreter._get_ops_details()
        producer: dict[int, dict] = {}
        for op in ops:
            for tensor in op["outputs"]:
                if int(tensor) not in producer or op["op_name"] == "DELEGATE":
                    producer[int(tensor)] = op
        counts: Counter = Counter()
        todo, seen = list(self._output_tensors), set()
        while todo:
            op = producer.get(todo.pop())
            if op is None or op["index"] in seen:
                continue
            seen.add(op["index"])
            counts["XNNPACK" if op["op_name"] == "DELEGATE" else "LiteRT CPU"] += 1
            todo += [int(t) for t in op["inputs"] if t >= 0]
        return dict(sorted(counts.items()))

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list:
        """The named outputs for a batch of feeds (every input, same leading size), item by
        item through the one-item graph."""
        names = list(output_names or self._outputs)
        unknown = [n for n in names if n not in self._outputs]
        if unknown or {e.name for e in self._inputs} != set(feeds):
            raise LiteRTError(f"feeds {sorted(feeds)} / outputs {names} do not match the graph's "
                              f"inputs {[e.name for e in self._inputs]} and outputs "
                              f"{list(self._outputs)}")
        count = len(next(iter(feeds.values())))
        rows: list[list[np.ndarray]] = []
        with self._lock:
            for i in range(count):
                result = self._runner(**{e.name: e.into(feeds[e.name][i:i + 1])
                                         for e in self._inputs})
                rows.append([self._outputs[n].out_of(result[n]) for n in names])
        if not rows:
            return [np.zeros((0, *self._outputs[n].shape[1:]), np.float32) for n in names]
        return [np.concatenate([row[j] for row in rows]) for j in range(len(names))]
