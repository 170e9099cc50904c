"""Replaced-token detection (ELECTRA, Clark et al. 2020 §2): pure, batched functions.

Shapes: B batch, T length, V vocabulary, M masked (predicted) positions, row-major over [B, T].

One RTD step:
1. `rtd_mask`: choose 15% of the tokens (objectives/mlm.mlm_mask) and draw the uniform
   noise `replace_u` the generator's samples will be read with; both are part of the batch,
   so a batch stays a pure function of (seed, index) and resume is exact.
2. The generator (a small MLM) predicts the masked positions: logits [M, V].
3. `sample_replacements`: one token per masked position from softmax(logits) (temperature 1),
   by inverse CDF with `replace_u`; no gradient flows through the sample (ELECTRA §2).
4. `replaced_inputs`: the discriminator's input, with the samples in place, and its targets:
   replaced = sample ≠ original (a correct guess counts as original, ELECTRA §2).
5. `electra_loss`: generator MLM loss + λ · discriminator BCE over non-pad tokens (λ = 50, §3.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from clozeformer.nn.functional import IGNORE, inverse_cdf
from clozeformer.objectives.mlm import mlm_mask

# google-research/electra pretrain_helpers.mask: 85% of the selected tokens become [MASK],
# the other 15% stay as they are; no random replacements (the generator supplies those).
MASK_FRAC = 0.85
RANDOM_FRAC = 0.0


def rtd_mask(input_ids: Tensor, *, mask_id: int, vocab_size: int, special_ids: Sequence[int] | Tensor,
             generator: torch.Generator, rate: float = 0.15, continuation: Tensor | None = None
             ) -> dict[str, Tensor]:
    """input_ids [B, T] -> {"input_ids": masked [B, T], "labels": [B, T] (IGNORE where not masked),
    "replace_u": uniform [0, 1) noise [B, T] for sampling the generator's replacements}."""
    out = mlm_mask(input_ids, mask_id=mask_id, vocab_size=vocab_size, special_ids=special_ids, generator=generator,
                   rate=rate, mask_frac=MASK_FRAC, random_frac=RANDOM_FRAC, continuation=continuation)
    out["replace_u"] = torch.rand(input_ids.shape, generator=generator)
    return out


@torch.no_grad()
def sample_replacements(logits: Tensor, u: Tensor) -> Tensor:
    """One id per row of logits [M, V] from softmax(logits), read at quantile u [M] (inverse CDF).

    A pure function of (logits, u): the same noise gives the same samples.
    """
    return inverse_cdf(logits.detach().float().softmax(-1), u)  # [M]; the fused generator head reads the same


def replaced_inputs(input_ids: Tensor, labels: Tensor, sampled: Tensor) -> tuple[Tensor, Tensor]:
    """The discriminator's input and targets.

    input_ids [B, T] (masked), labels [B, T] (originals at masked positions, else IGNORE),
    sampled [M] (one per masked position, row-major) -> (ids [B, T], replaced bool [B, T]).
    """
    where = labels != IGNORE  # [B, T]
    ids = input_ids.masked_scatter(where, sampled)
    replaced = torch.zeros_like(where).masked_scatter(where, sampled != labels[where])
    return ids, replaced


def discriminator_loss(logits: Tensor, replaced: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of logits [B, T] against replaced [B, T], mean over non-pad tokens
    (attention_mask ≠ 0: a packed batch's mask holds segment ids 1, 2, …)."""
    per_token = F.binary_cross_entropy_with_logits(logits.float(), replaced.float(), reduction="none")  # [B, T]
    if attention_mask is None:
        return per_token.mean()
    keep = (attention_mask != 0).to(per_token.dtype)
    return (per_token * keep).sum() / keep.sum().clamp(min=1.0)


def electra_loss(mlm_loss: Tensor, disc_loss: Tensor, weight: float = 50.0) -> Tensor:
    """Generator MLM loss + λ · discriminator loss (λ = 50, ELECTRA §3.2)."""
    return mlm_loss + weight * disc_loss


__all__ = ["rtd_mask", "sample_replacements", "replaced_inputs", "discriminator_loss", "electra_loss", "IGNORE"]
