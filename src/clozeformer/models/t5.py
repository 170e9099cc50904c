"""T5: a pre-norm encoder–decoder with RMSNorm and bucketed relative positions (Raffel et al. 2020).

Pretrained by span corruption (objectives/span.py): the encoder reads text whose spans are
replaced by sentinels, the decoder writes each sentinel followed by the span it hides.
No absolute positions: each stack adds one learned relative position bias (nn/position.py)
to every layer's self-attention logits, computed once per forward (T5 keeps the table in
the stack's first layer and hands the computed bias on; HF names it there, see
interop/hf.py). No biases in any linear layer, attention logits unscaled (q·kᵀ; the init
absorbs 1/√d), dropout on the embeddings, every residual branch, the attention
probabilities, the feed-forward activations and after each stack's final RMSNorm.

v1.0: ReLU feed-forward; the LM head is the shared embedding, applied to the decoder
output scaled by d_model^-0.5. v1.1: gated tanh-GELU feed-forward, untied `lm_head`, no
scaling (`T5Config(feed_forward="gated-gelu", tie_word_embeddings=False)`).

Shapes: B batch, S source length, T target length, D d_model, H heads, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.config import Config
from clozeformer.generate import Generates
from clozeformer.models.bart import shift_right
from clozeformer.models.heads import sparse_lm_loss
from clozeformer.models.output import Output
from clozeformer.nn import Cache, Stack, TransformerLayer
from clozeformer.nn.functional import IGNORE, check_ids, dropout
from clozeformer.nn.position import RelativePositionBias


FEED_FORWARDS = ("relu", "gated-gelu")


@dataclass(frozen=True)
class T5Config(Config):
    """T5 (Raffel et al. 2020): pre-norm encoder–decoder with RMSNorm and bucketed relative positions.

    The presets are T5 v1.0 (ReLU feed-forward, LM head tied to the shared embedding with the
    decoder output scaled by d_model^-0.5). T5 v1.1 is `feed_forward="gated-gelu",
    tie_word_embeddings=False` (gated tanh-GELU, untied LM head, no output scaling), e.g.
    `T5Config.preset("small", feed_forward="gated-gelu", tie_word_embeddings=False)`; the
    `*-v1_1` presets spell out google/t5-v1_1-{small,base} (whose widths differ from v1.0's).
    """

    model_type: ClassVar[str] = "t5"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(d_model=128, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2, num_heads=4),
        "mini": dict(d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=4),
        # google-t5/t5-small and t5-base
        "small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8),
        "base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
        # google/t5-v1_1-small and t5-v1_1-base
        "small-v1_1": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6,
                           feed_forward="gated-gelu", tie_word_embeddings=False),
        "base-v1_1": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12,
                          feed_forward="gated-gelu", tie_word_embeddings=False),
    }

    vocab_size: int = 32128  # 32k SentencePiece + 100 sentinels, padded to a multiple of 128
    d_model: int = 256
    d_kv: int = 64  # width of one attention head (need not be d_model / num_heads)
    d_ff: int = 1024
    num_layers: int = 4  # encoder layers
    num_decoder_layers: int = 4
    num_heads: int = 4
    relative_attention_num_buckets: int = 32  # T5 §2.1
    relative_attention_max_distance: int = 128  # offsets beyond this share the last bucket
    dropout: float = 0.1  # embeddings, every residual branch, attention probabilities, FFN activations
    layer_norm_eps: float = 1e-6
    feed_forward: str = "relu"  # "relu" (v1.0) or "gated-gelu" (v1.1)
    tie_word_embeddings: bool = True  # v1.0 True (and decoder output × d_model^-0.5), v1.1 False
    initializer_factor: float = 1.0  # scales every init std (Mesh TF / HF T5 init)
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0  # T5 starts the decoder with <pad>

    def __post_init__(self) -> None:
        self._positive("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                       "relative_attention_num_buckets", "relative_attention_max_distance")
        self._check(self.relative_attention_num_buckets >= 4 and self.relative_attention_num_buckets % 2 == 0,
                    "relative_attention_num_buckets must be even and at least 4")
        self._rates("dropout")
        self._positive("layer_norm_eps", "initializer_factor")
        self._check(self.feed_forward in FEED_FORWARDS, f"feed_forward must be one of {FEED_FORWARDS}")
        self._token_ids("pad_token_id", "eos_token_id", "decoder_start_token_id")


class T5Stack(nn.Module):
    """The layers (nn.Stack: pre-norm RMSNorm; a decoder's are causal and cross-attend) with one relative
    position bias, then the final RMSNorm."""

    def __init__(self, cfg: T5Config, *, decoder: bool) -> None:
        super().__init__()
        self.config, self.decoder = cfg, decoder
        gated = cfg.feed_forward == "gated-gelu"
        self.bias = RelativePositionBias(cfg.num_heads, bidirectional=not decoder,
                                         num_buckets=cfg.relative_attention_num_buckets,
                                         max_distance=cfg.relative_attention_max_distance)
        self.layers = Stack((
            TransformerLayer(cfg.d_model, cfg.num_heads, cfg.d_ff, activation="gelu_new" if gated else "relu",
                             dropout=cfg.dropout, attention_dropout=cfg.dropout, ffn_dropout=cfg.dropout,
                             eps=cfg.layer_norm_eps, bias=False, cross=decoder, pre_norm=True, norm="rms",
                             gated=gated, head_dim=cfg.d_kv, scale=1.0)
            for _ in range(cfg.num_decoder_layers if decoder else cfg.num_layers)), decoder=decoder)
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, attention_mask: Tensor | None = None, *, context: Tensor | None = None,
                context_mask: Tensor | None = None, cache: Cache | None = None) -> Tensor:
        """Token embeddings [B, T, D] -> hidden states [B, T, D]; the masks as nn.Stack reads them (the
        decoder's own `attention_mask` only without a cache). Relative positions need no restart in a
        packed row: the offsets within a document are the same wherever it sits."""
        x = dropout(x, self.config.dropout, self.training)
        x = self.layers(x, attention_mask, context=context, context_mask=context_mask, cache=cache, bias=self.bias)
        return dropout(self.norm(x), self.config.dropout, self.training)


class T5ForConditionalGeneration(Generates, nn.Module):
    """T5 with its LM head: span-corruption pretraining, text-to-text fine-tuning, generation.

    Offers the encoder–decoder generation protocol (`encode`, `new_cache`, `decode`) that
    generate.py drives.
    """

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)  # encoder and decoder input embeddings
        self.encoder = T5Stack(cfg, decoder=False)
        self.decoder = T5Stack(cfg, decoder=True)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.register_load_state_dict_pre_hook(_head_from_shared)
        t5_init(self)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """Decoder output [..., D] -> logits [..., V]."""
        if self.lm_head is None:  # v1.0: tied to the shared embedding, rescaled (Mesh TF, T5 §3.1.1)
            return F.linear(hidden * self.config.d_model ** -0.5, self.shared.weight)
        return self.lm_head(hidden)

    def new_cache(self) -> Cache:
        return Cache.empty(self.config.num_decoder_layers)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Source ids [B, S] -> encoder output [B, S, D]."""
        return self.encoder(self.shared(check_ids(input_ids)), attention_mask)

    def decode_hidden(self, decoder_input_ids: Tensor, encoder_hidden: Tensor, attention_mask: Tensor | None = None,
                      cache: Cache | None = None, decoder_attention_mask: Tensor | None = None) -> Tensor:
        """New decoder ids [B, T] -> decoder output [B, T, D]; `attention_mask` is the encoder's [B, S]."""
        return self.decoder(self.shared(check_ids(decoder_input_ids, "decoder_input_ids")), decoder_attention_mask,
                            context=encoder_hidden, context_mask=attention_mask, cache=cache)

    def decode(self, decoder_input_ids: Tensor, encoder_hidden: Tensor, attention_mask: Tensor | None = None,
               cache: Cache | None = None) -> Tensor:
        """Logits [B, T, V] for the new decoder tokens; with a cache, positions start at `cache.length`."""
        return self.lm_logits(self.decode_hidden(decoder_input_ids, encoder_hidden, attention_mask, cache))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, labels: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None) -> Output:
        """logits [B, T, V]; with `labels` [B, T] (-100 ignored) also the mean cross-entropy `loss`.

        Training with labels (grad enabled) fuses the LM head into the loss
        (nn.functional.linear_cross_entropy) and returns no logits.

        Without `decoder_input_ids` the decoder reads the labels shifted right behind
        `decoder_start_token_id` (-100 read as pad).
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels")
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        enc = self.encode(input_ids, attention_mask)  # [B, S, D]
        h = self.decode_hidden(decoder_input_ids, enc, attention_mask,
                               decoder_attention_mask=decoder_attention_mask)  # [B, T, D]
        if labels is not None and self.training and torch.is_grad_enabled():  # fused head + loss, no logits
            where = labels != IGNORE
            hs = h[where]  # [M, D]
            if self.lm_head is None:
                hs, weight = hs * self.config.d_model ** -0.5, self.shared.weight
            else:
                weight = self.lm_head.weight
            loss = sparse_lm_loss(hs, weight, None, labels[where], training=True, smoothing=self.label_smoothing)[0]
            return Output(last_hidden_state=h, loss=loss, losses={"lm": loss})
        out = Output(last_hidden_state=h, logits=self.lm_logits(h))  # logits [B, T, V]
        if labels is not None:
            logits = out.logits.flatten(0, 1)  # [B·T, V]
            # autocast already runs cross_entropy in fp32; an explicit fp32 copy of [B·T, V] would cost ~25% more
            if not torch.is_autocast_enabled(logits.device.type):
                logits = logits.float()
            out.loss = out.losses["lm"] = F.cross_entropy(logits, labels.flatten(), ignore_index=IGNORE)
        return out


def _head_from_shared(module: T5ForConditionalGeneration, state: dict, prefix: str, *_) -> None:
    """An untied model loading a checkpoint without `lm_head.weight` starts its head from the shared
    embedding: transformers ≥ 5 ties T5 v1.1's head unless a checkpoint holds a distinct one."""
    if module.lm_head is not None and prefix + "lm_head.weight" not in state and prefix + "shared.weight" in state:
        state[prefix + "lm_head.weight"] = state[prefix + "shared.weight"]


@torch.no_grad()
def t5_init(model: T5ForConditionalGeneration) -> None:
    """Mesh TF's T5 init (as HF's `_init_weights`): N(0, σ) with σ set by each matrix's fan-in.

    Every σ is multiplied by `initializer_factor`. The query absorbs the 1/√d_kv that T5's
    attention omits; norms start at `initializer_factor`.
    """
    cfg, f = model.config, model.config.initializer_factor
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    nn.init.normal_(model.shared.weight, 0.0, f)
    if model.lm_head is not None:
        nn.init.normal_(model.lm_head.weight, 0.0, f)
    for stack in (model.encoder, model.decoder):
        nn.init.normal_(stack.bias.embedding.weight, 0.0, f * d ** -0.5)
        for m in stack.modules():
            if isinstance(m, nn.RMSNorm):
                nn.init.constant_(m.weight, f)
        for layer in stack.layers:
            qkv = layer.attn.qkv.weight  # [3·inner, D]: q rows, then k and v
            attns = [(qkv[:inner], qkv[inner:], layer.attn.out.weight)]
            if layer.cross is not None:
                attns.append((layer.cross.q.weight, layer.cross.kv.weight, layer.cross.out.weight))
            for q, kv, out in attns:
                nn.init.normal_(q, 0.0, f * (d * cfg.d_kv) ** -0.5)
                nn.init.normal_(kv, 0.0, f * d ** -0.5)
                nn.init.normal_(out, 0.0, f * inner ** -0.5)
            ffn = layer.ffn
            for w in (ffn.up.weight, *([ffn.gate.weight] if ffn.gate is not None else [])):
                nn.init.normal_(w, 0.0, f * d ** -0.5)
            nn.init.normal_(ffn.down.weight, 0.0, f * cfg.d_ff ** -0.5)
