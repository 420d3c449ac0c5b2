"""POST /v1/chat/completions on the real tiny Llama bundle (ChatML template) beside the
template-less tiny GPT-2: the prompt is transformers' apply_chat_template of the bundle's own
files, the reply is the runtime's greedy decoding of it, streamed or whole; bad input is a 4xx
JSON error naming the field, refused before it queues."""

from __future__ import annotations


import pytest

from edge_app.bundle import load_bundle
from edge_app.state import of
from edge_app.textgen import TextModel

from .test_completions import sse_events

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What does the while statement do?"},
    {"role": "assistant", "content": "It repeats a block while a condition is true."},
    {"role": "user", "content": "And the for statement?"},
]


@pytest.fixture(scope="module")
def chat_app(llama_bundle, gpt2_bundle):
    from edge_app import create_app

    return create_app({"bundles": [str(llama_bundle), str(gpt2_bundle)], "power_sensor": "none",
                       "max_tokens_per_request": 48})


@pytest.fixture(scope="module")
def chat_client(chat_app):
    return chat_app.test_client()


@pytest.fixture(scope="module")
def reference(llama_bundle):
    """transformers' tokenizer of the bundle's own files, with its template and tokens."""
    from transformers import PreTrainedTokenizerFast

    bundle = load_bundle(llama_bundle)
    gen = bundle.manifest.generation
    tok = PreTrainedTokenizerFast(tokenizer_file=str(llama_bundle / gen.tokenizer_file),
                                  chat_template=gen.chat_template, **gen.special_tokens)
    return tok, TextModel.load(bundle)


def _ids(tok, messages) -> list[int]:
    """transformers' own tokenized prompt (a list, or a BatchEncoding in transformers 5)."""
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": "tiny-llama", **body})


@pytest.mark.parametrize("turns", [2, 4])
def test_reply_is_greedy_decoding_of_transformers_rendered_prompt(chat_client, reference,
                                                                   turns):
    tok, model = reference
    messages = CONVERSATION[:turns]
    ids = _ids(tok, messages)
    want = model.generate(ids, 12)
    r = _chat(chat_client, messages=messages, max_completion_tokens=12, temperature=0)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": model.decode(want.tokens)}
    assert choice["finish_reason"] == want.finish_reason
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(want.tokens),
                             "total_tokens": len(ids) + len(want.tokens)}
    assert body["timings"]["time_to_first_token_ms"] > 0
    assert body["timings"]["energy_j"] is None and body["timings"]["energy_note"]


def test_stream_sends_role_then_deltas_then_finish_then_usage(chat_client):
    req = {"messages": CONVERSATION, "max_tokens": 16, "temperature": 0.8, "seed": 3}
    whole = _chat(chat_client, **req).get_json()
    resp = _chat(chat_client, **req, stream=True, stream_options={"include_usage": True})
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    first, *deltas, last, usage = sse_events(resp)
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == first["id"]
               for e in (first, *deltas, last, usage))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["choices"][0]["finish_reason"] is None for e in deltas)
    assert "".join(e["choices"][0]["delta"]["content"] for e in deltas) == \
        whole["choices"][0]["message"]["content"]
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                  "finish_reason": whole["choices"][0]["finish_reason"]}
    assert last["timings"]["generated_tokens"] == whole["usage"]["completion_tokens"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]


def test_text_parts_are_joined_and_stop_and_default_length_apply(chat_client, reference):
    tok, model = reference
    parts = [{"type": "text", "text": "What does"}, {"type": "text", "text": "pass do?"}]
    joined = [{"role": "user", "content": "What does\npass do?"}]
    a = _chat(chat_client, messages=[{"role": "user", "content": parts}], temperature=0,
              max_tokens=8).get_json()
    b = _chat(chat_client, messages=joined, temperature=0, max_tokens=8).get_json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    # no max_tokens: up to the cap (48) or what the context (128) leaves
    ids = _ids(tok, joined)
    full = _chat(chat_client, messages=joined, temperature=0).get_json()
    want = model.generate(ids, 48)
    assert full["usage"]["completion_tokens"] == len(want.tokens)
    text = full["choices"][0]["message"]["content"]
    if len(text) > 4:  # a stop string from the middle of the answer ends it there
        stop = text[2:4]
        cut = _chat(chat_client, messages=joined, temperature=0, stop=stop).get_json()
        assert cut["choices"][0]["message"]["content"] == text[:text.index(stop)]
        assert cut["choices"][0]["finish_reason"] == "stop"


BIG = "x" * 100_000


@pytest.mark.parametrize("body, status, param, fragment", [
    ({"messages": []}, 400, "messages", "at least 1"),
    ({}, 400, "messages", "'messages' is required"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages", "must be one of"),
    ({"messages": [{"role": "user"}]}, 400, "messages", "'messages[0].content' is required"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages", "a string or a list"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages", "text parts only"),
    ({"messages": "hi"}, 400, "messages", "must be a list"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, 400, "messages",
     "unknown parameter(s) in 'messages[0]'"),
    ({"messages": [{"role": "user", "content": BIG}, {"role": "user", "content": "y"}]}, 400,
     "messages", "more than 100000 characters"),
    ({"model": "tiny-gpt2", "messages": [{"role": "user", "content": "x"}]}, 400, "model",
     "a plain prompt at /v1/completions"),
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model",
     "not loaded"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n", "not supported"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, 400,
     "tools", "tool calling is not supported"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 10}}, 400,
     "logit_bias", "not applied"),
    ({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": 0.5}, 400,
     "frequency_penalty", "not applied"),
    ({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_object"}}, 400, "response_format", "no JSON mode"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 4,
      "max_completion_tokens": 5}, 400, "max_completion_tokens", "differ"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 49}, 400, "max_tokens",
     "between 1 and 48"),
    ({"messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 8}, 400,
     "max_tokens", "context length"),
    ({"messages": [{"role": "user", "content": "x"}], "functions": []}, 400, "functions",
     "unknown parameter(s) ['functions']"),
])
def test_bad_chat_requests_get_a_json_4xx_naming_the_field(chat_client, body, status, param,
                                                           fragment):
    r = chat_client.post("/v1/chat/completions", json={"model": "tiny-llama", **body}
                         if "model" not in body else body)
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    error = r.get_json()["error"]
    assert fragment in error["message"] and error["param"] == param, error


def test_100_messages_of_100kb_are_refused_with_a_4xx(llama_bundle):
    from edge_app import create_app

    body = {"messages": [{"role": "user", "content": "y" * 100_000}] * 100}
    for limit, status in ((1 << 20, 413), (16 << 20, 400)):  # the default, and one past it
        client = create_app({"bundles": [str(llama_bundle)], "power_sensor": "none",
                             "max_body_bytes": limit}).test_client()
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == status and r.get_json()["error"]["message"], r.get_data()[:200]


def test_template_refusals_are_400_and_checked_before_queueing(llama_bundle):
    """A template that raises (roles must alternate, say) is a 400; and every check, the
    rendering included, runs before the admission queue: with the only slot busy a bad
    request still gets its 400, a good one the 503."""
    from edge_app import create_app

    app = create_app({"bundles": [str(llama_bundle)], "power_sensor": "none",
                      "max_concurrent": 1, "max_queue": 0})
    spec = of(app).models.models["tiny-llama"].spec  # this app's own
    object.__setattr__(spec, "chat_template", "{% if messages[0]['role'] != 'user' %}"
                       "{{ raise_exception('first turn: user') }}{% endif %}" + spec.chat_template)
    client, admission = app.test_client(), of(app).admission
    admission.acquire()  # a generation holds the only slot
    try:
        for stream in (False, True):
            r = _chat(client, messages=CONVERSATION[:2], stream=stream)
            assert r.status_code == 400, r.get_data()[:300]
            assert "first turn: user" in r.get_json()["error"]["message"]
            assert r.get_json()["error"]["code"] == "invalid_conversation"
            r = _chat(client, messages=CONVERSATION[1:2], max_tokens=2, stream=stream)
            assert r.status_code == 503
    finally:
        admission.release()
    r = _chat(client, messages=CONVERSATION[1:2], max_tokens=2)
    assert r.status_code == 200, r.get_json()


def test_models_say_who_can_chat_and_metrics_label_the_route(chat_client):
    listed = {m["id"]: m for m in chat_client.get("/v1/models").get_json()["data"]}
    llama, gpt2 = listed["tiny-llama"], listed["tiny-gpt2"]
    assert llama["text"]["chat"] is True and gpt2["text"]["chat"] is False
    assert llama["endpoints"] == ["/v1/completions", "/v1/chat/completions"]
    assert llama["text"]["context_length"] == 128
    assert llama["text"]["eos_token_ids"][0] == llama["text"]["eos_token_id"]
    _chat(chat_client, messages=CONVERSATION[1:2], max_tokens=2, temperature=0)
    metrics = chat_client.get("/metrics").get_data(as_text=True)
    assert ('edgegen_requests_total{endpoint="/v1/chat/completions",model="tiny-llama",'
            'status="200"}') in metrics
    assert 'edgegen_generated_tokens_total{model="tiny-llama"}' in metrics
