"""The peer bench's own logic (bench/bench_peers.py, bench/gguf_export.py): the GGUF files it
writes (read back with the gguf package: names, shapes, layouts, metadata), its statistics, and,
where llama.cpp's virtualenv has been built (`make bench-peers`; `make test` never compiles it),
greedy-token parity between llama.cpp on those files and PyTorch on the same tiny models."""

from __future__ import annotations

import json
import subprocess

import gguf
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from bench import bench_peers
from bench.gguf_export import byte_symbols, write_gguf
from optimizer.text.export import torch_greedy


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    # weights 15x GPT-2's init scale: at 0.02 its tied head just repeats the last token
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                      vocab_size=300, bos_token_id=299, eos_token_id=299,
                                      initializer_range=0.3)).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=1)).eval()


def _read(path):
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    fields = {name: f for name, f in reader.fields.items()}
    return tensors, fields


def _scalar(field):
    return field.parts[field.data[0]].tolist()[0]


def test_gpt2_gguf_has_llama_cpps_names_layouts_and_a_tied_head(tmp_path):
    model = tiny_gpt2()
    tensors, fields = _read(write_gguf(model, tmp_path / "m.gguf"))
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "gpt2"
    assert _scalar(fields["gpt2.block_count"]) == 2 and _scalar(fields["gpt2.attention.head_count"]) == 4
    assert _scalar(fields["gpt2.embedding_length"]) == 64
    assert _scalar(fields["gpt2.feed_forward_length"]) == 256
    assert "output.weight" not in tensors  # tied: llama.cpp uses the token embedding
    assert len(tensors) == 4 + 2 * 12
    sd = model.state_dict()
    # Conv1D [in, out] stored as [out, in]: numpy rows are the output features
    qkv = tensors["blk.1.attn_qkv.weight"]
    assert qkv.data.shape == (192, 64)
    np.testing.assert_array_equal(qkv.data, sd["transformer.h.1.attn.c_attn.weight"].T.numpy())
    np.testing.assert_array_equal(tensors["token_embd.weight"].data,
                                  sd["transformer.wte.weight"].numpy())
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in tensors.values())
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode()
              for i in fields["tokenizer.ggml.tokens"].data]
    assert len(tokens) == 300 == len(set(tokens)) and tokens[:256] == byte_symbols()
    assert _scalar(fields["tokenizer.ggml.eos_token_id"]) == 299


def test_llama_gguf_permutes_q_and_k_for_interleaved_rope(tmp_path):
    model = tiny_llama()
    tensors, fields = _read(write_gguf(model, tmp_path / "m.gguf"))
    assert _scalar(fields["llama.attention.head_count_kv"]) == 2
    assert _scalar(fields["llama.rope.dimension_count"]) == 16
    sd = model.state_dict()
    q_hf = sd["model.layers.0.self_attn.q_proj.weight"].numpy()
    q = tensors["blk.0.attn_q.weight"].data
    # head 0's rows: HF keeps (x0..x7 | x8..x15) halves, llama.cpp pairs them (x0, x8, x1, x9..)
    np.testing.assert_array_equal(q[0], q_hf[0])
    np.testing.assert_array_equal(q[1], q_hf[8])
    np.testing.assert_array_equal(q[2], q_hf[1])
    k = tensors["blk.1.attn_k.weight"].data  # 2 KV heads of 16: 32 rows
    assert k.shape == (32, 64)
    np.testing.assert_array_equal(k[17], sd["model.layers.1.self_attn.k_proj.weight"].numpy()[24])
    np.testing.assert_array_equal(tensors["blk.0.attn_v.weight"].data,
                                  sd["model.layers.0.self_attn.v_proj.weight"].numpy())
    assert "output.weight" in tensors  # this config does not tie its head


def test_a_model_llama_cpp_has_no_layout_for_is_refused(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match="no GGUF layout for model_type 'bert'"):
        write_gguf(bert, tmp_path / "m.gguf")


def test_ratios_are_medians_of_per_round_ratios_and_token_differences_are_located():
    def run(tok_s, ttft, rss, tokens):
        return {"tok_s": tok_s, "ttft_ms": ttft, "peak_rss_mb": rss, "tokens": tokens}

    raw = {"m": {"ORT INT8": [run(100, 10, 300, [1, 2, 3]), run(50, 20, 300, [1, 2, 3]),
                              run(120, 10, 300, [1, 2, 3])],
                 "llama.cpp q8_0": [run(100, 20, 200, [1, 2, 3]), run(100, 20, 200, [1, 5, 3]),
                                    run(60, 40, 200, [1, 2, 3])]}}
    s = bench_peers.summarize(raw)["m"]
    pair = s["pairs"]["ORT INT8 / llama.cpp q8_0"]
    # per round 1.0, 0.5, 2.0 -> median 1.0 (the ratio of medians would be 100 / 100 = 1.0 too,
    # but TTFT shows the difference: per round 0.5, 1.0, 0.25 -> 0.5; medians 10 / 20 = 0.5)
    assert pair["tok_s"] == 1.0 and pair["per_round"]["tok_s"] == [1.0, 0.5, 2.0]
    assert pair["ttft_ms"] == 0.5 and pair["peak_rss_mb"] == 1.5
    assert pair["same_tokens_rounds"] == 2 and pair["first_difference"] is None
    assert s["backends"]["ORT INT8"]["tok_s"] == 100
    assert bench_peers.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert bench_peers.first_difference([1, 2], [1, 2, 3]) == 2
    lines = bench_peers.checks({"m": s})
    assert "FAIL: m ORT INT8 / llama.cpp q8_0 tok_s 1.00x (target >= 1.25x)" in lines
    assert "PASS: m ORT INT8 / llama.cpp q8_0 ttft_ms 0.50x (target <= 0.5x)" in lines
    assert "FAIL: m ORT INT8 / llama.cpp q8_0 peak_rss_mb 1.50x (target <= 1.0x)" in lines


def test_without_llama_cpps_virtualenv_the_bench_says_how_to_get_it(tmp_path, capsys):
    assert bench_peers.main(["--llama-python", str(tmp_path / "none" / "python")]) == 2
    assert "make bench-peers builds llama.cpp's virtualenv" in capsys.readouterr().err


LLAMA_PYTHON = bench_peers.llama_venv() / "bin" / "python"
needs_llama_cpp = pytest.mark.skipif(
    not LLAMA_PYTHON.exists(),
    reason=f"llama.cpp is not built for this CPU ({LLAMA_PYTHON.parent.parent.name}): "
           f"`make bench-peers` builds it (10-25 min; never in `make test`)")


def _llama_cpp(*argv: str) -> dict:
    run = subprocess.run([str(LLAMA_PYTHON), str(bench_peers.WORKER), *argv],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@needs_llama_cpp
@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_llama_cpp_decodes_the_gguf_to_pytorchs_greedy_tokens(tmp_path, make):
    model = make()
    path = write_gguf(model, tmp_path / "f32.gguf")
    prompt = [(7 * i + 11) % model.config.vocab_size for i in range(12)]
    got = _llama_cpp("generate", str(path), json.dumps({"prompt": prompt, "new": 16,
                                                         "threads": 2}))
    want = torch_greedy(model, prompt, 16)
    assert got["tokens"] == want and len(set(want)) > 4, (got["tokens"], want)
    assert got["peak_rss_mb"] > 0 and got["tok_s"] > 0 and got["ttft_ms"] > 0
    q8 = _llama_cpp("quantize", str(path), str(tmp_path / "q8_0.gguf"), "q8_0")
    assert q8["bytes"] < path.stat().st_size / 3  # 8.5 bits per weight of the matrices
    tensors, _ = _read(tmp_path / "q8_0.gguf")
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
