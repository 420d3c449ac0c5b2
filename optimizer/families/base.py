"""The protocol every model family follows, and what a recipe run hands to families and passes.

One driver (optimizer/run.py) runs every recipe. It asks the recipe's family, and only the
family, for what differs between models:

    prepare    load the data once per recipe (images and their FID extractor; a text corpus and
               its tokenizer)
    baseline   build or load the model of one seed and train (or fine-tune) it
    export     the family's ExportSpec, *as data*: graph I/O names and symbolic axes, the opset
               and why, the tolerance, and which validation checks run (optimizer/export.py)
    evaluate   quality and cost of a graph that will ship, measured on that graph
    gate       which metrics may not get worse than the seed's baseline, and by how much
    manifest   the bundle's task-specific sections (graph, generation, metrics) and files

Passes (optimizer/passes/) transform a `Subject`: model passes the PyTorch model, graph passes
the exported ONNX graph. Where a pass needs family knowledge (which layers are prunable, how a
student is built, how fine-tuning trains) it calls a hook on `ctx.family`; a family that lacks
the hook does not list the pass.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RecipeError

# the graph file of a bundle, by the runtime that runs it (the manifest's model_file)
MODEL_FILES = {"onnxruntime": "model.onnx", "litert": "model.tflite"}


@dataclass(frozen=True)
class Subject:
    """What flows through a point's pass chain."""

    model: Any  # the family's PyTorch model (for graph passes: the model the graph came from)
    graph: Path | None = None  # the current graph file (.onnx, or .tflite), from the graph stage on
    precision: str = "fp32"  # of the graph: fp32 | fp16 | int8 | int4
    runtime: str = "onnxruntime"  # what runs the graph: onnxruntime (.onnx) or litert (.tflite)
    info: dict = field(default_factory=dict)  # what the last pass measured (manifest technique)


@dataclass
class Context:
    """Everything a pass or an evaluation needs beyond the subject itself: one seed of a run."""

    recipe: Any  # optimizer.recipe.Recipe
    family: "Family"
    data: Any  # what family.prepare() returned
    seed: int
    progress: bool = True
    workdir: Path | None = None  # scratch space of this seed (graphs, quantizer outputs)
    _counter: Any = field(default_factory=itertools.count, repr=False)

    def scratch(self, name: str) -> Path:
        """A fresh directory under the seed's workdir for one step's files."""
        if self.workdir is None:
            raise RuntimeError("this context has no workdir")
        path = self.workdir / f"{next(self._counter):03d}-{name}"
        path.mkdir(parents=True)
        return path


@dataclass
class Exported:
    """A model's validated FP32 graph, exported once per model and shared by every point that
    derives a graph from it (int8 of the baseline does not export the baseline again)."""

    path: Path
    validation: dict  # what the export checks measured
    memo: dict = field(default_factory=dict)  # the family's per-graph results (e.g. greedy tokens)


class Family:
    """Base class of the family modules: optimizer/families/<name>.py defines FAMILY."""

    name: str  # as recipes spell it: dcgan, beta-vae, gpt2, llama
    task: str  # the bundle's task: image-generation | text-generation
    config: type  # the dataclass of the recipe's `model:` section
    quantize_modes: tuple[str, ...] = ()  # what the quantize pass may do, the first the default
    quantize_per_channel: bool = False  # the quantize pass's per-channel default for the family

    # ---------------------------------------------------------------- once per recipe
    def prepare(self, recipe, runs_dir: Path):
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """Library versions beyond python/torch/onnx/onnxruntime that shape this family's results."""
        return {}

    # ---------------------------------------------------------------- per seed
    def baseline(self, ctx: Context) -> tuple[Any, dict]:
        """(the trained or loaded model, the `train` technique's parameters)."""
        raise NotImplementedError

    def train_name(self, recipe) -> str:
        """The baseline's technique: train (from scratch), or finetune (a checkpoint)."""
        return "train"

    def save_checkpoint(self, model, path: Path) -> None:
        raise NotImplementedError

    def deployable(self, model):
        """The module that becomes the graph (a VAE ships its decoder)."""
        return model

    def with_deployable(self, model, module):
        """`model` with its deployable part replaced by `module` (after pruning, say)."""
        return module

    def finetune(self, model, ctx: Context, epochs: int) -> tuple[Any, dict]:
        raise NotImplementedError

    # ---------------------------------------------------------------- graphs
    def export(self, model, path: Path, ctx: Context) -> Exported:
        """Export and validate (every check of the spec); raises ExportError: no bundle."""
        raise NotImplementedError

    def check_graph(self, subject: Subject, reference: Exported, ctx: Context) -> dict:
        """The spec's checks of a graph a graph pass derived from `reference` (quantized)."""
        return {}

    def graph_variants(self, subject: Subject, ctx: Context) -> dict[str, Path]:
        """Exact alternative FP32 graphs of the subject's model a quantizer may choose between
        by measurement (the image families' sub-pixel rewrite); by default just its graph."""
        return {"default": subject.graph}

    def timing_feeds(self, subject: Subject) -> dict[str, dict]:
        """Named input feeds that graph variants are timed on, when a quantizer chooses."""
        return {}

    def calibration(self, subject: Subject, cfg, ctx: Context):
        """(ORT CalibrationDataReader, a description with its hash) for static INT8."""
        raise RecipeError(f"static-int8 needs calibration data, which family {self.name!r} "
                          f"does not provide; use one of {list(self.quantize_modes)}")

    def static_int8_nodes(self, prepared, cfg) -> tuple[dict, dict]:
        """(quantize_static keyword arguments that choose the nodes to quantize, their
        description for the report) for the pre-processed graph; by default every node ORT
        quantizes."""
        return {}, {}

    def compare_graphs(self, reference: Path, other: Path, subject: Subject) -> dict:
        """How a derived graph's outputs compare with the FP32 graph's (into its report)."""
        return {}

    # ---------------------------------------------------------------- results
    def evaluate(self, subject: Subject, reference: Exported, ctx: Context) -> tuple[dict, dict]:
        """(metrics for the tables, the manifest sections and method of this graph)."""
        raise NotImplementedError

    def gate(self, gate, metrics: dict, baseline: dict) -> list[str]:
        raise NotImplementedError

    def manifest(self, subject: Subject, metrics: dict, sections: dict, ctx: Context) -> dict:
        """The manifest's family-specific keys: graph, generation, metrics."""
        raise NotImplementedError

    def files(self, subject: Subject, ctx: Context) -> dict[str, Path]:
        return {MODEL_FILES[subject.runtime]: subject.graph}

    def method(self, recipe, data) -> dict:
        """How the tables' figures were obtained (the method line of results.md)."""
        return {}
