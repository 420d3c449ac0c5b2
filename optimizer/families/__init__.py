"""Model families, by the name recipes use: one module each, imported when first needed.

A family module defines FAMILY, an instance of families.base.Family (the protocol every family
follows). Adding a family is a new module and one line here.
"""

from __future__ import annotations

import importlib

from ..errors import RecipeError
from .base import Context, Exported, Family, Subject

__all__ = ["FAMILIES", "Context", "Exported", "Family", "Subject", "get_family"]

# name -> module, imported when a recipe names it (torch, transformers: only what a run needs)
FAMILIES: dict[str, str] = {name: f"{__name__}.{name.replace('-', '_')}"
                            for name in ("dcgan", "beta-vae", "gpt2", "llama")}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise RecipeError(f"recipe: family {name!r} is not supported; known: {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[name]).FAMILY
