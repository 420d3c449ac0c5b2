"""Every registered optimizer pass, with an assertion on its effect."""

from __future__ import annotations


import onnx
import pytest
import torch

from optimizer.errors import RecipeError
from optimizer.families import Context, Subject
from optimizer.families.dcgan import FAMILY as DCGAN
from optimizer.families.image import export_generator, flops_per_sample
from optimizer.models.dcgan import (DCGANConfig, Generator, count_parameters,
                                    with_random_bn_statistics)
from optimizer.passes import get_pass, make_config

RADFORD = DCGANConfig(latent_dim=100, image_size=64, channels=3, ngf=64, ndf=64)


def run_pass(name: str, model, params: dict, ctx=None, graph=None):
    """One pass through its uniform signature: run(Subject, Config, Context) -> Subject."""
    ctx = ctx or _tiny_context()[1]
    return get_pass(name).run(Subject(model, graph), make_config(name, params), ctx)


def test_unknown_pass_and_parameters_are_refused():
    with pytest.raises(RecipeError, match=r"unknown pass 'prune_filters'; registered: \["):
        get_pass("prune_filters")
    with pytest.raises(RecipeError, match=r"unknown parameter\(s\) \['amount'\]"):
        make_config("prune_channels", {"amount": 0.5})
    with pytest.raises(RecipeError, match=r"ratio must be within \[0.1, 0.9\], got 0.95"):
        make_config("prune_channels", {"ratio": 0.95})
    # litert: image generators only, its precisions and graphs named
    with pytest.raises(RecipeError, match=r"precision must be one of \['fp32', 'fp16', 'int8'\]"):
        make_config("litert", {"precision": "int4"})
    with pytest.raises(RecipeError, match=r"graph must be one of"):
        make_config("litert", {"graph": "onnx"})
    from optimizer.families.gpt2 import FAMILY as GPT2
    from optimizer.passes import plan

    with pytest.raises(RecipeError, match="litert"):
        plan(({"pass": "litert"},), GPT2, "points[x]")


# ----------------------------------------------------------------- prune_channels


def test_prune_channels_ratio_is_per_layer_channels(tmp_path):
    gen = Generator(RADFORD).eval()
    pruned = run_pass("prune_channels", gen, {"ratio": 0.5}).model
    assert pruned.cfg.g_widths == (256, 128, 64, 32)  # every hidden layer halved
    half = Generator(DCGANConfig(latent_dim=100, image_size=64, channels=3, ngf=32))
    assert count_parameters(gen) == 3_576_704
    assert count_parameters(pruned) == count_parameters(half) == 1_100_224
    # FLOPs of a ConvT scale with C_in * C_out: inner layers by 1/4, the first and last by 1/2
    assert flops_per_sample(pruned, 100) == flops_per_sample(half, 100)
    assert flops_per_sample(pruned, 100) / flops_per_sample(gen, 100) == pytest.approx(0.259, abs=0.01)
    assert pruned(torch.zeros(2, 100)).shape == (2, 3, 64, 64)
    sizes = {}
    for name, model in (("base", gen), ("pruned", pruned)):
        export_generator(model, tmp_path / f"{name}.onnx")
        sizes[name] = (tmp_path / f"{name}.onnx").stat().st_size
    assert sizes["pruned"] < 0.32 * sizes["base"]


def test_prune_channels_params_target_removes_that_fraction():
    gen = Generator(RADFORD).eval()
    pruned = run_pass("prune_channels", gen, {"ratio": 0.5, "target": "params"}).model
    assert count_parameters(pruned) / count_parameters(gen) == pytest.approx(0.5, abs=0.01)


def test_prune_channels_removes_the_least_important_channels_exactly():
    # Channels whose BatchNorm scale and shift are zero output ReLU(0) = 0: removing exactly
    # those must leave the generator's output unchanged.
    gen = with_random_bn_statistics(Generator(DCGANConfig(latent_dim=8, image_size=32, channels=1,
                                                    ngf=8)))
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            dead = torch.arange(0, m.num_features, 2)
            m.weight.data[dead] = 0
            m.bias.data[dead] = 0
    prune = get_pass("prune_channels")
    scores = prune.importance(gen.main[0].weight, gen.main[1].weight)
    assert (scores[::2] == 0).all() and (scores[1::2] > 0).all()
    pruned = prune.prune(gen, make_config("prune_channels", {"ratio": 0.5}))
    z = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(pruned(z), gen(z), rtol=0, atol=1e-6)


def test_importance_is_l1_times_gamma():
    weight = torch.tensor([[[[1.0]], [[-2.0]]], [[[3.0]], [[0.5]]]])  # (C_in 2, C_out 2, 1, 1)
    gamma = torch.tensor([0.5, -2.0])
    assert get_pass("prune_channels").importance(weight, gamma).tolist() == [2.0, 5.0]


# ----------------------------------------------------------------- prune_magnitude


def test_prune_magnitude_reaches_sparsity_without_changing_shapes():
    mag = get_pass("prune_magnitude")
    gen = Generator(DCGANConfig(latent_dim=16, image_size=32, channels=1, ngf=8))
    shapes = [tuple(p.shape) for p in gen.parameters()]
    assert mag.sparsity(gen) == 0
    out = run_pass("prune_magnitude", gen, {"ratio": 0.6})
    assert out.info == {"sparsity": pytest.approx(0.6, abs=0.001), "scope": "conv layers"}
    assert out.model is gen and mag.sparsity(gen) == pytest.approx(0.6, abs=0.001)
    assert [tuple(p.shape) for p in gen.parameters()] == shapes  # dense: nothing removed
    assert not any(name.endswith("_orig") for name, _ in gen.named_parameters())  # permanent


# ----------------------------------------------------------------- subpixel


@pytest.mark.parametrize("cfg", [RADFORD, DCGANConfig(latent_dim=16, image_size=32, channels=1,
                                                      ngf=8, g_widths=(24, 13, 5))])
def test_subpixel_rewrite_is_exact_and_has_no_conv_transpose(cfg, tmp_path):
    gen = with_random_bn_statistics(Generator(cfg))
    rewritten = run_pass("subpixel", gen, {}).model
    z = torch.randn(8, cfg.latent_dim)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(z), gen(z), rtol=0, atol=1e-5)
    rewritten.cfg = cfg
    path = tmp_path / "sp.onnx"
    export_generator(rewritten, path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops


def test_subpixel_refuses_training_mode():
    with pytest.raises(ValueError, match="eval-mode"):
        get_pass("subpixel").rewrite(Generator(DCGANConfig(image_size=32)).train())


# ----------------------------------------------------------------- quantize


@pytest.fixture(scope="module")
def small_gen():
    return with_random_bn_statistics(Generator(DCGANConfig(latent_dim=32, image_size=32, channels=3,
                                                     ngf=16)))


def quantize(gen, params: dict, tmp_path):
    """The quantize graph pass on the generator's validated FP32 graph, as a recipe runs it."""
    fp32 = tmp_path / "fp32.onnx"
    export_generator(gen, fp32)
    return run_pass("quantize", gen, params, _tiny_context(workdir=tmp_path)[1], graph=fp32)


def test_quantize_int8_auto_measures_both_graphs_and_records_the_choice(small_gen, tmp_path):
    result = quantize(small_gen, {"timing_repeats": 5}, tmp_path)
    report = result.info
    assert result.precision == "int8" and report["mode"] == "static-int8"
    assert report["per_channel"] is True  # the image families' default
    assert report["graph"] in ("convtranspose", "subpixel")
    timing = report["timing_ms"]
    assert set(timing) == {"batch1", "batch16"}
    assert set(timing["batch1"]) == {"fp32", "convtranspose", "subpixel"}
    chosen = report["graph"]
    assert report["speedup_vs_fp32"][chosen] == max(report["speedup_vs_fp32"].values())
    assert len(report["calibration"]["sha256"]) == 64 and report["calibration"]["samples"] == 256
    if chosen == "subpixel":  # real integer kernels, nothing heavy left in float
        assert report["ort_ops"].get("QLinearConv", 0) == 3 and report["float_ops"] == []
    assert report["psnr_vs_fp32_db"] > 30
    assert report["file_size_bytes"]["quantized"] < report["file_size_bytes"]["fp32"]


def test_quantize_int8_convtranspose_graph_keeps_float_conv_transpose(small_gen, tmp_path):
    # The trap the auto mode avoids: ORT runs QDQ ConvTranspose in float.
    result = quantize(small_gen, {"graph": "convtranspose"}, tmp_path)
    assert result.info["chosen_by"] == "recipe" and result.info["graph"] == "convtranspose"
    assert "ConvTranspose" in result.info["float_ops"]


def test_quantize_fp16_halves_weights_and_keeps_float32_io(small_gen, tmp_path):
    result = quantize(small_gen, {"mode": "fp16"}, tmp_path)
    assert result.precision == "fp16"
    model = onnx.load(str(result.graph))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    sizes = result.info["file_size_bytes"]
    assert sizes["quantized"] < 0.55 * sizes["fp32"]
    assert result.info["psnr_vs_fp32_db"] > 50


# ----------------------------------------------------------------- finetune


def test_finetune_trains_the_pruned_model_in_place_of_its_shape():
    recipe, ctx = _tiny_context()
    gen = get_pass("prune_channels").prune(Generator(recipe.model_config).eval(),
                                           make_config("prune_channels", {"ratio": 0.5}))
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    tuned = run_pass("finetune", gen, {"epochs": 1}, ctx).model
    after = tuned.state_dict()
    assert {k: tuple(v.shape) for k, v in after.items()} == {k: tuple(v.shape)
                                                             for k, v in before.items()}
    assert not torch.equal(after["main.0.weight"], before["main.0.weight"])  # it trained
    assert not tuned.training


# ----------------------------------------------------------------- qat


def _tiny_context(images=None, workdir=None):
    from optimizer.evaluate import Extractor, RotationFeatures
    from optimizer.families.image import ImageData
    from optimizer.recipe import load_recipe

    from ..conftest import TINY_RECIPE

    recipe = load_recipe(TINY_RECIPE)
    images = torch.rand(128, 1, 32, 32) * 2 - 1 if images is None else images
    data = ImageData(images, images[:32], Extractor("rotation-cnn", RotationFeatures(1), {}), {})
    return recipe, Context(recipe, DCGAN, data, seed=0, progress=False, workdir=workdir)


def test_qat_trains_the_subpixel_form_and_snaps_weights_to_the_int8_grid(tmp_path):
    qat = get_pass("qat")
    weight = torch.randn(6, 3, 3, 3)
    snapped = qat.fake_quant_weight(weight)
    steps = snapped.flatten(1) / (weight.abs().flatten(1).amax(1, keepdim=True) / 127)
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)  # integer multiples

    recipe, ctx = _tiny_context()
    gen = with_random_bn_statistics(Generator(recipe.model_config))
    tuned = run_pass("qat", gen, {"epochs": 1}, ctx).model
    sub = get_pass("subpixel").SubPixelGenerator
    assert isinstance(tuned, sub) and not tuned.training
    for layer in [tuned.stem, *[m for m in tuned.body if isinstance(m, torch.nn.Conv2d)]]:
        w = layer.weight.detach()
        steps = w.flatten(1) / (w.abs().flatten(1).amax(1, keepdim=True) / 127)
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-3)
    baseline = get_pass("subpixel").rewrite(gen)
    assert not torch.equal(tuned.stem.weight, baseline.stem.weight)  # it trained

    result = quantize(tuned, {}, tmp_path)
    assert result.info["graph"] == "subpixel"
    assert result.info["chosen_by"] == "the only variant"
    assert result.info["ort_ops"].get("QLinearConv", 0) == 3
    assert result.info["psnr_vs_fp32_db"] > 30


def _on_int8_grid(weight: torch.Tensor, axis: int) -> None:
    w = weight.detach().movedim(axis, 0).flatten(1)
    steps = w / (w.abs().amax(1, keepdim=True) / 127)
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_qat_wraps_a_decoders_projections_and_head_and_snaps_them_per_output_channel(arch):
    from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from optimizer.families import get_family
    from optimizer.families.gpt2 import gpt2_config

    qat = get_pass("qat")
    torch.manual_seed(0)
    model = (GPT2LMHeadModel(gpt2_config(2, 32, 2, 64, 96, 0, 0.0)) if arch == "gpt2" else
             LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48,
                                          num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, max_position_embeddings=64,
                                          tie_word_embeddings=True)))
    ids = torch.randint(0, 96, (2, 12))
    layers, _ = get_family(arch).magnitude_layers(model)
    names = qat.wrap(model, layers + [model.get_output_embeddings()], ema=0.01)
    assert len(names) == (4 if arch == "gpt2" else 7) * 2 + 1
    model.train()
    model(input_ids=ids).logits.sum().backward()  # fake quant trains (straight through)
    wrapped = [m for m in model.modules() if isinstance(m, qat.QuantLayer)]
    assert all(bool(m.act.seen) and m.layer.weight.grad is not None for m in wrapped)
    qat.unwrap(model)
    assert not any(isinstance(m, qat.QuantLayer) for m in model.modules())
    for layer in layers:  # GPT-2's Conv1D is [in, out]: its output channels are axis 1
        _on_int8_grid(layer.weight, qat.output_axis(layer))
    assert qat.output_axis(layers[0]) == (1 if arch == "gpt2" else 0)
    _on_int8_grid(model.get_output_embeddings().weight, 0)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
