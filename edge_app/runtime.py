"""Model runtime: one ONNX Runtime session per bundle, loaded and warmed before serving."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .bundle import Bundle, BundleError, load_bundle
from .config import Config
from .latent import normal_latents
from .textgen import ServedModel, TextModel, session_options

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8", "tensor(bool)": "bool"}


def open_session(bundle: Bundle, threads: int = 0) -> ort.InferenceSession:
    """The bundle's graph in ONNX Runtime (CPU), its I/O checked against the manifest."""
    try:
        session = ort.InferenceSession(str(bundle.model_path), session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise BundleError(f"bundle {bundle.path}: ONNX Runtime cannot load "
                          f"'{bundle.manifest.model_file}': {exc}") from None
    declared = {t.name: t.dtype for t in bundle.manifest.graph.inputs + bundle.manifest.graph.outputs}
    actual = {a.name: _ORT_DTYPES.get(a.type, a.type)
              for a in session.get_inputs() + session.get_outputs()}
    if declared != actual:
        raise BundleError(f"bundle {bundle.path}: graph I/O in the manifest {declared} does not "
                          f"match the model file {actual}")
    return session


@dataclass
class ImageModel(ServedModel):
    """An unconditional image generator (DCGAN generator or VAE decoder): latent -> image."""

    bundle: Bundle
    session: ort.InferenceSession

    def generate(self, n: int, seed: int) -> np.ndarray:
        """(n, C, H, W) float images in the manifest's value_range, deterministic in seed."""
        gen = self.bundle.manifest.generation
        z = normal_latents(seed, n, gen.latent.dim)
        (images,) = self.session.run([gen.image_output], {gen.latent_input: z})
        return images


def load_model(bundle: Bundle, config: Config) -> "ImageModel | TextModel":
    """A warmed model for a bundle: the first run allocates and pre-packs weights."""
    session = open_session(bundle, config.intra_op_threads)
    if bundle.manifest.task == "text-generation":
        model = TextModel(bundle, session)
        model.generate([bundle.manifest.generation.eos_token_id], 2, stop_at_eos=False)
    else:
        model = ImageModel(bundle, session)
        model.generate(1, seed=0)
    return model


class ModelRegistry:
    """The loaded models by name, and whether the server is ready to generate."""

    def __init__(self):
        self.models: dict[str, ImageModel | TextModel] = {}
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self, config: Config) -> None:
        if not config.bundles:
            raise BundleError("no bundles configured: pass --bundle DIR (or set EDGEGEN_BUNDLES)")
        for path in config.bundles:
            started = time.perf_counter()
            bundle = load_bundle(path)
            name = bundle.manifest.name
            if name in self.models:
                raise BundleError(f"two bundles are named '{name}': {self.models[name].bundle.path} "
                                  f"and {bundle.path}")
            model = load_model(bundle, config)
            self.models[name] = model
            log.info("loaded %s from %s in %.2f s (%s)", name, path,
                     time.perf_counter() - started, model.runtime)
        self._ready.set()
