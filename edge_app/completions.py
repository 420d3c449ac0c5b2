"""POST /v1/completions: OpenAI-compatible text completion, whole or streamed (server-sent
events ending with `data: [DONE]`); and `serve`, which runs every text request (the chat
route's too, edge_app/chat_api.py) the same way.

Work is bounded before it is admitted: the body's cheap limits (edge_app/limits.py), then the
prompt's length in characters against what the model's context could hold at most (its
context length times its longest token); only then, holding an admission slot, is the prompt
tokenized and checked in tokens. Sixteen clients sending 99k-character prompts once
tokenized side by side outside admission, and the worker's RSS went from 141 MB to 1 GB for
good; the heap is now also handed back to the system after a long prompt.

Decoding runs the bundle's KV-cache graph one token per step (edge_app.textgen). Text is
released as it becomes final: a trailing incomplete UTF-8 character (byte-level BPE splits
them) and anything that could still turn into a stop string are held back, so a streamed
answer never shows text that the whole answer would not contain.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from flask import Response, jsonify, request, stream_with_context

from .api import bp, json_object, model_field, pick_model
from .errors import InvalidRequest
from .shapes import (Array, Bool, Either, Int, Limits, Num, Shape, Stop, Str, never,
                     only_value)
from .textgen import Generation, PromptTooLong, Sampling, TextModel
from .state import current

MAX_PROMPT_CHARS = 100_000
MAX_TEXT_SEED = 2 ** 63 - 1
TRIM_AFTER_CHARS = 4096  # a prompt this long leaves heap worth handing back


def _malloc_trim():
    """glibc's malloc_trim (returns freed heap to the system), or None elsewhere (musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def give_memory_back() -> None:
    """After a long prompt: the tokenizer's temporary buffers were freed, but glibc keeps
    freed heap in each thread's arena; hand it back so that RSS falls again."""
    if _TRIM is not None:
        _TRIM(0)


# What both text routes take to sample, as they define it (OpenAI's names and defaults).
SAMPLING_FIELDS = {
    "temperature": Num(0.0, 2.0, 1.0, description="0 is greedy."),
    "top_p": Num(0.0, 1.0, 1.0, low_open=True),
    "top_k": Int(0, lambda lim: lim.max_top_k, 0,
                 description="0: no cut; at most the model's vocabulary size."),
    "seed": Int(0, MAX_TEXT_SEED, description="Same seed, same tokens (sampling is repeatable)."),
    "stop": Stop(description="Up to 4 strings; the answer ends before the first, without it."),
    "stream": Bool(description="Server-sent events ending with `data: [DONE]`."),
    "stream_options": Shape({"include_usage": Bool(
        description="One more event before [DONE], with `usage` and empty `choices`.")}),
    "n": only_value(1, "integer", "one choice per request (n = 1)"),
    "presence_penalty": only_value(0, "number", "repetition penalties are not applied (0 only)"),
    "frequency_penalty": only_value(0, "number", "repetition penalties are not applied (0 only)"),
    "user": Str(description="Accepted and ignored (nothing is logged per user)."),
}

COMPLETION = Shape({
    "model": model_field("text-generation"),
    "prompt": Either((str, Str(MAX_PROMPT_CHARS)), (list, Array(Str(MAX_PROMPT_CHARS), 1, 1)),
                     description="Prompt text (or a list of exactly one); prompt tokens + "
                                 "max_tokens must fit the model's context length."),
    "max_tokens": Int(1, lambda lim: lim.max_tokens, 16),
    **SAMPLING_FIELDS,
    "echo": only_value(False, "boolean", "the prompt is not echoed"),
    "logprobs": never("log probabilities are not returned"),
})


@dataclass(frozen=True)
class TextRequest:
    """A text generation both routes run: the prompt text, how to sample, when to stop."""

    model: TextModel
    prompt: str
    max_tokens: int | None  # None: as many as the cap and the context leave (chat's default)
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    add_special_tokens: bool = True  # False for a rendered chat template (it has them)
    prompt_ids: tuple[int, ...] = ()  # set by tokenized(), inside admission

    @classmethod
    def of(cls, model: TextModel, prompt: str, body: dict, max_tokens: int | None,
           add_special_tokens: bool = True, param: str = "prompt") -> "TextRequest":
        """From a parsed body's sampling fields; the prompt checked against what the model's
        context could hold at most, before any tokenizing (`param` names where it came from)."""
        if len(prompt) > model.max_prompt_chars:  # cannot fit, whatever it tokenizes to
            raise InvalidRequest(f"the prompt has {len(prompt)} characters; model "
                                 f"'{model.name}' holds {model.spec.context_length} tokens of "
                                 f"at most {model.max_token_chars} characters each",
                                 param=param, code="context_length_exceeded")
        if body["top_k"] > model.spec.vocab_size:
            raise InvalidRequest(f"'top_k' must be at most model '{model.name}''s vocabulary "
                                 f"size {model.spec.vocab_size}", param="top_k")
        seed = body["seed"]
        sampling = Sampling(temperature=body["temperature"], top_p=body["top_p"],
                            top_k=body["top_k"],
                            seed=secrets.randbelow(MAX_TEXT_SEED) if seed is None else seed)
        return cls(model, prompt, max_tokens, sampling, body["stop"] or (), body["stream"],
                   bool((body["stream_options"] or {}).get("include_usage")), add_special_tokens)

    def tokenized(self, cap: int) -> "TextRequest":
        """The request with its prompt ids (call holding an admission slot: tokenizing a long
        prompt costs CPU and memory) and its max_tokens (at most `cap`); InvalidRequest when
        they do not fit the context."""
        model = self.model
        try:
            ids = model.encode(self.prompt, self.add_special_tokens) if self.prompt \
                else [model.spec.bos_token_id]
            max_tokens = self.max_tokens
            if max_tokens is None:
                max_tokens = max(1, min(cap, model.spec.context_length - len(ids)))
            model.check_length(len(ids), max_tokens)
        except PromptTooLong as exc:
            raise InvalidRequest(str(exc), param="max_tokens", code="context_length_exceeded") \
                from None
        finally:
            if len(self.prompt) >= TRIM_AFTER_CHARS:
                give_memory_back()
        return replace(self, prompt_ids=tuple(ids), max_tokens=max_tokens)


def completion_request(body: dict[str, Any], registry, lim: Limits) -> TextRequest:
    model = pick_model(registry, COMPLETION.one(body, "model", lim), "text-generation")
    body = COMPLETION.parse(body, lim)
    prompt = body["prompt"] or ""
    return TextRequest.of(model, prompt if isinstance(prompt, str) else prompt[0], body,
                          body["max_tokens"])


class TextReleaser:
    """Token ids in, final text out: holds back what stop strings or UTF-8 may still change."""

    def __init__(self, model: TextModel, stop: tuple[str, ...]):
        self.model, self.stop = model, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0
        self.stopped = False

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.model.decode(self.ids)
        for s in self.stop:
            at = text.find(s, max(0, self.sent - len(s) + 1))
            if at >= 0:
                self.stopped = True
                return self._release(text[:at], len(text[:at]))
        safe = len(text) - self.hold
        while safe > self.sent and text[safe - 1] == "\ufffd":  # an incomplete character
            safe -= 1
        return self._release(text, safe)

    def flush(self) -> str:
        return "" if self.stopped else self._release(self.model.decode(self.ids), None)

    def _release(self, text: str, upto: int | None) -> str:
        upto = len(text) if upto is None else upto
        out = text[self.sent:upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return out


def _timings(gen: Generation, waited_s: float, energy: dict) -> dict:
    tps = gen.tokens_per_second
    out = {"prompt_tokens": gen.prompt_tokens, "generated_tokens": len(gen.tokens),
           "queue_ms": round(waited_s * 1e3, 3),
           "time_to_first_token_ms": round(gen.prompt_ms, 3),
           "decode_ms": round(gen.decode_ms, 3),
           "tokens_per_second": round(tps, 2) if tps else None, **energy}
    if gen.finish_reason == TIMEOUT:
        out["stopped_by"] = "request_timeout"
    return out


def _finish(gen: Generation) -> str:
    """OpenAI's finish reasons: a timeout is a limit, like max_tokens."""
    return "length" if gen.finish_reason == TIMEOUT else gen.finish_reason


def _usage(gen: Generation) -> dict:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": len(gen.tokens),
            "total_tokens": gen.prompt_tokens + len(gen.tokens)}


TIMEOUT = "timeout"


def _run(req: TextRequest, gen: Generation, deadline: float) -> Iterator[str]:
    """Decode, yielding released text; fills `gen` (tokens, timings, finish reason). Past the
    deadline (monotonic) it stops early with finish reason TIMEOUT."""
    release = TextReleaser(req.model, req.stop)
    for token in req.model.stream(req.prompt_ids, req.max_tokens, req.sampling, result=gen):
        text = release.push(token)
        if text:
            yield text
        if release.stopped:
            gen.finish_reason = "stop"
            return
        if time.monotonic() > deadline and len(gen.tokens) < req.max_tokens:
            gen.finish_reason = TIMEOUT
            break
    if tail := release.flush():
        yield tail


@dataclass(frozen=True)
class Format:
    """How a route writes its answer, whole and streamed: OpenAI's completion or chat shapes.
    `choice(text, finish)` is a whole answer's choice; a stream sends `opening` (if any), then
    `delta(text)` per piece, then `closing(finish)`."""

    id_prefix: str
    whole_object: str
    chunk_object: str
    choice: Callable[[str, str], dict]
    delta: Callable[[str], dict]
    closing: Callable[[str], dict]
    opening: dict | None = None


COMPLETION_FORMAT = Format(
    "cmpl", "text_completion", "text_completion",
    choice=lambda text, finish: {"text": text, "index": 0, "logprobs": None,
                                 "finish_reason": finish},
    delta=lambda text: {"text": text, "index": 0, "logprobs": None, "finish_reason": None},
    closing=lambda finish: {"text": "", "index": 0, "logprobs": None, "finish_reason": finish})


def serve(parse: Callable[[dict, Any, Limits], TextRequest], fmt: Format):
    """Answer this request's text generation: its body read within the cheap limits and
    `parse`d (validated, before any queueing), then admitted, tokenized, decoded, accounted;
    the whole answer as JSON, or server-sent events (with `stream_options.include_usage`, one
    more event before [DONE] with the usage and no choices, as OpenAI sends it)."""
    arrived = time.monotonic()
    state = current()  # models loaded: edge_app/health.py answers 503 "loading" until then
    registry = state.models
    req = parse(json_object(), registry, Limits.of(state.config, registry))
    cfg, stats, power, admission = state.config, state.metrics, state.power, state.admission
    endpoint = request.url_rule.rule
    base = {"id": f"{fmt.id_prefix}-{secrets.token_hex(12)}", "created": int(time.time()),
            "model": req.model.name}
    deadline = arrived + cfg.request_timeout_s

    def account(gen: Generation, started: float) -> dict:
        stats.tokens.labels(req.model.name).inc(len(gen.tokens))
        if gen.tokens or gen.finish_reason == "stop":
            stats.ttft.labels(req.model.name).observe(gen.prompt_ms / 1000.0)
        return power.request_energy(started, time.monotonic(), req.model.name, endpoint)

    if not req.stream:
        with admission.slot() as waited:
            started = time.monotonic()
            req = req.tokenized(cfg.max_tokens_per_request)
            gen = Generation(len(req.prompt_ids))
            text = "".join(_run(req, gen, deadline))
            energy = account(gen, started)
        return jsonify({**base, "object": fmt.whole_object,
                        "choices": [fmt.choice(text, _finish(gen))],
                        "usage": _usage(gen), "timings": _timings(gen, waited, energy)})

    waited = admission.acquire()  # 503 here, before any event is sent
    admitted = time.monotonic()
    try:
        req = req.tokenized(cfg.max_tokens_per_request)  # a 400 here, still before any event
    except BaseException:
        admission.release(time.monotonic() - admitted)
        raise
    chunk = {**base, "object": fmt.chunk_object}
    if req.include_usage:
        chunk["usage"] = None

    def event(choices: list[dict], **extra) -> str:
        return f"data: {json.dumps({**chunk, 'choices': choices, **extra})}\n\n"

    def events() -> Iterator[str]:
        gen = Generation(len(req.prompt_ids))
        if fmt.opening is not None:
            yield event([fmt.opening])
        for text in _run(req, gen, deadline):
            yield event([fmt.delta(text)])
        energy = account(gen, admitted)
        yield event([fmt.closing(_finish(gen))], timings=_timings(gen, waited, energy))
        if req.include_usage:
            yield event([], usage=_usage(gen))
        yield "data: [DONE]\n\n"

    response = Response(stream_with_context(events()), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    # The WSGI server closes the response when the stream ends or the client goes away,
    # even if the generator never started: the slot is always given back.
    response.call_on_close(lambda: admission.release(time.monotonic() - admitted))
    return response


@bp.post("/completions")
def completions():
    """Complete the prompt (OpenAI-compatible)."""
    return serve(completion_request, COMPLETION_FORMAT)
