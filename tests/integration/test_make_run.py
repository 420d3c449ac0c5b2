"""`make run` end to end, as a new user runs it: builds every default bundle once (images and
text, baselines and optimized variants), prints what optimization bought, serves them all (the
openai client chats and completes, images come back), and a second run reuses everything.

Trained for one epoch (RUN_SET=train.epochs=1) instead of the recipes' own, so the suite pays
for the path and not for model quality: every other part (recipes, run profiles, the summary's
fresh-process measurements, the server) is what `make run` runs.
"""

from __future__ import annotations

import base64
import json
import shutil
import time

import pytest
import requests

from ..artifacts import seed_extractors
from ..conftest import free_port
from .serverproc import Proc

pytestmark = [pytest.mark.integration, pytest.mark.trains]

DEFAULT = ["dcgan-digits", "dcgan-digits-prune50", "dcgan-digits-int8", "beta-vae-digits",
           "gpt2-pydoc", "gpt2-pydoc-int8", "llama-pydoc", "llama-pydoc-distilled-int4"]


def _make_run(tmp_path, port, timeout, *variables: str,
              until: str = "# writes out.png") -> tuple[Proc, float]:
    """Start `make run VARIABLES...` with its files under `tmp_path` and read its output until
    the server has announced itself (the hint's line `until`); the seconds that took."""
    t0 = time.monotonic()
    proc = Proc(["make", "--no-print-directory", "run", f"BUNDLES_DIR={tmp_path / 'bundles'}",
                 f"RESULTS={tmp_path / 'results'}", f"RUNS_DIR={tmp_path / 'runs'}",
                 f"PORT={port}", *variables],
                env={"MAKEFLAGS": "", "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri()})
    if not proc.wait_for(until, timeout=timeout):
        pytest.fail(f"make run did not come up:\n{proc.stop()[1][-6000:]}")
    return proc, time.monotonic() - t0


def test_make_run_builds_every_default_bundle_once_and_serves_them(tmp_path, fid_extractors):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    from openai import OpenAI

    seed_extractors(tmp_path / "runs", fid_extractors)  # the session's, not trained again
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, _ = _make_run(tmp_path, port, 1500, "RUN_SET=train.epochs=1")
    try:
        out = proc.output
        for recipe in ("dcgan-digits-quick", "beta-vae-digits-quick", "gpt2-pydoc-quick",
                       "llama-pydoc-quick"):
            assert f"python -m optimizer run recipes/{recipe}.yaml --profile run" in out
        # the summary: every bundle with size, quality and speed, ratios against its baseline
        table = out[out.index("bundle  "):out.index("Speed: median")]
        rows = {line.split()[0]: line for line in table.splitlines()[2:] if line.strip()}
        assert sorted(rows) == sorted(DEFAULT), table
        assert "FID" in rows["dcgan-digits-int8"] and "x size" in rows["dcgan-digits-int8"]
        assert "perplexity" in rows["llama-pydoc-distilled-int4"]
        assert "tok/s" in rows["gpt2-pydoc-int8"] and "x speed" in rows["gpt2-pydoc-int8"]
        assert "x size" not in rows["llama-pydoc"]  # a baseline has no ratio
        assert f"EdgeGen is serving {', '.join(sorted(DEFAULT))} at {base}" in out

        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(
            model="llama-pydoc-distilled-int4", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "What does the while statement do?"}])
        assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens > 0
        text = client.completions.create(model="gpt2-pydoc-int8", prompt="The import statement",
                                         max_tokens=8, temperature=0)
        assert text.usage.completion_tokens == 8 and text.choices[0].text
        for model in ("dcgan-digits-prune50", "beta-vae-digits"):
            image = requests.post(f"{base}/v1/images/generations",
                                  json={"model": model, "n": 1, "seed": 3}, timeout=30)
            assert image.status_code == 200, image.text
            assert base64.b64decode(image.json()["data"][0]["b64_json"])[:4] == b"\x89PNG"
        page = requests.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "playground" in page.text.lower()
    finally:
        _, first = proc.stop()
    # make itself dies of the SIGTERM sent to the group; gunicorn below it shuts down cleanly
    assert "Shutting down: Master" in first, first[-3000:]
    built = {n: (tmp_path / "bundles" / n / "manifest.json").stat().st_mtime_ns for n in DEFAULT}

    proc, seconds = _make_run(tmp_path, port, 120, "RUN_SET=train.epochs=1")
    _, second = proc.stop()
    assert "python -m optimizer run" not in second  # reused, not retrained
    assert second.count("already measured, kept") == len(DEFAULT)  # nor measured again
    assert "Speed: median" in second
    assert {n: (tmp_path / "bundles" / n / "manifest.json").stat().st_mtime_ns
            for n in DEFAULT} == built
    print(f"second make run: serving after {seconds:.1f} s")
    assert seconds < 60, second[-3000:]  # ~6 s on an idle 2-core host; CI runs beside others


def test_make_run_model_builds_and_serves_that_checkpoint(tmp_path):
    """MODEL=<dir>: a Llama-family checkpoint (a tiny random one, saved with save_pretrained and
    read through the real loader) as published, INT8 and 4-bit, served and chatting."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    from openai import OpenAI
    from transformers import LlamaConfig, LlamaForCausalLM

    from optimizer.text.corpus import load_corpus
    from optimizer.text.tokenizer import train_tokenizer

    checkpoint = tmp_path / "Acme-Tiny-Chat"  # bundles are named by its last part, lower case
    checkpoint.mkdir()
    tokenizer = train_tokenizer(load_corpus("pydoc").train[:40], 300,
                                ("<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"))
    tokenizer.save(str(checkpoint / "tokenizer.json"))
    LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                                 intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                 max_position_embeddings=1024)).save_pretrained(checkpoint)
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"}))

    port = free_port()
    proc, _ = _make_run(tmp_path, port, 900, f"MODEL={checkpoint}", until="/v1/chat/completions")
    try:
        names = ["acme-tiny-chat", "acme-tiny-chat-int4", "acme-tiny-chat-int8"]
        assert f"EdgeGen is serving {', '.join(names)} at" in proc.output
        assert f"set model.checkpoint={checkpoint}, name=acme-tiny-chat" in proc.output
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="acme-tiny-chat-int4", max_tokens=4,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.role == "assistant" and reply.usage.prompt_tokens > 0
    finally:
        proc.stop()
