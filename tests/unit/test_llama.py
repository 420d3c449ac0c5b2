"""The Llama family (and what the decoder passes do on it): grouped-query KV-cache export that
reproduces PyTorch, head pruning by key/value groups, MLP channel pruning, distillation into a
student initialised from teacher layers, weight-only 4-bit, and bundles the edge runtime runs."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edge_app.bundle import load_bundle
from edge_app.generation import parse_text_generation
from edge_app.textgen import Decoder, TextModel
from optimizer.errors import RecipeError
from optimizer.families import Context, Subject
from optimizer.families.gpt2 import FAMILY as GPT2
from optimizer.families.gpt2 import gpt2_config
from optimizer.families.llama import FAMILY as LLAMA
from optimizer.families.llama import LlamaSpec, keep_groups
from optimizer.passes import get_pass, make_config
from optimizer.text.export import (export_decoder, generation_manifest, generation_spec,
                                   graph_manifest, torch_greedy, validate)

from ..conftest import TINY_LLAMA_RECIPE

VOCAB = 97


def tiny(architecture="llama", layers=2, tied=True, seed=0):
    torch.manual_seed(seed)
    spec = LlamaSpec(architecture=architecture, vocab_size=VOCAB, hidden_size=32,
                     intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64,
                     tie_word_embeddings=tied)
    model = LLAMA.new_model(spec, VOCAB, SimpleNamespace(bos_id=0, eos_ids=(0, 2)))
    with torch.no_grad():  # random init is nearly uniform: make the logits decisive
        model.lm_head.weight.mul_(30)
    return model.eval()


def ids(n, seed=1):
    return torch.randint(3, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def context(family, model_blocks=None, workdir=None) -> Context:
    blocks = torch.randint(3, VOCAB, (32, 16), generator=torch.Generator().manual_seed(2))
    recipe = SimpleNamespace(train=SimpleNamespace(batch_size=8, epochs=1, lr=1e-3, beta1=0.9,
                                                   beta2=0.999, device="cpu"))
    data = SimpleNamespace(train=blocks, val=blocks[:8])
    return Context(recipe, family, data, seed=0, progress=False, workdir=workdir)


def exported(model, tmp_path, name="m.onnx"):
    layout = LLAMA.layout(model)
    path = export_decoder(model, layout, tmp_path / name)
    spec = generation_spec(layout, eos_ids=(0, 2), bos_id=0, chat_template="{{ 'x' }}")
    return path, spec


@pytest.mark.parametrize("architecture, tied", [("llama", True), ("qwen2", False),
                                                ("mistral", True)])
def test_llama_family_kv_cache_graph_reproduces_pytorch(architecture, tied, tmp_path):
    """Grouped-query attention: the cache holds 2 KV heads for 4 query heads; logits, chunked
    prefill and greedy tokens (cached and uncached) equal PyTorch's, and the edge runtime reads
    the manifest the optimizer writes for it."""
    model = tiny(architecture, tied=tied)
    path, spec = exported(model, tmp_path)
    dec = Decoder.open(path, spec)
    report = validate(model, dec, ids(60), atol=1e-4, prompt_tokens=12, new_tokens=20)
    assert report["max_abs_logit_diff"] <= 1e-4 and report["chunked_prefill_max_diff"] <= 1e-4
    assert report["greedy_tokens_checked"] == 20
    parsed = parse_text_generation(generation_manifest(spec), graph_manifest(spec, {"opset": 18}))
    assert [(layer.heads, layer.query_heads) for layer in parsed.layers] == [(2, 4), (2, 4)]
    assert parsed.eos_token_ids == (0, 2) and parsed.positions["kind"] == "rope"
    assert parsed.architecture == architecture and parsed.chat_template == "{{ 'x' }}"
    prompt = ids(10, seed=5)
    assert Decoder(dec.session, parsed).generate(prompt, 16, stop_at_eos=False).tokens == \
        torch_greedy(model, prompt, 16)


def test_prune_heads_removes_whole_kv_groups_equal_to_silencing_them(tmp_path):
    model = tiny()
    attn = model.model.layers[0].self_attn
    gate = torch.tensor([1.0, 1.0, 0.0, 0.0])  # query heads 2 and 3 read KV head 1
    hook = attn.o_proj.register_forward_pre_hook(
        lambda m, a: (a[0] * gate.repeat_interleave(attn.head_dim),))
    x = torch.tensor([ids(20)])
    with torch.no_grad():
        silenced = model(input_ids=x).logits
    hook.remove()
    pruned = copy.deepcopy(model)
    keep_groups(pruned.model.layers[0].self_attn, [0])
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=x).logits, silenced, rtol=0, atol=1e-5)

    out = get_pass("prune_heads").run(Subject(copy.deepcopy(model)),
                                      make_config("prune_heads", {"ratio": 0.5, "batches": 2}),
                                      context(LLAMA))
    assert out.info["unit"].startswith("key/value group") and out.info["units_removed"] == 2
    assert out.info["kv_heads_per_layer"] == [1, 1] and out.info["heads_per_layer"] == [2, 2]
    path, spec = exported(out.model, tmp_path)  # the cache shrinks with the heads
    validate(out.model, Decoder.open(path, spec), ids(40), atol=1e-4)
    LLAMA.save_checkpoint(out.model, tmp_path / "p.pt")
    again = LLAMA.load_checkpoint(tmp_path / "p.pt")
    with torch.no_grad():
        assert torch.equal(again(input_ids=x).logits, out.model(input_ids=x).logits)


@pytest.mark.parametrize("family", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_prune_mlp_removes_the_least_important_channels_exactly(family, tmp_path):
    """Channels that never activate contribute nothing: removing exactly those keeps the
    output, and the pass finds them."""
    if family is LLAMA:
        model = tiny()
        for layer in model.model.layers:  # silu(0) * up = 0: half the channels are dead
            layer.mlp.gate_proj.weight.data[::2] = 0
    else:
        torch.manual_seed(0)
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel(gpt2_config(2, 32, 4, 64, VOCAB, 0, 0.0)).eval()
        for block in model.transformer.h:  # gelu(0) = 0
            block.mlp.c_fc.weight.data[:, ::2] = 0
            block.mlp.c_fc.bias.data[::2] = 0
    x = torch.tensor([ids(20)])
    with torch.no_grad():
        before = model(input_ids=x).logits
    out = get_pass("prune_mlp").run(Subject(model), make_config("prune_mlp", {"ratio": 0.5}),
                                    context(family))
    width = out.info["intermediate_before"][0]
    assert out.info["intermediate_after"] == [width // 2] * 2
    assert out.info["params_after"] < out.info["params_before"]
    with torch.no_grad():
        torch.testing.assert_close(out.model(input_ids=x).logits, before, rtol=0, atol=1e-5)
    family.save_checkpoint(out.model, tmp_path / "p.pt")  # per-layer widths round-trip
    again = family.load_checkpoint(tmp_path / "p.pt")
    with torch.no_grad():
        assert torch.equal(again(input_ids=x).logits, out.model(input_ids=x).logits)


def test_distill_student_of_the_recipes_shape_initialised_from_every_kth_teacher_layer():
    teacher = tiny(layers=4)
    ctx = context(LLAMA)
    student = LLAMA.student(teacher, {"num_hidden_layers": 2}, 2, ctx)
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["model.layers.1.mlp.up_proj.weight"], t["model.layers.2.mlp.up_proj.weight"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    narrow = LLAMA.student(teacher, {"hidden_size": 16, "num_attention_heads": 2,
                                     "num_key_value_heads": 1, "intermediate_size": 24}, None, ctx)
    assert narrow.config.head_dim == 8 and narrow.config.num_hidden_layers == 4
    with pytest.raises(RecipeError, match=r"unknown student key\(s\) \['n_layer'\]"):
        LLAMA.student(teacher, {"n_layer": 2}, None, ctx)
    with pytest.raises(RecipeError, match="init_every needs the student's widths"):
        LLAMA.student(teacher, {"num_hidden_layers": 2, "hidden_size": 16,
                                "num_attention_heads": 2, "num_key_value_heads": 1}, 2, ctx)
    with pytest.raises(RecipeError, match="needs a teacher with at least 7 layers"):
        LLAMA.student(teacher, {}, 2, ctx)

    out = get_pass("distill").run(Subject(teacher), make_config("distill", {
        "student": {"num_hidden_layers": 1}, "epochs": 1, "init_every": 2}), ctx)
    assert out.info["student_params"] < out.info["teacher_params"]
    assert out.info["initialised_from"] == "teacher layers 0, 2, ..." and out.info["steps"] == 4


@pytest.mark.parametrize("family", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_quantize_weights_4bit_reaches_every_product_and_decodes_alike_cached(family, tmp_path,
                                                                              gpt2_bundle,
                                                                              llama_bundle):
    """Every constant product (the tied head too, and GPT-2's Gemm layers) becomes MatMulNBits,
    the embeddings GatherBlockQuantized; the file shrinks; cached == uncached decoding."""
    bundle = load_bundle(llama_bundle if family is LLAMA else gpt2_bundle)
    spec = bundle.manifest.generation
    ctx = context(family, workdir=tmp_path)
    out = get_pass("quantize_weights").run(Subject(None, bundle.model_path),
                                           make_config("quantize_weights", {}), ctx)
    ops, layers = out.info["ops_after"], len(spec.layers)
    projections = 4 if family is GPT2 else 7  # GPT-2: qkv, o, fc, proj; Llama: q,k,v,o,g,u,d
    embeddings = 2 if family is GPT2 else 1  # GPT-2 learns its positions: a second table
    assert ops["MatMulNBits"] == projections * layers + 1
    assert ops["GatherBlockQuantized"] == embeddings
    assert out.info["transposes_folded"] == 1 and out.precision == "int4"
    assert out.info["gemm_to_matmul"] == (4 * layers if family is GPT2 else 0)
    assert out.graph.stat().st_size < 0.35 * bundle.model_path.stat().st_size
    dec = Decoder.open(out.graph, spec)
    prompt = list(range(5, 21))
    assert dec.generate(prompt, 24, stop_at_eos=False).tokens == dec.generate_uncached(prompt, 24)
    reference = Decoder.open(bundle.model_path, spec).logits(prompt)
    got = dec.logits(prompt)
    assert np.corrcoef(reference.ravel(), got.ravel())[0, 1] > 0.99


def test_quantize_fp16_llama_keeps_float32_io_and_decodes_alike_cached(llama_bundle, tmp_path):
    bundle = load_bundle(llama_bundle)
    spec = bundle.manifest.generation
    out = get_pass("quantize").run(Subject(None, bundle.model_path),
                                   make_config("quantize", {"mode": "fp16"}),
                                   context(LLAMA, workdir=tmp_path))
    assert out.precision == "fp16" and out.info["io"].startswith("float32")
    assert out.graph.stat().st_size < 0.6 * bundle.model_path.stat().st_size
    dec = Decoder.open(out.graph, spec)  # the manifest's float32 I/O and cache, unchanged
    prompt = list(range(5, 21))
    assert dec.generate(prompt, 24, stop_at_eos=False).tokens == dec.generate_uncached(prompt, 24)
    reference = Decoder.open(bundle.model_path, spec).logits(prompt)
    np.testing.assert_allclose(dec.logits(prompt), reference, atol=0.05)


def test_llama_bundles_of_every_precision_run_in_the_edge_runtime(llama_run):
    """FP32, INT8 and INT4 bundles of the tiny recipe: each loads, decodes the same greedy
    tokens with and without its cache, stops at any of its eos ids, and carries the chat
    template and the ChatML end token."""
    result, _ = llama_run
    by_precision = {b.manifest.precision: b for b in result.bundles}
    assert set(by_precision) == {"fp32", "int8", "int4"}
    for bundle in by_precision.values():
        model = TextModel.load(bundle)
        prompt = model.encode("The while statement")
        greedy = model.generate(prompt, 20, stop_at_eos=False).tokens
        assert greedy == model.generate_uncached(prompt, 20), bundle.manifest.precision
        gen = bundle.manifest.generation
        im_end = model.tokenizer.token_to_id("<|im_end|>")
        assert gen.eos_token_ids == (model.tokenizer.token_to_id("<|endoftext|>"), im_end)
        assert "<|im_start|>" in gen.chat_template and gen.special_tokens["eos_token"] == \
            "<|im_end|>"
    int4 = by_precision["int4"].manifest
    assert int4.graph.opset == 21  # 4-bit embeddings need int4 tensors (opset 21)
    assert [t.name for t in int4.techniques] == ["train", "quantize_weights", "export"]
    assert int4.techniques[-1].params["cached_equals_uncached"]


def test_llama_recipe_names_its_mistakes_before_training(tmp_path):
    from optimizer.recipe import load_recipe
    from optimizer.run import check_points

    base = TINY_LLAMA_RECIPE.read_text()
    bad = tmp_path / "r.yaml"
    for old, new, message in [
        ("num_key_value_heads: 2", "num_key_value_heads: 3", "must be a multiple of "
                                                             "num_key_value_heads"),
        ("family: llama", "family: llama\nmodel_extra: 1", r"unknown key\(s\) \['model_extra'\]"),
        ("bits: 4, block_size: 32", "bits: 3", "bits must be 4 or 8"),
        ("bits: 4, block_size: 32", "bits: 8", "embeddings: true needs bits 4"),
        ("bits: 8, embeddings: false", "bits: 8, embeddings: false, pass2: x",
         r"unknown parameter\(s\) \['pass2'\]"),
        ("[{pass: quantize_weights, bits: 8", "[{pass: subpixel}, {pass: quantize_weights, bits: 8",
         "applies to"),
    ]:
        bad.write_text(base.replace(old, new))
        with pytest.raises(RecipeError, match=message):
            recipe = load_recipe(bad)
            check_points(recipe, LLAMA)
