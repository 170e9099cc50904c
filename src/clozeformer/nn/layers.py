"""Feed-forward, transformer layer and the one weight init, shared by every family.

Shapes: B batch, T length, D model width, F feed-forward width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.nn.attention import KV, Attention, Packed, padding_mask
from clozeformer.nn.functional import dropout


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATION_FNS = {"gelu": F.gelu, "gelu_new": _gelu_tanh, "relu": F.relu}


class FeedForward(nn.Module):
    """down(act(up(x))), or gated as T5 v1.1 / GLU variants: down(act(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", *, bias: bool = True,
                 gated: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout  # on the activations (BART's activation_dropout, T5's dropout_rate)
        self.gate = nn.Linear(dim, hidden, bias=bias) if gated else None  # D -> F
        self.up = nn.Linear(dim, hidden, bias=bias)  # D -> F
        self.down = nn.Linear(hidden, dim, bias=bias)  # F -> D
        self.act = ACTIVATION_FNS[activation]

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.gate(x)) * self.up(x) if self.gate is not None else self.act(self.up(x))  # [B, T, F]
        return self.down(dropout(h, self.dropout, self.training))


class TransformerLayer(nn.Module):
    """Self-attention (+ cross-attention in decoders) + feed-forward, each with a residual.

    Post-norm (BERT, BART): x = norm(x + drop(f(x))).
    Pre-norm (T5): x = x + drop(f(norm(x))), with the stack's final norm after the last layer.
    `norm="rms"` is T5's RMSNorm (no mean, no bias); `bias=False` drops every linear bias.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, *, activation: str = "gelu",
                 dropout: float = 0.1, attention_dropout: float = 0.1, eps: float = 1e-12,
                 bias: bool = True, cross: bool = False, pre_norm: bool = False, norm: str = "layer",
                 gated: bool = False, head_dim: int | None = None, scale: float | None = None,
                 ffn_dropout: float = 0.0) -> None:
        super().__init__()
        make_norm = (lambda: nn.RMSNorm(dim, eps=eps)) if norm == "rms" else (lambda: nn.LayerNorm(dim, eps=eps))
        attn = dict(bias=bias, dropout=attention_dropout, head_dim=head_dim, scale=scale)
        self.attn = Attention(dim, num_heads, **attn)
        self.attn_norm = make_norm()
        self.cross = Attention(dim, num_heads, cross=True, **attn) if cross else None
        self.cross_norm = make_norm() if cross else None
        self.ffn = FeedForward(dim, ffn_dim, activation, bias=bias, gated=gated, dropout=ffn_dropout)
        self.ffn_norm = make_norm()
        self.dropout = dropout
        self.pre_norm = pre_norm

    def _residual(self, x: Tensor, norm: nn.Module, f) -> Tensor:
        if self.pre_norm:
            return x + dropout(f(norm(x)), self.dropout, self.training)
        return norm(x + dropout(f(x), self.dropout, self.training))

    def forward(self, x: Tensor, mask: Tensor | None = None, *, causal: bool = False,
                context: Tensor | None = None, context_mask: Tensor | None = None,
                cache: tuple[KV, KV] | None = None, packed: Packed | None = None) -> Tensor:
        """x [B, T, D] (or [N, D] with `packed`, see encode); context [B, S, D] is the encoder output
        a decoder layer attends to."""
        self_kv, cross_kv = cache if cache is not None else (None, None)
        x = self._residual(x, self.attn_norm, lambda h: self.attn(h, mask, causal=causal, kv=self_kv, packed=packed))
        if self.cross is not None:
            x = self._residual(x, self.cross_norm,
                               lambda h: self.cross(h, context_mask, context=context, kv=cross_kv))
        return self._residual(x, self.ffn_norm, self.ffn)


def encode(layers: nn.ModuleList, x: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Self-attention encoder layers over x [B, T, D] with a padding mask [B, T] (1 = token).

    In training with padding, everything but attention runs on the non-pad tokens only
    (`Packed`): the same values at every real position for up to half the matmul work on
    dynamically padded batches; padding positions of the result are zeros. Inference keeps
    the padded layout, so outputs match transformers' at every position.
    """
    mask = padding_mask(attention_mask)  # [B, 1, 1, T] or None
    if mask is None or not (layers.training and torch.is_grad_enabled()) or bool(attention_mask.all()):
        for layer in layers:
            x = layer(x, mask)
        return x
    packed = Packed(attention_mask)
    h = packed.pack(x)  # [N, D]
    for layer in layers:
        h = layer(h, mask, packed=packed)
    return packed.unpack(h)  # [B, T, D]


def init_weights(module: nn.Module, std: float) -> None:
    """The one init every family uses: N(0, std) weights, zero biases, unit norms.

    std = 0.02 is BERT's `initializer_range`. Padding rows of embeddings start at zero.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def num_parameters(module: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["FeedForward", "TransformerLayer", "init_weights", "num_parameters", "ACTIVATION_FNS"]
