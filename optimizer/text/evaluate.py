"""Text quality and cost, measured on the exported graph (what ships), not on PyTorch.

- Perplexity: exp(mean next-token NLL) over the held-out test stream, sliding window of
  `window` tokens moved by `stride`; each window scores only the tokens not scored before
  (the first window scores all but its first token), so every token is predicted once with at
  least window - stride tokens of context (the method of Hugging Face's perplexity guide;
  the stride is capped at window - 1 so that windows overlap).
- BLEU (sacrebleu, default 13a tokenisation) of greedy continuations against the held-out
  continuations that follow each prompt.
- distinct-1/2 (Li et al., 2016): unique n-grams / all n-grams over sampled continuations
  (temperature 1, top-k 50, fixed seed), tokens as the unit.
- FLOPs per token: torch.utils.flop_counter over a forward of `seq` tokens, divided by seq
  (2 FLOPs per multiply-add; attention at that context length included).
- Peak RAM: VmHWM of a fresh process generating through ONNX Runtime (optimizer/rss_probe.py).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax
from torch.utils.flop_counter import FlopCounterMode

from edge_app.textgen import Decoder, Sampling

from ..errors import OptimizerError
from ..evaluate import rss_probe

SAMPLING_FOR_DISTINCT = Sampling(temperature=1.0, top_k=50, seed=1234)


def perplexity(dec: Decoder, stream: list[int], window: int, stride: int,
               max_tokens: int = 0) -> dict:
    if max_tokens:
        stream = stream[:max_tokens]
    if len(stream) < 2:
        raise OptimizerError("the test split has fewer than 2 tokens: cannot score perplexity")
    window = min(window, dec.spec.context_length)
    stride = max(1, min(stride, window - 1))  # windows overlap, so each target has context
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(stream), stride):
        end = min(begin + window, len(stream))
        ids = stream[begin:end]
        new = end - max(prev_end, begin + 1)  # targets not scored yet (the first token has none)
        if new > 0:
            logp = log_softmax(dec.logits(ids).astype(np.float64), axis=-1)  # row i predicts token i + 1
            targets = np.asarray(ids[-new:])
            rows = logp[len(ids) - new - 1: len(ids) - 1]
            nll -= float(rows[np.arange(new), targets].sum())
            count += new
        prev_end = end
        if end == len(stream):
            break
    return {"perplexity": math.exp(nll / count), "nll_per_token": nll / count,
            "tokens_scored": count, "window": window, "stride": stride}


def prompts_from(stream: list[int], n: int, prompt_tokens: int, continuation_tokens: int) -> list[tuple[list[int], list[int]]]:
    """n (prompt, reference continuation) pairs at evenly spaced offsets of the test stream."""
    span = prompt_tokens + continuation_tokens
    if len(stream) < span:
        raise OptimizerError(f"the test split ({len(stream)} tokens) is shorter than one prompt + "
                             f"continuation ({span})")
    starts = np.linspace(0, len(stream) - span, num=n).astype(int)
    return [(stream[s:s + prompt_tokens], stream[s + prompt_tokens:s + span]) for s in starts]


def distinct_n(sequences: list[list[int]], n: int) -> float:
    grams = [tuple(seq[i:i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def greedy_tokens(dec: Decoder, pairs: list[tuple[list[int], list[int]]]) -> list[list[int]]:
    """Greedy continuation of each prompt, as long as its reference."""
    return [dec.generate(prompt, len(ref), stop_at_eos=False).tokens for prompt, ref in pairs]


def generation_quality(dec: Decoder, decode, pairs: list[tuple[list[int], list[int]]],
                       greedy: list[list[int]]) -> dict:
    """BLEU of the greedy continuations (`greedy_tokens`), distinct-n of sampled ones."""
    from sacrebleu.metrics import BLEU

    sampled = [dec.generate(prompt, len(ref), SAMPLING_FOR_DISTINCT, stop_at_eos=False).tokens
               for prompt, ref in pairs]
    metric = BLEU()
    bleu = metric.corpus_score([decode(g) for g in greedy], [[decode(r) for _, r in pairs]])
    return {"bleu": float(bleu.score), "bleu_signature": str(metric.get_signature()),
            "distinct_1": distinct_n(sampled, 1), "distinct_2": distinct_n(sampled, 2),
            "prompts": len(pairs)}


def greedy_agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    """Fraction of greedy tokens equal at the same position, e.g. INT8 vs FP32."""
    same = sum(x == y for a, b in zip(tokens, reference) for x, y in zip(a, b))
    return same / sum(len(b) for b in reference)


def flops_per_token(model, seq: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=torch.zeros(1, seq, dtype=torch.long))
    return int(counter.get_total_flops() // seq)


def peak_ram(path: Path, sections: dict, prompt_tokens: int, new_tokens: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(sections, f)
    try:
        return rss_probe(["text", str(path), f.name, str(prompt_tokens), str(new_tokens)])
    finally:
        Path(f.name).unlink(missing_ok=True)
