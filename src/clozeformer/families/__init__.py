"""The model families, one module each, every one declared once: what the other rooms ask about a family.

A `Family` (families/family.py) names its config class and the model pretraining trains, the
tokenizer it trains and that tokenizer's habit (cased or not), whether its inputs carry token
types, its pretraining objective, config fields and small-budget recipe, transformers' names for
its weights and config (interop/hf.py's tables), and how it fine-tunes each task kind: with a
head class, or text to text through `generate`. `pretrain`, `finetune`, `tasks`, `view`, the
CLI's choices and `interop` read FAMILIES; `family_of(model)` finds a built model's. A new
family is a module here (declaring FAMILY) beside its model file, and its weight-name table in interop/hf.py.
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from clozeformer.families.family import Family


def _declared() -> dict[str, Family]:
    """Every module here but family.py declares one family as FAMILY: a new module is a new family."""
    modules = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "family")
    return {f.name: f for f in (importlib.import_module(f"{__name__}.{m}").FAMILY for m in modules)}


FAMILIES: dict[str, Family] = _declared()


def family_of(model: nn.Module) -> Family:
    """The family of a built model (from its config's model_type)."""
    return FAMILIES[model.config.model_type]


__all__ = ["FAMILIES", "Family", "family_of"]
