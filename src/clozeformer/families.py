"""The model families, each declared once: what the other rooms ask about a family.

A `Family` names its config class and the model pretraining trains, the tokenizer it trains
and that tokenizer's habit (cased or not), whether its inputs carry token types, its
pretraining objective, config fields and small-budget recipe, and how it fine-tunes each task
kind: with a head class, or text to text through `generate`. `pretrain`, `finetune`, `tasks`,
`view`, the CLI's choices and `interop` (which keeps the transformers weight names) read
FAMILIES; `family_of(model)` finds a built model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from clozeformer.config import BartConfig, BertConfig, ElectraConfig, RobertaConfig, T5Config
from clozeformer.models.bart import (BartForConditionalGeneration, BartForQuestionAnswering,
                                     BartForSequenceClassification, BartForTokenClassification)
from clozeformer.models.bert import (BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                                     BertForTokenClassification)
from clozeformer.models.electra import (ElectraForPreTraining, ElectraForQuestionAnswering,
                                        ElectraForSequenceClassification, ElectraForTokenClassification)
from clozeformer.models.roberta import (RobertaForMaskedLM, RobertaForQuestionAnswering,
                                        RobertaForSequenceClassification, RobertaForTokenClassification)
from clozeformer.models.t5 import T5ForConditionalGeneration

TEXT_TO_TEXT = frozenset({"classification", "regression"})  # kinds a text-to-text family answers as text

# The small-budget recipe, the pretraining defaults for new tiny/mini models (BENCHMARKS.md, "A recipe for
# minutes", gives each choice's A/B run): mimetic init, a high peak lr, a long warmup; dropout off (pretrain()).
SMALL_BUDGET = dict(lr=2e-3, warmup_fraction=0.3, weight_init="mimetic")
SMALL_BUDGET_MLM = {**SMALL_BUDGET, "mlm_rate": 0.25}  # and more masking for the MLM-based objectives
# ELECTRA's discriminator collapses at 2e-3 (its token vectors converge to one) and fine-tunes worse the higher
# the peak lr: 61.7 / 65.8 / 70.9% on SST-2 at 2e-3 / 1e-3 / 5e-4 (BENCHMARKS.md); 5e-4 is also the paper's,
# and the lowest whose generator leaves the unigram plateau in 20 minutes (2.5e-4: 72.2%, plateau alarm)
SMALL_BUDGET_RTD = {**SMALL_BUDGET_MLM, "lr": 5e-4}


def _encoder_fields(tok, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "max_positions": max(512, max_len)}


def _roberta_fields(tok, max_len: int) -> dict[str, Any]:
    offset = tok.pad_id + 1  # positions start after the padding id (models/roberta.py)
    return {**_encoder_fields(tok, max_len), "max_positions": max(512, max_len) + offset}


def _bart_fields(tok, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "bos_token_id": tok.bos_id,
            "eos_token_id": tok.eos_id, "decoder_start_token_id": tok.eos_id, "max_positions": max(1024, max_len)}


def _t5_fields(tok, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "eos_token_id": tok.eos_id,
            "decoder_start_token_id": tok.pad_id}


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


def _heads(classification: type, tokens: type, qa: type) -> dict[str, type]:
    return {"classification": classification, "regression": classification, "token-classification": tokens,
            "extractive-qa": qa}


# Tokenizers as the papers used them: BERT's WordPiece (BERT §3; ELECTRA reuses BERT's vocabulary),
# GPT-2's byte-level BPE for RoBERTa and BART, a SentencePiece Unigram vocabulary for T5.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", BertConfig, BertForPreTraining, "wordpiece", lowercase=True, token_types=True, objective="mlm",
           config_fields=_encoder_fields, nsp=True, small_budget=SMALL_BUDGET_MLM,
           heads=_heads(BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering)),
    # RoBERTa reads no token types: a pair is <s> A </s></s> B </s> (the byte-level BPE's template)
    Family("roberta", RobertaConfig, RobertaForMaskedLM, "bpe", lowercase=False, token_types=False, objective="mlm",
           config_fields=_roberta_fields, small_budget=SMALL_BUDGET_MLM,
           heads=_heads(RobertaForSequenceClassification, RobertaForTokenClassification, RobertaForQuestionAnswering)),
    Family("electra", ElectraConfig, ElectraForPreTraining, "wordpiece", lowercase=True, token_types=True,
           objective="rtd", config_fields=_encoder_fields, small_budget=SMALL_BUDGET_RTD,
           heads=_heads(ElectraForSequenceClassification, ElectraForTokenClassification, ElectraForQuestionAnswering)),
    Family("bart", BartConfig, BartForConditionalGeneration, "bpe", lowercase=False, token_types=False,
           objective="denoise", config_fields=_bart_fields,
           heads=_heads(BartForSequenceClassification, BartForTokenClassification, BartForQuestionAnswering)),
    Family("t5", T5Config, T5ForConditionalGeneration, "unigram", lowercase=False, token_types=False,
           objective="span", config_fields=_t5_fields, text_to_text=TEXT_TO_TEXT),
)}


def family_of(model: nn.Module) -> Family:
    """The family of a built model (from its config's model_type)."""
    return FAMILIES[model.config.model_type]


__all__ = ["FAMILIES", "Family", "family_of"]
