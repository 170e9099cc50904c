"""Positions: learned absolute tables (BERT, ELECTRA, RoBERTa, BART; read by `learned_positions`)
and T5's bucketed relative position bias (Raffel et al. 2020, §2.1; Mesh TensorFlow's scheme).

Each head learns one scalar per bucket of the offset `key − query`; the bias is added to the
attention logits. Half of the buckets hold small offsets exactly, the other half grow
logarithmically up to `max_distance`, beyond which offsets share the last bucket. The
encoder's buckets are bidirectional (half for keys after the query); the decoder's are causal
(only keys at or before the query get distinct buckets).

Shapes: H heads, T query positions, S key positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def relative_position_bucket(offset: Tensor, *, bidirectional: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> Tensor:
    """offset = key position − query position (int64, any shape) -> bucket ids in [0, num_buckets)."""
    buckets = torch.zeros_like(offset)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (offset > 0).long() * num_buckets  # keys after the query: the upper half
        distance = offset.abs()
    else:
        distance = (-offset).clamp(min=0)  # a causal decoder never sees keys after the query
    exact = num_buckets // 2  # distances 0 … exact−1 get a bucket each
    # the rest: log-spaced from `exact` to `max_distance`; float32 as Mesh TF, then truncated
    log_bucket = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                          * (num_buckets - exact)).long()
    log_bucket = log_bucket.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, log_bucket)


def learned_positions(table: nn.Embedding, t: int, *, offset: int = 0, start: int = 0,
                      positions: Tensor | None = None) -> Tensor:
    """The rows of a learned position table for positions start … start + T − 1 ([T, D]), or for
    per-token `positions` [B, T] ([B, T, D]; a packed row's, restarting at each document); position
    p reads row p + `offset` (BART's 2, which fairseq reserved; RoBERTa's pad_token_id + 1)."""
    if positions is None:
        return table.weight[offset + start: offset + start + t]
    return table(positions + offset)


@torch.no_grad()
def sinusoidal_(weight: Tensor, std: float) -> Tensor:
    """Fill a learned position table [P, D] with the Transformer's sinusoids (Vaswani et al. 2017,
    §3.5), scaled to standard deviation `std`. Neighbouring positions start alike and far ones
    apart (the dot product of two rows depends on their distance only, so BART's offset of two
    rows changes nothing), and attention can tell near from far from the first step; the table
    is then learned as usual."""
    n, d = weight.shape
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)  # [⌈D/2⌉]
    table = torch.zeros(n, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    weight.copy_(table * (std / table.std()))
    return weight


@torch.no_grad()
def local_(bias: "RelativePositionBias", slope: float = 1.0) -> Tensor:
    """Start a relative position table local, the relative-position counterpart of `sinusoidal_`: head h
    prefers one offset (the encoder's heads the previous and the next token in turn, a causal decoder's
    the token itself and the previous one) and loses `slope` nats per token of distance from it — the first
    half of the heads; the others slope/4, reading wider. A bucket holding several offsets gets their mean.
    T5's own init gives every bucket a small random value (RMS 0.06), so attention starts blind to word order
    and, under Adam, the table moves by about the lr a step; under relative lr this table's RMS (~37) makes it
    learn fast as well (BENCHMARKS.md, "T5's encoder reads word order")."""
    table = bias.embedding.weight  # [buckets, H]
    buckets, heads = table.shape
    reach = 2 * bias.max_distance  # past max_distance every offset shares the last bucket
    offsets = torch.arange(-reach, reach + 1 if bias.bidirectional else 1)
    which = relative_position_bucket(offsets, bidirectional=bias.bidirectional, num_buckets=buckets,
                                     max_distance=bias.max_distance)
    held = torch.bincount(which, minlength=buckets).clamp(min=1)
    preferred = (-1, 1) if bias.bidirectional else (0, -1)
    for h in range(heads):
        cost = (slope if h < heads // 2 else slope / 4) * (offsets - preferred[h % 2]).abs().float()
        table[:, h] = -torch.zeros(buckets).index_add_(0, which, cost) / held
    return table


class RelativePositionBias(nn.Module):
    """A learned [num_buckets, H] table -> additive attention bias [1, H, T, S]."""

    def __init__(self, num_heads: int, *, bidirectional: bool, num_buckets: int = 32,
                 max_distance: int = 128) -> None:
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, t: int, s: int, *, offset: int = 0) -> Tensor:
        """Bias for queries at offset … offset+T−1 against keys 0 … S−1 (decoding: offset = cached length)."""
        device = self.embedding.weight.device
        query = torch.arange(offset, offset + t, device=device)[:, None]  # [T, 1]
        key = torch.arange(s, device=device)[None, :]  # [1, S]
        buckets = relative_position_bucket(key - query, bidirectional=self.bidirectional,
                                           num_buckets=self.num_buckets, max_distance=self.max_distance)  # [T, S]
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)  # [1, H, T, S]
