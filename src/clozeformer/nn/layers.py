"""Feed-forward, transformer layer and the one weight init, shared by every family.

Shapes: B batch, T length, D model width, F feed-forward width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.nn.attention import Attention
from clozeformer.nn.functional import dropout


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATION_FNS = {"gelu": F.gelu, "gelu_new": _gelu_tanh, "relu": F.relu}


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "gelu", *, bias: bool = True) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=bias)  # D -> F
        self.down = nn.Linear(hidden, dim, bias=bias)  # F -> D
        self.act = ACTIVATION_FNS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))


class TransformerLayer(nn.Module):
    """Attention (+ optional cross-attention) + feed-forward, each with a residual.

    Post-norm (BERT, BART): x = norm(x + drop(f(x))).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, *, activation: str = "gelu",
                 dropout: float = 0.1, attention_dropout: float = 0.1, eps: float = 1e-12,
                 bias: bool = True) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, bias=bias, dropout=attention_dropout)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim, activation, bias=bias)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = dropout

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.attn_norm(x + dropout(self.attn(x, mask), self.dropout, self.training))
        return self.ffn_norm(x + dropout(self.ffn(x), self.dropout, self.training))


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
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def num_parameters(module: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["FeedForward", "TransformerLayer", "init_weights", "num_parameters", "ACTIVATION_FNS"]
