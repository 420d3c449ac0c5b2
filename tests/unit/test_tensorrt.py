"""TensorRT done from the bundle's manifest: an explicit profile covering every shape the
server feeds (no engine rebuilt per token), engines cached per bundle sha256 and TensorRT
version, INT8 only for QDQ graphs, and how many nodes each execution provider ran.

No TensorRT here (no GPU): what reaches ONNX Runtime is checked on the providers argument of a
real InferenceSession (opened with the providers this CPU build has)."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import tempfile

import onnxruntime as ort
import pytest

from edge_app.app import create_app
from edge_app.bundle import Technique, load_bundle
from edge_app.config import load_config
from edge_app.errors import Loading
from edge_app.runtime import CPU, ModelRegistry, load_model, load_stage, provider_options
from edge_app.tensorrt import TRT, engine_dir, is_qdq, trt_profile, trt_version_string
from fleet.playbook import Display

TRT_CHAIN = [TRT, "CUDAExecutionProvider", CPU]


def _config(bundle, **overrides):
    return load_config({"bundles": [str(bundle)], "power_sensor": "none", **overrides},
                       environ={})


def test_text_profile_covers_prefill_and_every_decode_step(gpt2_bundle):
    bundle = load_bundle(gpt2_bundle)
    gen = bundle.manifest.generation
    ctx, heads, dim = gen.context_length, gen.layers[0].heads, gen.head_dim
    profile = trt_profile(bundle, _config(gpt2_bundle))
    shapes = {k: dict(s.split(":") for s in v.split(",")) for k, v in profile.items()}
    assert set(shapes) == {"trt_profile_min_shapes", "trt_profile_opt_shapes",
                           "trt_profile_max_shapes"}
    names = {spec.name for spec in bundle.manifest.graph.inputs}
    assert all(set(s) == names for s in shapes.values())
    key = gen.layers[0].key_input
    # the prefill's empty past up to a past of context - 1 with one new token
    assert shapes["trt_profile_min_shapes"][key] == f"1x{heads}x0x{dim}"
    assert shapes["trt_profile_opt_shapes"][key] == f"1x{heads}x{ctx // 2}x{dim}"
    assert shapes["trt_profile_max_shapes"][key] == f"1x{heads}x{ctx - 1}x{dim}"
    assert shapes["trt_profile_min_shapes"][gen.input_ids] == "1x1"
    assert shapes["trt_profile_opt_shapes"][gen.input_ids] == "1x1"
    assert shapes["trt_profile_max_shapes"][gen.input_ids] == f"1x{ctx}"


def test_image_profile_goes_up_to_the_server_cap(dcgan_bundle):
    bundle = load_bundle(dcgan_bundle)
    dim = bundle.manifest.generation.latent.dim
    profile = trt_profile(bundle, _config(dcgan_bundle, max_images_per_request=6))
    assert profile == {"trt_profile_min_shapes": f"z:1x{dim}",
                       "trt_profile_opt_shapes": f"z:1x{dim}",
                       "trt_profile_max_shapes": f"z:6x{dim}"}


def test_an_axis_without_a_range_leaves_the_profile_to_tensorrt(dcgan_bundle, caplog):
    bundle = load_bundle(dcgan_bundle)
    graph = bundle.manifest.graph
    odd = dataclasses.replace(graph.inputs[0], shape=("frames", graph.inputs[0].shape[1]))
    bundle = dataclasses.replace(bundle, manifest=dataclasses.replace(
        bundle.manifest, graph=dataclasses.replace(graph, inputs=(odd,))))
    with caplog.at_level(logging.WARNING, logger="edge_app.tensorrt"):
        assert trt_profile(bundle, _config(dcgan_bundle)) == {}
    assert "axis 'frames', which has no TensorRT profile range" in caplog.text


def test_engines_are_cached_per_bundle_and_tensorrt_version(dcgan_bundle, tmp_path):
    bundle = load_bundle(dcgan_bundle)
    config = _config(dcgan_bundle, trt_cache_dir=str(tmp_path / "trt"))
    sha = bundle.manifest.files[bundle.manifest.model_file].sha256
    where = engine_dir(bundle, config)
    assert where.parent.parent == tmp_path / "trt"
    assert where.name == f"{bundle.manifest.name}-{sha[:16]}"
    assert where.parent.name.startswith("trt-")  # trt-unknown here: no libnvinfer


def test_int8_kernels_only_for_qdq_graphs(dcgan_bundle, gpt2_run):
    fp32 = load_bundle(dcgan_bundle)
    static = dataclasses.replace(fp32, manifest=dataclasses.replace(
        fp32.manifest, precision="int8",
        techniques=(Technique("quantize", {"mode": "static-int8"}),)))
    dynamic = next(load_bundle(b.path) for b in gpt2_run[0].bundles
                   if b.path.name.endswith("int8"))
    assert dynamic.manifest.precision == "int8"  # MatMulInteger: no TensorRT INT8
    assert [is_qdq(b) for b in (fp32, static, dynamic)] == [False, True, False]


def test_provider_options_reach_onnx_runtime(dcgan_bundle, tmp_path, monkeypatch):
    config = _config(dcgan_bundle, execution_providers=TRT_CHAIN,
                     trt_cache_dir=str(tmp_path / "trt"), trt_fp16=False)
    bundle = load_bundle(dcgan_bundle)
    passed, here = [], ort.get_available_providers()

    class Recording(ort.InferenceSession):
        """Keeps what the server asks for, and opens the session with what this build has
        (ONNX Runtime refuses a provider it was built without)."""

        def __init__(self, path, options, providers):
            passed.append(providers)
            super().__init__(path, options, providers=[p for p in providers if p[0] in here])

    # As on a Jetson image: ONNX Runtime reports TensorRT and CUDA as available.
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU])
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    model = load_model(bundle, config)
    # the placement probe and the serving session: the same providers, the same options
    probe, providers = passed
    assert probe == providers and [name for name, _ in providers] == TRT_CHAIN
    options = dict(providers)[TRT]
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == str(engine_dir(bundle, config))
    assert options["trt_fp16_enable"] is False and options["trt_int8_enable"] is False
    assert options["trt_profile_max_shapes"] == trt_profile(bundle, config)[
        "trt_profile_max_shapes"]
    assert engine_dir(bundle, config).is_dir()
    assert model.session.get_providers() == [CPU] and list(model.placement) == [CPU]
    assert provider_options([CPU], bundle, config) == [(CPU, {})]


def test_placement_counts_the_nodes_each_provider_ran(gpt2_bundle, caplog):
    before = set(os.listdir(tempfile.gettempdir()))
    config = _config(gpt2_bundle)
    with caplog.at_level(logging.INFO, logger="edge_app.runtime"):
        model = load_model(load_bundle(gpt2_bundle), config)
    assert list(model.placement) == [CPU] and model.placement[CPU] > 10
    assert f"nodes run per execution provider at warm-up: {CPU} {model.placement[CPU]}" \
        in caplog.text
    # Counted on a profiled session of its own: the one that serves was never profiled (a
    # profiled session keeps serving with more memory), and the profile file is gone.
    assert model.session.get_session_options().enable_profiling is False
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before
                if n.startswith("edgegen-placement")}
    model.generate(model.encode("The"), 3)
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before
                if n.startswith("edgegen-placement")}
    listed = create_app(config).test_client().get("/v1/models").get_json()["data"][0]
    assert listed["placement"] == {CPU: model.placement[CPU]}


def test_ready_says_when_tensorrt_engines_are_being_built(dcgan_bundle, tmp_path, monkeypatch):
    config = _config(dcgan_bundle, execution_providers=TRT_CHAIN,
                     trt_cache_dir=str(tmp_path / "trt"))
    bundle = load_bundle(dcgan_bundle)
    name = bundle.manifest.name
    assert load_stage(bundle, config) == f"loading {name}"  # no TensorRT in this build
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CPU])
    assert load_stage(bundle, config).startswith(f"building TensorRT engines for {name} ")
    engines = engine_dir(bundle, config)
    engines.mkdir(parents=True)
    (engines / "TensorrtExecutionProvider_TRTKernel_graph_0_0_sm87.engine").write_bytes(b"e")
    assert load_stage(bundle, config) == f"loading {name} (cached TensorRT engines)"

    registry = ModelRegistry(expected=1)
    registry.stage = load_stage(bundle, config)
    error = Loading(*registry.progress, stage=registry.stage)
    assert str(error.message) == f"Loading models: 0 of 1 loaded; loading {name} (cached " \
                                 f"TensorRT engines)"
    # The deploy shows that message while it polls /ready.
    out = io.StringIO()
    Display(out)({"event": "runner_retry", "event_data": {
        "host": "orin-1", "task": "Wait until its models are loaded (/ready)",
        "res": {"attempts": 3, "retries": 240, "status": 503,
                "json": {"error": {"message": "Loading models: 0 of 1 loaded; building "
                                              "TensorRT engines for gpt2 (...)"}}}}})
    assert out.getvalue().rstrip().endswith(
        "(3/240): Loading models: 0 of 1 loaded; building TensorRT engines for gpt2 (...)")


def test_image_profile_without_a_config_uses_the_default_cap(dcgan_bundle):
    bundle = load_bundle(dcgan_bundle)
    assert trt_profile(bundle, None)["trt_profile_max_shapes"].startswith("z:16x")


@pytest.mark.parametrize("code, version", [(100300, "10.3.0"), (8201, "8.2.1"), (8602, "8.6.2")])
def test_tensorrt_version_from_libnvinfer_code(code, version):
    assert trt_version_string(code) == version
