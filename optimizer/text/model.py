"""GPT-2 through transformers' own definition: from a local checkpoint or from a config.

Head pruning makes layers differ in head count, which GPT2Config cannot say, so checkpoints
record `heads_per_layer` beside the config and the state dict; loading rebuilds the model from
the config, shrinks each attention to its recorded heads, then loads the weights
(weights_only=True: nothing is unpickled).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from ..errors import OptimizerError


def gpt2_config(n_layer: int, n_embd: int, n_head: int, n_positions: int, vocab_size: int,
                eos_token_id: int, dropout: float = 0.1) -> GPT2Config:
    return GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
                      vocab_size=vocab_size, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)


def from_checkpoint(directory: Path) -> GPT2LMHeadModel:
    if not (directory / "config.json").is_file():
        raise OptimizerError(f"{directory} is not a Hugging Face checkpoint: no config.json "
                             f"(expected config.json and model.safetensors, as in a downloaded gpt2)")
    try:
        model = GPT2LMHeadModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise OptimizerError(f"cannot load the GPT-2 checkpoint in {directory}: {exc}") from None
    return model


def heads_per_layer(model: GPT2LMHeadModel) -> list[int]:
    return [block.attn.num_heads for block in model.transformer.h]


def head_dim(model: GPT2LMHeadModel) -> int:
    return model.transformer.h[0].attn.head_dim


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


def nonzero_parameters(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def save_checkpoint(model: GPT2LMHeadModel, path: Path, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"family": "gpt2", "config": model.config.to_dict(),
                "heads_per_layer": heads_per_layer(model), "state_dict": model.state_dict(),
                **(extra or {})}, path)


def load_checkpoint(path: Path) -> GPT2LMHeadModel:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT2LMHeadModel(GPT2Config.from_dict(ckpt["config"]))
    for block, heads in zip(model.transformer.h, ckpt["heads_per_layer"]):
        if heads != block.attn.num_heads:
            keep_heads(block.attn, list(range(heads)))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
