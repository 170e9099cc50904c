"""BERT: embeddings + post-norm encoder (+ pooler, MLM head, NSP head; fine-tuning heads).

Shapes: B batch, T length, D hidden width, V vocabulary, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.config import ACTIVATIONS, Config
from clozeformer.models.heads import (MLMHead, Pooler, SpanHead, masked_lm_loss, sequence_loss, span_loss,
                                      token_loss)
from clozeformer.models.output import Output
from clozeformer.nn import Stack, TransformerLayer, init_weights, segment_ids, segment_positions, segment_starts
from clozeformer.nn.functional import IGNORE, check_ids, dropout
from clozeformer.nn.position import learned_positions


@dataclass(frozen=True)
class BertConfig(Config):
    """BERT (Devlin et al. 2019): post-norm encoder with learned absolute positions."""

    model_type: ClassVar[str] = "bert"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny/mini/small follow Turc et al. 2019 ("Well-read students"); base is BERT-Base.
        "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
        "mini": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
        "small": dict(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=2048),
        "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    }

    vocab_size: int = 30522
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    nsp: bool = True  # build the next-sentence-prediction head

    def __post_init__(self) -> None:
        self._positive("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                       "max_positions", "type_vocab_size", "layer_norm_eps", "initializer_range")
        self._check(self.hidden_size % self.num_heads == 0,
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        self._rates("dropout", "attention_dropout")
        self._check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}")
        self._token_ids("pad_token_id")


class BertEmbeddings(nn.Module):
    """token + learned absolute position + token type, then LayerNorm and dropout.

    `dim` defaults to cfg.hidden_size (ELECTRA passes its embedding size E); `tok`/`pos`
    share existing embedding modules (ELECTRA's generator shares the discriminator's).
    Position p reads row p + `position_offset` of the table (RoBERTa's: pad_token_id + 1).
    With `count_tokens` (RoBERTa's, as transformers numbers them) an unpacked row's positions count
    its non-padding tokens, so left padding or a padding id in the text shifts them; padding
    reads row pad_token_id.
    """

    def __init__(self, cfg, dim: int | None = None, *, tok: nn.Embedding | None = None,
                 pos: nn.Embedding | None = None, position_offset: int = 0, count_tokens: bool = False) -> None:
        super().__init__()
        self.offset = position_offset
        self.pad = cfg.pad_token_id if count_tokens else None
        dim = dim or cfg.hidden_size
        self.tok = tok if tok is not None else nn.Embedding(cfg.vocab_size, dim, padding_idx=cfg.pad_token_id)
        self.pos = pos if pos is not None else nn.Embedding(cfg.max_positions, dim)
        self.token_type = nn.Embedding(cfg.type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = cfg.dropout

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                positions: Tensor | None = None) -> Tensor:
        """positions [B, T] (a packed row's, restarting at each document) default to 0 … T − 1."""
        if positions is None and self.pad is not None:
            real = input_ids != self.pad
            positions = real.cumsum(1) * real - 1  # padding: −1, row offset − 1 = pad_token_id
        x = self.tok(input_ids) + learned_positions(self.pos, input_ids.shape[1], offset=self.offset,
                                                    positions=positions)  # [B, T, D]
        x = x + (self.token_type(token_type_ids) if token_type_ids is not None else self.token_type.weight[0])
        return dropout(self.norm(x), self.dropout, self.training)


def bert_layers(cfg, dim: int | None = None, heads: int | None = None, ffn: int | None = None,
                depth: int | None = None) -> Stack:
    """`depth` post-norm layers of width `dim` (default cfg's own sizes; ELECTRA's generator is narrower)."""
    return Stack(
        TransformerLayer(dim or cfg.hidden_size, heads or cfg.num_heads, ffn or cfg.intermediate_size,
                         activation=cfg.activation, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                         eps=cfg.layer_norm_eps)
        for _ in range(depth or cfg.num_layers))


def check_length(input_ids: Tensor, max_positions: int) -> None:
    if check_ids(input_ids).shape[1] > max_positions:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_positions {max_positions}; "
                         "truncate the input")


def embed_and_encode(embeddings: BertEmbeddings, project: nn.Module | None, layers: Stack,
                     input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> Tensor:
    """Embeddings (-> projection, ELECTRA's E -> D) -> encoder layers: [B, T] ids -> [B, T, D].

    A packed attention_mask (segment ids, nn.attention.segment_ids) restarts positions at each
    document and keeps attention within it, so each document is encoded as if alone.
    """
    segments = segment_ids(attention_mask)
    x = embeddings(input_ids, token_type_ids, None if segments is None else segment_positions(segments))
    if project is not None:
        x = project(x)
    return layers(x, attention_mask)


def first_tokens(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """The [CLS] vectors: hidden [B, T, D] -> [B, D]; of a packed batch, every document's first token, [P, D]
    in row-major order."""
    segments = segment_ids(attention_mask)
    return hidden[:, 0] if segments is None else hidden[segment_starts(segments)]


class BertModel(nn.Module):
    """The bare encoder: returns last_hidden_state and the pooled [CLS] vector."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = bert_layers(cfg)
        self.pooler = Pooler(cfg.hidden_size)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Output:
        check_length(input_ids, self.config.max_positions)
        x = embed_and_encode(self.embeddings, None, self.layers, input_ids, attention_mask, token_type_ids)
        return Output(last_hidden_state=x, pooled=self.pooler(first_tokens(x, attention_mask)))  # [B or P, D]


def nsp_targets(next_sentence_label: Tensor) -> Tensor:
    """NSP labels [B] or, packed, [B, K] with -100 past each row's last pair -> [P] in row-major order."""
    y = next_sentence_label.reshape(-1)
    return y[y != IGNORE]


class BertForPreTraining(nn.Module):
    """BERT with the MLM head (tied to the token embeddings) and, if `config.nsp`, the NSP head.

    With `labels` the MLM head runs only at labelled positions (sparse prediction) and
    `logits` is [M, V]; without, it is [B, T, V].
    """

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)
        self.mlm = MLMHead(cfg.hidden_size, self.bert.embeddings.tok, cfg.activation, cfg.layer_norm_eps)
        self.nsp = nn.Linear(cfg.hidden_size, 2) if cfg.nsp else None
        init_weights(self.mlm.dense, cfg.initializer_range)
        if self.nsp is not None:
            init_weights(self.nsp, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None,
                next_sentence_label: Tensor | None = None) -> Output:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        h = out.last_hidden_state
        if labels is not None:
            out.losses["mlm"], out.logits, _ = masked_lm_loss(self.mlm, h, labels)
        else:
            out.logits = self.mlm(h)  # [B, T, V]
        if self.nsp is not None:
            out.nsp_logits = self.nsp(out.pooled)  # [B, 2]; [P, 2] for a packed batch's P pairs
            if next_sentence_label is not None:  # [B], or [B, K] per packed pair, -100 after a row's last
                out.losses["nsp"] = F.cross_entropy(out.nsp_logits.float(), nsp_targets(next_sentence_label))
        if out.losses:
            out.loss = torch.stack(list(out.losses.values())).sum()
        return out


class _BertWithClassifier(nn.Module):
    """A BertModel + dropout + one linear layer to num_labels; classifier_dropout defaults to the config's hidden
    dropout, as in HF."""

    def __init__(self, cfg: BertConfig, num_labels: int, *, classifier_dropout: float | None = None) -> None:
        super().__init__()
        self.config, self.num_labels = cfg, num_labels
        self.bert = BertModel(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        self.classifier_dropout = cfg.dropout if classifier_dropout is None else classifier_dropout
        init_weights(self.classifier, cfg.initializer_range)


class BertForSequenceClassification(_BertWithClassifier):
    """dropout -> linear on the pooled [CLS] vector (HF's BertForSequenceClassification).

    num_labels == 1 is regression (MSE on float labels); otherwise cross-entropy on class ids.
    """

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        out.logits = self.classifier(dropout(out.pooled, self.classifier_dropout, self.training))  # [B, C]
        if labels is not None:
            out.loss = sequence_loss(out.logits, labels)
        return out


class BertForTokenClassification(_BertWithClassifier):
    """dropout -> linear on every token vector (HF's BertForTokenClassification); labels [B, T], -100 ignored.
    The encoder's pooler stays unused (HF builds this model without one)."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        h = dropout(out.last_hidden_state, self.classifier_dropout, self.training)
        out.logits = self.classifier(h)  # [B, T, C]
        if labels is not None:
            out.loss = token_loss(out.logits, labels)
        return out


class BertForQuestionAnswering(nn.Module):
    """Start/end logits per token (HF's BertForQuestionAnswering); positions [B] index the window's tokens."""

    def __init__(self, cfg: BertConfig, num_labels: int = 2) -> None:
        super().__init__()
        if num_labels != 2:
            raise ValueError(f"question answering predicts a start and an end (2 labels), got {num_labels}")
        self.config, self.num_labels = cfg, 2
        self.bert = BertModel(cfg)  # its pooler stays unused (HF builds this model without one)
        self.span = SpanHead(cfg.hidden_size)
        init_weights(self.span, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                start_positions: Tensor | None = None, end_positions: Tensor | None = None) -> Output:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        out.start_logits, out.end_logits = self.span(out.last_hidden_state)  # [B, T] each
        if start_positions is not None and end_positions is not None:
            out.loss = span_loss(out.start_logits, out.end_logits, start_positions, end_positions)
        return out
