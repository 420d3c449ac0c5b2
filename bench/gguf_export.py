"""The same weights as llama.cpp reads them: a transformers GPT-2 or Llama-family model written as
an F32 GGUF file (llama.cpp's `gpt2` and `llama` architectures), for the side-by-side bench
(bench/bench_peers.py). Quantized files (q8_0, q4_0) are made from it by llama.cpp's own
quantizer (bench/llamacpp_worker.py), as a llama.cpp user makes them with llama-quantize.

Tensor names, layouts and metadata keys follow llama.cpp's converter (convert_hf_to_gguf.py):
GPT-2's Conv1D weights are stored transposed ([out, in], as nn.Linear), Llama's q and k
projections are permuted from Hugging Face's rotate-half order to the interleaved pairs
llama.cpp's rope rotates, and the output head is left out when it is tied to the token
embedding (llama.cpp then uses the embedding, as the converter's files do).

The bench feeds token ids, never text, so the vocabulary is the model's own where it has a
tokenizer (`tokenizer=`, a tokenizers.Tokenizer), and otherwise one made up to its size: GPT-2's
256 byte symbols, then placeholder tokens, the last one the end-of-text token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ARCHES = {"gpt2": "gpt2", "llama": "llama"}  # transformers model_type -> llama.cpp architecture
TOKEN_NORMAL, TOKEN_CONTROL = 1, 3  # llama.cpp's token types


def byte_symbols() -> list[str]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte 0..255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary(size: int, tokenizer=None) -> tuple[list[str], list[int], list[str], int]:
    """(tokens, token types, merges, end-of-text id) for a vocabulary of `size` entries."""
    if tokenizer is not None:
        import json

        spec = json.loads(tokenizer.to_str())
        vocab = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
        special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        tokens = [vocab.get(i, f"<unused{i}>") for i in range(size)]
        merges = [m if isinstance(m, str) else " ".join(m)
                  for m in spec["model"].get("merges", [])]
        eos = max(special) if special else size - 1
        types = [TOKEN_CONTROL if i in special else TOKEN_NORMAL for i in range(size)]
        return tokens, types, merges, eos
    if size < 258:
        raise ValueError(f"a made-up byte-level vocabulary needs >= 258 tokens, not {size}")
    symbols = byte_symbols()
    tokens = symbols + [f"<t{i}>" for i in range(256, size - 1)] + ["<|endoftext|>"]
    types = [TOKEN_NORMAL] * (size - 1) + [TOKEN_CONTROL]
    return tokens, types, [], size - 1


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").float().numpy()


def _rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's q/k rows (rotate-half: first halves, then second halves of each head)
    -> llama.cpp's interleaved pairs, as convert_hf_to_gguf.py's LlamaModel.permute."""
    rows = w.shape[0]
    return (w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


def _gpt2_tensors(model) -> dict[str, np.ndarray]:
    sd = model.state_dict()
    out = {"token_embd.weight": _np(sd["transformer.wte.weight"]),
           "position_embd.weight": _np(sd["transformer.wpe.weight"]),
           "output_norm.weight": _np(sd["transformer.ln_f.weight"]),
           "output_norm.bias": _np(sd["transformer.ln_f.bias"])}
    names = {"ln_1": "attn_norm", "ln_2": "ffn_norm", "attn.c_attn": "attn_qkv",
             "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(model.config.n_layer):
        for hf, gg in names.items():
            w, b = sd[f"transformer.h.{i}.{hf}.weight"], sd[f"transformer.h.{i}.{hf}.bias"]
            # Conv1D keeps [in, out]; GGUF wants nn.Linear's [out, in] (norms are 1-D)
            out[f"blk.{i}.{gg}.weight"] = _np(w.T if w.dim() == 2 else w)
            out[f"blk.{i}.{gg}.bias"] = _np(b)
    if not model.config.tie_word_embeddings:
        out["output.weight"] = _np(sd["lm_head.weight"])
    return out


def _llama_tensors(model) -> dict[str, np.ndarray]:
    cfg, sd = model.config, model.state_dict()
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    out = {"token_embd.weight": _np(sd["model.embed_tokens.weight"]),
           "output_norm.weight": _np(sd["model.norm.weight"])}
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            for kind in ("weight", "bias"):
                key = f"model.layers.{i}.{hf}.{kind}"
                if key not in sd:
                    continue
                w = _np(sd[key])
                if gg == "attn_q":
                    w = _rope_permute(w, heads)
                elif gg == "attn_k":
                    w = _rope_permute(w, kv_heads)
                out[f"blk.{i}.{gg}.{kind}"] = w
    if not cfg.tie_word_embeddings:
        out["output.weight"] = _np(sd["lm_head.weight"])
    return out


def write_gguf(model, path: Path, tokenizer=None, name: str = "edgegen-bench") -> Path:
    """`model` (transformers GPT2LMHeadModel or LlamaForCausalLM) as an F32 GGUF at `path`."""
    import gguf

    cfg = model.config
    arch = ARCHES.get(cfg.model_type)
    if arch is None:
        raise ValueError(f"no GGUF layout for model_type {cfg.model_type!r}; "
                         f"known: {sorted(ARCHES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if arch == "gpt2":
        w.add_context_length(cfg.n_positions)
        w.add_embedding_length(cfg.n_embd)
        w.add_feed_forward_length(cfg.n_inner or 4 * cfg.n_embd)
        w.add_block_count(cfg.n_layer)
        w.add_head_count(cfg.n_head)
        w.add_layer_norm_eps(cfg.layer_norm_epsilon)
        tensors = _gpt2_tensors(model)
    else:
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_block_count(cfg.num_hidden_layers)
        w.add_head_count(cfg.num_attention_heads)
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_rope_dimension_count(head_dim)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None)
                                   or cfg.rope_parameters["rope_theta"]))
        w.add_vocab_size(cfg.vocab_size)
        tensors = _llama_tensors(model)
    tokens, types, merges, eos = vocabulary(cfg.vocab_size, tokenizer)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    if merges:
        w.add_token_merges(merges)
    else:  # llama.cpp's BPE loader requires the key; one merge of two byte symbols
        w.add_token_merges([f"{tokens[0]} {tokens[1]}"])
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    for tensor_name, data in tensors.items():
        w.add_tensor(tensor_name, np.ascontiguousarray(data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
