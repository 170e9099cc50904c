"""Multi-head attention on `F.scaled_dot_product_attention`, shared by every family.

Shapes: B batch, T query length, S key length, D model width, H heads, d = D / H.
Masks are boolean, True where attention is allowed, broadcastable to [B, H, T, S].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.nn.functional import dropout


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """[B, S] 1/0 key mask -> [B, 1, 1, S] bool, or None when nothing is padded.

    Returning None lets SDPA pick its fastest kernel for unpadded batches.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def _attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, p: float) -> Tensor:
    """softmax(q kᵀ / √d) with dropout on the probabilities, then · v.

    SDPA has no fused dropout on CPU; its math fallback is several times slower than this.
    """
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [B, H, T, S]
    low = torch.finfo(scores.dtype).min  # not -inf: a fully masked row must give weights, not NaN
    if causal:
        t, s = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1), low)
    if mask is not None:
        scores = scores.masked_fill(~mask, low)
    return dropout(scores.softmax(-1), p, True) @ v


class Attention(nn.Module):
    """Self-attention (one fused q/k/v projection) or cross-attention (q, fused k/v)."""

    def __init__(self, dim: int, num_heads: int, *, bias: bool = True, dropout: float = 0.0,
                 cross: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: Tensor, n: int) -> Tensor:
        # [B, T, n*D] -> n tensors of [B, H, T, d]
        b, t, _ = x.shape
        return x.view(b, t, n, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, context: Tensor | None = None,
                causal: bool = False) -> Tensor:
        if self.cross:
            (q,) = self._heads(self.q(x), 1)  # [B, H, T, d]
            k, v = self._heads(self.kv(context), 2)  # [B, H, S, d]
        else:
            q, k, v = self._heads(self.qkv(x), 3)  # [B, H, T, d] each
        if self.training and self.dropout > 0:
            y = _attention_with_dropout(q, k, v, mask, causal, self.dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        # y: [B, H, T, d]
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, -1))  # [B, T, D]
