"""Small heads on top of an encoder, each its own module.

Shapes: B batch, T length, D width, V vocabulary, M predicted (masked) positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.nn.functional import IGNORE, inverse_cdf, linear_cross_entropy
from clozeformer.nn.layers import ACTIVATION_FNS


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): BERT's sentence vector, fed to the NSP head."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, first: Tensor) -> Tensor:
        return torch.tanh(self.dense(first))  # [B, D] [CLS] vectors -> [B, D]


class MLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> decoder tied to the input embeddings (+ bias)."""

    def __init__(self, dim: int, embedding: nn.Embedding, activation: str = "gelu", eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, embedding.embedding_dim)
        self.norm = nn.LayerNorm(embedding.embedding_dim, eps=eps)
        self.act = ACTIVATION_FNS[activation]
        self.embedding = embedding  # tied: the decoder weight IS the input embedding matrix
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def transform(self, hidden: Tensor) -> Tensor:
        return self.norm(self.act(self.dense(hidden)))  # [..., D] -> [..., E]

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(self.transform(hidden), self.embedding.weight, self.bias)  # [..., V]


def masked_lm_loss(head: MLMHead, hidden: Tensor, labels: Tensor, sample_u: Tensor | None = None
                   ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Sparse prediction: run the head only at positions with a label (labels != -100).

    hidden [B, T, D], labels [B, T] -> (loss, logits [M, V], samples [M] or None). With 15%
    masking this skips 85% of the vocabulary projection, the largest matmul of a small BERT.
    With `sample_u` [M] (quantiles), one id per prediction is drawn from its softmax (ELECTRA's
    generator). In training the projection is fused into the loss (nn.functional.
    linear_cross_entropy: no [M, V] logits, so `logits` is None; the samples come from the same
    pass); in eval the logits are returned for metrics.
    """
    where = labels != IGNORE  # [B, T]
    return sparse_lm_loss(head.transform(hidden[where]), head.embedding.weight, head.bias, labels[where],
                          training=head.training, sample_u=sample_u)


def sparse_lm_loss(x: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor, *, training: bool,
                   sample_u: Tensor | None = None, smoothing: float = 0.0) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The vocabulary projection's cross-entropy at the predicted positions only, for every LM head (MLM,
    BART, T5): x [M, D] (the hidden states there), weight [V, D], bias [V] or None, targets y [M] ->
    (mean loss, logits [M, V] or None, samples [M] or None). Training (grad on): fused into the loss, no
    logits; else the logits, for metrics. `sample_u` [M]: one id per row drawn from its softmax. `smoothing`:
    label smoothing of the training loss (evaluation reports the plain cross-entropy)."""
    if training and torch.is_grad_enabled():
        fused = linear_cross_entropy(x, weight, bias, y, sample_u=sample_u, smoothing=smoothing)
        return (fused, None, None) if sample_u is None else (fused[0], None, fused[1])
    logits = F.linear(x, weight, bias)  # [M, V]
    sampled = None if sample_u is None else inverse_cdf(logits.float().softmax(-1), sample_u)  # as rtd's
    if logits.shape[0] == 0:  # nothing to predict: a zero loss that still has a graph
        return logits.sum(), logits, sampled
    return F.cross_entropy(logits.float(), y, label_smoothing=smoothing if training else 0.0), logits, sampled


class DiscriminatorHead(nn.Module):
    """ELECTRA's replaced-token detector: dense -> activation -> dense to one logit per token."""

    def __init__(self, dim: int, activation: str = "gelu") -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = ACTIVATION_FNS[activation]
        self.out = nn.Linear(dim, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.out(self.act(self.dense(hidden))).squeeze(-1)  # [B, T, D] -> [B, T]


class ClassificationHead(nn.Module):
    """Sequence classification on the first ([CLS]) vector: dropout -> dense -> activation ->
    dropout -> out (HF's ElectraClassificationHead shape; used for BERT too, so both compare alike)."""

    def __init__(self, dim: int, num_labels: int, activation: str = "gelu", dropout: float = 0.1) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = ACTIVATION_FNS[activation]
        self.out = nn.Linear(dim, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: Tensor) -> Tensor:
        x = self.dropout(hidden[:, 0])  # [B, T, D] -> [B, D]
        return self.out(self.dropout(self.act(self.dense(x))))  # [B, C]


def sequence_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """logits [B, C], labels [B]: mean squared error when C == 1 (regression, labels float), else
    cross-entropy (labels class ids), as HF's …ForSequenceClassification infers its problem type."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """logits [B, T, C], labels [B, T] with -100 where no label (padding, later sub-words)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


class SpanHead(nn.Module):
    """Extractive QA: one linear layer to a start and an end logit per token (HF's `qa_outputs`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        start, end = self.proj(hidden).unbind(-1)  # [B, T, D] -> [B, T, 2] -> 2 × [B, T]
        return start, end


def span_loss(start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor) -> Tensor:
    """Mean of the start and end cross-entropies; positions [B] outside the window (≥ T) are
    clamped to T and ignored, as in HF's …ForQuestionAnswering."""
    t = start_logits.shape[1]
    starts, ends = start_positions.clamp(0, t), end_positions.clamp(0, t)
    return (F.cross_entropy(start_logits.float(), starts, ignore_index=t)
            + F.cross_entropy(end_logits.float(), ends, ignore_index=t)) / 2
