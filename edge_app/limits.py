"""Cheap limits on a request, checked before any expensive work (tokenizing, a model, the
admission queue): the one place every POST route reads its JSON body through.

In order: bytes (a body over max_body_bytes gets 413: the front refuses it before reading it,
and Flask's MAX_CONTENT_LENGTH in-process, chunked bodies included), then the JSON parse with
a nesting bound (100,000 nested arrays exhausted Python's recursion: a 500), then every string
(a lone UTF-16 surrogate such as "\\ud800" is valid JSON but not Unicode; it made the tokenizer
raise a TypeError, a 500). Per-field character limits follow in each route's parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from .errors import InvalidRequest

MAX_DEPTH = 32  # our request bodies nest 3 deep; no client needs more than this
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_body(empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, within the cheap limits; InvalidRequest otherwise.
    `empty_ok`: an empty body reads as {} (one of whitespace only is not JSON: refused, as the
    API document says)."""
    data = request.get_data(cache=True)  # 413 past max_body_bytes (RequestEntityTooLarge)
    if empty_ok and not data:
        return {}
    try:
        body = json.loads(data)
    except RecursionError:
        raise InvalidRequest(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidRequest("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    check_tree(body)
    return body


def check_tree(value: Any) -> None:
    """Refuse nesting beyond MAX_DEPTH and strings (keys too) with lone surrogates; iterative,
    so no input can exhaust the stack here."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"request body nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidRequest(f"{where or 'a string'} holds a lone UTF-16 surrogate "
                                     f"(e.g. \\ud800): send valid Unicode",
                                     param=where.strip("'") or None)
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise InvalidRequest("a key holds a lone UTF-16 surrogate: send valid "
                                         "Unicode")
                stack.append((child, depth + 1, where or f"'{key}'"))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, where) for child in item)
