"""Where a model checkpoint comes from: a local directory, or a Hugging Face Hub id resolved
through the Hugging Face cache (so `HF_HUB_OFFLINE=1` works from a pre-filled cache, as on an
air-gapped build box). Weights are read from safetensors only: a pickled `pytorch_model.bin` can
run code when loaded, and is never unpickled here.

Also what a checkpoint says about its tokens: the chat template (tokenizer_config.json's
`chat_template`, or `chat_template.jinja`), the special tokens a template uses, and the ids that
end a generation (config.json and generation_config.json).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import CheckpointError

# What a decoder checkpoint needs; nothing else is fetched.
FILES = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
         "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
         "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt"]
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve(ref: str, revision: str | None = None) -> Path:
    """The checkpoint directory for `ref`: a local directory as it is, else a Hub id through
    the Hugging Face cache. CheckpointError names everything tried."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return _check_weights(path, ref)
    tried = [f"no local directory {path.resolve()}"]
    if not HUB_ID.fullmatch(ref):
        raise CheckpointError(f"checkpoint {ref!r} not found: tried {tried[0]} (and it is not "
                              f"a Hugging Face Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct)")
    from huggingface_hub import constants, snapshot_download

    where = f"cache {constants.HF_HUB_CACHE}" + (
        ", HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else f", then {constants.ENDPOINT}")
    try:
        found = Path(snapshot_download(ref, revision=revision, allow_patterns=FILES))
    except Exception as exc:  # offline miss, no network, unknown repo, gated repo, ...
        tried.append(f"Hugging Face Hub {ref}{'@' + revision if revision else ''} ({where}): "
                     f"{_first_line(exc)}"[:400])
        raise CheckpointError(f"checkpoint {ref!r} not found: tried " + "; ".join(tried)) \
            from None
    return _check_weights(found, ref)


def _check_weights(path: Path, ref: str) -> Path:
    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint {ref!r} ({path}) has no config.json: expected a "
                              f"Hugging Face model directory (config.json, model.safetensors, "
                              f"tokenizer files)")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin"))
        raise CheckpointError(f"checkpoint {ref!r} ({path}) has no .safetensors weights"
                              + (f" (only {', '.join(pickled)}: pickled weights are never "
                                 f"loaded; convert them to safetensors)" if pickled else ""))
    return path


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from None


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def chat_template(path: Path) -> str | None:
    """The checkpoint's default chat template, if it has one."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = _json(path / "tokenizer_config.json").get("chat_template") \
        or _json(path / "chat_template.json").get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def special_tokens(path: Path) -> dict[str, str]:
    """bos_token / eos_token / pad_token / unk_token strings (what templates refer to)."""
    config = {**_json(path / "special_tokens_map.json"), **_json(path / "tokenizer_config.json")}
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        text = _token_text(config.get(key))
        if text:
            out[key] = text
    return out


def end_ids(path: Path) -> list[int]:
    """The ids that end a generation: generation_config.json's eos_token_id (int or list),
    else config.json's."""
    for name in ("generation_config.json", "config.json"):
        value = _json(path / name).get("eos_token_id")
        ids = value if isinstance(value, list) else [value] if value is not None else []
        ids = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
        if ids:
            return list(dict.fromkeys(ids))
    return []


def bos_id(path: Path) -> int | None:
    value = _json(path / "config.json").get("bos_token_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
