"""The companion page chats with the tiny Llama bundles (ChatML template) in headless Chromium,
with onnxruntime-web's wasm backend, against the server's Python path on the same bundles:

- the page renders a conversation with @huggingface/jinja to the text edge_app.chat.render
  makes of it (ChatML and the unit tests' templates, one written with indented block lines, and
  a template's own raise_exception), and tokenizes it (no special tokens added) to the ids of
  `tokenizers`;
- FP32: greedy replies over two turns are, token for token, Python ONNX Runtime's (Decoder),
  and the text the server's POST /v1/chat/completions answers;
- INT8 and INT4 (MatMulNBits, GatherBlockQuantized: contrib ops) run too, with no op missing,
  but the wasm kernels compute MatMulNBits in float32 whatever the node's accuracy_level (the
  server's CPU kernels take accuracy_level 4 to int8 compute), so their greedy replies are
  Python ONNX Runtime's on the same graph at accuracy_level 1 (the server's replies, at
  accuracy_level 4, are compared and printed: they may part where two logits are close);
- a graph with an op onnxruntime-web lacks is refused with a message naming the op;
- a chat turn is counted for the fleet under /v1/chat/completions; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
from tokenizers import Tokenizer

from edge_app.bundle import load_bundle
from edge_app.chat import render
from edge_app.textgen import Decoder, session_options
from optimizer.families.llama import CHATML

from ..integration.serverproc import ServerProcess
from ..unit.test_chat import ALTERNATING, CONVERSATION, LLAMA3_LIKE, SMOLLM2_LIKE, SPECIAL
from .test_companion import (apk_assets, assert_local, assert_no_console_errors, open_page,
                             pushed_samples, request_urls, set_field)

pytestmark = [pytest.mark.browser, pytest.mark.integration]
SYSTEM = "You answer in one line."
TURNS = ("What does the for statement do?", "And the while statement?")
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def llama_bundles(llama_run) -> dict[str, Path]:
    """The tiny Llama bundles by precision: fp32, int8, int4."""
    return {load_bundle(b.path).manifest.precision: b.path for b in llama_run[0].bundles}


@pytest.fixture(scope="module")
def server(llama_bundles, ort_web_dir):
    proc = ServerProcess(*llama_bundles.values(),
                         env={"EDGEGEN_COMPANION_ORT_DIR": str(ort_web_dir)})
    proc.wait_ready()
    yield proc
    code, output = proc.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


# --------------------------------------------------------------------------- references


def float_compute(model: Path) -> bytes:
    """The graph with every MatMulNBits at accuracy_level 1 (float32 compute), as the wasm
    kernels run it."""
    graph = onnx.load(str(model))
    for node in graph.graph.node:
        for attr in node.attribute:
            if node.op_type == "MatMulNBits" and attr.name == "accuracy_level":
                attr.i = 1
    return graph.SerializeToString()


def python_chat(bundle: Path, messages: list[dict], max_tokens: int,
                as_wasm_computes: bool = False) -> tuple[str, list[int], list[int], str]:
    """The server's path: render, tokenize once without special tokens (as
    apply_chat_template(tokenize=True)), greedy decode to an eos id: (prompt, ids, tokens,
    reply)."""
    b = load_bundle(bundle)
    gen = b.manifest.generation
    prompt = render(gen.chat_template, messages, gen.special_tokens)
    tok = Tokenizer.from_file(str(bundle / gen.tokenizer_file))
    ids = tok.encode(prompt, add_special_tokens=False).ids
    if as_wasm_computes:
        decoder = Decoder(ort.InferenceSession(float_compute(b.model_path), session_options(),
                                               providers=["CPUExecutionProvider"]), gen)
    else:
        decoder = Decoder.open(b.model_path, gen)
    tokens = decoder.generate(ids, max_tokens).tokens
    return prompt, ids, tokens, tok.decode(tokens)


def server_reply(server, model: str, messages: list[dict]) -> tuple[str, int, str]:
    """POST /v1/chat/completions, greedy: (reply, completion tokens, finish reason)."""
    r = requests.post(server.base + "/v1/chat/completions", timeout=30, json={
        "model": model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    return (choice["message"]["content"], body["usage"]["completion_tokens"],
            choice["finish_reason"])


# --------------------------------------------------------------------------- page driving


def chat_turn(browser, message: str) -> dict:
    """Send one message; wait for the reply; the page's raw result of that turn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    set_field(browser, "message", message)
    before = int(browser.execute_script("return document.body.dataset.runs || '0'"))
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 120).until(
        lambda d: int(d.execute_script("return document.body.dataset.runs || '0'")) > before)
    page = browser.execute_script("return window.companion.last.chat")
    assert page is not None and page["messages"][-1]["content"] == message, \
        browser.find_element(By.ID, "text-figures").text
    return page


def start_chat(browser, url: str, bundle: str, system: str = "") -> None:
    """Open the page at `url`, pick `bundle`, and set a greedy chat up."""
    from selenium.webdriver.support.ui import Select
    from selenium.webdriver.common.by import By

    open_page(browser, url)
    Select(browser.find_element(By.ID, "text-model")).select_by_value(bundle)
    assert browser.find_element(By.ID, "chat-box").is_displayed()
    assert not browser.find_element(By.ID, "completion-box").is_displayed()
    set_field(browser, "system", system)
    set_field(browser, "temperature", "0")
    set_field(browser, "max-tokens", str(MAX_TOKENS))


def check_turn(page: dict, bundle: Path, as_wasm_computes: bool = False) -> list[int]:
    prompt, ids, tokens, reply = python_chat(bundle, page["messages"], MAX_TOKENS,
                                             as_wasm_computes)
    assert page["prompt"] == prompt
    assert page["promptIds"] == ids
    assert page["tokens"] == tokens and page["text"] == reply
    return tokens


# --------------------------------------------------------------------------- tests


def test_two_turns_with_the_fp32_llama_are_the_servers_tokens(browser, server, llama_bundles,
                                                             pushgateway, capsys):
    from selenium.webdriver.common.by import By

    # setup
    start_chat(browser, f"{server.base}/companion/?pushgateway={pushgateway}&device=chat-phone",
               "tiny-llama", SYSTEM)

    # execute: two turns; the second carries the first reply
    first = chat_turn(browser, TURNS[0])
    second = chat_turn(browser, TURNS[1])

    # assert
    assert first["messages"] == [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": TURNS[0]}]
    assert second["messages"] == [*first["messages"],
                                  {"role": "assistant", "content": first["text"]},
                                  {"role": "user", "content": TURNS[1]}]
    assert second["prompt"].endswith("<|im_start|>assistant\n")
    tokens = [check_turn(page, llama_bundles["fp32"]) for page in (first, second)]
    for page in (first, second):  # the server's own route answers alike
        assert server_reply(server, "tiny-llama", page["messages"]) == \
            (page["text"], len(page["tokens"]), page["finishReason"])
    transcript = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "#transcript p")]
    assert len(transcript) == 4 and transcript[2].startswith("user")
    figures = browser.find_element(By.ID, "text-figures").text
    assert "tokens/s" in figures and "first token" in figures
    pushed = pushed_samples(pushgateway, "chat-phone")
    assert pushed["edgegen_requests_total", (("endpoint", "/v1/chat/completions"),
                                             ("model", "tiny-llama"), ("status", "200"))] == 2
    assert pushed["edgegen_generated_tokens_total", (("model", "tiny-llama"),)] == \
        len(tokens[0]) + len(tokens[1])
    assert_local(request_urls(browser))
    assert_no_console_errors(browser)
    with capsys.disabled():
        print(f"\ncompanion chat, tiny-llama fp32: greedy {[len(t) for t in tokens]} tokens per "
              f"turn equal to Python ONNX Runtime's and /v1/chat/completions'")


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_weight_only_quantized_llamas_run_in_the_page(browser, server, llama_bundles, precision,
                                                      capsys):
    # setup
    name = load_bundle(llama_bundles[precision]).manifest.name
    start_chat(browser, f"{server.base}/companion/", name)

    # execute
    page = chat_turn(browser, TURNS[0])

    # assert: MatMulNBits (and INT4's GatherBlockQuantized) ran; float32 compute's tokens
    ops = {n.op_type for n in onnx.load(str(llama_bundles[precision] / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and ("GatherBlockQuantized" in ops) == (precision == "int4")
    tokens = check_turn(page, llama_bundles[precision], as_wasm_computes=True)
    served = python_chat(llama_bundles[precision], page["messages"], MAX_TOKENS)[2]
    reply = server_reply(server, name, page["messages"])[0]
    assert reply == Tokenizer.from_file(str(llama_bundles[precision] / "tokenizer.json")).decode(
        served)  # the server's route is the accuracy_level 4 path
    assert_no_console_errors(browser)
    agree = next((i for i, (a, b) in enumerate(zip(tokens, served)) if a != b),
                 min(len(tokens), len(served)))  # leading tokens equal to the server's
    with capsys.disabled():
        print(f"\ncompanion chat, {name}: {len(tokens)} greedy tokens equal to Python ONNX "
              f"Runtime's at accuracy_level 1; the server's (accuracy_level 4): first {agree} "
              f"of {len(served)} equal; /v1/chat/completions' reply the page's: "
              f"{reply == page['text']}")


# Whitespace control as tokenizer_config.json templates are written: blocks on their own,
# indented lines (trim_blocks and lstrip_blocks decide the prompt), a comment, namespace(),
# tojson on non-ASCII text, `is defined` / `is none` tests.
INDENTED = """{#- a system turn, if any, goes last -#}
{%- set ns = namespace(system='') %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% set ns.system = message['content'] %}
    {% else %}
<|{{ message['role'] }}|>
{{ message['content'] | trim }}
        {% if message.name is defined %}{{ message | tojson }}{% endif %}
<|end|>
    {% endif %}
{% endfor %}
{% if ns.system and tools is none %}
    <|system|>{{ ns.system }}<|end|>
{% endif %}
{% if add_generation_prompt %}
<|assistant|>
{% endif %}
"""


def page_render(browser, template: str, messages: list[dict], special: dict) -> str:
    """The page's render (chat.js), or 'error: <message>'. The messages go as JSON text:
    WebDriver hands objects over with their keys sorted, and tojson keeps the order."""
    return browser.execute_async_script("""
        const [template, messages, special, done] = arguments;
        import("./chat.js").then((c) => done(c.renderChat(template, JSON.parse(messages), special)))
          .catch((err) => done(`error: ${err.message}`));""", template, json.dumps(messages),
                                        special)


def test_the_page_renders_chat_templates_as_the_server(browser, server):
    open_page(browser, server.base + "/companion/")
    named = [*CONVERSATION[:2], {**CONVERSATION[2], "name": "Ünï 🐍"}, *CONVERSATION[3:]]
    for template in (CHATML, SMOLLM2_LIKE, LLAMA3_LIKE, INDENTED):
        for messages in (CONVERSATION, CONVERSATION[1:], named):
            assert page_render(browser, template, messages, SPECIAL) == \
                render(template, messages, SPECIAL)
    good = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert page_render(browser, ALTERNATING, good, SPECIAL) == render(ALTERNATING, good, SPECIAL)
    refused = page_render(browser, ALTERNATING, [{"role": "assistant", "content": "x"}], SPECIAL)
    assert refused == ("error: the model's chat template failed on this conversation: "
                       "Conversation roles must alternate user/assistant/user/assistant/...")


def test_an_op_the_wasm_backend_lacks_is_named(browser, server, tmp_path):
    from onnx import TensorProto, helper

    # setup: a graph with a contrib op no ONNX Runtime build has
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              ir_version=9)  # what ONNX Runtime 1.30 reads
    open_page(browser, server.base + "/companion/")

    # execute: the engine's session path, as loadModel takes it
    message = browser.execute_async_script("""
        const [bytes, done] = arguments;
        import("./engine.js").then((e) => e.createSession("tiny-broken", Uint8Array.from(bytes)))
          .then(() => done("loaded"), (err) => done(err.message));""",
        list(np.frombuffer(model.SerializeToString(), np.uint8).tolist()))

    # assert
    assert message.startswith("bundle tiny-broken cannot run in onnxruntime-web 1.30.0 (wasm): "
                              "no kernel for op com.microsoft:NoSuchOp."), message


def test_the_apks_own_assets_chat_with_the_packed_llama(browser, companion_apk, llama_bundles):
    """The phone's page as the APK lays it out (its own Jinja and onnxruntime-web, the bundle
    packed in the APK): a greedy turn gives Python ONNX Runtime's tokens for the server's
    rendering of the conversation."""
    with apk_assets(companion_apk) as url:
        start_chat(browser, url, "tiny-llama", SYSTEM)
        page = chat_turn(browser, TURNS[0])
        assert page["messages"] == [{"role": "system", "content": SYSTEM},
                                    {"role": "user", "content": TURNS[0]}]
        check_turn(page, llama_bundles["fp32"])
        assert_local(request_urls(browser))
        assert_no_console_errors(browser)
