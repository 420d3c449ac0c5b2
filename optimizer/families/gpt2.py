"""GPT-2 through transformers' own definition: from a checkpoint (a local directory or a Hub
id) or from the recipe's shape, with a byte-level BPE trained on the corpus.

Head pruning makes layers differ in head count and MLP pruning in width, which GPT2Config
cannot say, so checkpoints record the per-layer shape beside the config and the state dict;
loading rebuilds the model from the config, cuts each layer to its recorded shape, then loads
the weights (weights_only=True: nothing is unpickled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from ..errors import CheckpointError, OptimizerError
from ..text.export import Layout
from .decoder import DecoderFamily


@dataclass(frozen=True)
class GPT2Spec:
    """The `model:` section of a gpt2 recipe (the teacher / baseline)."""

    checkpoint: str | None = None  # local directory or Hub id (e.g. gpt2), through the HF cache
    revision: str | None = None  # Hub revision (branch, tag or commit) of `checkpoint`
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    n_positions: int = 1024  # context length
    vocab_size: int = 50257  # of a trained tokenizer when there is no checkpoint
    dropout: float = 0.1  # GPT-2's resid/embd/attn dropout

    def __post_init__(self):
        for key in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")

    @property
    def context_length(self) -> int:
        return self.n_positions


def gpt2_config(n_layer: int, n_embd: int, n_head: int, n_positions: int, vocab_size: int,
                eos_token_id: int, dropout: float = 0.1) -> GPT2Config:
    return GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
                      vocab_size=vocab_size, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)


def keep_heads(attn: nn.Module, keep: list[int]) -> None:
    """Physically remove every head of one GPT2Attention not in `keep` (indices, sorted).

    c_attn's output columns are [q | k | v], each heads x head_dim; c_proj's input rows are the
    concatenated heads. Both shrink; the module's head count and split size follow.
    """
    if not keep:
        raise OptimizerError("a layer must keep at least one attention head")
    d, embed = attn.head_dim, attn.c_attn.weight.shape[0]
    width = attn.num_heads * d
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep])
    cols = torch.cat([idx, idx + width, idx + 2 * width])
    with torch.no_grad():
        attn.c_attn.weight = nn.Parameter(attn.c_attn.weight[:, cols].clone())
        attn.c_attn.bias = nn.Parameter(attn.c_attn.bias[cols].clone())
        attn.c_proj.weight = nn.Parameter(attn.c_proj.weight[idx, :].clone())
    attn.c_attn.nf = len(cols)
    attn.num_heads = len(keep)
    attn.split_size = len(keep) * d
    assert attn.c_proj.weight.shape == (len(keep) * d, embed)


def keep_mlp_channels(mlp: nn.Module, keep: list[int]) -> None:
    """Keep the intermediate channels `keep` of one GPT2MLP: c_fc's output columns and c_proj's
    input rows (transformers' Conv1D stores weights as (in, out))."""
    idx = torch.as_tensor(keep)
    with torch.no_grad():
        mlp.c_fc.weight = nn.Parameter(mlp.c_fc.weight[:, idx].clone())
        mlp.c_fc.bias = nn.Parameter(mlp.c_fc.bias[idx].clone())
        mlp.c_proj.weight = nn.Parameter(mlp.c_proj.weight[idx, :].clone())
    mlp.c_fc.nf = len(keep)


class GPT2Family(DecoderFamily):
    name = "gpt2"
    config = GPT2Spec
    layers_attr = "transformer.h"

    def build(self, config: dict) -> GPT2LMHeadModel:
        return GPT2LMHeadModel(GPT2Config.from_dict(config))

    def new_model(self, spec: GPT2Spec, vocab_size: int, data):
        return GPT2LMHeadModel(gpt2_config(spec.n_layer, spec.n_embd, spec.n_head,
                                           spec.n_positions, vocab_size, data.eos_ids[0],
                                           spec.dropout))

    def load_pretrained(self, path: Path) -> GPT2LMHeadModel:
        try:
            model = GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True,
                                                    use_safetensors=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load the GPT-2 checkpoint in {path}: "
                                  f"{str(exc).splitlines()[0]}") from None
        if model.config.model_type != "gpt2":
            raise CheckpointError(f"{path} holds a {model.config.model_type!r} model, not GPT-2: "
                                  f"use family llama for Llama, Qwen2 and Mistral checkpoints")
        return model

    def layout(self, model: GPT2LMHeadModel) -> Layout:
        heads = tuple(block.attn.num_heads for block in model.transformer.h)
        return Layout(heads, heads, model.transformer.h[0].attn.head_dim,
                      model.config.vocab_size, model.config.n_positions,
                      positions={"kind": "learned"}, architecture="gpt2")

    def shape_of(self, model: GPT2LMHeadModel) -> dict:
        return {"heads_per_layer": [b.attn.num_heads for b in model.transformer.h],
                "mlp_per_layer": [b.mlp.c_fc.nf for b in model.transformer.h]}

    def reshape(self, model: GPT2LMHeadModel, shape: dict) -> None:
        blocks = model.transformer.h
        widths = shape.get("mlp_per_layer") or [None] * len(blocks)
        for block, heads, width in zip(blocks, shape["heads_per_layer"], widths):
            if heads != block.attn.num_heads:
                keep_heads(block.attn, list(range(heads)))
            if width is not None and width != block.mlp.c_fc.nf:
                keep_mlp_channels(block.mlp, list(range(width)))

    # ---------------------------------------------------------------- pass hooks
    def attention_units(self, block) -> tuple[nn.Module, int, int, int]:
        """(attention module, units, query heads per unit, head_dim): a unit is one head."""
        return block.attn, block.attn.num_heads, 1, block.attn.head_dim

    def attention_output(self, block) -> nn.Module:
        """The projection whose input is the concatenated heads (gated per head)."""
        return block.attn.c_proj

    def keep_units(self, block, keep: list[int]) -> None:
        keep_heads(block.attn, keep)

    def mlp_down(self, block) -> tuple[nn.Module, torch.Tensor]:
        """(the projection fed by the activated intermediate channels, its weight as
        (out, channels))."""
        return block.mlp.c_proj, block.mlp.c_proj.weight.T

    def keep_mlp(self, block, keep: list[int]) -> None:
        keep_mlp_channels(block.mlp, keep)

    def student_shape(self, teacher: GPT2LMHeadModel) -> dict:
        c = teacher.config
        return {"n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head}

    def new_student(self, teacher: GPT2LMHeadModel, shape: dict) -> GPT2LMHeadModel:
        c = teacher.config
        if shape["n_embd"] % shape["n_head"]:
            raise OptimizerError(f"student n_embd ({shape['n_embd']}) must be divisible by "
                                 f"n_head ({shape['n_head']})")
        return GPT2LMHeadModel(gpt2_config(shape["n_layer"], shape["n_embd"], shape["n_head"],
                                           c.n_positions, c.vocab_size, c.eos_token_id,
                                           c.resid_pdrop))


FAMILY = GPT2Family()
