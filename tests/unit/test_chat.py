"""Chat templates render exactly as transformers' apply_chat_template renders them for the same
tokenizer files, in the sandbox, with the template's own refusals as clear errors."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from edge_app.chat import ChatTemplateError, render
from optimizer.families.llama import CHATML

# Templates of the shapes the small chat models ship (paraphrased to their features: a default
# system turn on loop.first, bos_token, namespace() state, raise_exception, loop controls).
SMOLLM2_LIKE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")
ALTERNATING = (
    "{% set ns = namespace(turns=0) %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% set ns.turns = ns.turns + 1 %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% if ns.turns > 99 %}{% break %}{% endif %}{% endfor %}")

CONVERSATION = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "What does the while statement do?"},
    {"role": "assistant", "content": "It repeats a block while a condition is true."},
    {"role": "user", "content": "And  for?  Ünïcode 🐍 too."},
]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}


@pytest.fixture(scope="module")
def transformers_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from optimizer.text.corpus import load_corpus
    from optimizer.text.tokenizer import train_tokenizer

    tok = train_tokenizer(load_corpus("pydoc").train[:20], 300,
                          ("<s>", "</s>", "<|im_start|>", "<|im_end|>"))

    def make(template: str):
        return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **SPECIAL)
    return make


@pytest.mark.parametrize("template", [CHATML, SMOLLM2_LIKE, LLAMA3_LIKE],
                         ids=["chatml", "smollm2", "llama3"])
@pytest.mark.parametrize("turns", [1, 2, 4])
def test_multi_turn_renders_as_transformers_apply_chat_template(template, turns,
                                                                transformers_tokenizer):
    messages = CONVERSATION[len(CONVERSATION) - turns:]
    reference = transformers_tokenizer(template).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert render(template, messages, SPECIAL) == reference
    without = transformers_tokenizer(template).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=False)
    assert render(template, messages, SPECIAL, add_generation_prompt=False) == without


def test_a_templates_own_refusal_is_a_clear_error(transformers_tokenizer):
    good = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert render(ALTERNATING, good, SPECIAL) == transformers_tokenizer(
        ALTERNATING).apply_chat_template(good, tokenize=False)
    with pytest.raises(ChatTemplateError, match="^Conversation roles must alternate"):
        render(ALTERNATING, [{"role": "assistant", "content": "x"}], SPECIAL)


def test_the_sandbox_keeps_templates_away_from_python_internals():
    escapes = ["{{ messages.__class__.__mro__ }}", "{{ ''.__class__.__subclasses__() }}",
               "{% set ns = namespace() %}{% set ns._x = 1 %}",
               "{{ messages.append('x') }}"]  # immutable: no mutation of the input
    for source in escapes:
        with pytest.raises((ChatTemplateError, SecurityError)):
            render(source, [{"role": "user", "content": "x"}], SPECIAL)
    # what the template sees is plain JSON, whatever the caller passed
    assert render("{{ messages[0]['content'] }}", [{"role": "user", "content": object()}],
                  SPECIAL) == "<object>"


def test_a_broken_template_is_named_before_any_render():
    from edge_app.chat import check

    check(CHATML)
    with pytest.raises(ChatTemplateError, match=r"unexpected '}', expected '\]' \(line 1\)"):
        check("{{ messages[ }}")
    with pytest.raises(ChatTemplateError, match="'break' outside loop"):
        check("{% break %}")  # Jinja2 parses it; the Python it compiles to does not
