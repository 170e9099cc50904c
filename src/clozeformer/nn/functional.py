"""Dropout without `bernoulli_`.

On CPU, torch's dropout draws one Bernoulli sample per element through a slow scalar path
(~10x the time of drawing random int16s), and SDPA with dropout_p > 0 falls back to its
unfused math path that does the same. Here the keep-mask is `int16 >= threshold`: the drop
probability is quantised to t/65536 (t = round(p * 65536), |error| ≤ 8e-6) and survivors
are scaled by 65536 / (65536 − t), so the expectation is exactly preserved. Draws come from
torch's default generator, so checkpointing its state keeps resume exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LEVELS = 65536


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """(bool mask, scale) with P(keep) = 1 − round(p·65536)/65536."""
    t = round(p * _LEVELS)
    r = torch.randint(-32768, 32768, shape, dtype=torch.int16, device=device)
    return r >= t - 32768, _LEVELS / (_LEVELS - t)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    if not training or p == 0.0:
        return x
    keep, scale = keep_mask(x.shape, p, x.device)
    return x * keep * scale

