"""POST /v1/completions: OpenAI-compatible text completion, whole or streamed (server-sent
events ending with `data: [DONE]`).

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
import math
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator

from flask import Response, jsonify, request, stream_with_context

from .api import bp, int_field, json_object, models, pick_model, str_field
from .errors import InvalidRequest
from .textgen import Generation, PromptTooLong, Sampling, TextModel
from .state import current

_FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
           "stream", "n", "echo", "logprobs", "user", "presence_penalty", "frequency_penalty",
           "stream_options")
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


def _number(body: dict, name: str, default: float, low: float, high: float,
            low_open: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"'{name}' must be a number, got {json.dumps(value)[:40]}", param=name)
    if value > high or value < low or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise InvalidRequest(f"'{name}' must be within {bound}, got {value}", param=name)
    return float(value)


@dataclass(frozen=True)
class CompletionRequest:
    model: TextModel
    prompt: str
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    prompt_ids: tuple[int, ...] = ()  # set by tokenized(), inside admission

    @classmethod
    def parse(cls, body: dict[str, Any], registry, max_tokens_cap: int) -> "CompletionRequest":
        unknown = sorted(set(body) - set(_FIELDS))
        if unknown:
            raise InvalidRequest(f"unknown parameter(s) {unknown}; accepted: {list(_FIELDS)}",
                                 param=unknown[0])
        model = pick_model(registry, str_field(body, "model"), "text-generation")
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidRequest("'prompt' must be a string (or a list of exactly one string)",
                                 param="prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters",
                                 param="prompt")
        if len(prompt) > model.max_prompt_chars:  # cannot fit, whatever it tokenizes to
            raise InvalidRequest(f"'prompt' has {len(prompt)} characters; model "
                                 f"'{model.name}' holds {model.spec.context_length} tokens of "
                                 f"at most {model.max_token_chars} characters each",
                                 param="prompt", code="context_length_exceeded")
        for name, allowed in (("n", 1), ("echo", False), ("logprobs", None),
                              ("presence_penalty", 0), ("frequency_penalty", 0)):
            value = body.get(name)
            if value is not None and (value != allowed or
                                      isinstance(value, bool) != isinstance(allowed, bool)):
                raise InvalidRequest(f"'{name}' is not supported (only {json.dumps(allowed)})",
                                     param=name)
        stop = body.get("stop")
        stop = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else \
            () if stop is None else None
        if stop is None or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise InvalidRequest("'stop' must be a non-empty string or a list of up to 4",
                                 param="stop")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidRequest("'stream' must be true or false", param="stream")
        options = {} if body.get("stream_options") is None else body["stream_options"]
        if not isinstance(options, dict) or set(options) - {"include_usage"} or \
                not isinstance(options.get("include_usage", False), bool):
            raise InvalidRequest("'stream_options' accepts only include_usage (true or false)",
                                 param="stream_options")
        str_field(body, "user")
        max_tokens = int_field(body, "max_tokens", 16, 1, max_tokens_cap)
        seed = int_field(body, "seed", None, 0, MAX_TEXT_SEED)
        try:
            sampling = Sampling(temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                                top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
                                top_k=int_field(body, "top_k", 0, 0, model.spec.vocab_size),
                                seed=secrets.randbelow(MAX_TEXT_SEED) if seed is None else seed)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return cls(model, prompt, max_tokens, sampling, stop, stream,
                   bool(options.get("include_usage")))

    def tokenized(self) -> "CompletionRequest":
        """The request with its prompt ids (call holding an admission slot: tokenizing a long
        prompt costs CPU and memory); InvalidRequest when they do not fit the context."""
        model = self.model
        try:
            ids = model.encode(self.prompt) if self.prompt else [model.spec.bos_token_id]
            model.check_length(len(ids), self.max_tokens)
        except PromptTooLong as exc:
            raise InvalidRequest(str(exc), param="max_tokens", code="context_length_exceeded") \
                from None
        finally:
            if len(self.prompt) >= TRIM_AFTER_CHARS:
                give_memory_back()
        return replace(self, prompt_ids=tuple(ids))


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


def _run(req: CompletionRequest, gen: Generation, deadline: float) -> Iterator[str]:
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


@bp.post("/completions")
def completions():
    arrived = time.monotonic()
    registry = models()
    cfg = current().config
    req = CompletionRequest.parse(json_object(), registry, cfg.max_tokens_per_request)
    state = current()
    stats, power, admission = state.metrics, state.power, state.admission
    endpoint = request.url_rule.rule
    ident, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
    deadline = arrived + cfg.request_timeout_s

    def account(gen: Generation, started: float) -> dict:
        stats.tokens.labels(req.model.name).inc(len(gen.tokens))
        if gen.tokens or gen.finish_reason == "stop":
            stats.ttft.labels(req.model.name).observe(gen.prompt_ms / 1000.0)
        return power.request_energy(started, time.monotonic(), req.model.name, endpoint)

    def choice(text: str, finish: str | None) -> dict:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

    if not req.stream:
        with admission.slot() as waited:
            started = time.monotonic()
            req = req.tokenized()
            gen = Generation(len(req.prompt_ids))
            text = "".join(_run(req, gen, deadline))
            energy = account(gen, started)
        return jsonify({"id": ident, "object": "text_completion", "created": created,
                        "model": req.model.name, "choices": [choice(text, _finish(gen))],
                        "usage": _usage(gen), "timings": _timings(gen, waited, energy)})

    waited = admission.acquire()  # 503 here, before any event is sent
    admitted = time.monotonic()
    try:
        req = req.tokenized()  # a 400 here, still before any event
    except BaseException:
        admission.release(time.monotonic() - admitted)
        raise

    def events() -> Iterator[str]:
        gen = Generation(len(req.prompt_ids))
        base = {"id": ident, "object": "text_completion", "created": created,
                "model": req.model.name}
        for text in _run(req, gen, deadline):
            yield f"data: {json.dumps({**base, 'choices': [choice(text, None)]})}\n\n"
        energy = account(gen, admitted)
        last = {**base, "choices": [choice("", _finish(gen))],
                "timings": _timings(gen, waited, energy)}
        if req.include_usage:
            last["usage"] = _usage(gen)
        yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"

    response = Response(stream_with_context(events()), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    # The WSGI server closes the response when the stream ends or the client goes away,
    # even if the generator never started: the slot is always given back.
    response.call_on_close(lambda: admission.release(time.monotonic() - admitted))
    return response
