"""Text generation from a bundle's KV-cache decoder graph, with no torch.

The prompt is fed once (prefill); each further token costs one graph run with a one-token
input, the previous run's present keys/values passed back as the past. The cache stays in
ONNX Runtime's own tensors between steps (`run_with_ort_values`), so it is not copied through
numpy. The manifest's `generation` section describes every name and shape this needs.

Sampling follows the usual order: temperature, then top-k, then top-p (nucleus) on the
renormalised distribution; temperature 0 is greedy (argmax). A seed makes sampling
deterministic (numpy's PCG64).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .bundle import Bundle, BundleError
from .generation import TextGeneration
from .onnxrt import ort


class PromptTooLong(ValueError):
    """The prompt (plus the tokens asked for) does not fit the model's context."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut
    seed: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.temperature <= 10.0:
            raise ValueError(f"temperature must be within [0, 10], got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be within (0, 1], got {self.top_p}")


GREEDY = Sampling(temperature=0.0)


class Sampler:
    def __init__(self, sampling: Sampling):
        self.s = sampling
        self.rng = np.random.default_rng(sampling.seed)

    def __call__(self, logits: np.ndarray) -> int:
        s = self.s
        if s.temperature == 0.0:
            return int(np.argmax(logits))
        with np.errstate(over="ignore"):
            z = logits.astype(np.float64) / s.temperature
        if np.isnan(z).any() or np.isposinf(z).any():  # T so small that logits overflow: its limit
            return int(np.argmax(logits))
        if 0 < s.top_k < z.size:
            kth = np.partition(z, -s.top_k)[-s.top_k]
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max())
        p /= p.sum()
        if s.top_p < 1.0:
            order = np.argsort(-p)
            cum = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(cum, s.top_p)) + 1]  # smallest set with mass >= top_p
            mask = np.zeros_like(p)
            mask[keep] = p[keep]
            p = mask / mask.sum()
        return int(self.rng.choice(p.size, p=p))


@dataclass
class Generation:
    """One finished generation, with the timings every response reports."""

    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "length" | "stop" (eos)
    prompt_ms: float = 0.0  # prefill: prompt forward and first token (time to first token)
    decode_ms: float = 0.0  # the remaining tokens

    @property
    def tokens_per_second(self) -> float | None:
        """Decode rate after the first token: (n - 1) / decode time."""
        n = len(self.tokens) - 1
        return n / (self.decode_ms / 1000.0) if n > 0 and self.decode_ms > 0 else None


def session_options(threads: int = 0) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return options


class Decoder:
    """A KV-cache decoder session described by a manifest's TextGeneration section.

    Thread-safe as ONNX Runtime sessions are: each generation keeps its own cache.
    """

    def __init__(self, session: ort.InferenceSession, spec: TextGeneration):
        self.session, self.spec = session, spec
        self._cache_dtype = np.dtype(spec.cache_dtype)
        self._eos = frozenset(spec.eos_token_ids)  # any of them ends a generation
        self._outputs = [spec.logits_output] + [n for layer in spec.layers
                                                for n in (layer.key_output, layer.value_output)]

    @classmethod
    def open(cls, path, spec: TextGeneration, threads: int = 0,
             providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> "Decoder":
        return cls(ort.InferenceSession(str(path), session_options(threads),
                                        providers=list(providers)), spec)

    def _empty_past(self, batch: int) -> dict[str, ort.OrtValue]:
        past = {}
        for layer in self.spec.layers:
            empty = np.zeros((batch, layer.heads, 0, self.spec.head_dim), self._cache_dtype)
            past[layer.key_input] = ort.OrtValue.ortvalue_from_numpy(empty)
            past[layer.value_input] = ort.OrtValue.ortvalue_from_numpy(empty)
        return past

    def forward(self, ids: np.ndarray, past: dict[str, ort.OrtValue] | None,
                logits_index: np.ndarray) -> tuple[np.ndarray, dict[str, ort.OrtValue]]:
        """One graph run: ids (batch, seq) int64 -> (logits at logits_index, next past)."""
        spec = self.spec
        feed = dict(past) if past is not None else self._empty_past(ids.shape[0])
        feed[spec.input_ids] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(ids, np.int64))
        feed[spec.logits_index] = ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(logits_index, np.int64))
        out = self.session.run_with_ort_values(self._outputs, feed)
        nxt = {}
        for i, layer in enumerate(spec.layers):
            nxt[layer.key_input] = out[1 + 2 * i]
            nxt[layer.value_input] = out[2 + 2 * i]
        return out[0].numpy(), nxt

    def logits(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Logits for every position of one sequence, no cache: (seq, vocab) float32."""
        ids = np.asarray(ids, np.int64)[None, :]
        logits, _ = self.forward(ids, None, np.arange(ids.shape[1]))
        return logits[0].astype(np.float32)

    # ------------------------------------------------------------------ generation

    def check_length(self, prompt_tokens: int, max_new_tokens: int) -> None:
        ctx = self.spec.context_length
        if prompt_tokens == 0:
            raise PromptTooLong("the prompt is empty: at least one token is needed")
        if prompt_tokens + max_new_tokens > ctx:
            raise PromptTooLong(f"prompt ({prompt_tokens} tokens) + max_tokens ({max_new_tokens}) "
                                f"exceeds the model's context length of {ctx} tokens")

    def stream(self, prompt: list[int], max_new_tokens: int, sampling: Sampling = GREEDY,
               stop_at_eos: bool = True, result: Generation | None = None) -> Iterator[int]:
        """Yield generated token ids one by one; `result` (if given) is filled as it goes."""
        self.check_length(len(prompt), max_new_tokens)
        res = result if result is not None else Generation(len(prompt))
        res.prompt_tokens = len(prompt)
        sample = Sampler(sampling)
        started = time.perf_counter()
        ids = np.asarray(prompt, np.int64)[None, :]
        logits, past = self.forward(ids, None, np.array([ids.shape[1] - 1]))
        last = np.array([0], np.int64)
        for step in range(max_new_tokens):
            token = sample(logits[0, -1])
            now = time.perf_counter()
            if step == 0:
                res.prompt_ms = (now - started) * 1000.0
                decode_start = now
            else:
                res.decode_ms = (now - decode_start) * 1000.0
            if stop_at_eos and token in self._eos:
                res.finish_reason = "stop"
                return
            res.tokens.append(token)
            yield token
            if step + 1 < max_new_tokens:
                logits, past = self.forward(np.array([[token]], np.int64), past, last)
        res.finish_reason = "length"

    def generate(self, prompt: list[int], max_new_tokens: int, sampling: Sampling = GREEDY,
                 stop_at_eos: bool = True) -> Generation:
        res = Generation(len(prompt))
        for _ in self.stream(prompt, max_new_tokens, sampling, stop_at_eos, res):
            pass
        return res

    def generate_uncached(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding that re-runs the whole sequence every step (no cache): the
        reference the cached path must reproduce token for token."""
        self.check_length(len(prompt), max_new_tokens)
        ids = list(prompt)
        for _ in range(max_new_tokens):
            arr = np.asarray(ids, np.int64)[None, :]
            logits, _ = self.forward(arr, None, np.array([len(ids) - 1]))
            ids.append(int(np.argmax(logits[0, -1])))
        return ids[len(prompt):]


class ServedModel:
    """What every loaded model (text or image) tells the server about itself."""

    bundle: Bundle
    session: ort.InferenceSession
    # The configured provider chain ("auto" when none): `runtime` differing from its first
    # entry is a fallback (e.g. a Jetson image without CUDA), visible in edgegen_model_info.
    requested_providers = "auto"
    # Nodes each execution provider ran at warm-up (runtime.placement_of); None: not measured.
    placement: dict[str, int] | None = None

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    @property
    def runtime(self) -> str:
        return self.session.get_providers()[0]


class TextModel(ServedModel, Decoder):
    """A loaded text bundle: its decoder plus its tokenizer."""

    def __init__(self, bundle: Bundle, session: ort.InferenceSession):
        gen = bundle.manifest.generation
        if not isinstance(gen, TextGeneration):
            raise BundleError(f"bundle {bundle.path}: task '{bundle.manifest.task}' is not text")
        from tokenizers import Tokenizer  # only text bundles need it

        super().__init__(session, gen)
        self.bundle = bundle
        try:
            self.tokenizer = Tokenizer.from_file(str(bundle.path / gen.tokenizer_file))
        except Exception as exc:  # tokenizers raises a plain Exception for a bad file
            raise BundleError(f"bundle {bundle.path}: cannot read tokenizer "
                              f"'{gen.tokenizer_file}': {exc}") from None
        # No token covers more characters than its vocabulary entry has (byte-level entries
        # spell one byte per character), so a prompt longer than this cannot fit the context:
        # refused before any tokenizing.
        self.max_token_chars = max(map(len, self.tokenizer.get_vocab(with_added_tokens=True)),
                                   default=1)
        self.max_prompt_chars = gen.context_length * self.max_token_chars

    @classmethod
    def load(cls, bundle: Bundle, threads: int = 0) -> "TextModel":
        from .runtime import open_session  # runtime imports this module

        return cls(bundle, open_session(bundle, threads))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; a rendered chat template holds its special tokens already, so it is
        encoded with add_special_tokens=False (as transformers' apply_chat_template does)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)
