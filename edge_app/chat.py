"""Chat prompts: a bundle's chat template rendered in Jinja2's immutable sandbox, by the same
rules as transformers' `apply_chat_template`, so the prompt a model sees here is the prompt it
was trained on (tested against transformers for the same files).

The template is data from the bundle; it runs only in the sandbox (no attribute access to
Python internals, no mutation of what it is given), sees only plain JSON values (the messages,
`add_generation_prompt`, the bundle's special tokens), and may stop a render with its own
message (`raise_exception`, e.g. "roles must alternate"), which the API returns as a 400.
Templates are compiled once per source; rendering is linear in the messages.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace


class ChatTemplateError(ValueError):
    """The template refused the conversation, or failed on it; the message says why."""


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}` (templates that mark the assistant's tokens for
    training) renders its body; marking is a training concern."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class _Namespace(Namespace):
    """jinja2's namespace() without underscore-prefixed attributes (no route to internals)."""

    def __init__(*args, **kwargs):  # noqa: N805 (jinja2's own signature trick)
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a chat template may not set {name!r} on a namespace")


class _Dict:
    """dict() and dict.fromkeys() for templates, and nothing else of the type."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _raise(message):
    raise ChatTemplateError(str(message))


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # not jinja2's HTML-escaping tojson: a prompt is not HTML
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compiled(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise, namespace=_Namespace, dict=_Dict(),
                       strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env.from_string(source)


def check(source: str) -> None:
    """Compile the template as `render` will (syntax, tags, the Python Jinja2 makes of it), or
    raise ChatTemplateError naming the line. Compiling renders nothing."""
    try:
        _compiled(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise ChatTemplateError(f"{exc.message}" + (f" (line {line})" if line else "")) from None
    except SyntaxError as exc:  # Jinja2 accepted it, Python did not (e.g. break outside a loop)
        raise ChatTemplateError(f"{exc.msg}") from None


def plain(value: Any) -> Any:
    """Only JSON values reach a template (a request body already is; this guards the rest)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return f"<{type(value).__name__}>"


def render(source: str, messages: list[dict], special_tokens: dict[str, str],
           add_generation_prompt: bool = True, **extra: Any) -> str:
    """The prompt for `messages` (role/content dicts, content a string or text parts)."""
    try:
        return _compiled(source).render(
            messages=plain(messages), add_generation_prompt=add_generation_prompt, tools=None,
            documents=None, **plain(special_tokens), **plain(extra))
    except ChatTemplateError:
        raise
    except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ChatTemplateError(f"the model's chat template failed on this conversation: "
                                f"{type(exc).__name__}: {exc}"[:500]) from None
