"""RoBERTa (Liu et al. 2019): BERT's masked LM, masks drawn per batch, no NSP, on GPT-2's cased byte-level BPE.
It reads no token types: a pair is <s> A </s></s> B </s> (the byte-level BPE's template)."""

from typing import Any

from clozeformer.families.family import SMALL_BUDGET_MLM, Family, encoder_fields, task_heads
from clozeformer.interop import hf
from clozeformer.models.roberta import (RobertaConfig, RobertaForMaskedLM, RobertaForQuestionAnswering,
                                        RobertaForSequenceClassification, RobertaForTokenClassification)


def roberta_fields(tok, max_len: int) -> dict[str, Any]:
    offset = tok.pad_id + 1  # positions start after the padding id (models/roberta.py)
    return {**encoder_fields(tok, max_len), "max_positions": max(512, max_len) + offset}


FAMILY = Family(
    "roberta", RobertaConfig, RobertaForMaskedLM, "bpe", lowercase=False, token_types=False, objective="mlm",
    config_fields=roberta_fields, small_budget=SMALL_BUDGET_MLM,
    heads=task_heads(RobertaForSequenceClassification, RobertaForTokenClassification, RobertaForQuestionAnswering),
    hf=hf.HFMapping(RobertaForMaskedLM, ("RobertaModel", "RobertaForMaskedLM"), ("roberta.",), hf.roberta_state_to_hf,
                    hf.roberta_state_from_hf, hf.roberta_config_to_hf, hf.roberta_config_from_hf))
