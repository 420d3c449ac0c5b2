"""Typed errors of the optimizer. The CLI turns each into one line and a non-zero exit."""

from __future__ import annotations


class OptimizerError(Exception):
    """Base class: a recipe, dataset or artifact the optimizer refuses."""


class RecipeError(OptimizerError):
    """The recipe YAML is malformed; the message names the key."""


class DatasetError(OptimizerError):
    """A dataset is missing or not in the expected layout; the message names the layout."""


class CheckpointError(OptimizerError):
    """A model checkpoint cannot be found or loaded; the message names every place tried."""


class ExportError(OptimizerError):
    """An export failed, or its graph does not reproduce the PyTorch model: no bundle is written.

    Validation runs every check of the family's export spec before it raises, so one error
    names every failure (`failures`: (check name, message) pairs), not only the first.
    """

    def __init__(self, message: str, failures: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.failures = tuple(failures)


class ShapeError(ExportError):
    """ONNX Runtime output shape differs from PyTorch's."""


class AtolError(ExportError):
    """ONNX Runtime output differs from PyTorch's by more than the spec's tolerance."""


class CacheError(ExportError):
    """A decoder's KV cache gives other results than running the whole sequence at once."""


class ParityError(ExportError):
    """Greedy tokens through the graph depart from PyTorch's."""


class CheckFailed(Exception):
    """Raised by one validation check; collected into an ExportError of the same kind."""

    def __init__(self, kind: type[ExportError], message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def export_error(graph: str, failures: list[tuple[str, CheckFailed]]) -> ExportError:
    """One error naming every failed check; its class is the checks' kind when they share one."""
    kinds = {f.kind for _, f in failures}
    cls = kinds.pop() if len(kinds) == 1 else ExportError
    message = f"{graph}: " + "; ".join(f"{name}: {f.message}" for name, f in failures)
    return cls(message, tuple((name, f.message) for name, f in failures))
