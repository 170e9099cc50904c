"""Dropout without `bernoulli_`, and the LM head fused into its cross-entropy.

On CPU, torch's dropout draws one Bernoulli sample per element through a slow scalar path,
and SDPA with dropout_p > 0 falls back to its unfused math path that does the same. Here
the keep-mask is `int16 >= threshold`, four int16 lanes to each 64-bit draw (half the
generator calls of drawing int16s one by one): the drop probability is quantised to
t/65536 (t = round(p * 65536), |error| ≤ 8e-6) and survivors are scaled by
65536 / (65536 − t), so the expectation is exactly preserved. Forward and backward are one
`where` and one in-place scale each, with the bool mask saved: on a 2-core CPU, 4M bf16
elements take 57 ms forward + backward against 109 ms for `x * keep * scale` under
autograd. Draws come from torch's default generator, so checkpointing its state keeps
resume exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_LEVELS = 65536
IGNORE = -100  # label of a position without a target (PyTorch's cross-entropy default, as transformers)


def check_ids(ids: Tensor, name: str = "input_ids") -> Tensor:
    """`ids` as every model reads them: a 2-D integer tensor [B, T] with B, T ≥ 1 (its shape and dtype only:
    reading the values would wait for the device). 1-D or float ids failed deep in an embedding."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a tensor of ids [batch, length], got {type(ids).__name__}")
    if ids.dim() != 2 or 0 in ids.shape or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be a 2-D integer tensor [batch, length] of at least one id, got "
                         f"{ids.dtype} {tuple(ids.shape)}")
    return ids


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """(bool mask, scale) with P(keep) = 1 − round(p·65536)/65536."""
    t = round(p * _LEVELS)
    n = shape.numel()
    # [-2^63, 2^63 − 1): all 64 bits uniform (one value of 2^64 twice as likely), so each int16 lane is uniform
    r = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    return r.view(torch.int16)[:n].view(shape) >= t - 32768, _LEVELS / (_LEVELS - t)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        keep, ctx.scale = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(keep)
        return torch.where(keep, x, 0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    if not training or p == 0.0:
        return x
    return _Dropout.apply(x, p)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of h @ Wᵀ + b against labels, its gradient taken in the forward pass.

    The loss is the last op of a training step, so ∂loss/∂logits (softmax − one-hot, / M) is
    known as soon as the logits are: rows go through in chunks that fit in cache (logits,
    log-softmax, softmax − one-hot), and only that gradient G [M, V], in the compute dtype,
    is kept for the two matmuls of backward (∂h = G W, ∂W = Gᵀ h). The [M, V] logits never
    exist whole, in float32 or at all; on a 2-core CPU this takes a 30k-vocabulary LM head
    plus loss from 2.4 to 1.7 CPU-s for 4,096 rows (28% less).
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, dtype: torch.dtype,
                u: Tensor | None, smoothing: float) -> tuple[Tensor, Tensor]:
        m, v = h.shape[0], weight.shape[0]
        hc, wc = h.to(dtype), weight.to(dtype)  # [M, D], [V, D]
        bc = bias.to(dtype) if bias is not None else None
        grad = torch.empty(m, v, dtype=dtype, device=h.device)  # ∂loss/∂logits
        sampled = torch.empty(m if u is not None else 0, dtype=torch.long, device=h.device)
        chunk = max(16, (1 << 23) // v)  # rows per chunk: ~8 MB of float32 logits (274 rows at V = 30,522)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_bias = torch.zeros(v if bias is not None else 0, dtype=torch.float32, device=h.device)  # Σ rows
        for s in range(0, m, chunk):
            y = labels[s: s + chunk]
            logp = torch.log_softmax(F.linear(hc[s: s + chunk], wc, bc), -1, dtype=torch.float32)  # [c, V]
            # label smoothing (Szegedy et al. 2016): the target is (1 − ε)·one-hot + ε/V
            total -= (1.0 - smoothing) * logp.gather(1, y[:, None]).sum()
            if smoothing:
                total -= smoothing / v * logp.sum()
            p = logp.exp_()  # softmax
            if u is not None:
                sampled[s: s + chunk] = inverse_cdf(p, u[s: s + chunk])
            p[torch.arange(len(y), device=h.device), y] -= 1.0 - smoothing
            if smoothing:
                p -= smoothing / v
            grad[s: s + chunk] = p.mul_(1.0 / m)
            if bias is not None:  # summed here, in float32 and in cache, not from the stored bf16 copy later
                grad_bias += p.sum(0)
        ctx.save_for_backward(grad, hc, wc, grad_bias)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(sampled)
        return total / m, sampled

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_sampled: Tensor | None = None):
        grad, hc, wc, grad_bias = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        go = grad_out.float()
        grad_h = (grad @ wc).to(h_dtype) * go if ctx.needs_input_grad[0] else None  # [M, D]
        grad_w = (grad.T @ hc).to(w_dtype) * go if ctx.needs_input_grad[1] else None  # [V, D]
        grad_b = (grad_bias * go).to(b_dtype) if ctx.needs_input_grad[2] else None  # [V]
        return grad_h, grad_w, grad_b, None, None, None, None


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """One id per row of probs [M, V] (non-negative, any total), read at quantile u [M] in [0, 1)."""
    cdf = probs.float().cumsum(-1)  # [M, V]
    target = (u.to(cdf.dtype) * cdf[:, -1])[:, None]  # [M, 1]; scaled by the total, which rounding leaves ≠ 1
    # right=True: the first id whose cumulative mass exceeds the target, so zero-probability ids are never drawn
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)  # [M]


def linear_cross_entropy(h: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, *,
                         sample_u: Tensor | None = None, smoothing: float = 0.0) -> Tensor | tuple[Tensor, Tensor]:
    """`F.cross_entropy(F.linear(h, weight, bias), labels, label_smoothing=smoothing)` (mean over rows)
    for training.

    h [M, D], labels [M] (every row counts: select labelled rows first). Under autocast the
    matmuls run in the autocast dtype and the softmax in float32, as autocast would run the
    two-step version; the logits are not returned. With `sample_u` [M] it also returns one id
    per row drawn from the same softmax at those quantiles (`inverse_cdf`; ELECTRA's generator
    samples), as (loss, ids [M]).
    """
    if h.shape[0] == 0:
        zero = (h.sum() + weight.sum()) * 0.0  # nothing to predict: a zero loss that still has a graph
        return zero if sample_u is None else (zero, labels.new_empty(0))
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    with torch.autocast(dev, enabled=False):
        loss, sampled = _LinearCrossEntropy.apply(h, weight, bias, labels, dtype, sample_u, smoothing)
    return loss if sample_u is None else (loss, sampled)
