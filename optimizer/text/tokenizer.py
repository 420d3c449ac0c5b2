"""Tokenizers through the `tokenizers` library, always saved as one `tokenizer.json`.

A checkpoint's own tokenizer when its directory has one (`tokenizer.json`, or GPT-2's original
`vocab.json` + `merges.txt`); otherwise a byte-level BPE trained on the training split with the
recipe's vocabulary size, `<|endoftext|>` its end-of-text token (GPT-2's convention) and any
chat tokens the family adds. Documents are joined with the end-of-text token.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import OptimizerError

EOS = "<|endoftext|>"


def load_checkpoint_tokenizer(directory: Path) -> Tokenizer:
    if (directory / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(directory / "tokenizer.json"))
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if vocab.is_file() and merges.is_file():
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok
    raise OptimizerError(f"checkpoint {directory} has no tokenizer: expected tokenizer.json, or "
                         f"vocab.json and merges.txt (GPT-2's files)")


def train_tokenizer(texts: list[str], vocab_size: int,
                    special: tuple[str, ...] = (EOS,)) -> Tokenizer:
    """Byte-level BPE (GPT-2's scheme: every byte representable, no unknown token), with the
    `special` tokens first (ids 0, 1, ...): never split, never produced by merges."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(special):
        raise OptimizerError(f"tokenizer vocab_size must be at least "
                             f"{len(alphabet) + len(special)} (256 bytes + "
                             f"{', '.join(special)}), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def eos_id(tok: Tokenizer) -> int:
    token = tok.token_to_id(EOS)
    if token is None:
        raise OptimizerError(f"the tokenizer has no {EOS} token")
    return token


def encode_documents(tok: Tokenizer, docs: list[str], eos: int | None = None) -> list[int]:
    """One token stream: documents joined by the end-of-text token (GPT-2's convention; a
    checkpoint names its own, e.g. Llama's </s>)."""
    eos = eos_id(tok) if eos is None else eos
    out: list[int] = []
    for enc in tok.encode_batch(docs):
        out.extend(enc.ids)
        out.append(eos)
    return out
