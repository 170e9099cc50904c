"""Feed-forward, transformer layer, the one stack of layers and the one weight init, shared by every family.

Shapes: B batch, T length, D model width, F feed-forward width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.nn import attention
from clozeformer.nn.attention import (KV, Attention, Cache, Packed, additive, causal_mask, causal_varlen, padding_mask,
                                      segment_ids, segment_mask)
from clozeformer.nn.functional import dropout
from clozeformer.nn.position import RelativePositionBias, local_, sinusoidal_


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATION_FNS = {"gelu": F.gelu, "gelu_new": _gelu_tanh, "relu": F.relu, "tanh": torch.tanh}  # tanh: RoBERTa's classifier


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
                cache: tuple[KV, KV] | None = None, packed: Packed | None = None,
                keys: Packed | None = None) -> Tensor:
        """x [B, T, D] (or [N, D] with `packed`, see Stack); context [B, S, D] is the encoder output
        a decoder layer attends to (or [N_k, D], the non-pad tokens `keys` packs)."""
        self_kv, cross_kv = cache if cache is not None else (None, None)
        x = self._residual(x, self.attn_norm, lambda h: self.attn(h, mask, causal=causal, kv=self_kv, packed=packed))
        if self.cross is not None:
            x = self._residual(x, self.cross_norm,
                               lambda h: self.cross(h, context_mask, context=context, kv=cross_kv, packed=packed,
                                                    keys=keys))
        return self._residual(x, self.ffn_norm, self.ffn)


class Stack(nn.ModuleList):
    """The layers of one encoder or decoder, and the masks every family builds alike: the one stack.

    What differs between families is an option of the layers (norm placement, cross-attention,
    see TransformerLayer) or happens around the stack (absolute positions and embedding norms
    before it, T5's final norm after it); T5's relative position bias is passed in as `bias`.
    The layers are the stack's items, so their parameters are named `<stack>.<i>.` as before.

    forward(x [B, T, D], attention_mask [B, S], *, context [B, S_enc, D], context_mask [B, S_enc],
    cache, bias) -> [B, T, D]:
    - `attention_mask` masks this stack's own keys: 1/0, or a packed row's segment ids
      (attention.segment_ids; every document attends to itself only). With a cache it covers the
      cached and the new positions (S = cached + T).
    - A decoder (`decoder=True`) is causal and cross-attends to `context`; in a packed batch the
      decoder's k-th document reads the encoder's k-th (`context_mask` holds segment ids too).
    - `bias(t, s, offset=...)` -> [1, H, T, S] is added to every layer's self-attention logits,
      with padding and causality folded in: one additive mask for every layer.
    - An encoder in training runs everything but attention on the non-pad tokens only (`Packed`):
      the same values at every real position for up to half the matmul work on dynamically padded
      batches; padding positions of the result are zeros. Inference keeps the padded layout, so
      outputs match transformers' at every position, and so does torch.compile (N depends on the values).
      On CUDA (attention.VARLEN_DEVICES) attention runs there too, per document (varlen), so packed
      rows compute no other document's positions and padded batches no padding at all. A decoder
      does so too where its causal kernel allows (attention.causal_varlen: bf16, no dropout, no bias).
    """

    def __init__(self, layers, *, decoder: bool = False) -> None:
        super().__init__(layers)
        self.decoder = decoder

    def forward(self, x: Tensor, attention_mask: Tensor | None = None, *, context: Tensor | None = None,
                context_mask: Tensor | None = None, cache: Cache | None = None, bias=None) -> Tensor:
        start = cache.length if cache is not None else 0
        for name, m, want in (("attention_mask", attention_mask, (x.shape[0], start + x.shape[1])),
                              ("context_mask", context_mask, None if context is None else tuple(context.shape[:2]))):
            if m is not None and want is not None and tuple(m.shape) != want:  # [1, T] was broadcast over the batch
                raise ValueError(f"{name} {tuple(m.shape)} does not match the batch: expected {want}")
        if self.decoder and bias is None and cache is None:
            y = self._decode_per_document(x, attention_mask, context, context_mask)
            if y is not None:
                return y
        t = x.shape[1]
        s = start + t
        segments, sources = segment_ids(attention_mask), segment_ids(context_mask)
        if segments is not None:
            mask = segment_mask(segments, segments)  # [B, 1, T, T]
        else:
            mask = padding_mask(attention_mask)  # [B, 1, 1, S], or None when nothing is padded
        causal = self.decoder
        if bias is not None:
            if causal and t > 1:
                c = causal_mask(t, s, x.device)  # [T, S]: query start+i sees keys 0 … start+i
                mask = c if mask is None else mask & c
            keep, mask = mask, bias(t, s, offset=start)  # [1, H, T, S]
            if keep is not None:
                mask = mask.masked_fill(~keep, torch.finfo(mask.dtype).min)  # [B or 1, H, T, S]
            causal = False
        if not self.decoder:
            return self._encode(x, mask, attention_mask, segments is not None)
        if sources is not None:
            if segments is None:
                raise ValueError("a packed encoder attention_mask needs the decoder's packed decoder_attention_mask")
            cross_mask = segment_mask(segments, sources)  # [B, 1, T, S_enc]
        else:
            cross_mask = padding_mask(context_mask)  # [B, 1, 1, S_enc] or None
            if bias is not None and cross_mask is not None:  # T5 masks additively, as its self-attention does here
                cross_mask = additive(cross_mask, x.dtype)  # and as transformers' T5: a source of padding alone
                #                                              is read evenly, where a boolean mask reads nothing
        for i, layer in enumerate(self):
            x = layer(x, mask, causal=causal, context=context, context_mask=cross_mask,
                      cache=cache.layers[i] if cache is not None else None)
        return x

    def _unpadded(self, attention_mask: Tensor | None) -> bool:
        """Training with a mask, eagerly: the stack may run on the non-pad tokens only."""
        return (attention_mask is not None and self.training and torch.is_grad_enabled()
                and not torch.compiler.is_compiling())

    def _decode_per_document(self, x: Tensor, attention_mask: Tensor | None, context: Tensor | None,
                             context_mask: Tensor | None) -> Tensor | None:
        """A training decoder on the non-pad tokens, self- and cross-attention per document (the k-th
        decoder document of a row reads the k-th source document); None where that does not apply."""
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        if not (self._unpadded(attention_mask) and context_mask is not None
                and all(causal_varlen(x.device, dtype, layer.attn.dropout) for layer in self)):
            return None
        packed, keys = Packed(attention_mask, varlen=True), Packed(context_mask, varlen=True)
        if not torch.equal(packed.documents, keys.documents):
            return None  # sources and targets do not pair up: the dense masks say what each token sees
        h, ctx = packed.pack(x), keys.pack(context)
        for layer in self:
            h = layer(h, causal=True, context=ctx, packed=packed, keys=keys)
        return packed.unpack(h)

    def _encode(self, x: Tensor, mask: Tensor | None, attention_mask: Tensor | None, segmented: bool) -> Tensor:
        train = self._unpadded(attention_mask)
        # attention per document (varlen) needs a boolean mask: T5's relative position bias is additive
        varlen = train and x.device.type in attention.VARLEN_DEVICES and (mask is None or mask.dtype == torch.bool)
        # the token rows pay off where there is padding, or documents for varlen to keep apart
        if not (train and ((varlen and segmented) or not bool(attention_mask.all()))):
            for layer in self:
                x = layer(x, mask)
            return x
        packed = Packed(attention_mask, varlen=varlen)
        h = packed.pack(x)  # [N, D]
        for layer in self:
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


@torch.no_grad()
def mimetic_init(module: nn.Module, generator: torch.Generator | None = None, *, qk: tuple[float, float] = (0.7, 0.7),
                 vo: tuple[float, float] = (0.4, 0.4), position_std: float = 0.05) -> None:
    """Mimetic initialisation of every attention module in `module` (Trockman & Kolter 2023), and
    sinusoidal learned positions (every nn.Embedding held as `.pos`, see position.sinusoidal_).

    Per head, W_qᵀ W_k ≈ α₁ Z + β₁ I, and per module W_o W_v ≈ α₂ Z − β₂ I (Z ~ N(0, 1/D); each
    product factored by SVD, rank-limited to the head width): trained attention layers look like
    this, and starting there makes a token attend to the tokens that resemble it — with position
    embeddings that vary smoothly, to its neighbours — from the first step, instead of after the
    long plateau random weights sit on (BENCHMARKS.md, "A recipe for minutes"). (α, β) = (0.7, 0.7)
    and (0.4, 0.4) are the paper's; position_std 0.05 was the best of 0.02 / 0.05 / 0.1 here. Biases
    stay zero. Only the initial values change: the model is the same architecture and exports unchanged.

    Relative positions (T5) have no embedding that neighbours share, so there the position table starts
    local instead (position.local_), and self-attention drops the identity term: at β₁ = 0.7 a unit-RMS
    token scores itself ~0.7·D/√d_head ≈ 22 nats above the others (D 256, d_head 64), more than a position
    bias of a few nats can outweigh (T5 `mini`, 800 steps: held-out loss 3.92 from the plain mimetic start,
    3.71 with the local table, 3.60 with β₁ = 0 as well; BENCHMARKS.md). Under T5's relative lr the local
    table, at RMS ~37 nats, also learns ~850× as fast as the median matrix; the gain needs both its start
    and that speed (T5's random table at that speed: under a third of it; the local start at the table's
    old speed: none).
    """
    relative = False
    for m in module.modules():
        if isinstance(getattr(m, "pos", None), nn.Embedding):  # BERT/ELECTRA embeddings, BART stacks
            sinusoidal_(m.pos.weight, position_std)
        if isinstance(m, RelativePositionBias):  # T5's stacks
            local_(m)
            relative = True

    def randn(d: int) -> Tensor:
        return torch.randn(d, d, generator=generator) / d ** 0.5

    for attn in (m for m in module.modules() if isinstance(m, Attention)):
        q, kv = (attn.q.weight, attn.kv.weight) if attn.cross else (attn.qkv.weight, attn.qkv.weight[attn.q_rows:])
        identity = 0.0 if relative and not attn.cross else qk[1]
        heads, dim = attn.num_heads, q.shape[1]
        width = attn.q_rows // heads
        # scores are scale · q·k; T5 (scale 1) gets the 1/√d the others apply, folded into q as its own init does
        q_scale = 1.0 if attn.scale is None else width ** -0.5 / attn.scale
        for h in range(heads):  # q·k = xᵀ W_qᵀ W_k x'
            u, s, vh = torch.linalg.svd(qk[0] * randn(dim) + identity * torch.eye(dim))
            q[h * width: (h + 1) * width] = (u[:, :width] * s[:width].sqrt()).T * q_scale
            kv[h * width: (h + 1) * width] = vh[:width] * s[:width, None].sqrt()
        u, s, vh = torch.linalg.svd(vo[0] * randn(dim) - vo[1] * torch.eye(dim))
        r = min(attn.q_rows, dim)
        value = kv[attn.q_rows: 2 * attn.q_rows]  # [inner, D]
        value.zero_()
        value[:r] = vh[:r] * s[:r, None].sqrt()
        attn.out.weight.zero_()
        attn.out.weight[:, :r] = u[:, :r] * s[:r].sqrt()


def num_parameters(module: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["FeedForward", "Stack", "TransformerLayer", "init_weights", "mimetic_init", "num_parameters", "ACTIVATION_FNS"]
