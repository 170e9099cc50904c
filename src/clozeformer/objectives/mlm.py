"""Masked language modelling (BERT §3.1), token-level or whole-word.

Pure and batched: one explicit `torch.Generator`, no per-token Python loops.
Shapes: B batch, T length, V vocabulary.

Selection follows google-research/bert `create_pretraining_data.py`: a fixed number of
predictions per row, round(rate × eligible tokens) (at least 1), chosen without
replacement — not an independent coin per token — so every row of a packed batch predicts
the same number of positions (static shapes for the sparse MLM head). Of the selected
tokens 80% become [MASK], 10% a random non-special token, 10% stay unchanged (BERT §3.1).
With whole-word masking a word's pieces are selected together and share one 80/10/10
draw; words are visited in random order and a word that would overflow the budget is
skipped while later, shorter words still fill it (Google's rule), so a row predicts
round(rate × eligible) tokens unless no remaining word fits the gap — never more, except
that a row whose every word is longer than its budget predicts its shortest word.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clozeformer.nn.functional import IGNORE



def random_tokens(shape: tuple[int, ...], vocab_size: int, excluded: Sequence[int] | Tensor,
                  generator: torch.Generator) -> Tensor:
    """Ids drawn uniformly from [0, vocab_size) minus `excluded` (the special ids): MLM's random 10% and
    BART's inserted tokens."""
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    excluded = torch.as_tensor(excluded, dtype=torch.long)
    allowed[excluded[(excluded >= 0) & (excluded < vocab_size)]] = False
    if not allowed.any():
        raise ValueError("no regular token left to draw random replacements from")
    ids = allowed.nonzero().squeeze(1)  # [V']
    return ids[torch.randint(len(ids), shape, generator=generator)]


def mlm_mask(input_ids: Tensor, *, mask_id: int, vocab_size: int, special_ids: Sequence[int] | Tensor,
             generator: torch.Generator, rate: float = 0.15, mask_frac: float = 0.8, random_frac: float = 0.1,
             continuation: Tensor | None = None, max_predictions: int | None = None) -> dict[str, Tensor]:
    """input_ids [B, T] -> {"input_ids": corrupted [B, T], "labels": [B, T] (IGNORE where not predicted)}.

    special_ids: never selected (include the pad id). continuation: bool [V], True for
    word-continuation pieces ("##ing"); given, masking is whole-word.
    """
    if not 0 < rate < 1 or not (0 <= mask_frac and 0 <= random_frac and mask_frac + random_frac <= 1):
        raise ValueError(f"rate {rate}, mask_frac {mask_frac}, random_frac {random_frac}: allowed: 0 < rate < 1, "
                         "mask_frac and random_frac ≥ 0 with a sum ≤ 1")  # rate 0 or nan masked 1 token a row
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is not an id of the {vocab_size}-id vocabulary")
    b, t = input_ids.shape
    specials = torch.as_tensor(special_ids, dtype=input_ids.dtype)
    eligible = ~torch.isin(input_ids, specials)  # [B, T]
    # A word starts at an eligible token that is not a continuation of an eligible token.
    start = eligible
    if continuation is not None:
        cont = continuation[input_ids] & eligible
        after_eligible = torch.nn.functional.pad(eligible[:, :-1], (1, 0), value=False)
        start = eligible & ~(cont & after_eligible)
    pos = torch.arange(t).expand(b, t)
    anchor = torch.where(start | ~eligible, pos, 0).cummax(dim=1).values  # [B, T] position of own word start
    length = torch.zeros(b, t, dtype=torch.long).scatter_add_(1, anchor, eligible.long())  # [B, T] at starts

    n_eligible = eligible.sum(1)  # [B]
    budget = (n_eligible.double() * rate).round().long().clamp(min=1)  # float64: .5 ties as Python's round
    if max_predictions is not None:
        budget = budget.clamp(max=max_predictions)
    budget = torch.minimum(budget, n_eligible)

    # Visit words in a random order; take them while the running token count fits the budget.
    key = torch.rand(b, t, generator=generator).masked_fill(~start, 2.0)  # non-starts sort last
    order = key.argsort(dim=1)  # [B, T]
    sorted_len = length.gather(1, order).masked_fill(~start.gather(1, order), 0)  # [B, T] 0 past the starts
    if continuation is None:  # every word is one token: the first `budget` words fill it exactly
        taken = torch.arange(t) < budget[:, None]
    else:  # skip a word that overflows, keep visiting: one vectorised step per word position
        taken = torch.zeros(b, t, dtype=torch.bool)
        filled = torch.zeros(b, dtype=torch.long)
        for j in range(int(start.sum(1).max())):
            fits = (sorted_len[:, j] > 0) & (filled + sorted_len[:, j] <= budget)
            taken[:, j] = fits
            filled += sorted_len[:, j] * fits
        # a row whose every word is longer than its budget (a short text of long words) predicts its
        # shortest word rather than nothing
        empty = (filled == 0) & (sorted_len > 0).any(1)
        shortest = sorted_len.masked_fill(sorted_len == 0, t + 1).argmin(1)  # first in the random order
        taken[empty, shortest[empty]] = True
    chosen = torch.zeros_like(start).scatter_(1, order, taken & (sorted_len > 0))  # [B, T] chosen word starts
    selected = chosen.gather(1, anchor) & eligible  # every piece of a chosen word

    # One 80/10/10 draw per word (read at its start), one random replacement per token.
    u = torch.rand(b, t, generator=generator).gather(1, anchor)
    random_ids = random_tokens((b, t), vocab_size, specials, generator)

    corrupted = torch.where(selected & (u < mask_frac), mask_id, input_ids)
    corrupted = torch.where(selected & (u >= mask_frac) & (u < mask_frac + random_frac), random_ids, corrupted)
    labels = torch.where(selected, input_ids, IGNORE)
    return {"input_ids": corrupted, "labels": labels}
