"""The model families, each declared once: what the other rooms ask about a family.

A `Family` names its config class and the model pretraining trains, the tokenizer it trains
and that tokenizer's habit (cased or not), whether its inputs carry token types, and how it fine-tunes each task kind: with a head class, or text to text through
`generate`. `pretrain`, `finetune`, `tasks`, the CLI's choices and `interop` (which keeps the
transformers weight names) read FAMILIES; `family_of(model)` finds a built model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type
    model_cls: type  # what pretraining trains
    tokenizer_kind: str  # wordpiece, bpe or unigram (tokenizer.KINDS)
    lowercase: bool  # the tokenizer's habit when the user says nothing
    token_types: bool  # its inputs carry token type ids (BERT's segments A and B)
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
    Family("bert", BertConfig, BertForPreTraining, "wordpiece", lowercase=True, token_types=True,
           heads=_heads(BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering)),
    Family("electra", ElectraConfig, ElectraForPreTraining, "wordpiece", lowercase=True, token_types=True,
           heads=_heads(ElectraForSequenceClassification, ElectraForTokenClassification, ElectraForQuestionAnswering)),
    # RoBERTa reads no token types: a pair is <s> A </s></s> B </s> (the byte-level BPE's template)
    Family("roberta", RobertaConfig, RobertaForMaskedLM, "bpe", lowercase=False, token_types=False,
           heads=_heads(RobertaForSequenceClassification, RobertaForTokenClassification, RobertaForQuestionAnswering)),
    Family("bart", BartConfig, BartForConditionalGeneration, "bpe", lowercase=False, token_types=False,
           heads=_heads(BartForSequenceClassification, BartForTokenClassification, BartForQuestionAnswering)),
    Family("t5", T5Config, T5ForConditionalGeneration, "unigram", lowercase=False, token_types=False,
           text_to_text=TEXT_TO_TEXT),
)}


def family_of(model: nn.Module) -> Family:
    """The family of a built model (from its config's model_type)."""
    return FAMILIES[model.config.model_type]


__all__ = ["FAMILIES", "Family", "family_of"]
