"""T5's span corruption (Raffel et al. 2020, §3.1.4 and §3.3.4), batched and with static shapes.

Of L raw tokens, N = round(L · density) are noise, in K = round(N / mean_span) spans. Noise
and non-noise tokens are each split into K non-empty segments by a uniformly random
partition (not Poisson, unlike BART), and the segments alternate non-noise, noise, … so every
row starts with kept text and ends with a noise span. The encoder input keeps the non-noise
tokens and puts one sentinel in place of each noise span; the target lists each sentinel
followed by the span it hid. Both end with EOS. All rows share L, hence N and K, hence the
input length L − N + K + 1 and the target length N + K + 1: no padding. `span_lengths` finds
the raw length whose input is exactly a given length (T5's `random_spans_helper`).

Sentinel i is `sentinel_ids[i]`: the tokenizer's `<extra_id_i>` (T5 counts them down from the
end of the vocabulary; ask the tokenizer, never assume).

Shapes: B batch, L raw tokens, N noise tokens, K noise spans.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DENSITY = 0.15  # fraction of noise tokens, T5 §3.3.4
MEAN_SPAN = 3.0  # mean noise span length, T5 §3.3.4 (Table 7's best with density 0.15)

__all__ = ["DENSITY", "MEAN_SPAN", "noise_counts", "span_lengths", "random_spans_noise_mask", "spans_from_mask",
           "span_corruption"]


def noise_counts(length: int, density: float = DENSITY, mean_span: float = MEAN_SPAN) -> tuple[int, int]:
    """(N noise tokens, K noise spans) in a row of `length` raw tokens, as T5's `random_spans_noise_mask`.

    Python's round() rounds half to even, as tf.round and np.round do. K is also kept within
    the non-noise count so that every segment can be non-empty.
    """
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    if not 0 < density < 1 or not mean_span >= 1:  # nan, 0 or 2 gave masks that mean nothing
        raise ValueError(f"density {density} and mean_span {mean_span}: allowed: 0 < density < 1, mean_span ≥ 1")
    n = min(max(round(length * density), 1), length - 1)
    k = min(max(round(n / mean_span), 1), n, length - n)
    return n, k


def span_lengths(inputs_length: int, density: float = DENSITY, mean_span: float = MEAN_SPAN) -> tuple[int, int]:
    """(raw tokens to read, target length) so that span corruption yields exactly `inputs_length`.

    T5's `random_spans_helper` with one sentinel per span and EOS on both sides: the longest
    raw length L with (L − N + K + 1) ≤ inputs_length. 512 -> (568, 114).
    """
    def lengths(raw: int) -> tuple[int, int]:
        n, k = noise_counts(raw, density, mean_span)
        return raw - n + k + 1, n + k + 1

    if not 2 <= inputs_length <= 1 << 20:  # found by stepping up from inputs_length: 10**12 never returned
        raise ValueError(f"inputs_length {inputs_length} is out of range; allowed: 2 … {1 << 20:,}")
    raw = max(inputs_length - 1, 2)
    while lengths(raw + 1)[0] <= inputs_length:
        raw += 1
    if lengths(raw)[0] != inputs_length:
        raise ValueError(f"no raw length gives exactly {inputs_length} input tokens at density {density}")
    return raw, lengths(raw)[1]


def _cut_points(batch: int, items: int, segments: int, generator: torch.Generator,
                device: torch.device) -> Tensor:
    """Ends of `segments` non-empty segments of `items`, a uniformly random partition per row.

    int64 [B, segments]: the segments − 1 cuts (a random subset of 1 … items−1, sorted), then items.
    """
    cuts = torch.rand(batch, items - 1, generator=generator, device=device).topk(segments - 1, dim=1).indices
    cuts = cuts.sort(dim=1).values + 1  # [B, segments − 1]
    return torch.cat([cuts, cuts.new_full((batch, 1), items)], dim=1)


def random_spans_noise_mask(batch: int, length: int, density: float = DENSITY, mean_span: float = MEAN_SPAN, *,
                            generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """bool [B, L]: T5's noise mask, K noise spans alternating with K non-noise spans, kept text first."""
    device = torch.device(device)
    n, k = noise_counts(length, density, mean_span)
    noise_end = _cut_points(batch, n, k, generator, device)  # [B, K] cumulative noise lengths
    kept_end = _cut_points(batch, length - n, k, generator, device)  # [B, K] cumulative non-noise lengths
    starts = kept_end + F.pad(noise_end[:, :-1], (1, 0))  # [B, K] noise span j starts after j+1 kept segments
    ends = kept_end + noise_end  # [B, K]; the last one is L
    edges = torch.zeros(batch, length + 1, dtype=torch.int32, device=device)  # +1 at a span's start, −1 past its end
    edges.scatter_(1, starts, 1).scatter_(1, ends, -1)  # starts and ends never coincide: kept spans are non-empty
    return edges[:, :length].cumsum(1, dtype=torch.int32) > 0


def spans_from_mask(token_ids: Tensor, noise_mask: Tensor, sentinel_ids: Tensor | Sequence[int],
                    eos_id: int) -> dict[str, Tensor]:
    """Sentinel-corrupted inputs and their targets for an explicit noise mask (any start and end).

    token_ids int [B, L], noise_mask bool [B, L]; every row must hold the same number of noise
    tokens and of noise spans (static shapes). Returns input_ids [B, L − N + K + 1] and
    labels [B, N + K + 1], each ending in `eos_id`.

    Example ("인코더-디코더 모델 구조", masking "인코더" and "디코더"; sentinels 100, 101, EOS 1):
        tokens = ["인코더", "-", "디코더", "모델", "구조"] -> ids [10, 11, 12, 13, 14]
        spans_from_mask(tensor([[10, 11, 12, 13, 14]]), tensor([[1, 0, 1, 0, 0]]).bool(), [100, 101], 1)
        input_ids [[100, 11, 101, 13, 14, 1]]   = "<extra_id_0> - <extra_id_1> 모델 구조 </s>"
        labels    [[100, 10, 101, 12, 1]]       = "<extra_id_0> 인코더 <extra_id_1> 디코더 </s>"
    """
    if token_ids.shape != noise_mask.shape or token_ids.dim() != 2:
        raise ValueError(f"token_ids {tuple(token_ids.shape)} and noise_mask {tuple(noise_mask.shape)} "
                         "must be the same [B, L] shape")
    sentinels = torch.as_tensor(sentinel_ids, dtype=token_ids.dtype, device=token_ids.device)
    start = noise_mask & ~F.pad(noise_mask[:, :-1], (1, 0))  # [B, L] first token of each noise span
    n_per_row, k_per_row = noise_mask.sum(1), start.sum(1)
    n, k = int(n_per_row[0]), int(k_per_row[0])
    if bool((n_per_row != n).any() | (k_per_row != k).any()):
        raise ValueError("every row needs the same number of noise tokens and noise spans")
    if k > len(sentinels):
        raise ValueError(f"{k} noise spans but only {len(sentinels)} sentinel ids")
    return _assemble(token_ids, noise_mask, start, sentinels, eos_id, n, k)


def _assemble(token_ids: Tensor, noise: Tensor, start: Tensor, sentinels: Tensor, eos_id: int,
              n: int, k: int) -> dict[str, Tensor]:
    b, length = token_ids.shape
    span = (start.cumsum(1) - 1).clamp(min=0)  # [B, L] index of the noise span a position is in (or follows)
    sentinel = sentinels[span]  # [B, L]
    eos = token_ids.new_full((b, 1), eos_id)
    # inputs: kept tokens, and a sentinel at each span's first position; the span's other tokens go
    kept = torch.where(start, sentinel, token_ids)[~noise | start].view(b, length - n + k)
    # targets: at each span start the sentinel, then every noise token
    pairs = torch.stack([sentinel, token_ids], dim=2)  # [B, L, 2]
    take = torch.stack([start, noise], dim=2)  # [B, L, 2]
    targets = pairs[take].view(b, n + k)
    return {"input_ids": torch.cat([kept, eos], 1), "labels": torch.cat([targets, eos], 1)}


def span_corruption(token_ids: Tensor, *, sentinel_ids: Tensor | Sequence[int], eos_id: int,
                    density: float = DENSITY, mean_span: float = MEAN_SPAN,
                    generator: torch.Generator) -> dict[str, Tensor]:
    """T5's pretraining objective over a batch of raw token rows.

    token_ids int [B, L] (no EOS; L from `span_lengths`) -> input_ids [B, L − N + K + 1] and
    labels [B, N + K + 1] (see `noise_counts`), both ending in `eos_id`, no padding.
    """
    if token_ids.dim() != 2:
        raise ValueError(f"token_ids must be [B, L], got {tuple(token_ids.shape)}")
    b, length = token_ids.shape
    n, k = noise_counts(length, density, mean_span)
    sentinels = torch.as_tensor(sentinel_ids, dtype=token_ids.dtype, device=token_ids.device)
    if k > len(sentinels):
        raise ValueError(f"{k} noise spans per row but only {len(sentinels)} sentinel ids")
    noise = random_spans_noise_mask(b, length, density, mean_span, generator=generator, device=token_ids.device)
    start = noise & ~F.pad(noise[:, :-1], (1, 0))  # [B, L]
    return _assemble(token_ids, noise, start, sentinels, eos_id, n, k)
