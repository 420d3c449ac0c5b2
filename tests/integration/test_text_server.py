"""The official `openai` client against a real gunicorn server holding two text bundles (the
Llama one with a chat template) and an image bundle side by side, behind an API key:
completions and chat completions, whole and streamed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .serverproc import ServerProcess

pytestmark = pytest.mark.integration


def test_openai_client_gets_completions_with_and_without_streaming(gpt2_bundle, llama_bundle,
                                                                   dcgan_bundle):
    from openai import OpenAI

    from openai import AuthenticationError, BadRequestError

    key = "sk-edge-0123456789abcdef0123"
    server = ServerProcess(gpt2_bundle, llama_bundle, dcgan_bundle,
                           env={"EDGEGEN_API_KEYS": key})
    server.wait_ready()
    try:
        with OpenAI(base_url=server.base + "/v1", api_key="sk-wrong-0123456789abcdef",
                    max_retries=0) as wrong, pytest.raises(AuthenticationError):
            wrong.completions.create(model="tiny-gpt2", prompt="The", max_tokens=4)
        with OpenAI(base_url=server.base + "/v1", api_key=key) as client:
            whole = client.completions.create(model="tiny-gpt2", prompt="The while statement",
                                              max_tokens=16, temperature=0)
            text = whole.choices[0].text
            assert text and whole.usage.completion_tokens == 16
            assert whole.choices[0].finish_reason == "length"
            chunks = list(client.completions.create(model="tiny-gpt2", prompt="The while statement",
                                                    max_tokens=16, temperature=0, stream=True))
            assert len(chunks) > 2
            assert "".join(c.choices[0].text for c in chunks) == text
            assert chunks[-1].choices[0].finish_reason == "length"
            models = {m.id for m in client.models.list()}
            assert models == {"tiny-gpt2", "tiny-llama", "tiny-dcgan"}

            conversation = [{"role": "system", "content": "Answer briefly."},
                            {"role": "user", "content": "What does the while statement do?"},
                            {"role": "assistant", "content": "It loops."},
                            {"role": "user", "content": "And for?"}]
            whole = client.chat.completions.create(model="tiny-llama", messages=conversation,
                                                   max_completion_tokens=24, temperature=0)
            reply = whole.choices[0].message
            assert reply.role == "assistant" and reply.content
            assert whole.usage.completion_tokens >= 1 and whole.object == "chat.completion"
            chunks = list(client.chat.completions.create(
                model="tiny-llama", messages=conversation, max_completion_tokens=24,
                temperature=0, stream=True, stream_options={"include_usage": True}))
            assert chunks[0].choices[0].delta.role == "assistant"
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
                reply.content
            assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
            assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
            with pytest.raises(BadRequestError, match="chat template"):
                client.chat.completions.create(model="tiny-gpt2", messages=conversation)
        # the startup hint's chat example, run as printed (the key from the environment)
        assert server.wait_for("/v1/chat/completions", 30), server.output[-3000:]
        (hint,) = [ln.strip() for ln in server.output.splitlines()
                   if ln.strip().startswith("curl") and "/v1/chat/completions" in ln]
        assert "tiny-llama" in hint
        run = subprocess.run(["bash", "-c", hint], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "EDGEGEN_KEY": key})
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["choices"][0]["message"]["role"] == "assistant", run.stdout
    finally:
        code, _ = server.stop()
    assert code == 0
