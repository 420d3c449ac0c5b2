"""The Llama family through transformers: LlamaForCausalLM and the decoders of its shape,
Qwen2 (biases on q/k/v) and Mistral: rotary positions (RoPE), RMSNorm, a SwiGLU MLP, grouped-
query attention (fewer key/value heads than query heads; the KV cache holds only the KV heads)
and tied or untied embeddings. SmolLM2, TinyLlama, Llama 3.2 and Qwen2.5 are all of it.

From a checkpoint (a local directory or a Hub id, safetensors only) with its own tokenizer and
chat template, or from the recipe's shape with a byte-level BPE trained on the corpus, ChatML
tokens and a ChatML template (what SmolLM2-Instruct uses), so that even a model trained here
carries a chat template the server renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

from ..errors import CheckpointError, OptimizerError
from ..text.data import Vocabulary
from ..text.export import Layout
from ..text.tokenizer import EOS
from .decoder import DecoderFamily

ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM),
                 "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                 "mistral": (MistralConfig, MistralForCausalLM)}
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
STUDENT_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads")


@dataclass(frozen=True)
class LlamaSpec:
    """The `model:` section of a llama recipe: a checkpoint, or the shape to train from scratch."""

    checkpoint: str | None = None  # local directory or Hub id (HuggingFaceTB/SmolLM2-135M-Instruct)
    revision: str | None = None  # Hub revision (branch, tag or commit) of `checkpoint`
    architecture: str = "llama"  # llama | qwen2 | mistral (random init; a checkpoint says its own)
    vocab_size: int = 2048  # of the tokenizer trained on the corpus (no checkpoint)
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    max_position_embeddings: int = 2048  # the context length
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    chat_template: str | None = None  # a trained tokenizer's template (default: ChatML)

    def __post_init__(self):
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got "
                             f"{self.architecture!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a "
                             f"multiple of num_key_value_heads ({self.num_key_value_heads})")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings


def keep_groups(attn: nn.Module, keep: list[int]) -> None:
    """Keep the key/value heads `keep` of one attention layer, with the query heads that read
    them (query head h reads KV head h // groups): q/k/v projections lose rows, o_proj columns."""
    if not keep:
        raise OptimizerError("a layer must keep at least one key/value head")
    d, groups = attn.head_dim, attn.num_key_value_groups
    kv = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep])
    q = torch.cat([torch.arange(g * d, (g + 1) * d) for h in keep
                   for g in range(h * groups, (h + 1) * groups)])
    with torch.no_grad():
        for proj, rows in ((attn.q_proj, q), (attn.k_proj, kv), (attn.v_proj, kv)):
            _keep_rows(proj, rows)
        attn.o_proj.weight = nn.Parameter(attn.o_proj.weight[:, q].clone())
        attn.o_proj.in_features = len(q)


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight[rows].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias[rows].clone())
    linear.out_features = len(rows)


def keep_mlp_channels(mlp: nn.Module, keep: list[int]) -> None:
    """Keep the SwiGLU channels `keep`: gate and up lose rows, down loses columns."""
    idx = torch.as_tensor(keep)
    with torch.no_grad():
        _keep_rows(mlp.gate_proj, idx)
        _keep_rows(mlp.up_proj, idx)
        mlp.down_proj.weight = nn.Parameter(mlp.down_proj.weight[:, idx].clone())
        mlp.down_proj.in_features = len(keep)
    mlp.intermediate_size = len(keep)


def _rope(config) -> dict:
    params = dict(getattr(config, "rope_parameters", None) or {})
    theta = params.pop("rope_theta", getattr(config, "rope_theta", None))
    kind = params.get("rope_type", "default")
    return {"kind": "rope", "theta": float(theta),
            "scaling": params if kind not in ("default", None) else None}


class LlamaFamily(DecoderFamily):
    name = "llama"
    config = LlamaSpec
    layers_attr = "model.layers"

    def vocabulary(self, spec: LlamaSpec) -> Vocabulary:
        return Vocabulary(special=(EOS, IM_START, IM_END), end=(EOS, IM_END),
                          chat_template=spec.chat_template or CHATML,
                          special_tokens=(("bos_token", EOS), ("eos_token", IM_END)))

    def new_model(self, spec: LlamaSpec, vocab_size: int, data):
        config_cls, model_cls = ARCHITECTURES[spec.architecture]
        extra = {"sliding_window": None} if spec.architecture == "mistral" else {}
        return model_cls(config_cls(
            vocab_size=vocab_size, hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads,
            max_position_embeddings=spec.max_position_embeddings, rope_theta=spec.rope_theta,
            rms_norm_eps=spec.rms_norm_eps, tie_word_embeddings=spec.tie_word_embeddings,
            bos_token_id=data.bos_id, eos_token_id=list(data.eos_ids), **extra))

    def load_pretrained(self, path: Path):
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        if config.model_type not in ARCHITECTURES:
            raise CheckpointError(f"{path} holds a {config.model_type!r} model; family llama "
                                  f"takes {sorted(ARCHITECTURES)} (use family gpt2 for GPT-2)")
        window = getattr(config, "sliding_window", None)
        if window and getattr(config, "use_sliding_window", True) and \
                window < config.max_position_embeddings:
            raise CheckpointError(f"{path}: sliding-window attention ({window} of "
                                  f"{config.max_position_embeddings} positions) is not exported")
        try:
            return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                        use_safetensors=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load the checkpoint in {path}: "
                                  f"{str(exc).splitlines()[0]}") from None

    def build(self, config: dict):
        config_cls, model_cls = ARCHITECTURES[config["model_type"]]
        return model_cls(config_cls.from_dict(config))

    def layout(self, model) -> Layout:
        attns = [layer.self_attn for layer in model.model.layers]
        d = attns[0].head_dim
        return Layout(tuple(a.q_proj.out_features // d for a in attns),
                      tuple(a.k_proj.out_features // d for a in attns), d,
                      model.config.vocab_size, model.config.max_position_embeddings,
                      positions=_rope(model.config), architecture=model.config.model_type)

    def shape_of(self, model) -> dict:
        layout = self.layout(model)
        return {"kv_heads_per_layer": list(layout.kv_heads),
                "mlp_per_layer": [layer.mlp.down_proj.in_features for layer in model.model.layers]}

    def reshape(self, model, shape: dict) -> None:
        for layer, kv, width in zip(model.model.layers, shape["kv_heads_per_layer"],
                                    shape["mlp_per_layer"]):
            attn = layer.self_attn
            if kv != attn.k_proj.out_features // attn.head_dim:
                keep_groups(attn, list(range(kv)))
            if width != layer.mlp.down_proj.in_features:
                keep_mlp_channels(layer.mlp, list(range(width)))

    # ---------------------------------------------------------------- pass hooks
    def attention_units(self, block) -> tuple[nn.Module, int, int, int]:
        """(attention, units, query heads per unit, head_dim): a unit is one KV group."""
        attn = block.self_attn
        return attn, attn.k_proj.out_features // attn.head_dim, attn.num_key_value_groups, \
            attn.head_dim

    def attention_output(self, block) -> nn.Module:
        return block.self_attn.o_proj

    def keep_units(self, block, keep: list[int]) -> None:
        keep_groups(block.self_attn, keep)

    def mlp_down(self, block) -> tuple[nn.Module, torch.Tensor]:
        return block.mlp.down_proj, block.mlp.down_proj.weight

    def keep_mlp(self, block, keep: list[int]) -> None:
        keep_mlp_channels(block.mlp, keep)

    def student_shape(self, teacher) -> dict:
        return {key: getattr(teacher.config, key) for key in STUDENT_KEYS}

    def new_student(self, teacher, shape: dict):
        if shape["hidden_size"] % shape["num_attention_heads"] or \
                shape["num_attention_heads"] % shape["num_key_value_heads"]:
            raise OptimizerError(f"student {shape}: hidden_size must divide by "
                                 f"num_attention_heads, and that by num_key_value_heads")
        config = teacher.config.to_dict()
        config.pop("layer_types", None)  # one per teacher layer: recomputed for the student
        config.update(shape, head_dim=shape["hidden_size"] // shape["num_attention_heads"])
        return self.build(config)


FAMILY = LlamaFamily()
