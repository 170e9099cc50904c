"""RoBERTa (Liu et al. 2019): BERT's encoder, pretrained differently — MLM only (no NSP), masks
drawn anew for every batch (as all our MLM batches are), whole documents per row, byte-level BPE
with <s> … </s>, no token types, positions offset by the padding id as transformers lays them out.

Shapes: B batch, T length, D hidden width, V vocabulary, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from clozeformer.models.bert import BertConfig, BertEmbeddings, bert_layers, check_length, embed_and_encode
from clozeformer.models.heads import (ClassificationHead, MLMHead, SpanHead, masked_lm_loss, sequence_loss,
                                      span_loss, token_loss)
from clozeformer.models.output import Output
from clozeformer.nn import init_weights
from clozeformer.nn.functional import dropout


@dataclass(frozen=True)
class RobertaConfig(BertConfig):
    """RoBERTa (Liu et al. 2019): BERT's encoder without NSP or token types, on byte-level BPE.
    Positions start after the padding id (transformers' layout): a row's first token takes
    position pad_token_id + 1, so max_positions = 514 holds 512 tokens."""

    model_type: ClassVar[str] = "roberta"
    vocab_size: int = 50265
    max_positions: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    nsp: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(not self.nsp, "RoBERTa has no next-sentence prediction (nsp must be false)")
        self._check(self.max_positions > self.pad_token_id + 1,
                    f"max_positions {self.max_positions} leaves no position after the padding id {self.pad_token_id}")

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1

    @property
    def max_length(self) -> int:
        """The longest input: positions pad_token_id + 1 … max_positions − 1."""
        return self.max_positions - self.position_offset


class RobertaModel(nn.Module):
    """The bare encoder: last_hidden_state. (transformers' RobertaModel also has BERT's pooler; no
    RoBERTa head uses it, so it is not built and is ignored on import.)"""

    def __init__(self, cfg: RobertaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg, position_offset=cfg.position_offset, count_tokens=True)
        self.layers = bert_layers(cfg)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Output:
        check_length(input_ids, self.config.max_length)
        x = embed_and_encode(self.embeddings, None, self.layers, input_ids, attention_mask, token_type_ids)
        return Output(last_hidden_state=x)  # [B, T, D]


class RobertaForMaskedLM(nn.Module):
    """RoBERTa with its LM head (dense -> gelu -> LayerNorm -> decoder tied to the embeddings + bias);
    with `labels` the head runs only at labelled positions (sparse prediction), as BERT's."""

    def __init__(self, cfg: RobertaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.roberta = RobertaModel(cfg)
        # transformers' RobertaLMHead uses exact gelu whatever hidden_act is
        self.mlm = MLMHead(cfg.hidden_size, self.roberta.embeddings.tok, "gelu", cfg.layer_norm_eps)
        init_weights(self.mlm.dense, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        out = self.roberta(input_ids, attention_mask, token_type_ids)
        if labels is None:
            out.logits = self.mlm(out.last_hidden_state)  # [B, T, V]
            return out
        out.losses["mlm"], out.logits, _ = masked_lm_loss(self.mlm, out.last_hidden_state, labels)
        out.loss = out.losses["mlm"]
        return out


class RobertaForSequenceClassification(nn.Module):
    """transformers' RobertaClassificationHead on <s>: dropout -> dense -> tanh -> dropout -> out_proj.
    num_labels == 1 is regression."""

    def __init__(self, cfg: RobertaConfig, num_labels: int, *, classifier_dropout: float | None = None) -> None:
        super().__init__()
        self.config, self.num_labels = cfg, num_labels
        self.roberta = RobertaModel(cfg)
        self.classifier_dropout = cfg.dropout if classifier_dropout is None else classifier_dropout
        self.classifier = ClassificationHead(cfg.hidden_size, num_labels, "tanh", self.classifier_dropout)
        init_weights(self.classifier, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        out = self.roberta(input_ids, attention_mask, token_type_ids)
        out.logits = self.classifier(out.last_hidden_state)  # [B, C]
        if labels is not None:
            out.loss = sequence_loss(out.logits, labels)
        return out


class RobertaForTokenClassification(nn.Module):
    """dropout -> linear on every token vector; labels [B, T], -100 ignored."""

    def __init__(self, cfg: RobertaConfig, num_labels: int, *, classifier_dropout: float | None = None) -> None:
        super().__init__()
        self.config, self.num_labels = cfg, num_labels
        self.roberta = RobertaModel(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        self.classifier_dropout = cfg.dropout if classifier_dropout is None else classifier_dropout
        init_weights(self.classifier, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        out = self.roberta(input_ids, attention_mask, token_type_ids)
        out.logits = self.classifier(dropout(out.last_hidden_state, self.classifier_dropout, self.training))
        if labels is not None:
            out.loss = token_loss(out.logits, labels)
        return out


class RobertaForQuestionAnswering(nn.Module):
    """Start/end logits per token (transformers' `qa_outputs`)."""

    def __init__(self, cfg: RobertaConfig, num_labels: int = 2) -> None:
        super().__init__()
        if num_labels != 2:
            raise ValueError(f"question answering predicts a start and an end (2 labels), got {num_labels}")
        self.config, self.num_labels = cfg, 2
        self.roberta = RobertaModel(cfg)
        self.span = SpanHead(cfg.hidden_size)
        init_weights(self.span, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                start_positions: Tensor | None = None, end_positions: Tensor | None = None) -> Output:
        out = self.roberta(input_ids, attention_mask, token_type_ids)
        out.start_logits, out.end_logits = self.span(out.last_hidden_state)  # [B, T] each
        if start_positions is not None and end_positions is not None:
            out.loss = span_loss(out.start_logits, out.end_logits, start_positions, end_positions)
        return out


__all__ = ["RobertaForMaskedLM", "RobertaForQuestionAnswering", "RobertaForSequenceClassification",
           "RobertaForTokenClassification", "RobertaModel"]
