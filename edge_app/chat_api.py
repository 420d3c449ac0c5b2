"""POST /v1/chat/completions: OpenAI's chat API for text bundles that carry a chat template.

The conversation is rendered with the bundle's own template (edge_app/chat.py: Jinja2's
sandbox, transformers' rules, `add_generation_prompt`) and the rendered text tokenized once,
without adding special tokens again (the template wrote them), as transformers'
`apply_chat_template` tokenizes. Generation ends at any of the bundle's eos ids (a chat model
ends its turn with its own token). Everything else is the completions route's: the cheap
limits, validation and rendering before admission, tokenizing inside it, the same metrics
(endpoint="/v1/chat/completions") and timings (edge_app/completions.py `serve`).

OpenAI fields, decided one by one (docs/serving.md#chat says the same):
- honoured: model, messages, max_completion_tokens (or the older max_tokens; absent: as many
  as max_tokens_per_request and the context leave), temperature, top_p, top_k (an extension,
  as llama.cpp has it), seed, stop, stream, stream_options.include_usage, user (ignored);
- accepted only where they ask for nothing (a 400 names the field otherwise): n = 1,
  presence_penalty and frequency_penalty 0, logit_bias {}, logprobs false, top_logprobs 0,
  tools [], tool_choice "none", response_format {"type": "text"}, store false;
- a message's content is a string or a list of text parts, joined with "\\n" (as vLLM and
  llama.cpp join them); other parts (images, audio) get a 400.
"""

from __future__ import annotations

from typing import Any

from .api import bp, model_field, pick_model
from .chat import ChatTemplateError, render
from .completions import MAX_PROMPT_CHARS, SAMPLING_FIELDS, Format, TextRequest, serve
from .errors import InvalidRequest
from .shapes import Array, Choice, Either, Int, Limits, Only, Shape, Str, only_value

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 1024
MAX_PARTS = 64


class _TextPart(Shape):
    """{"type": "text", "text": ...}; a part of another type is named in the 400."""

    def check(self, value, name, lim):
        if isinstance(value, dict) and value.get("type") != "text":
            raise InvalidRequest(f"'{name}' is a {str(value.get('type'))[:40]!r} part: this model "
                                 f"reads text parts only", param="messages")
        return super().check(value, name, lim)["text"]


TEXT_PART = _TextPart({"type": Choice(("text",)), "text": Str(MAX_PROMPT_CHARS)},
                      required=("type", "text"))

MESSAGE = Shape({
    "role": Choice(ROLES),
    "content": Either((str, Str(MAX_PROMPT_CHARS)), (list, Array(TEXT_PART, 1, MAX_PARTS)),
                      description="A string, or a list of text parts (joined with a newline)."),
    "name": Str(64, description="Passed to the template, which may show it."),
}, required=("role", "content"))

_NO_TOOLS = "tool calling is not supported by this server"
CHAT = Shape({
    "model": model_field("chat"),
    "messages": Array(MESSAGE, 1, MAX_MESSAGES, description="The conversation so far; its "
                      "rendered prompt + the tokens asked for must fit the model's context."),
    "max_completion_tokens": Int(1, lambda lim: lim.max_tokens, description="Default: as "
                                 "many as max_tokens_per_request and the context leave."),
    "max_tokens": Int(1, lambda lim: lim.max_tokens,
                      description="The older name of max_completion_tokens."),
    **SAMPLING_FIELDS,
    "logit_bias": Only({"type": "object", "maxProperties": 0}, lambda v: v == {},
                       "token biases are not applied (an empty object only)"),
    "logprobs": only_value(False, "boolean", "log probabilities are not returned"),
    "top_logprobs": only_value(0, "integer", "log probabilities are not returned"),
    "tools": Only({"type": "array", "maxItems": 0}, lambda v: v == [], _NO_TOOLS),
    "tool_choice": Only({"type": "string", "enum": ["none"]}, lambda v: v == "none", _NO_TOOLS),
    "response_format": Only(
        {"type": "object", "additionalProperties": False, "required": ["type"],
         "properties": {"type": {"const": "text"}}}, lambda v: v == {"type": "text"},
        "only {\"type\": \"text\"}: no JSON mode or schema-constrained output"),
    "store": only_value(False, "boolean", "nothing is stored on the device"),
}, required=("messages",), unknown_hint=" (see docs/serving.md#chat)")

CHAT_FORMAT = Format(
    "chatcmpl", "chat.completion", "chat.completion.chunk",
    choice=lambda text, finish: {"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": None, "finish_reason": finish},
    delta=lambda text: {"index": 0, "delta": {"content": text}, "logprobs": None,
                        "finish_reason": None},
    closing=lambda finish: {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish},
    opening={"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None})


def conversation(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Parsed messages -> what the template sees: role, content as one string, name if any;
    at most MAX_PROMPT_CHARS characters of content in all."""
    out, total = [], 0
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = "\n".join(content)
        total += len(content)
        if total > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"'messages' hold more than {MAX_PROMPT_CHARS} characters of "
                                 f"content", param="messages")
        turn = {"role": message["role"], "content": content}
        if message["name"] is not None:
            turn["name"] = message["name"]
        out.append(turn)
    return out


def chat_request(body: dict[str, Any], registry, lim: Limits) -> TextRequest:
    model = pick_model(registry, CHAT.one(body, "model", lim), "text-generation", chat=True)
    body = CHAT.parse(body, lim)
    asked = {k: body[k] for k in ("max_completion_tokens", "max_tokens") if body[k] is not None}
    if len(set(asked.values())) > 1:
        raise InvalidRequest(f"'max_completion_tokens' and 'max_tokens' differ "
                             f"({asked['max_completion_tokens']} vs {asked['max_tokens']}): "
                             f"send one", param="max_completion_tokens")
    spec = model.spec
    try:
        prompt = render(spec.chat_template, conversation(body["messages"]), spec.special_tokens,
                        add_generation_prompt=True)
    except ChatTemplateError as exc:
        raise InvalidRequest(f"the model's chat template refused this conversation: {exc}"[:600],
                             param="messages", code="invalid_conversation") from None
    return TextRequest.of(model, prompt, body, next(iter(asked.values()), None),
                          add_special_tokens=False, param="messages")


@bp.post("/chat/completions")
def chat_completions():
    """Answer the conversation's next assistant turn (OpenAI-compatible)."""
    return serve(chat_request, CHAT_FORMAT)
