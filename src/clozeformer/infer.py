"""Inference helpers over any model with an MLM head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clozeformer.tokenizer import Tokenizer


@dataclass(frozen=True)
class Prediction:
    token: str
    token_id: int
    score: float  # softmax probability
    sequence: str  # the input with this token in place of the [MASK]


@torch.no_grad()
def fill_mask(model: nn.Module, tokenizer: Tokenizer, text: str, top_k: int = 5) -> list[list[Prediction]]:
    """Top-k predictions for every [MASK] in `text` (one list per mask, left to right)."""
    mask_token = tokenizer.tokens([tokenizer.mask_id])[0]
    ids = tokenizer.encode(text, max_length=model.config.max_positions)
    where = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
    if not where:
        raise ValueError(f"no {mask_token} in {text!r}")
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device)).logits[0, where].float()  # [masks, V]
    probs = logits.softmax(-1)
    probs[:, tokenizer.special_ids] = 0.0  # never propose [CLS], [PAD] …
    top = probs.topk(top_k, dim=-1)
    results = []
    for i, (scores, cand) in zip(where, zip(top.values.tolist(), top.indices.tolist())):
        row = []
        for score, tid in zip(scores, cand):
            filled = list(ids)
            filled[i] = tid
            row.append(Prediction(tokenizer.tokens([tid])[0], tid, score, tokenizer.decode(filled)))
        results.append(row)
    return results
