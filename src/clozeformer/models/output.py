"""The one output type every model returns (HF-shaped field names, no tuples)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Output:
    last_hidden_state: Tensor | None = None  # [B, T, D]
    logits: Tensor | None = None  # LM logits: [B, T, V]; with labels only masked rows, [M, V] (None in training
    #                               where the head is fused into the loss). ELECTRA's discriminator, as HF's
    #                               ElectraForPreTraining: one "replaced?" logit per token [B, T], > 0 = replaced
    loss: Tensor | None = None  # scalar, the sum of `losses`
    pooled: Tensor | None = None  # [B, D] pooler output; [P, D], one per document, for a packed batch
    nsp_logits: Tensor | None = None  # [B, 2] (packed: [P, 2]); class 0 = B follows A (HF convention)
    generator_logits: Tensor | None = None  # ELECTRA pair: the generator's MLM logits [M, V] (None in training)
    disc_input_ids: Tensor | None = None  # [B, T] what the ELECTRA discriminator saw (generator samples in)
    replaced: Tensor | None = None  # bool [B, T]: the discriminator's targets (sample ≠ original)
    sampled: Tensor | None = None  # [M] ELECTRA generator: the id drawn at each masked position
    start_logits: Tensor | None = None  # [B, T] extractive QA: answer-start score per token
    end_logits: Tensor | None = None  # [B, T] extractive QA: answer-end score per token
    losses: dict[str, Tensor] = field(default_factory=dict)  # named parts of `loss`, for logging

    # transformers' names for the same tensors (BertForPreTraining, BertModel)
    @property
    def prediction_logits(self) -> Tensor | None:
        return self.logits

    @property
    def seq_relationship_logits(self) -> Tensor | None:
        return self.nsp_logits

    @property
    def pooler_output(self) -> Tensor | None:
        return self.pooled
