"""Model runtime: one ONNX Runtime session per bundle, loaded and warmed before serving."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle, BundleError, load_bundle
from .compat import bundle_needs, litert_refusal, refusal
from .config import Config, ConfigError
from .latent import normal_latents
from .litert import LiteRTError, LiteRTSession, litert_version
from .onnxrt import missing, ort
from .tensorrt import TRT, engine_dir, is_qdq, tensorrt_version, trt_profile
from .textgen import ServedModel, TextModel, session_options

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8", "tensor(bool)": "bool"}


CPU = "CPUExecutionProvider"
# The order `auto` tries accelerators in; CPU always ends the chain.
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "XnnpackExecutionProvider")


class ProviderError(ConfigError):
    """The configured execution providers cannot be used; the message says which and why."""


def provider_chain(requested: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(providers to try in order, notes on those skipped): the requested chain (or `auto`)
    filtered to what this ONNX Runtime build has, always ending with CPU. A server without ONNX
    Runtime (LiteRT bundles only) has no chain; naming providers there is refused."""
    if ort is None:
        if requested:
            raise ProviderError(f"execution providers {list(requested)} are configured, but this "
                                f"server has no ONNX Runtime (its image serves LiteRT bundles "
                                f"only): remove execution_providers")
        return [], []
    known, available = ort.get_all_providers(), ort.get_available_providers()
    unknown = [p for p in requested if p not in known]
    if unknown:
        raise ProviderError(f"unknown execution provider(s) {unknown}; ONNX Runtime knows "
                            f"{known}")
    wanted = list(requested) if requested else [p for p in AUTO_ORDER if p in available]
    chain = [p for p in wanted if p in available]
    skipped = [f"{p} is not in this ONNX Runtime build ({ort.__version__}, has {available})"
               for p in wanted if p not in available]
    if CPU not in chain:
        chain.append(CPU)
    return chain, skipped


def provider_options(chain: list[str], bundle: Bundle, config: Config | None) -> list:
    """ORT's (name, options) pairs. TensorRT: the bundle's own engine cache, its explicit
    profile, FP16 kernels unless the config turns them off, INT8 only for QDQ graphs."""
    out = []
    for name in chain:
        if name == TRT:
            cache = engine_dir(bundle, config)
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"trt_cache_dir {cache}: cannot create it ({exc.strerror}); "
                                  f"set trt_cache_dir to a writable directory") from None
            out.append((name, {
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache.parent),
                "trt_fp16_enable": bool(config is None or config.trt_fp16),
                "trt_int8_enable": is_qdq(bundle),
                **trt_profile(bundle, config)}))
        else:
            out.append((name, {}))
    return out


def load_stage(bundle: Bundle, config: Config) -> str:
    """What loading this bundle is doing, for /ready while it lasts (and the deploy's progress
    line): TensorRT's first engine build for a bundle takes minutes on a Jetson."""
    name = bundle.manifest.name
    if bundle.manifest.graph.runtime != "onnxruntime" or \
            TRT not in provider_chain(config.execution_providers)[0]:
        return f"loading {name}"
    engines = engine_dir(bundle, config)
    if engines.is_dir() and any(engines.glob("*.engine")):
        return f"loading {name} (cached TensorRT engines)"
    return (f"building TensorRT engines for {name} (TensorRT {tensorrt_version() or '?'}; the "
            f"first start of a bundle takes minutes, later ones reuse {engines})")


def open_session(bundle: Bundle, threads: int = 0, config: Config | None = None,
                 placement: bool = False) -> ort.InferenceSession:
    """The bundle's graph in ONNX Runtime on the configured provider chain, its I/O checked
    against the manifest. Each fallback (a provider missing from the build, or one that failed
    to initialise, e.g. CUDA without a GPU) is logged. `placement`: profile the runs until
    `placement_of(session)` (the warm-up), to count the nodes each provider ran.
    A LiteRT bundle (graph.runtime "litert") opens in LiteRT's interpreter instead."""
    graph = bundle.manifest.graph
    if graph.runtime == "litert":
        return open_litert(bundle, threads)
    if ort is None:
        raise BundleError(f"bundle {bundle.path}: {missing(bundle.manifest.name)}")
    why = refusal(bundle.manifest.name, graph.opset, bundle_needs(bundle.manifest), "onnxruntime",
                  ort.__version__, graph.ir_version, who="this server")
    if why:  # said before ONNX Runtime's own "Unsupported model IR version" or opset error
        raise BundleError(f"bundle {bundle.path}: {why}")
    chain, skipped = provider_chain(config.execution_providers if config else ())
    for note in skipped:
        log.warning("%s: %s; falling back", bundle.manifest.name, note)
    options = session_options(threads)
    if placement:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.gettempdir(),
                                                   f"edgegen-placement-{os.getpid()}")
    try:
        session = ort.InferenceSession(str(bundle.model_path), options,
                                       providers=provider_options(chain, bundle, config))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise BundleError(f"bundle {bundle.path}: ONNX Runtime cannot load "
                          f"'{bundle.manifest.model_file}': {exc}") from None
    active = session.get_providers()
    failed = [p for p in chain if p not in active]
    if failed:
        log.warning("%s: %s could not initialise; running on %s", bundle.manifest.name,
                    failed, active)
    log.info("%s: execution providers %s (requested %s)", bundle.manifest.name, active,
             list(config.execution_providers) if config and config.execution_providers
             else "auto")
    check_graph_io(bundle, session.get_inputs() + session.get_outputs())
    return session


def open_litert(bundle: Bundle, threads: int = 0) -> LiteRTSession:
    """A LiteRT bundle's graph in LiteRT's interpreter (edge_app/litert.py), its I/O checked
    against the manifest, refused in one line when this server's LiteRT is missing or older
    than the release the optimizer validated the graph with."""
    name, needs = bundle.manifest.name, bundle.manifest.graph.min_litert
    why = litert_refusal(name, needs, litert_version(), who="this server")
    if why:
        raise BundleError(f"bundle {bundle.path}: {why}")
    try:
        session = LiteRTSession(bundle.model_path, threads)
    except LiteRTError as exc:
        raise BundleError(f"bundle {bundle.path}: LiteRT cannot load "
                          f"'{bundle.manifest.model_file}': {exc}") from None
    check_graph_io(bundle, session.get_inputs() + session.get_outputs())
    return session


def placement_of(session: ort.InferenceSession) -> dict[str, int]:
    """Nodes run per execution provider since the session started profiling (open_session's
    `placement`), read from ONNX Runtime's own profile; profiling stops here and its file is
    removed. A provider that compiles subgraphs (TensorRT) counts each fused subgraph as one
    node; nodes the runs did not reach are not counted."""
    path = Path(session.end_profiling())
    try:
        events = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read ONNX Runtime's profile %s: %s", path, exc)
        return {}
    finally:
        path.unlink(missing_ok=True)
    nodes = {(e["args"]["provider"], e["args"].get("node_index", e.get("name")))
             for e in events if e.get("cat") == "Node" and "provider" in e.get("args", {})}
    return dict(sorted(Counter(provider for provider, _ in nodes).items()))


def check_graph_io(bundle: Bundle, graph_args) -> None:
    """The manifest's graph I/O must be the model file's: the same names and dtypes, and
    shapes that agree axis by axis (a fixed size equal to the graph's, or the graph's axis
    dynamic; an axis the manifest calls dynamic must be dynamic in the graph). Checked before
    any run, so a manifest cannot make the server allocate for shapes the graph refuses."""
    graph = bundle.manifest.graph
    declared = {t.name: t.dtype for t in graph.inputs + graph.outputs}
    actual = {a.name: _ORT_DTYPES.get(a.type, a.type) for a in graph_args}
    if declared != actual:
        raise BundleError(f"bundle {bundle.path}: graph I/O in the manifest {declared} does not "
                          f"match the model file {actual}")
    shapes = {a.name: list(a.shape) for a in graph_args}
    for spec in graph.inputs + graph.outputs:
        real = shapes[spec.name]
        agree = len(real) == len(spec.shape) and all(
            not isinstance(g, int) or (isinstance(d, int) and d == g)
            for d, g in zip(spec.shape, real))
        if not agree:
            shown = ["?" if not isinstance(g, (int, str)) else g for g in real]
            raise BundleError(f"bundle {bundle.path}: tensor '{spec.name}' has shape {shown} in "
                              f"the model file, the manifest declares {list(spec.shape)}")


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


def load_model(bundle: Bundle, config: Config, placement: bool = True) -> "ImageModel | TextModel":
    """A warmed model for a bundle: the first run allocates and pre-packs weights (and, with
    TensorRT, builds or loads the engines). `placement`: also count the nodes each provider
    runs (the server logs it and lists it in /v1/models; a benchmark does not need it)."""
    counts = None
    if placement and bundle.manifest.graph.runtime == "litert":
        model = _warmed(bundle, open_litert(bundle, config.intra_op_threads))
        model.placement = model.session.placement()  # what the delegate took: no profiling
        log.info("%s: LiteRT %s, ops per provider at warm-up: %s", bundle.manifest.name,
                 litert_version(), model.placement)
        return model
    if placement:
        # Counted on a session of its own, warmed the same way and dropped: a session made with
        # ONNX Runtime's profiler on keeps serving differently even once profiling has stopped
        # (measured: its RSS grew 7 % from one round of 64 clients to the next, over the load
        # test's 5 % limit, in three runs). With TensorRT this first session builds the engines;
        # the serving one loads them from the cache.
        probe = _warmed(bundle, open_session(bundle, config.intra_op_threads, config,
                                             placement=True))
        counts = placement_of(probe.session)
        del probe
        log.info("%s: nodes run per execution provider at warm-up: %s", bundle.manifest.name,
                 ", ".join(f"{p} {n}" for p, n in counts.items()) or "none recorded")
    model = _warmed(bundle, open_session(bundle, config.intra_op_threads, config))
    model.requested_providers = ",".join(config.execution_providers) or "auto"
    model.placement = counts
    return model


def _warmed(bundle: Bundle, session: ort.InferenceSession) -> "ImageModel | TextModel":
    try:
        if bundle.manifest.task == "text-generation":
            model = TextModel(bundle, session)
            model.generate([bundle.manifest.generation.eos_token_id], 2, stop_at_eos=False)
        else:
            model = ImageModel(bundle, session)
            model.generate(1, seed=0)
    except BundleError:
        raise
    except Exception as exc:  # ORT's Fail/InvalidArgument/RuntimeException, MemoryError, ...
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"bundle {bundle.path}: the warm-up run failed: {first}") from None
    return model


@dataclass(frozen=True)
class Swap:
    """What a (re)load did: models now served, those loaded anew, those kept as they were."""

    models: list[str]
    loaded: list[str]
    reused: list[str]
    seconds: float


class ModelRegistry:
    """The loaded models by name, and whether the server is ready to generate.

    A reload builds the complete new set (each bundle checked and warmed) before one reference
    swap; if anything fails, the old set keeps serving. Requests hold the model they picked, so
    those in flight finish on the old one. A bundle whose path and manifest are unchanged is
    kept rather than loaded twice (no second copy in memory, no re-warm).

    The first load may run in a background thread while the server already answers (see
    edge_app/serve.py): `progress` says how far it is, and a reload is refused until it is done
    (it would race it to the swap, and there is nothing yet to fall back on).
    """

    def __init__(self, expected: int = 0):
        self.models: dict[str, ImageModel | TextModel] = {}
        # (bundles done, of how many) in the running or last load; before the first, expected
        self.progress = (0, expected)
        self.stage = ""  # what the running load is doing (load_stage), for /ready
        self._ready = threading.Event()
        self._reloading = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self, config: Config, bundles: tuple[str, ...] | None = None, *,
             first: bool = False) -> Swap:
        """Load `bundles` (default: the config's) and swap them in. Raises BundleError (the old
        models stay) or RuntimeError when another load is running, or, for a reload (not
        `first`), while the first load has not finished."""
        if not first and not self.ready:
            done, total = self.progress
            raise RuntimeError(f"the models are still loading ({done} of {total} loaded): "
                               f"reload once /ready answers 200" if total else
                               "the models are still loading: reload once /ready answers 200")
        if not self._reloading.acquire(blocking=False):
            raise RuntimeError("a reload is already in progress")
        try:
            return self._load(config, config.bundles if bundles is None else tuple(bundles))
        finally:
            self._reloading.release()

    def _load(self, config: Config, paths: tuple[str, ...]) -> Swap:
        started = time.perf_counter()
        if not paths:
            raise BundleError("no bundles configured: pass --bundle DIR (or set EDGEGEN_BUNDLES)")
        current = list(self.models.values())
        new: dict[str, ImageModel | TextModel] = {}
        loaded, reused = [], []
        self.progress = (0, len(paths))
        for path in paths:
            t0 = time.perf_counter()
            bundle = load_bundle(path)  # schema and every file's sha256
            name = bundle.manifest.name
            if name in new:
                raise BundleError(f"two bundles are named '{name}': {new[name].bundle.path} "
                                  f"and {bundle.path}")
            same = next((m for m in current if m.bundle.path.resolve() == bundle.path.resolve()
                         and m.bundle.manifest == bundle.manifest), None)
            if same is not None:
                new[name] = same
                reused.append(name)
            else:
                self.stage = load_stage(bundle, config)
                new[name] = load_model(bundle, config)
                loaded.append(name)
                log.info("loaded %s from %s in %.2f s (%s)", name, path,
                         time.perf_counter() - t0, new[name].runtime)
            self.progress = (len(new), len(paths))
        self.stage = ""
        self.models = new  # one reference swap: a request sees the old set or the new one
        self._ready.set()
        return Swap(sorted(new), loaded, reused, round(time.perf_counter() - started, 3))
