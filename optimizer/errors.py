"""Typed errors of the optimizer. The CLI turns each into one line and a non-zero exit."""


class OptimizerError(Exception):
    """Base class: a recipe, dataset or artifact the optimizer refuses."""


class RecipeError(OptimizerError):
    """The recipe YAML is malformed; the message names the key."""


class DatasetError(OptimizerError):
    """A dataset is missing or not in the expected layout; the message names the layout."""


class ExportError(OptimizerError):
    """An export failed or drifted from the PyTorch model: no bundle is written."""


class ShapeError(ExportError):
    """ONNX Runtime output shape differs from PyTorch's."""


class AtolError(ExportError):
    """ONNX Runtime output differs from PyTorch's by more than the spec's tolerance."""
