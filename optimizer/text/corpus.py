"""Text corpora with deterministic train / validation / test splits.

- `pydoc` (bundled, the default for the quick profile and tests): the English reference text
  that ships inside CPython (`pydoc_data.topics`: the language reference's topics, about 465k
  characters). Documents are the topics, sorted by name.
- `wikitext2`: a local copy of WikiText-2 (raw). `root` is the directory holding
  `wiki.train.raw`, `wiki.valid.raw`, `wiki.test.raw` (the layout of the original
  wikitext-2-raw-v1.zip); its own splits are used as they are.
- `openwebtext`: a local subset of OpenWebText: a directory of `.txt` files (one document
  each), or a `.jsonl` file with a "text" field per line (`root` points at either).

For corpora without their own splits, a document goes to a split by a hash of its content
(sha256, so the split does not depend on file order or the machine): the same document always
lands in the same split. `val_fraction` of documents go to validation and as many to test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptimizerError

WIKITEXT_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw",
                  "test": "wiki.test.raw"}


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    train: list[str]
    validation: list[str]
    test: list[str]
    sha256: str  # of every document's text in split order: identifies the exact data

    def info(self) -> dict:
        return {"name": self.name, "description": self.description, "sha256": self.sha256,
                **{f"{split}_documents": len(getattr(self, split))
                   for split in ("train", "validation", "test")},
                **{f"{split}_chars": sum(map(len, getattr(self, split)))
                   for split in ("train", "validation", "test")}}


def _digest(*splits: list[str]) -> str:
    h = hashlib.sha256()
    for split in splits:
        for doc in split:
            h.update(doc.encode("utf-8"))
            h.update(b"\0")
        h.update(b"\1")
    return h.hexdigest()


def hash_split(docs: list[str], val_fraction: float) -> tuple[list[str], list[str], list[str]]:
    """Split documents by the sha256 of their text: stable across machines and file orders."""
    if not 0.0 < val_fraction < 0.5:
        raise OptimizerError(f"val_fraction must be within (0, 0.5), got {val_fraction}")
    train, val, test = [], [], []
    for doc in docs:
        u = int.from_bytes(hashlib.sha256(doc.encode("utf-8")).digest()[:8], "big") / 2 ** 64
        (val if u < val_fraction else test if u < 2 * val_fraction else train).append(doc)
    if not val or not test:  # tiny corpora: guarantee one document each, deterministically
        ordered = sorted(docs, key=lambda d: hashlib.sha256(d.encode("utf-8")).digest())
        if len(ordered) < 3:
            raise OptimizerError(f"a corpus needs at least 3 documents to split, got {len(docs)}")
        val, test = val or [ordered[0]], test or [ordered[1]]
        train = [d for d in docs if d not in val and d not in test]
    return train, val, test


def _pydoc() -> tuple[list[str], str]:
    from pydoc_data.topics import topics  # part of the standard library

    docs = [topics[k].strip() for k in sorted(topics)]
    return docs, "CPython's bundled pydoc_data.topics (language reference topics, English)"


def _wikitext2(root: Path) -> tuple[list[str], list[str], list[str]]:
    missing = [f for f in WIKITEXT_FILES.values() if not (root / f).is_file()]
    if missing:
        raise OptimizerError(
            f"WikiText-2 not found in {root}: missing {', '.join(missing)}. Expected the raw "
            f"layout of wikitext-2-raw-v1.zip: {root}/wiki.train.raw, wiki.valid.raw, "
            f"wiki.test.raw")
    splits = []
    for split in ("train", "validation", "test"):
        text = (root / WIKITEXT_FILES[split]).read_text(encoding="utf-8")
        # articles start at " = Title = " lines (one '=' pair); sections use '= =' and deeper
        docs, current = [], []
        for line in text.splitlines():
            s = line.strip()
            if s.startswith("= ") and s.endswith(" =") and not s.startswith("= ="):
                if current:
                    docs.append("\n".join(current).strip())
                current = []
            current.append(line)
        if current:
            docs.append("\n".join(current).strip())
        splits.append([d for d in docs if d])
    return splits[0], splits[1], splits[2]


def _openwebtext(root: Path, limit: int | None) -> list[str]:
    docs: list[str] = []
    if root.is_file() and root.suffix == ".jsonl":
        with root.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise OptimizerError(f"{root}:{n}: expected a JSON object with a \"text\" "
                                         f"field per line") from None
                docs.append(str(text))
                if limit and len(docs) >= limit:
                    break
    elif root.is_dir():
        files = sorted(root.rglob("*.txt"))
        if not files:
            raise OptimizerError(f"OpenWebText: no .txt files under {root}")
        for file in files[:limit] if limit else files:
            docs.append(file.read_text(encoding="utf-8", errors="replace"))
    else:
        raise OptimizerError(
            f"OpenWebText not found at {root}: expected a directory of .txt files (one document "
            f"each, e.g. the extracted urlsf_subset archives) or a .jsonl file with a \"text\" "
            f"field per line")
    return [d.strip() for d in docs if d.strip()]


def load_corpus(name: str, root: str | None = None, val_fraction: float = 0.1,
                limit: int | None = None) -> Corpus:
    """Load a corpus and split it; `limit` caps the number of documents (OpenWebText, pydoc)."""
    if name == "pydoc":
        docs, description = _pydoc()
        docs = docs[:limit] if limit else docs
        train, val, test = hash_split(docs, val_fraction)
    elif name in ("wikitext2", "openwebtext"):
        if not root:
            raise OptimizerError(f"dataset {name!r} needs data.root: the local path of the files "
                                 f"(it is never downloaded)")
        path = Path(root).expanduser()
        if name == "wikitext2":
            train, val, test = _wikitext2(path)
            description = f"WikiText-2 raw ({path}), its own train/valid/test splits"
        else:
            train, val, test = hash_split(_openwebtext(path, limit), val_fraction)
            description = f"OpenWebText subset ({path}), split by document sha256"
    else:
        raise OptimizerError(f"unknown text dataset {name!r}; known: pydoc (bundled), "
                             f"wikitext2, openwebtext (local paths)")
    if not train:
        raise OptimizerError(f"dataset {name!r}: the training split is empty")
    return Corpus(name, description, train, val, test, _digest(train, val, test))
