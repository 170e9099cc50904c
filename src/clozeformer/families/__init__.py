"""The model families, one module each, every one declared once: what the other rooms ask about a family.

A `Family` (families/family.py) names its config class and the model pretraining trains, the
tokenizer it trains and that tokenizer's habit (cased or not), whether its inputs carry token
types, its pretraining objective, config fields and small-budget recipe, transformers' names for
its weights and config (interop/hf.py's tables), and how it fine-tunes each task kind: with a
head class, or text to text through `generate`. `pretrain`, `finetune`, `tasks`, `view`, the
CLI's choices and `interop` read FAMILIES; `family_of(model)` finds a built model's. A new
family is a module here beside its model file (and its config class and weight-name table).
"""

from __future__ import annotations

from torch import nn

from clozeformer.families.bart import BART
from clozeformer.families.bert import BERT
from clozeformer.families.electra import ELECTRA
from clozeformer.families.family import Family
from clozeformer.families.roberta import ROBERTA
from clozeformer.families.t5 import T5

FAMILIES: dict[str, Family] = {f.name: f for f in (BERT, ROBERTA, ELECTRA, BART, T5)}


def family_of(model: nn.Module) -> Family:
    """The family of a built model (from its config's model_type)."""
    return FAMILIES[model.config.model_type]


__all__ = ["FAMILIES", "Family", "family_of"]
