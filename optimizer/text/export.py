"""Export a decoder (GPT-2 or Llama family) to ONNX with its KV cache, and prove the graph
before it ships.

The graph (torch.onnx.export(dynamo=True); the past tensors are passed as one nested tuple, as
the exporter needs for variadic inputs):

    inputs   input_ids (batch, seq) int64, logits_index (keep) int64,
             past.{i}.key / past.{i}.value (batch, kv_heads_i, past, head_dim) per layer
    outputs  logits (batch, keep, vocab), present.{i}.key / .value (batch, kv_heads_i,
             past+seq, head_dim)

Positions are the past length + 0..seq-1 (GPT-2's learned positions; the Llama family's rotary
embedding at those positions), so one graph serves both the prompt (empty past) and every decode
step (seq 1), and a prompt fed in chunks equals one fed at once. The cache holds the KV heads
(fewer than the query heads under grouped-query attention). `logits_index` selects the positions
whose logits are computed: the last one while generating (the output projection then runs on one
row, not the whole prompt), all of them when scoring perplexity.

Validation (DECODER.checks, every one run, any failure means no bundle):
1. ONNX Runtime logits against PyTorch's on a held-out sequence, max |diff| <= atol;
2. a prompt fed in two chunks through the cache gives the same logits as fed at once;
3. greedy decoding through the cache reproduces PyTorch's greedy tokens exactly, and so does
   decoding without the cache (the whole sequence re-run every step).
A graph derived from it (quantized) must decode the same greedy tokens with and without its
cache (DECODER.graph_checks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache

from edge_app.generation import CacheLayer, TextGeneration
from edge_app.textgen import Decoder

from ..errors import AtolError, CacheError, CheckFailed, ParityError
from ..export import IO, ExportSpec, export_module, run_checks

_PAST = ((0, "batch"), (2, "past"))
_PRESENT = ((0, "batch"), (2, "past + sequence"))
DECODER = ExportSpec(
    inputs=(IO("input_ids", ((0, "batch"), (1, "sequence"))), IO("logits_index", ((0, "keep"),)),
            IO("past.{i}.key", _PAST, per_layer=True),
            IO("past.{i}.value", _PAST, per_layer=True)),
    outputs=(IO("logits", ((0, "batch"), (1, "keep"))),
             IO("present.{i}.key", _PRESENT, per_layer=True),
             IO("present.{i}.value", _PRESENT, per_layer=True)),
    opset=18, opset_reason="the dynamo exporter's default; ONNX Runtime 1.32 runs all of it on "
                           "CPU, and its quantizers (MatMulNBits, dynamic INT8) take it",
    atol=1e-3,  # on logits of magnitude ~10: float32 reassociation across fused kernels
    checks=("logits_within_atol", "chunked_prefill", "greedy_cached", "greedy_uncached"),
    graph_checks=("cached_equals_uncached",))


class DecoderWithCache(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, logits_index, past):
        cache = DynamicCache(ddp_cache_data=list(past))
        out = self.model.base_model(input_ids=input_ids, past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state.index_select(1, logits_index)
        logits = self.model.get_output_embeddings()(hidden)
        presents = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (logits, *presents)


@dataclass(frozen=True)
class Layout:
    """What a decoder's graph and cache look like, per layer: the family measures it on the
    model (pruning makes layers differ)."""

    query_heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    head_dim: int
    vocab_size: int
    context_length: int
    positions: dict = field(default_factory=dict)  # {"kind": "learned"} or rope settings
    architecture: str = ""  # transformers' model_type


def generation_spec(layout: Layout, eos_ids: tuple[int, ...], bos_id: int,
                    tokenizer_file: str = "tokenizer.json", cache_dtype: str = "float32",
                    chat_template: str | None = None,
                    special_tokens: dict | None = None) -> TextGeneration:
    return TextGeneration(
        tokenizer_file=tokenizer_file, vocab_size=layout.vocab_size,
        context_length=layout.context_length, eos_token_id=eos_ids[0], bos_token_id=bos_id,
        head_dim=layout.head_dim, cache_dtype=cache_dtype,
        layers=tuple(CacheLayer(kv, f"past.{i}.key", f"past.{i}.value", f"present.{i}.key",
                                f"present.{i}.value", query_heads=q)
                     for i, (q, kv) in enumerate(zip(layout.query_heads, layout.kv_heads))),
        input_ids="input_ids", logits_index="logits_index", logits_output="logits",
        eos_token_ids=tuple(eos_ids), chat_template=chat_template,
        special_tokens=dict(special_tokens or {}), positions=dict(layout.positions),
        architecture=layout.architecture)


def generation_manifest(spec: TextGeneration) -> dict:
    """The manifest's `generation` section for a TextGeneration."""
    d = asdict(spec)
    layers = d.pop("layers")
    head, dtype = d.pop("head_dim"), d.pop("cache_dtype")
    for key in ("chat_template", "special_tokens", "positions", "architecture"):
        if not d[key]:
            d.pop(key)
    d["eos_token_ids"] = list(d["eos_token_ids"])
    for layer in layers:
        if layer["query_heads"] is None or layer["query_heads"] == layer["heads"]:
            layer.pop("query_heads")
    d["kv_cache"] = {"layout": "batch, heads, sequence, head_dim (per layer: key, value)",
                     "head_dim": head, "dtype": dtype, "layers": list(layers),
                     "positions": "past length + 0..seq-1 (no position input)"}
    return d


def graph_manifest(spec: TextGeneration, needs: dict, dtype: str = "float32") -> dict:
    """The manifest's graph section; `needs` is optimizer.graphs.graph_needs of the file."""
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
    return {"inputs": ins, "outputs": outs, **needs}


def export_decoder(model, layout: Layout, path: Path, opset: int = DECODER.opset) -> Path:
    """The decoder's KV-cache graph at `path` (not yet validated: see DecoderProbe)."""
    model = model.eval()
    d, layers = layout.head_dim, len(layout.kv_heads)
    ids = torch.randint(0, layout.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    past = tuple((torch.zeros(2, h, 3, d), torch.zeros(2, h, 3, d)) for h in layout.kv_heads)
    # one self-contained file while protobuf allows it (2 GiB); larger models get model.onnx.data
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8e9
    return export_module(DecoderWithCache(model), DECODER, (ids, torch.arange(5), past), path,
                         layers=layers, opset=opset, external=external)


@torch.no_grad()
def torch_greedy(model, prompt: list[int], n: int) -> list[int]:
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


@dataclass
class DecoderProbe:
    """What the checks compare: a PyTorch model and an opened graph, on held-out tokens."""

    model: object
    dec: Decoder
    sample: list[int]
    atol: float
    prompt_tokens: int = 16
    new_tokens: int = 24
    _memo: dict = field(default_factory=dict)

    @property
    def seq(self) -> list[int]:
        return self.sample[: min(len(self.sample), self.dec.spec.context_length, 64)]

    def memo(self, key, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def graph_logits(self) -> np.ndarray:
        return self.memo("graph", lambda: self.dec.logits(self.seq))

    def greedy_reference(self) -> tuple[list[int], list[int]]:
        prompt = self.sample[:self.prompt_tokens]
        n = min(self.new_tokens, self.dec.spec.context_length - len(prompt))
        return prompt, self.memo("want", lambda: torch_greedy(self.model, prompt, n))


def _logits_within_atol(p: DecoderProbe) -> dict:
    with torch.no_grad():
        ref = p.model(input_ids=torch.tensor([p.seq])).logits[0].numpy()
    diff = float(np.abs(p.graph_logits() - ref).max())
    if not diff <= p.atol:  # also catches NaN
        raise CheckFailed(AtolError, f"exported logits differ from PyTorch's by {diff:.3g} "
                                     f"(> atol {p.atol:g})")
    return {"max_abs_logit_diff": diff, "atol": p.atol}


def _chunked_prefill(p: DecoderProbe) -> dict:
    seq, got = p.seq, p.graph_logits()
    half = len(seq) // 2
    _, past = p.dec.forward(np.asarray([seq[:half]]), None, np.arange(half))
    chunk, _ = p.dec.forward(np.asarray([seq[half:]]), past, np.arange(len(seq) - half))
    diff = float(np.abs(chunk[0] - got[half:]).max())
    if not diff <= p.atol:
        raise CheckFailed(CacheError, f"a prompt fed in two chunks through the cache differs "
                                      f"from one pass by {diff:.3g} (> atol {p.atol:g}): the "
                                      f"cache is wrong")
    return {"chunked_prefill_max_diff": diff}


def _departs(tokens: list[int], want: list[int]) -> int:
    return next((i for i, (a, b) in enumerate(zip(tokens, want)) if a != b), len(want))


def _greedy_cached(p: DecoderProbe) -> dict:
    prompt, want = p.greedy_reference()
    cached = p.dec.generate(prompt, len(want), stop_at_eos=False).tokens
    if cached != want:
        raise CheckFailed(ParityError, f"greedy decoding through the graph (cached) departs "
                                       f"from PyTorch at token {_departs(cached, want)} of "
                                       f"{len(want)}")
    return {"greedy_tokens_checked": len(want), "greedy_cached": "equal to PyTorch's"}


def _greedy_uncached(p: DecoderProbe) -> dict:
    prompt, want = p.greedy_reference()
    uncached = p.dec.generate_uncached(prompt, len(want))
    if uncached != want:
        raise CheckFailed(ParityError, f"greedy decoding through the graph (uncached) departs "
                                       f"from PyTorch at token {_departs(uncached, want)} of "
                                       f"{len(want)}")
    return {"greedy_uncached": "equal to PyTorch's"}


@dataclass
class GraphProbe:
    """A derived (e.g. quantized) graph, with the prompt it must decode alike either way."""

    dec: Decoder
    prompt: list[int]
    tokens: list[int]  # its greedy continuation through the cache


def _cached_equals_uncached(p: GraphProbe) -> dict:
    uncached = p.dec.generate_uncached(p.prompt, len(p.tokens))
    if uncached != p.tokens:
        raise CheckFailed(CacheError, f"the graph decodes differently with and without its "
                                      f"cache (from token {_departs(uncached, p.tokens)})")
    return {"cached_equals_uncached": f"{len(p.tokens)} greedy tokens"}


CHECKS = {"logits_within_atol": _logits_within_atol, "chunked_prefill": _chunked_prefill,
          "greedy_cached": _greedy_cached, "greedy_uncached": _greedy_uncached,
          "cached_equals_uncached": _cached_equals_uncached}


def validate(model, dec: Decoder, sample: list[int], atol: float, prompt_tokens: int = 16,
             new_tokens: int = 24, graph: str = "the decoder graph") -> dict:
    """Every check of DECODER.checks on an opened graph; raises ExportError naming each
    failure, else returns what they measured."""
    probe = DecoderProbe(model, dec, sample, atol, prompt_tokens, new_tokens)
    return run_checks(DECODER.checks, CHECKS, probe, graph)
