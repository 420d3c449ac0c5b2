"""The official `openai` client against a real gunicorn server holding a text and an image
bundle side by side, behind an API key: completions whole and streamed."""

from __future__ import annotations

import pytest

from .serverproc import ServerProcess

pytestmark = pytest.mark.integration


def test_openai_client_gets_completions_with_and_without_streaming(gpt2_bundle, dcgan_bundle):
    from openai import OpenAI

    from openai import AuthenticationError

    key = "sk-edge-0123456789abcdef0123"
    server = ServerProcess(gpt2_bundle, dcgan_bundle, env={"EDGEGEN_API_KEYS": key})
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
            assert models == {"tiny-gpt2", "tiny-dcgan"}
    finally:
        code, _ = server.stop()
    assert code == 0
