"""Local datasets in their official on-disk layouts, written from data the machine already has.

The study's recipes read CIFAR-10's python batches, CelebA's img_align_celeba/ folder, the raw
WikiText-2 files and an OpenWebText directory from local paths; none can be downloaded here.
These writers lay out real content in exactly those formats, so the recipes run through the same
loaders a user's copy would: crops of scikit-learn's two bundled photos (china.jpg, flower.jpg,
427x640 RGB) for the image sets, CPython's bundled reference text (pydoc_data.topics) for text.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CELEBA_SIZE = (218, 178)  # (height, width) of an aligned CelebA image


def sample_photos() -> list[np.ndarray]:
    """The two bundled sample photos, each (427, 640, 3) uint8."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(im, dtype=np.uint8) for im in load_sample_images().images]


def crop(photos: list[np.ndarray], k: int, height: int = 32, width: int = 32) -> np.ndarray:
    """The k-th (height, width, 3) uint8 crop: alternating photos, offsets walking a grid."""
    photo = photos[k % 2]
    rows, cols = photo.shape[0] - height, photo.shape[1] - width
    top, left = (40 + 23 * k) % rows, (60 + 31 * (k // 2)) % cols
    return np.ascontiguousarray(photo[top:top + height, left:left + width])


def cifar_batch(crops: list[np.ndarray], first: int, label: bytes) -> dict:
    """A batch dict exactly as the official files hold it (Python 2 str keys -> bytes)."""
    return {
        b"batch_label": label,
        b"labels": [(first + i) % 10 for i in range(len(crops))],
        # each row: the R plane, then G, then B, each 32x32 row-major
        b"data": np.stack([c.transpose(2, 0, 1).reshape(3072) for c in crops]),
        b"filenames": [f"crop_{first + i:05d}.png".encode() for i in range(len(crops))],
    }


def write_pickle(path: Path, obj: object, protocol: int = 2) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(folder: Path, per_batch: int, photos: list[np.ndarray] | None = None
                  ) -> list[np.ndarray]:
    """cifar-10-batches-py/ layout in `folder`: 5 train batches and a test batch of `per_batch`
    32x32 crops each; returns the crops in file order."""
    photos = photos or sample_photos()
    folder.mkdir(parents=True, exist_ok=True)
    crops = [crop(photos, k) for k in range(len(CIFAR_BATCHES) * per_batch)]
    for b, name in enumerate(CIFAR_BATCHES):
        chunk = crops[b * per_batch:(b + 1) * per_batch]
        label = f"training batch {b + 1} of 5".encode() if b < 5 else b"testing batch 1 of 1"
        write_pickle(folder / name, cifar_batch(chunk, b * per_batch, label))
    return crops


def write_celeba(folder: Path, count: int) -> None:
    """img_align_celeba/ layout: 000001.jpg ... as 178x218 JPEGs (crops of the photos)."""
    from PIL import Image

    photos = sample_photos()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = Image.fromarray(crop(photos, k, *CELEBA_SIZE))
        image.save(folder / f"{k + 1:06d}.jpg", quality=90)


def pydoc_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k].strip() for k in sorted(topics)]


def write_wikitext2(folder: Path, part: int = 1) -> None:
    """wiki.{train,valid,test}.raw: the pydoc topics of one half (`part` 0 or 1: even or odd
    positions, so that another corpus can take the other half) as " = Title = " articles, split
    8:1:1 by order."""
    from pydoc_data.topics import topics

    names = sorted(topics)[part::2]
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"wiki.train.raw": [], "wiki.valid.raw": [], "wiki.test.raw": []}
    for i, name in enumerate(names):
        file = "wiki.valid.raw" if i % 10 == 8 else "wiki.test.raw" if i % 10 == 9 \
            else "wiki.train.raw"
        body = "\n".join(f" {line}" for line in topics[name].strip().splitlines())
        splits[file].append(f" = {name} = \n\n{body}\n")
    for file, articles in splits.items():
        (folder / file).write_text("\n".join(articles), encoding="utf-8")


def write_openwebtext(folder: Path, part: int = 0) -> None:
    """A directory of .txt files, one document each: the pydoc topics of one half (`part` 0 or
    1, as in write_wikitext2)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(pydoc_documents()[part::2]):
        (folder / f"{i:05d}.txt").write_text(doc + "\n", encoding="utf-8")


def write_gpt2_checkpoint(directory: Path, n_positions: int = 128, vocab: int = 512):
    """A tiny random GPT-2 as a Hugging Face checkpoint (config.json, model.safetensors) with a
    byte-level BPE tokenizer.json trained on CPython's reference text; returns the model."""
    import torch
    from transformers import GPT2LMHeadModel

    from optimizer.families.gpt2 import gpt2_config
    from optimizer.text.corpus import load_corpus
    from optimizer.text.tokenizer import train_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(load_corpus("pydoc").train[:80], vocab, ("<|endoftext|>",))
    tok.save(str(directory / "tokenizer.json"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(2, 64, 4, n_positions, tok.get_vocab_size(), 0, 0.0))
    model.save_pretrained(directory)  # safetensors
    return model
