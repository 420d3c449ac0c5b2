"""Checkpoints through the real loaders: tiny random models saved with `save_pretrained`, read
from a local directory and through the Hugging Face cache offline, with their tokenizer, chat
template and end tokens; safetensors only; a missing one is one line naming what was tried."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from optimizer.errors import CheckpointError
from optimizer.families import Context
from optimizer.families.gpt2 import FAMILY as GPT2
from optimizer.families.gpt2 import gpt2_config
from optimizer.families.llama import CHATML
from optimizer.families.llama import FAMILY as LLAMA
from optimizer.recipe import load_recipe
from optimizer.text.checkpoint import resolve
from optimizer.text.corpus import load_corpus
from optimizer.text.tokenizer import train_tokenizer

from ..conftest import REPO

TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}{{ eos_token }}{% endfor %}"


def _tokenizer(directory: Path, special=("<|endoftext|>",)) -> int:
    tok = train_tokenizer(load_corpus("pydoc").train[:40], 300, special)
    tok.save(str(directory / "tokenizer.json"))
    return tok.get_vocab_size()


def _gpt2_checkpoint(directory: Path) -> GPT2LMHeadModel:
    directory.mkdir(parents=True)
    vocab = _tokenizer(directory)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(2, 32, 2, 64, vocab, 0, 0.0))
    model.save_pretrained(directory)  # safetensors
    return model


def _hub_cache(root: Path, repo: str, source: Path) -> Path:
    """The Hugging Face cache layout (models--org--name/refs/main -> snapshots/<commit>/)."""
    folder = root / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(source, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return folder / "snapshots" / commit


def _recipe(tmp_path: Path, family: str, checkpoint: str) -> object:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: c\nfamily: {family}\nmodel: {{checkpoint: '{checkpoint}'}}\n"
                    f"data: {{dataset: pydoc, options: {{limit: 60}}}}\n"
                    f"train: {{epochs: 0, block_size: 32}}\nmlflow: false\n")
    return load_recipe(path)


def _offline(cache: Path, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    """A fresh interpreter with the cache offline: huggingface_hub reads its settings at import."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=cwd)


def test_gpt2_checkpoint_loads_from_a_directory_and_from_the_hub_cache_offline(tmp_path):
    saved = _gpt2_checkpoint(tmp_path / "gpt2-tiny")
    recipe = _recipe(tmp_path, "gpt2", str(tmp_path / "gpt2-tiny"))
    data = GPT2.prepare(recipe, tmp_path / "runs")
    teacher = GPT2.teacher(Context(recipe, GPT2, data, 0, False))
    for key, value in saved.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value), key
    assert data.info["tokenizer"]["source"] == f"checkpoint {tmp_path / 'gpt2-tiny'}"

    snapshot = _hub_cache(tmp_path / "hub", "acme/gpt2-tiny", tmp_path / "gpt2-tiny")
    run = _offline(tmp_path / "hub", "-c", "from optimizer.text.checkpoint import resolve; "
                                           "print(resolve('acme/gpt2-tiny'))")
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == snapshot


def test_llama_checkpoint_brings_its_tokenizer_chat_template_and_end_tokens(tmp_path):
    directory = tmp_path / "llama-tiny"
    directory.mkdir()
    vocab = _tokenizer(directory, ("<unk>", "<s>", "</s>", "<|user|>"))
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48,
                                 num_hidden_layers=1, num_attention_heads=4,
                                 num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                 max_position_embeddings=64)).save_pretrained(directory)
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 3]}))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": TEMPLATE, "bos_token": "<s>",
        "eos_token": {"content": "</s>", "special": True}}))
    data = LLAMA.prepare(_recipe(tmp_path, "llama", str(directory)), tmp_path / "runs")
    assert data.eos_ids == (2, 3) and data.bos_id == 1
    assert data.chat_template == TEMPLATE
    assert data.special_tokens == {"bos_token": "<s>", "eos_token": "</s>"}
    spec = LLAMA.generation(LLAMA.load_pretrained(directory), data)
    assert spec.eos_token_ids == (2, 3) and spec.chat_template == TEMPLATE
    # a tokenizer trained here instead carries ChatML (SmolLM2-Instruct's format)
    assert LLAMA.vocabulary(load_recipe(REPO / "recipes" / "llama-pydoc-quick.yaml")
                            .model_config).chat_template == CHATML


def test_pickled_weights_are_never_loaded(tmp_path):
    directory = tmp_path / "pickled"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (directory / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match=r"no .safetensors weights \(only "
                                              r"pytorch_model.bin: pickled weights are never"):
        resolve(str(directory))


def test_a_missing_checkpoint_is_one_line_naming_every_place_tried(tmp_path):
    recipe = tmp_path / "absent.yaml"
    recipe.write_text("name: absent\nfamily: llama\nmodel: {checkpoint: acme/absent}\n"
                      "mlflow: false\n")
    run = _offline(tmp_path / "hub", "-m", "optimizer", "run", str(recipe), cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("optimizer: error: checkpoint 'acme/absent' not found: tried no "
                           f"local directory {tmp_path / 'acme' / 'absent'}; Hugging Face Hub "
                           f"acme/absent (cache {tmp_path / 'hub'}, HF_HUB_OFFLINE=1): ")
    with pytest.raises(CheckpointError, match="not a Hugging Face Hub id"):
        resolve(str(tmp_path / "no" / "such" / "dir"))


@pytest.mark.parametrize("recipe", ["smollm2-135m-instruct.yaml", "qwen2.5-0.5b-instruct.yaml",
                                    "llama-checkpoint.yaml"])
def test_real_recipes_without_their_checkpoint_stop_in_one_line(recipe, tmp_path):
    run = _offline(tmp_path / "empty-cache", "-m", "optimizer", "run",
                   str(REPO / "recipes" / recipe), cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "not found: tried no local directory" in line and "HF_HUB_OFFLINE=1" in line
