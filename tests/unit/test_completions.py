"""POST /v1/completions on the real tiny GPT-2 bundle (beside the tiny DCGAN): whole and
streamed answers, stop strings, seeds, errors, metrics."""

from __future__ import annotations

import json

import pytest

from edge_app.state import of
from edge_app.bundle import load_bundle
from edge_app.textgen import TextModel


@pytest.fixture(scope="module")
def text_client(gpt2_bundle, dcgan_bundle):
    from edge_app import create_app

    app = create_app({"bundles": [str(gpt2_bundle), str(dcgan_bundle)], "power_sensor": "none",
                      "max_tokens_per_request": 64})
    return app.test_client()


def sse_events(resp) -> list:
    """A streamed test-client response's events, checked to end with [DONE]."""
    lines = [ln for ln in resp.get_data(as_text=True).split("\n\n") if ln]
    resp.close()  # as a WSGI server does: the stream gives its admission slot back
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


def test_greedy_completion_is_the_runtimes_greedy_decode(text_client, gpt2_bundle):
    r = text_client.post("/v1/completions", json={"model": "tiny-gpt2", "prompt": "The assert",
                                                  "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    model = TextModel.load(load_bundle(gpt2_bundle))
    ids = model.generate(model.encode("The assert"), 12).tokens
    assert choice["text"] == model.decode(ids)
    assert body["usage"] == {"prompt_tokens": len(model.encode("The assert")),
                             "completion_tokens": len(ids),
                             "total_tokens": len(model.encode("The assert")) + len(ids)}
    timings = body["timings"]
    assert timings["time_to_first_token_ms"] > 0 and timings["generated_tokens"] == len(ids)
    assert timings["energy_j"] is None and "power sensor" in timings["energy_note"]


def test_stream_sends_the_same_text_as_one_answer_then_done(text_client):
    req = {"model": "tiny-gpt2", "prompt": "Assignment statements", "max_tokens": 20,
           "temperature": 0.9, "top_k": 40, "seed": 5}
    whole = text_client.post("/v1/completions", json=req).get_json()
    resp = text_client.post("/v1/completions", json={**req, "stream": True,
                                                     "stream_options": {"include_usage": True}})
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    *events, usage = sse_events(resp)
    assert "".join(e["choices"][0]["text"] for e in events) == whole["choices"][0]["text"]
    assert events[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(e["usage"] is None for e in events)  # OpenAI's include_usage: one more event
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


def test_seed_makes_sampling_repeatable(text_client):
    req = {"prompt": "The for statement", "max_tokens": 16, "temperature": 1.0, "seed": 11}
    a, b = (text_client.post("/v1/completions", json=req).get_json() for _ in range(2))
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_stop_string_ends_the_answer_without_it(text_client):
    base = {"prompt": "The", "max_tokens": 40, "temperature": 0}
    full = text_client.post("/v1/completions", json=base).get_json()["choices"][0]["text"]
    stop = full[5:8]
    assert stop and stop in full
    r = text_client.post("/v1/completions", json={**base, "stop": [stop]}).get_json()
    assert r["choices"][0]["text"] == full[:full.index(stop)]
    assert r["choices"][0]["finish_reason"] == "stop"
    events = sse_events(text_client.post("/v1/completions", json={**base, "stop": stop,
                                                               "stream": True}))
    assert "".join(e["choices"][0]["text"] for e in events) == full[:full.index(stop)]


@pytest.mark.parametrize("body, status, message", [
    ({"prompt": "x", "max_tokens": 65}, 400, "'max_tokens' must be between 1 and 64"),
    ({"prompt": "word " * 200, "max_tokens": 10}, 400, "exceeds the model's context length"),
    ({"prompt": "x", "n": 2}, 400, "'n' is not supported"),
    ({"prompt": "x", "temperature": "hot"}, 400, "'temperature' must be a number"),
    ({"prompt": "x", "top_p": 0}, 400, "'top_p' must be within (0.0, 1.0]"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "'stop' must be"),
    ({"prompt": 7}, 400, "'prompt' must be a string"),
    ({"prompt": "x", "bogus": 1}, 400, "unknown parameter(s) ['bogus']"),
    ({"prompt": "x", "model": "tiny-dcgan"}, 400, "is a image-generation model; use "
                                                  "/v1/images/generations"),
    ({"prompt": "x", "model": "nope"}, 404, "model 'nope' is not loaded"),
])
def test_bad_completion_requests_get_a_json_4xx(text_client, body, status, message):
    r = text_client.post("/v1/completions", json=body)
    assert r.status_code == status
    assert message in r.get_json()["error"]["message"]


def test_text_model_on_the_image_route_is_refused(text_client):
    r = text_client.post("/v1/images/generations", json={"model": "tiny-gpt2"})
    assert r.status_code == 400 and "use /v1/completions" in r.get_json()["error"]["message"]


def test_models_list_text_facts_and_metrics_count_tokens(text_client):
    listed = {m["id"]: m for m in text_client.get("/v1/models").get_json()["data"]}
    text = listed["tiny-gpt2"]
    assert text["task"] == "text-generation" and text["text"]["context_length"] == 128
    assert text["text"]["heads_per_layer"] == [4, 4] and "image" in listed["tiny-dcgan"]
    streamed = text_client.post("/v1/completions", json={"prompt": "A", "max_tokens": 3,
                                                         "temperature": 0, "stream": True})
    streamed.get_data()
    streamed.close()
    metrics = text_client.get("/metrics").get_data(as_text=True)
    assert 'edgegen_generated_tokens_total{model="tiny-gpt2"}' in metrics
    assert 'edgegen_time_to_first_token_seconds_count{model="tiny-gpt2"}' in metrics
    assert ('edgegen_requests_total{endpoint="/v1/completions",model="tiny-gpt2",status="200"}'
            in metrics)


def test_a_prompt_is_tokenized_only_inside_admission(gpt2_bundle):
    """Cheap limits first: a prompt longer than the context could ever hold (context length x
    the longest token) is refused without tokenizing; a shorter one is tokenized holding an
    admission slot, so with every slot busy it waits (503 here: no queue) instead of costing
    CPU and memory beside the running generations."""
    from edge_app import create_app

    app = create_app({"bundles": [str(gpt2_bundle)], "power_sensor": "none",
                      "max_concurrent": 1, "max_queue": 0})
    client, model = app.test_client(), of(app).models.models["tiny-gpt2"]
    encoded = []
    model.encode = lambda text, special=True, real=model.encode: \
        encoded.append(len(text)) or real(text, special)
    too_long = "\u4e00" * (model.max_prompt_chars + 1)
    r = client.post("/v1/completions", json={"prompt": too_long, "max_tokens": 4})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "context_length_exceeded"
    assert "characters" in r.get_json()["error"]["message"] and encoded == []

    fits_in_chars = "\u4e00" * (model.max_prompt_chars // 2)  # but not in tokens
    admission = of(app).admission
    admission.acquire()  # a generation holds the only slot
    try:
        for stream in (False, True):
            r = client.post("/v1/completions", json={"prompt": fits_in_chars, "max_tokens": 4,
                                                     "stream": stream})
            assert r.status_code == 503 and encoded == [], r.get_json()
    finally:
        admission.release()
    for stream in (False, True):
        r = client.post("/v1/completions", json={"prompt": fits_in_chars, "max_tokens": 4,
                                                 "stream": stream})
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "context_length_exceeded"
    assert encoded == [len(fits_in_chars)] * 2
    assert (admission.active, admission.waiting) == (0, 0)  # every slot given back
