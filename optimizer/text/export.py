"""Export a GPT-2 decoder to ONNX with its KV cache, and prove the graph before it ships.

The graph (torch.onnx.export(dynamo=True); the past tensors are passed as one nested tuple, as
the exporter needs for variadic inputs):

    inputs   input_ids (batch, seq) int64, logits_index (keep) int64,
             past.{i}.key / past.{i}.value (batch, heads_i, past, head_dim) per layer
    outputs  logits (batch, keep, vocab), present.{i}.key / .value (batch, heads_i, past+seq, head_dim)

Positions are the past length + 0..seq-1, so one graph serves both the prompt (empty past) and
every decode step (seq 1). `logits_index` selects the positions whose logits are computed: the
last one while generating (the output projection then runs on one row, not the whole prompt),
all of them when scoring perplexity.

Validation, any failure of which means no bundle:
1. ONNX Runtime logits against PyTorch's on a held-out sequence, max |diff| <= atol;
2. a prompt fed in two chunks through the cache gives the same logits as fed at once;
3. greedy decoding through the cache reproduces PyTorch's greedy tokens exactly, and so does
   decoding without the cache (the whole sequence re-run every step).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, GPT2LMHeadModel

from edge_app.generation import CacheLayer, TextGeneration
from edge_app.textgen import Decoder

from ..errors import OptimizerError
from .model import head_dim, heads_per_layer

log = logging.getLogger(__name__)


class ExportError(OptimizerError):
    """The exported graph does not reproduce the PyTorch model."""


class DecoderWithCache(nn.Module):
    def __init__(self, model: GPT2LMHeadModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, logits_index, past):
        cache = DynamicCache(ddp_cache_data=list(past))
        out = self.model.transformer(input_ids=input_ids, past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state.index_select(1, logits_index)
        logits = self.model.lm_head(hidden)
        presents = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (logits, *presents)


def generation_spec(model: GPT2LMHeadModel, eos_token_id: int,
                    tokenizer_file: str = "tokenizer.json", cache_dtype: str = "float32") -> TextGeneration:
    return TextGeneration(
        tokenizer_file=tokenizer_file, vocab_size=model.config.vocab_size,
        context_length=model.config.n_positions, eos_token_id=eos_token_id,
        bos_token_id=eos_token_id, head_dim=head_dim(model), cache_dtype=cache_dtype,
        layers=tuple(CacheLayer(h, f"past.{i}.key", f"past.{i}.value", f"present.{i}.key",
                                f"present.{i}.value") for i, h in enumerate(heads_per_layer(model))),
        input_ids="input_ids", logits_index="logits_index", logits_output="logits")


def generation_manifest(spec: TextGeneration) -> dict:
    """The manifest's `generation` section for a TextGeneration."""
    d = asdict(spec)
    layers = d.pop("layers")
    head, dtype = d.pop("head_dim"), d.pop("cache_dtype")
    d["kv_cache"] = {"layout": "batch, heads, sequence, head_dim (per layer: key, value)",
                     "head_dim": head, "dtype": dtype, "layers": list(layers),
                     "positions": "past length + 0..seq-1 (no position input)"}
    return d


def graph_manifest(spec: TextGeneration, opset: int, dtype: str = "float32") -> dict:
    ins = [{"name": spec.input_ids, "dtype": "int64", "shape": ["batch", "sequence"]},
           {"name": spec.logits_index, "dtype": "int64", "shape": ["keep"]}]
    outs = [{"name": spec.logits_output, "dtype": "float32",
             "shape": ["batch", "keep", spec.vocab_size]}]
    for layer in spec.layers:
        shape = ["batch", layer.heads, "past", spec.head_dim]
        ins += [{"name": layer.key_input, "dtype": dtype, "shape": shape},
                {"name": layer.value_input, "dtype": dtype, "shape": shape}]
        out_shape = ["batch", layer.heads, "past + sequence", spec.head_dim]
        outs += [{"name": layer.key_output, "dtype": dtype, "shape": out_shape},
                 {"name": layer.value_output, "dtype": dtype, "shape": out_shape}]
    return {"inputs": ins, "outputs": outs, "opset": opset}


def export_decoder(model: GPT2LMHeadModel, spec: TextGeneration, path: Path, opset: int) -> Path:
    model = model.eval()
    wrapper = DecoderWithCache(model)
    heads, d = heads_per_layer(model), head_dim(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    past = tuple((torch.zeros(2, h, 3, d), torch.zeros(2, h, 3, d)) for h in heads)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    past_len, keep = torch.export.Dim("past"), torch.export.Dim("keep")
    dynamic = {"input_ids": {0: batch, 1: seq}, "logits_index": {0: keep},
               "past": tuple(({0: batch, 2: past_len}, {0: batch, 2: past_len}) for _ in heads)}
    names_in = [spec.input_ids, spec.logits_index] + [
        n for layer in spec.layers for n in (layer.key_input, layer.value_input)]
    names_out = [spec.logits_output] + [
        n for layer in spec.layers for n in (layer.key_output, layer.value_output)]
    path.parent.mkdir(parents=True, exist_ok=True)
    # one self-contained file while protobuf allows it (2 GiB); larger models get model.onnx.data
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8e9
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation chatter, not our concern
            torch.onnx.export(wrapper, (ids, torch.arange(5), past), str(path), dynamo=True,
                              dynamic_shapes=dynamic, input_names=names_in,
                              output_names=names_out, opset_version=opset,
                              external_data=external, verbose=False)
    except Exception as exc:  # the exporter raises many types; the message is what matters
        raise ExportError(f"torch.onnx.export failed: {str(exc).splitlines()[0]}") from None
    return path


@torch.no_grad()
def torch_greedy(model: GPT2LMHeadModel, prompt: list[int], n: int) -> list[int]:
    """PyTorch's greedy tokens, decoded with transformers' own cache."""
    cache = DynamicCache()
    ids = torch.tensor([prompt])
    out: list[int] = []
    for _ in range(n):
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits
        token = int(logits[0, -1].argmax())
        out.append(token)
        ids = torch.tensor([[token]])
    return out


def validate(model: GPT2LMHeadModel, dec: Decoder, sample: list[int], atol: float,
             prompt_tokens: int = 16, new_tokens: int = 24) -> dict:
    """The three checks in the module docstring on an opened graph; returns what was measured."""
    spec = dec.spec
    seq = sample[: min(len(sample), spec.context_length, 64)]
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([seq])).logits[0].numpy()
    got = dec.logits(seq)
    diff = float(np.abs(got - ref).max())
    if not diff <= atol:
        raise ExportError(f"exported logits differ from PyTorch's by {diff:.3g} (> atol {atol:g})")
    half = len(seq) // 2
    _, past = dec.forward(np.asarray([seq[:half]]), None, np.arange(half))
    chunk, _ = dec.forward(np.asarray([seq[half:]]), past, np.arange(len(seq) - half))
    chunk_diff = float(np.abs(chunk[0] - got[half:]).max())
    if not chunk_diff <= atol:
        raise ExportError(f"a prompt fed in two chunks through the cache differs from one pass "
                          f"by {chunk_diff:.3g} (> atol {atol:g}): the cache is wrong")
    prompt = sample[:prompt_tokens]
    new_tokens = min(new_tokens, spec.context_length - len(prompt))
    want = torch_greedy(model, prompt, new_tokens)
    cached = dec.generate(prompt, new_tokens, stop_at_eos=False).tokens
    uncached = dec.generate_uncached(prompt, new_tokens)
    for name, tokens in (("cached", cached), ("uncached", uncached)):
        if tokens != want:
            at = next(i for i, (a, b) in enumerate(zip(tokens, want)) if a != b)
            raise ExportError(f"greedy decoding through the graph ({name}) departs from PyTorch "
                              f"at token {at} of {new_tokens}")
    return {"max_abs_logit_diff": diff, "chunked_prefill_max_diff": chunk_diff, "atol": atol,
            "greedy_tokens_checked": new_tokens, "greedy_match": "cached and uncached == PyTorch"}
