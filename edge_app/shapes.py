"""Request bodies, each defined once: fields that both validate a body (a 400 that names the
field) and write the JSON Schema of the OpenAPI document (edge_app/openapi.py), so the two
cannot drift apart. Bounds that depend on the config or the loaded models (the max_tokens cap,
the model names, image sizes) are read from `Limits`, the same for both.

JSON's rules, as JSON Schema has them: 3.0 is an integer, true is not a number, null reads as
"not given" (the default) for every optional field. A route's parser gets plain values back
and checks what depends on the one model a request names (its context, its vocabulary).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Mapping

from .errors import InvalidRequest


@dataclass(frozen=True)
class Limits:
    """What a schema's bounds depend on: the config's caps and the loaded models."""

    max_tokens: int = 1  # the max_tokens cap: the config's, within the largest text context
    max_images: int = 1
    max_top_k: int = 0  # the largest vocabulary
    # task (or "chat": the text models with a chat template) -> the loaded models' names
    models: Mapping[str, tuple[str, ...]] = dataclass_field(default_factory=dict)
    sizes: tuple[str, ...] = ()  # the image models' WxH

    @classmethod
    def of(cls, cfg, registry) -> "Limits":
        by: dict[str, list[str]] = {"text-generation": [], "image-generation": [], "chat": []}
        context, vocab, sizes = 2, 0, set()
        for model in registry.models.values():
            m = model.bundle.manifest
            by[m.task].append(m.name)
            if m.task == "text-generation":
                context = max(context, model.spec.context_length)
                vocab = max(vocab, model.spec.vocab_size)
                if model.spec.chat_template:
                    by["chat"].append(m.name)
            else:
                sizes.add(f"{m.generation.image.width}x{m.generation.image.height}")
        return cls(max_tokens=min(cfg.max_tokens_per_request, max(1, context - 1)),
                   max_images=cfg.max_images_per_request, max_top_k=vocab,
                   models={k: tuple(sorted(v)) for k, v in by.items()}, sizes=tuple(sorted(sizes)))


Bound = Any  # a number, or a function of Limits giving one


def _bound(value: Bound, lim: Limits):
    return value(lim) if callable(value) else value


def _shown(value: Any) -> str:
    return json.dumps(value)[:40]


class Field:
    """One member of a body. `check` gets a value that is not null, and returns it parsed."""

    default: Any = None

    def __init__(self, description: str = ""):
        self.description = description

    def schema(self, lim: Limits) -> dict:
        raise NotImplementedError

    def check(self, value: Any, name: str, lim: Limits) -> Any:
        raise NotImplementedError

    def documented(self, lim: Limits, nullable: bool) -> dict:
        out = self.schema(lim)
        if nullable:
            out = _nullable(out)
        if self.description:
            out["description"] = self.description
        if self.default is not None:
            out["default"] = self.default
        return out


def _nullable(schema: dict) -> dict:
    if schema.get("type") == "null":
        return schema
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None],
                **({"type": _types(schema["type"]) + ["null"]} if "type" in schema else {})}
    if "const" in schema:
        rest = {k: v for k, v in schema.items() if k != "const"}
        return {**rest, "enum": [schema["const"], None]}
    if "type" in schema:
        return {**schema, "type": _types(schema["type"]) + ["null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _types(t) -> list[str]:
    return list(t) if isinstance(t, list) else [t]


def _bad(name: str, message: str, **kw) -> InvalidRequest:
    return InvalidRequest(f"'{name}' {message}", param=name.split("[")[0].split(".")[0], **kw)


class Int(Field):
    def __init__(self, low: Bound, high: Bound, default: int | None = None, description=""):
        super().__init__(description)
        self.low, self.high, self.default = low, high, default

    def schema(self, lim):
        return {"type": "integer", "minimum": _bound(self.low, lim),
                "maximum": _bound(self.high, lim)}

    def check(self, value, name, lim):
        if isinstance(value, float) and value.is_integer():  # JSON Schema: 3.0 is an integer
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, f"must be an integer, got {type(value).__name__}")
        low, high = _bound(self.low, lim), _bound(self.high, lim)
        if not low <= value <= high:
            raise _bad(name, f"must be between {low} and {high}, got {value}")
        return value


class Num(Field):
    def __init__(self, low: float, high: float, default: float, low_open: bool = False,
                 description=""):
        super().__init__(description)
        self.low, self.high, self.default, self.low_open = low, high, default, low_open

    def schema(self, lim):
        return {"type": "number", "exclusiveMinimum" if self.low_open else "minimum": self.low,
                "maximum": self.high}

    def check(self, value, name, lim):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise _bad(name, f"must be a number, got {_shown(value)}")
        if value > self.high or value < self.low or (self.low_open and value == self.low):
            bound = f"({self.low}, {self.high}]" if self.low_open else f"[{self.low}, {self.high}]"
            raise _bad(name, f"must be within {bound}, got {value}")
        return float(value)


class Str(Field):
    def __init__(self, max_length: int | None = None, min_length: int = 0,
                 enum: Callable[[Limits], tuple[str, ...]] | None = None, description=""):
        super().__init__(description)
        self.max_length, self.min_length, self.enum = max_length, min_length, enum

    def schema(self, lim):
        out: dict[str, Any] = {"type": "string"}
        if self.min_length:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.enum is not None and self.enum(lim):  # none loaded: any name (then a 404/400)
            out["enum"] = list(self.enum(lim))
        return out

    def check(self, value, name, lim):
        if not isinstance(value, str):
            raise _bad(name, f"must be a string, got {type(value).__name__}")
        if self.max_length is not None and len(value) > self.max_length:
            raise _bad(name, f"is longer than {self.max_length} characters")
        if len(value) < self.min_length:
            raise _bad(name, "must not be empty")
        return value  # an enum (model names, sizes) is checked by the route, with its own status


class Bool(Field):
    def __init__(self, default: bool = False, description=""):
        super().__init__(description)
        self.default = default

    def schema(self, lim):
        return {"type": "boolean"}

    def check(self, value, name, lim):
        if not isinstance(value, bool):
            raise _bad(name, "must be true or false")
        return value


class Only(Field):
    """A field OpenAI clients send whose only value here is the one that asks for nothing
    (n = 1, no penalty, no tools): anything else gets a 400 that says why."""

    def __init__(self, schema: dict, accepts: Callable[[Any], bool], why: str):
        super().__init__(why)
        self._schema, self.accepts, self.why = schema, accepts, why

    def schema(self, lim):
        return dict(self._schema)

    def check(self, value, name, lim):
        if not self.accepts(value):
            raise _bad(name, f"is not supported: {self.why}")
        return value


class Choice(Field):
    """One of a fixed set of strings (a message's role, say)."""

    def __init__(self, values: tuple[str, ...], description=""):
        super().__init__(description)
        self.values = values

    def schema(self, lim):
        return {"type": "string", "enum": list(self.values)}

    def check(self, value, name, lim):
        if value not in self.values or not isinstance(value, str):
            raise _bad(name, f"must be one of {list(self.values)}, got {_shown(value)}")
        return value


def only_value(value: Any, kind: str, why: str) -> Only:
    """Only `value` (or null): e.g. n = 1, presence_penalty = 0."""
    return Only({"type": kind, "enum": [value]},
                lambda v: v == value and isinstance(v, bool) == isinstance(value, bool), why)


def never(why: str) -> Only:
    """Only null: a feature not offered at all (log probabilities, say)."""
    return Only({"type": "null"}, lambda v: False, why)


class Stop(Field):
    """Up to `most` non-empty strings (or one string)."""

    def __init__(self, most: int = 4, description=""):
        super().__init__(description)
        self.most = most

    def schema(self, lim):
        one = {"type": "string", "minLength": 1}
        return {"oneOf": [one, {"type": "array", "maxItems": self.most, "items": one}]}

    def check(self, value, name, lim):
        stop = [value] if isinstance(value, str) else value
        if not isinstance(stop, list) or len(stop) > self.most or \
                not all(isinstance(s, str) and s for s in stop):
            raise _bad(name, f"must be a non-empty string or a list of up to {self.most}")
        return tuple(stop)


class Array(Field):
    def __init__(self, item: Field, min_items: int = 0, max_items: int | None = None,
                 description=""):
        super().__init__(description)
        self.item, self.min_items, self.max_items = item, min_items, max_items

    def schema(self, lim):
        out = {"type": "array", "items": self.item.documented(lim, False)}
        if self.min_items:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        return out

    def check(self, value, name, lim):
        if not isinstance(value, list):
            raise _bad(name, f"must be a list, got {type(value).__name__}")
        if len(value) < self.min_items:
            raise _bad(name, f"must hold at least {self.min_items} item(s)")
        if self.max_items is not None and len(value) > self.max_items:
            raise _bad(name, f"must hold at most {self.max_items} items, got {len(value)}")
        out = []
        for i, item in enumerate(value):
            if item is None:
                raise _bad(f"{name}[{i}]", "must not be null")
            out.append(self.item.check(item, f"{name}[{i}]", lim))
        return out


class Either(Field):
    """The first alternative whose JSON type the value has decides (alternatives differ in
    type: a string or a list, say)."""

    def __init__(self, *alternatives: tuple[type | tuple[type, ...], Field], description=""):
        super().__init__(description)
        self.alternatives = alternatives

    def schema(self, lim):
        return {"oneOf": [f.documented(lim, False) for _, f in self.alternatives]}

    def check(self, value, name, lim):
        for kind, field in self.alternatives:
            if isinstance(value, kind):
                return field.check(value, name, lim)
        raise _bad(name, f"must be {' or '.join(self._kinds())}, got {type(value).__name__}")

    def _kinds(self):
        names = {str: "a string", list: "a list", dict: "an object", bool: "true or false"}
        return [names.get(k, getattr(k, "__name__", str(k))) for k, _ in self.alternatives]


class Shape(Field):
    """A JSON object of named fields; unknown members are refused by name."""

    def __init__(self, fields: dict[str, Field], required: tuple[str, ...] = (),
                 description: str = "", unknown_hint: str = ""):
        super().__init__(description)
        self.fields, self.required, self.unknown_hint = fields, required, unknown_hint

    def schema(self, lim):
        out: dict[str, Any] = {
            "type": "object", "additionalProperties": False,
            "properties": {n: f.documented(lim, n not in self.required)
                           for n, f in self.fields.items()}}
        if self.required:
            out["required"] = list(self.required)
        return out

    def check(self, value, name, lim):
        if not isinstance(value, dict):
            raise _bad(name, f"must be an object, got {type(value).__name__}")
        return self.parse(value, lim, f"{name}.")

    def one(self, body: dict[str, Any], name: str, lim: Limits, prefix: str = "") -> Any:
        """One field of `body`, parsed (a route resolves `model` first, so that a refused
        request is still counted under the model it named)."""
        value = body.get(name)
        if value is not None:
            return self.fields[name].check(value, prefix + name, lim)
        if name in self.required:
            raise _bad(prefix + name, "is required")
        return self.fields[name].default

    def parse(self, body: dict[str, Any], lim: Limits, prefix: str = "") -> dict[str, Any]:
        unknown = sorted(set(body) - set(self.fields))
        if unknown:
            where = f"in '{prefix[:-1]}' " if prefix else ""
            raise InvalidRequest(f"unknown parameter(s) {where}{unknown}; accepted: "
                                 f"{list(self.fields)}{self.unknown_hint}"[:600],
                                 param=(prefix + unknown[0]).split(".")[0].split("[")[0])
        return {n: self.one(body, n, lim, prefix) for n in self.fields}
