"""ONNX Runtime, where this server has it. Every image carries it but one built for a device
class whose bundles are all LiteRT graphs (fleet/images.py): such a server serves those, and
refuses an ONNX bundle or a text model (the KV-cache decoders are ONNX graphs) in one line."""

from __future__ import annotations

try:
    import onnxruntime as ort
except ImportError:
    ort = None


def version() -> str:
    """The ONNX Runtime release this process runs ("1.32.0"); "" where it has none."""
    return ort.__version__ if ort is not None else ""


def available_providers() -> list[str]:
    return ort.get_available_providers() if ort is not None else []


def missing(name: str, who: str = "this server",
            fix: str = "deploy the class with this bundle, whose image then carries it") -> str:
    """Why the bundle `name` (an ONNX graph) cannot run on `who`, in one line."""
    return (f"bundle {name} is an ONNX graph; {who} has no ONNX Runtime (an image built for "
            f"LiteRT bundles only): {fix}, or serve the model's LiteRT bundle")
