"""Multi-head attention on `F.scaled_dot_product_attention`, shared by every family.

Shapes: B batch, T query length, S key length, D model width, H heads, d head width
(D / H unless given, as T5's d_kv).
A mask is either boolean (True where attention is allowed) or additive float (T5's
position bias, with padding folded in as a large negative), broadcastable to [B, H, T, S].
Decoding caches keys and values in a `KV` per attention module (see `Cache`).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.nn.functional import dropout


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """[B, S] 1/0 key mask -> [B, 1, 1, S] bool, or None when nothing is padded.

    Returning None lets SDPA pick its fastest kernel for unpadded batches. Under torch.compile the
    mask is always returned: looking at the values would stop the graph and wait for the device.
    """
    if attention_mask is None or (not torch.compiler.is_compiling() and bool(attention_mask.all())):
        return None
    return attention_mask.bool()[:, None, None, :]


def segment_ids(attention_mask: Tensor | None) -> Tensor | None:
    """The segment ids of a packed batch, or None for a plain 0/1 mask.

    In pretraining a row holds several documents: its attention_mask is 0 on padding and
    k = 1, 2, … on the tokens of the row's k-th document (as multipack samplers write it).
    A 0/1 mask is one document per row, read as before (and as transformers reads it). Under
    torch.compile an integer mask is always taken as segment ids, without looking at its values
    (which would stop the graph and wait for the device): a 0/1 mask read so gives the same
    outputs (one document per row; padding is segment 0).
    """
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return None
    if not torch.compiler.is_compiling() and int(attention_mask.max()) <= 1:
        return None
    return attention_mask


def segment_mask(query: Tensor, key: Tensor) -> Tensor:
    """bool [B, 1, T, S]: a token attends only to the tokens of its own document.

    query [B, T], key [B, S] segment ids. Padding queries (0) may attend to anything, so that
    no row of the mask is empty (their outputs are never used).
    """
    same = query[:, :, None] == key[:, None, :]  # [B, T, S]
    return (same | (query == 0)[:, :, None])[:, None]


def segment_positions(segments: Tensor) -> Tensor:
    """[B, T] each token's position within its own document (0 at the document's first token)."""
    pos = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
    first = torch.where(segment_starts(segments, padding=True), pos, 0).cummax(1).values  # [B, T]
    return pos - first


def segment_starts(segments: Tensor, padding: bool = False) -> Tensor:
    """bool [B, T]: True at the first token of each document (and of the padding run, if `padding`)."""
    start = segments != F.pad(segments[:, :-1], (1, 0), value=-1)
    return start if padding else start & (segments != 0)


def causal_mask(t: int, s: int, device: torch.device | None = None) -> Tensor:
    """bool [T, S]: query i (the last T of S positions) sees keys 0 … S − T + i."""
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(s - t)


def additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask as an additive one (0 allowed, dtype's min blocked); floats pass through."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    # finfo.min, not -inf: a fully masked row must give weights, not NaN
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, p: float,
                            scale: float | None = None) -> Tensor:
    """softmax(q kᵀ · scale + mask) with dropout on the probabilities, then · v.

    For CPU training: SDPA has no fused dropout on CPU (its math fallback is several times slower
    than this), and its flash kernel's backward in bf16 is ~2.4× slower than these two batched
    matmuls at T = 128 (`[32, 4, 128, 64]`, one thread: 55 vs 23 ms forward + backward).
    """
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)  # [B, H, T, S]
    low = torch.finfo(scores.dtype).min
    if causal:
        scores = scores.masked_fill(~causal_mask(*scores.shape[-2:], q.device), low)
    if mask is not None:
        scores = scores.masked_fill(~mask, low) if mask.dtype == torch.bool else scores + mask
    # probabilities in the scores' dtype: bf16 under autocast, as they would be cast to for `@ v` anyway (the
    # kernel accumulates in float32); autocast would otherwise make a float32 copy [B, H, T, S] and cast it back
    return dropout(scores.softmax(-1, dtype=scores.dtype), p, True) @ v


@dataclass
class KV:
    """One attention module's cached keys and values, [B, H, S, d] each."""

    k: Tensor | None = None
    v: Tensor | None = None

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (beam search)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


@dataclass
class Cache:
    """A decoder's key/value cache: per layer, its self-attention and cross-attention KV.

    Self-attention keys grow by one position per step; cross-attention keys are computed
    from the encoder output once, at the first step, and reused.
    """

    layers: list[tuple[KV, KV]] = field(default_factory=list)

    @classmethod
    def empty(cls, num_layers: int) -> "Cache":
        return cls([(KV(), KV()) for _ in range(num_layers)])

    @property
    def length(self) -> int:
        """Positions already decoded."""
        k = self.layers[0][0].k if self.layers else None
        return 0 if k is None else k.shape[2]

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` of the self-attention keys (beam search: each beam's history).

        Cross-attention keys stay: `index` only moves rows among the beams of one source,
        and those share the same encoder output, row for row.
        """
        for self_kv, _ in self.layers:
            self_kv.reorder(index)


_SEQLEN_ARGS = "max_seqlen" in inspect.signature(torch.nested.nested_tensor_from_jagged).parameters
try:  # torch ≥ 2.10: flash attention over the documents' offsets, causal (a window in later versions)
    from torch.nn.attention.varlen import varlen_attn
    _CAUSAL = ({"window_size": (-1, 0)} if "window_size" in inspect.signature(varlen_attn).parameters
               else {"is_causal": True})
except ImportError:
    varlen_attn = None
VARLEN_DEVICES = ("cuda",)
"""Device types whose training stacks run attention per document (`Packed.attend`).
Not CPU: there nested-tensor SDPA loops over the documents, 7× slower than the dense masked kernel
([32 rows × 128 tokens, ~5 documents each, 4 heads of 64], forward + backward, 2 threads; fp32 157 vs
22 ms, bf16 108 vs 15 ms). The tests add "cpu" to check the path against the dense one."""


def causal_varlen(device: torch.device, dtype: torch.dtype, dropout_p: float) -> bool:
    """Whether a training decoder's causal self-attention can run per document here (`Packed.attend`).

    Nested-tensor SDPA refuses `is_causal`; torch's `varlen_attn` has a causal window but is flash
    only: CUDA, bf16 / fp16 (as under autocast), no dropout (the small-budget recipe pretrains without).
    Elsewhere in VARLEN_DEVICES (the tests' CPU) each document runs alone through SDPA, as reference.
    """
    if device.type not in VARLEN_DEVICES or dropout_p > 0:
        return False
    return device.type != "cuda" or (varlen_attn is not None and dtype in (torch.bfloat16, torch.float16))


class Packed:
    """The non-pad tokens of a [B, T] batch as rows [N, ...], for position-wise work without padding.

    Linear layers, norms and dropout act per token, so in training a stack can run them on
    the N real tokens only. Attention either goes back to the [B, T] layout (`unpack`, then `pack`:
    padded keys masked, padded queries dropped), or, with `varlen`, runs on the N tokens as one
    sequence per document (`attend`): a row's documents are its runs of one segment id (a 0/1 mask
    is one document per row), so neither padding nor other documents' positions are computed.
    Exact for every non-pad position. With SST-2-like batches (lengths 5-50, padded to the longest)
    about half the rows are padding; a packed pretraining row holds several documents.
    """

    def __init__(self, attention_mask: Tensor, varlen: bool = False) -> None:
        self.batch, self.length = attention_mask.shape
        flat = attention_mask.reshape(-1)
        self.index = flat.nonzero().squeeze(1)  # [N] positions in the flat [B·T]
        self.offsets = None  # [documents + 1] where each document starts among the N tokens, then N
        if varlen:
            row, segment = self.index // self.length, flat[self.index]
            doc = segment + row * (int(flat.max()) + 1)  # unique per row and segment
            start = F.pad(doc[1:] != doc[:-1], (1, 0), value=True)
            self.documents = torch.stack([row[start], segment[start]])  # [2, documents]: each one's row and id
            self.offsets = F.pad(start.nonzero().squeeze(1), (0, 1), value=doc.shape[0])
            lengths = self.offsets.diff()
            self.lengths = int(lengths.min()), int(lengths.max())  # read once per batch, not in every layer

    @functools.cached_property
    def offsets32(self) -> Tensor:  # the offsets as varlen_attn takes them, cast once per batch, not per layer
        return self.offsets.int()

    def pack(self, x: Tensor) -> Tensor:  # [B, T, ...] -> [N, ...]
        return x.reshape(self.batch * self.length, *x.shape[2:])[self.index]

    def unpack(self, x: Tensor) -> Tensor:  # [N, ...] -> [B, T, ...], zeros at padding
        full = x.new_zeros(self.batch * self.length, *x.shape[1:]).index_copy(0, self.index, x)
        return full.view(self.batch, self.length, *x.shape[1:])

    def attend(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float, scale: float | None, *,
               causal: bool = False, keys: "Packed | None" = None) -> Tensor:
        """q [N, H, d], k, v [N_k, H, d] -> [N, H·d]: each document attends to itself, or with `keys`
        (cross-attention) to the k-th document there. SDPA over nested tensors (on CUDA its flash /
        memory-efficient kernels take the documents' offsets); causal: see `causal_varlen`."""
        keys = keys or self
        if causal and q.device.type == "cuda":
            y = varlen_attn(q, k, v, self.offsets32, keys.offsets32, self.lengths[1], keys.lengths[1], scale=scale,
                            **_CAUSAL)
            return y.flatten(1)
        if causal:  # the reference, one document at a time
            cut = self.offsets.tolist()
            y = [F.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (q, k, v)), is_causal=True,
                                                scale=scale).transpose(0, 1) for a, b in zip(cut, cut[1:])]
            return torch.cat(y).flatten(1)

        def nest(x: Tensor, packed: Packed) -> Tensor:  # [documents, H, j, d]
            known = dict(zip(("min_seqlen", "max_seqlen"), packed.lengths)) if _SEQLEN_ARGS else {}  # torch ≥ 2.5
            return torch.nested.nested_tensor_from_jagged(x, packed.offsets, **known).transpose(1, 2)

        y = F.scaled_dot_product_attention(nest(q, self), nest(k, keys), nest(v, keys), dropout_p=dropout_p,
                                           scale=scale)
        return y.transpose(1, 2).values().flatten(1)


class Attention(nn.Module):
    """Self-attention (one fused q/k/v projection) or cross-attention (q, fused k/v).

    `scale` multiplies q·kᵀ: None is 1/√d; T5 uses 1.0 (its init absorbs the scaling).
    """

    def __init__(self, dim: int, num_heads: int, *, bias: bool = True, dropout: float = 0.0,
                 cross: bool = False, head_dim: int | None = None, scale: float | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.cross = cross
        self.scale = scale
        inner = num_heads * (head_dim or dim // num_heads)
        self.q_rows = inner  # rows of the query projection (the first rows of qkv)
        if cross:
            self.q = nn.Linear(dim, inner, bias=bias)
            self.kv = nn.Linear(dim, 2 * inner, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * inner, bias=bias)
        self.out = nn.Linear(inner, dim, bias=bias)

    def _heads(self, x: Tensor, n: int) -> tuple[Tensor, ...]:
        # [B, T, n*H*d] -> n tensors of [B, H, T, d]
        b, t, _ = x.shape
        return x.view(b, t, n, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, context: Tensor | None = None,
                causal: bool = False, kv: KV | None = None, packed: Packed | None = None,
                keys: Packed | None = None) -> Tensor:
        """x [B, T, D] -> [B, T, D]. With `kv`, keys/values are cached there (decoding).
        With `packed`, x is [N, D], the non-pad tokens of a [B, T] batch; cross-attention per document
        also takes `context` [N_k, D] as the non-pad tokens `keys` packs."""
        if packed is not None and packed.offsets is not None:  # x [N, D], attention per document
            p = self.dropout if self.training else 0.0
            if self.cross:  # context [N_k, D], packed as `keys`
                q = self.q(x).view(x.shape[0], self.num_heads, -1)
                kv = self.kv(context).view(context.shape[0], 2, self.num_heads, -1)
                k, v = kv.transpose(0, 1).contiguous().unbind(0)
                return self.out(packed.attend(q, k, v, p, self.scale, keys=keys))
            # [N, H, d] each, contiguous as nested tensors need them
            q, k, v = self.qkv(x).view(x.shape[0], 3, self.num_heads, -1).transpose(0, 1).contiguous().unbind(0)
            return self.out(packed.attend(q, k, v, p, self.scale, causal=causal))
        if packed is not None:  # x [N, D]: only attention itself needs the padded layout
            heads = self._heads(packed.unpack(self.qkv(x)), 3)
            return self.out(packed.pack(self._attend(heads, mask, False)))
        if self.cross:
            (q,) = self._heads(self.q(x), 1)  # [B, H, T, d]
            if kv is not None and kv.k is not None:  # the encoder output does not change while decoding
                k, v = kv.k, kv.v
            else:
                k, v = self._heads(self.kv(context), 2)  # [B, H, S, d]
        else:
            q, k, v = self._heads(self.qkv(x), 3)  # [B, H, T, d] each
            if kv is not None and kv.k is not None:
                k, v = torch.cat([kv.k, k], 2), torch.cat([kv.v, v], 2)  # [B, H, S_past + T, d]
        if kv is not None:
            kv.k, kv.v = k, v
        return self.out(self._attend((q, k, v), mask, causal))  # [B, T, H·d] -> [B, T, D]

    def _attend(self, qkv: tuple[Tensor, Tensor, Tensor], mask: Tensor | None, causal: bool) -> Tensor:
        """Heads q [B, H, T, d], k, v [B, H, S, d] -> [B, T, H·d]."""
        q, k, v = qkv
        t, s = q.shape[2], k.shape[2]
        if causal and t == 1:  # one new query sees every cached key
            causal = False
        elif causal and (mask is not None or t != s):  # fold the causal structure into the mask
            c = causal_mask(t, s, q.device)
            mask = c if mask is None else (mask & c if mask.dtype == torch.bool else mask + additive(c, mask.dtype))
            causal = False
        if self.training and q.device.type == "cpu" and (self.dropout > 0 or (q.dtype != torch.float32
                                                                            and torch.is_grad_enabled())):
            y = _attention_with_dropout(q, k, v, mask, causal, self.dropout, self.scale)
        else:  # elsewhere (CUDA) SDPA's kernels apply the dropout themselves
            if mask is not None and mask.dtype != torch.bool:
                mask = mask.to(q.dtype)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale,
                                               dropout_p=self.dropout if self.training else 0.0)
        return y.transpose(1, 2).reshape(y.shape[0], t, -1)  # [B, H, T, d] -> [B, T, H·d]
