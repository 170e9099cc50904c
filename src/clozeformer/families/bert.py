"""BERT (Devlin et al. 2019): masked-LM (+ next-sentence prediction) pretraining on an uncased WordPiece
vocabulary (BERT §3); token types mark a pair's segments A and B."""

from clozeformer.families.family import SMALL_BUDGET_MLM, Family, encoder_fields, task_heads
from clozeformer.interop import hf
from clozeformer.models.bert import (BertConfig, BertForPreTraining, BertForQuestionAnswering,
                                     BertForSequenceClassification, BertForTokenClassification)

FAMILY = Family(
    "bert", BertConfig, BertForPreTraining, "wordpiece", lowercase=True, token_types=True, objective="mlm",
    config_fields=encoder_fields, nsp=True, small_budget=SMALL_BUDGET_MLM,
    heads=task_heads(BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering),
    hf=hf.HFMapping(BertForPreTraining, ("BertModel", "BertForPreTraining", "BertForMaskedLM"),
                    ("bert.embeddings.", "bert.layers."), hf.bert_state_to_hf, hf.bert_state_from_hf,
                    hf.bert_config_to_hf, hf.bert_config_from_hf))
