"""A decoder recipe's data, prepared once: the corpus split into token blocks, the tokenizer
(the checkpoint's own, or a byte-level BPE trained on the training split), the ids that end a
generation, and the chat template a bundle ships with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..distributed import is_main
from ..errors import OptimizerError, RecipeError
from . import checkpoint as ckpt
from .corpus import load_corpus
from .tokenizer import EOS, encode_documents, eos_id, load_checkpoint_tokenizer, train_tokenizer
from .train import blocks


@dataclass(frozen=True)
class Vocabulary:
    """What a family adds to a tokenizer it trains itself (no checkpoint)."""

    special: tuple[str, ...] = (EOS,)  # special tokens, trained first (ids 0, 1, ...)
    end: tuple[str, ...] = (EOS,)  # tokens that end a generation; the first joins documents
    chat_template: str | None = None
    special_tokens: tuple[tuple[str, str], ...] = ()  # names a template uses: bos_token, ...


@dataclass
class TextData:
    tokenizer: Tokenizer
    eos_ids: tuple[int, ...]  # any ends a generation; the first joins documents
    bos_id: int  # an empty prompt starts with it
    train: torch.Tensor  # (n, block) token blocks
    val: torch.Tensor
    test_stream: list[int]
    info: dict
    tokenizer_file: Path  # saved tokenizer.json (goes into every bundle)
    checkpoint: Path | None = None  # the resolved checkpoint directory
    chat_template: str | None = None
    special_tokens: dict | None = None
    eval_stream: list[int] | None = None  # evaluate.corpus's test split: perplexity there
    eval_name: str | None = None  # "<corpus> test split (N tokens)" of eval_stream


def _corpus(data, where: str):
    opts = dict(data.options)
    limit = opts.pop("limit", None)
    if opts:
        raise RecipeError(f"recipe: unknown {where}.options {sorted(opts)} for a text dataset; "
                          f"known: ['limit']")
    return load_corpus(data.dataset, data.root, data.val_fraction, limit)


def prepare(recipe, runs_dir: Path, vocabulary: Vocabulary) -> TextData:
    spec = recipe.model_config
    checkpoint = ckpt.resolve(spec.checkpoint, spec.revision) if spec.checkpoint else None
    corpus = _corpus(recipe.data, "data")
    other = _corpus(recipe.evaluate.corpus, "evaluate.corpus") if recipe.evaluate.corpus \
        else None
    if checkpoint is not None:
        tok = load_checkpoint_tokenizer(checkpoint)
        ends = ckpt.end_ids(checkpoint) or [eos_id(tok)]
        bos = ckpt.bos_id(checkpoint)
        template, specials = ckpt.chat_template(checkpoint), ckpt.special_tokens(checkpoint)
        tok_info = {"kind": "the checkpoint's", "source": f"checkpoint {spec.checkpoint}"}
    else:
        tok = train_tokenizer(corpus.train, spec.vocab_size, vocabulary.special)
        ends = [tok.token_to_id(t) for t in vocabulary.end]
        bos = None
        template, specials = vocabulary.chat_template, dict(vocabulary.special_tokens)
        tok_info = {"kind": "byte-level BPE", "source": f"trained on the {corpus.name} training "
                    f"split", "special_tokens": list(vocabulary.special)}
    tok_info["vocab_size"] = tok.get_vocab_size()
    block = recipe.train.block_size
    if not checkpoint and block > spec.context_length:
        raise RecipeError(f"recipe: train.block_size ({block}) exceeds the model's context "
                          f"length ({spec.context_length})")
    train, val, test = (encode_documents(tok, docs, ends[0])
                        for docs in (corpus.train, corpus.validation, corpus.test))
    try:
        train_blocks, val_blocks = blocks(train, block), blocks(val, block)
    except ValueError as exc:
        raise OptimizerError(f"dataset {corpus.name}: {exc}") from None
    (runs_dir / recipe.name).mkdir(parents=True, exist_ok=True)
    tokenizer_file = runs_dir / recipe.name / "tokenizer.json"
    if is_main():  # under torchrun every rank prepares the same data; one writes it
        tok.save(str(tokenizer_file))
    info = {**corpus.info(), "tokens": {"train": len(train), "validation": len(val),
                                        "test": len(test)}, "tokenizer": tok_info}
    eval_stream = eval_name = None
    if other is not None:  # cross-corpus: the other corpus's test split, this model's tokenizer
        eval_stream = encode_documents(tok, other.test, ends[0])
        eval_name = f"{other.name} test split ({len(eval_stream)} tokens)"
        info["evaluation_corpus"] = {**other.info(), "tokens": {"test": len(eval_stream)},
                                     "scored": "perplexity on its test split"}
    return TextData(tok, tuple(ends), ends[0] if bos is None else bos, train_blocks, val_blocks,
                    test, info, tokenizer_file, checkpoint, template, specials, eval_stream,
                    eval_name)
