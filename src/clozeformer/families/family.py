"""What a family declares (`Family`), and the parts families share: the small-budget recipes,
the config fields a tokenizer decides for an encoder, the fine-tuning heads per task kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from clozeformer.interop.hf import HFMapping

TEXT_TO_TEXT = frozenset({"classification", "regression"})  # kinds a text-to-text family answers as text

# The small-budget recipe, the pretraining defaults for new tiny/mini models (BENCHMARKS.md, "A recipe for
# minutes", gives each choice's A/B run): mimetic init, a high peak lr, a long warmup; dropout off (pretrain()).
SMALL_BUDGET = dict(lr=2e-3, warmup_fraction=0.3, weight_init="mimetic")
SMALL_BUDGET_MLM = {**SMALL_BUDGET, "mlm_rate": 0.25}  # and more masking for the MLM-based objectives


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type
    model_cls: type  # what pretraining trains
    tokenizer_kind: str  # wordpiece, bpe or unigram (tokenizer.KINDS)
    lowercase: bool  # the tokenizer's habit when the user says nothing
    token_types: bool  # its inputs carry token type ids (BERT's segments A and B)
    objective: str  # its pretraining objective: mlm, rtd, denoise or span (train/pretrain.OBJECTIVES)
    config_fields: Callable[[Any, int], dict[str, Any]]  # (tokenizer, max_len) -> the config fields they decide
    hf: HFMapping  # transformers' names for its weights and config (interop/hf.py)
    nsp: bool = False  # pretraining may add next-sentence prediction
    small_budget: dict[str, Any] = field(default_factory=lambda: dict(SMALL_BUDGET))
    heads: dict[str, type] = field(default_factory=dict)  # task kind -> head class
    text_to_text: frozenset[str] = frozenset()  # task kinds answered by generating text

    @property
    def generates(self) -> bool:
        """An encoder-decoder: seq2seq tasks, `generate`."""
        return hasattr(self.model_cls, "generate")

    def head(self, kind: str) -> type | None:
        """The head class that fine-tunes `kind`, or None when the family generates its answer (or has none)."""
        return None if kind in self.text_to_text else self.heads.get(kind)


def task_heads(classification: type, tokens: type, qa: type) -> dict[str, type]:
    """The head classes of an encoder family (or BART) per task kind; regression is a one-label classifier."""
    return {"classification": classification, "regression": classification, "token-classification": tokens,
            "extractive-qa": qa}


def encoder_fields(tok, max_len: int) -> dict[str, Any]:
    """What the tokenizer and max_len decide of a BERT-like encoder's config."""
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "max_positions": max(512, max_len)}
