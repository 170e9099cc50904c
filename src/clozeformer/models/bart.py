"""BART: a bidirectional encoder and an autoregressive decoder, both post-norm (Lewis et al. 2020).

Pretrained as a denoising autoencoder (objectives/denoise.py): the encoder reads the
corrupted text, the decoder reconstructs the original. Learned absolute positions with
fairseq's offset of 2, a LayerNorm on the embeddings, GELU, every decoder layer
cross-attending to the encoder's final output, and an LM head tied to the shared
embeddings plus `final_logits_bias`.

Heads for fine-tuning (BART §3): sequence classification reads the decoder's final state at
the last `</s>` of the input (fed to both encoder and decoder); token classification reads
every decoder position; generation uses the LM head (see generate.py).

Shapes: B batch, S source length, T target length, D width, V vocabulary, M labelled positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clozeformer.config import ACTIVATIONS, Config
from clozeformer.generate import Generates
from clozeformer.models.heads import SpanHead, span_loss, sparse_lm_loss
from clozeformer.models.output import Output
from clozeformer.nn import Cache, Stack, TransformerLayer, init_weights, segment_ids, segment_positions
from clozeformer.nn.functional import IGNORE, check_ids, dropout
from clozeformer.nn.position import learned_positions


@dataclass(frozen=True)
class BartConfig(Config):
    """BART (Lewis et al. 2020): post-norm encoder–decoder, learned positions, tied LM head."""

    model_type: ClassVar[str] = "bart"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(hidden_size=128, encoder_layers=2, decoder_layers=2, num_heads=2, intermediate_size=512),
        "mini": dict(hidden_size=256, encoder_layers=4, decoder_layers=4, num_heads=4, intermediate_size=1024),
        # facebook/bart-base
        "base": dict(hidden_size=768, encoder_layers=6, decoder_layers=6, num_heads=12, intermediate_size=3072,
                     dropout=0.1, attention_dropout=0.1, activation_dropout=0.1),
    }

    vocab_size: int = 50265
    hidden_size: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_positions: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5  # transformers' BART has no such key: its LayerNorms keep 1e-5
    initializer_range: float = 0.02
    scale_embedding: bool = False  # multiply token embeddings by √D (False in bart-base/large)
    pad_token_id: int = 1  # BART's dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2  # fairseq starts the decoder with </s>

    def __post_init__(self) -> None:
        self._positive("vocab_size", "hidden_size", "encoder_layers", "decoder_layers", "num_heads",
                       "intermediate_size", "max_positions", "layer_norm_eps", "initializer_range")
        self._check(self.hidden_size % self.num_heads == 0,
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        self._rates("dropout", "attention_dropout", "activation_dropout")
        self._check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}")
        self._token_ids("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")
        self._check(self.layer_norm_eps == 1e-5, f"layer_norm_eps must be 1e-5 (transformers' BART fixes it, so a "
                    f"saved model would load with another), got {self.layer_norm_eps}")


POSITION_OFFSET = 2  # fairseq reserved the first two position rows; HF BART keeps the layout


def shift_right(labels: Tensor, start_id: int, pad_id: int) -> Tensor:
    """decoder_input_ids [B, T]: start token, then labels[:, :-1]; -100 becomes pad."""
    out = labels.new_full(labels.shape, pad_id)
    out[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, pad_id)
    out[:, 0] = start_id
    return out


class BartStack(nn.Module):
    """Learned positions + embedding LayerNorm, then the layers (nn.Stack: post-norm; a decoder's are
    causal and cross-attend)."""

    def __init__(self, cfg: BartConfig, *, decoder: bool) -> None:
        super().__init__()
        self.config, self.decoder = cfg, decoder
        self.pos = nn.Embedding(cfg.max_positions + POSITION_OFFSET, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        n = cfg.decoder_layers if decoder else cfg.encoder_layers
        self.layers = Stack((
            TransformerLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, activation=cfg.activation,
                             dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, eps=cfg.layer_norm_eps,
                             ffn_dropout=cfg.activation_dropout, cross=decoder)
            for _ in range(n)), decoder=decoder)

    def forward(self, x: Tensor, attention_mask: Tensor | None = None, *, context: Tensor | None = None,
                context_mask: Tensor | None = None, cache: Cache | None = None) -> Tensor:
        """Token embeddings [B, T, D] -> hidden states [B, T, D]; the masks as nn.Stack reads them.
        Positions run start … start + T − 1, or, in a packed row, restart at each document."""
        start = cache.length if cache is not None else 0
        t = x.shape[1]
        if start + t > self.config.max_positions:
            raise ValueError(f"sequence length {start + t} exceeds max_positions {self.config.max_positions}; "
                             "truncate the input")
        segments = segment_ids(attention_mask)
        x = x + learned_positions(self.pos, t, offset=POSITION_OFFSET, start=start,
                                  positions=None if segments is None else segment_positions(segments))
        x = dropout(self.norm(x), self.config.dropout, self.training)
        return self.layers(x, attention_mask, context=context, context_mask=context_mask, cache=cache)


class BartModel(nn.Module):
    """The bare encoder–decoder; `encode`/`decode_hidden` are the pieces generation needs."""

    def __init__(self, cfg: BartConfig) -> None:
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.encoder = BartStack(cfg, decoder=False)
        self.decoder = BartStack(cfg, decoder=True)
        self.embed_scale = cfg.hidden_size ** 0.5 if cfg.scale_embedding else 1.0
        init_weights(self, cfg.initializer_range)

    def embed(self, ids: Tensor) -> Tensor:
        return self.shared(check_ids(ids)) * self.embed_scale  # [B, T] -> [B, T, D]

    def encode(self, input_ids: Tensor | None, attention_mask: Tensor | None = None, *,
               embeds: Tensor | None = None) -> Tensor:
        """Source ids [B, S] (or ready input `embeds` [B, S, D], as the translation encoder gives) -> [B, S, D]."""
        return self.encoder(self.embed(input_ids) if embeds is None else embeds, attention_mask)

    def decode_hidden(self, decoder_input_ids: Tensor, encoder_hidden: Tensor, attention_mask: Tensor | None = None,
                      cache: Cache | None = None, decoder_attention_mask: Tensor | None = None) -> Tensor:
        """Decoder ids [B, T] -> [B, T, D]. A packed batch gives both masks as segment ids (the decoder's
        k-th document is the encoder's k-th): each target document attends to itself and its own source."""
        return self.decoder(self.embed(decoder_input_ids), decoder_attention_mask, context=encoder_hidden,
                            context_mask=attention_mask, cache=cache)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None) -> Output:
        if decoder_input_ids is None:  # BART §3.1: the same input to both (classification)
            decoder_input_ids = shift_right(input_ids, self.config.decoder_start_token_id, self.config.pad_token_id)
        h = self.encode(input_ids, attention_mask)
        return Output(last_hidden_state=self.decode_hidden(decoder_input_ids, h, attention_mask))


class _EncoderDecoder(nn.Module):
    """What every BART head shares: the model, its config, and the generation protocol."""

    config: BartConfig
    bart: BartModel

    def new_cache(self) -> Cache:
        return Cache.empty(self.config.decoder_layers)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.bart.encode(input_ids, attention_mask)  # [B, S, D]

    def decoder_inputs(self, labels: Tensor) -> Tensor:
        return shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)


class BartForConditionalGeneration(Generates, _EncoderDecoder):
    """BART with the LM head: denoising pretraining, summarization, translation, generation.

    With `labels` the head runs only at labelled positions and `logits` is [M, V] (like
    BERT's sparse MLM), or, when training with gradients, is fused into the loss
    (nn.functional.linear_cross_entropy) and `logits` is None; without labels, [B, T, V].
    """

    def __init__(self, cfg: BartConfig) -> None:
        super().__init__()
        self.config = cfg
        self.bart = BartModel(cfg)
        self.register_buffer("final_logits_bias", torch.zeros(cfg.vocab_size))  # [V]; zero unless imported

    def family_generation(self) -> dict:
        return {"forced_eos_token_id": self.config.eos_token_id}  # </s> at the maximum length, as transformers' BART

    def lm_head(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.bart.shared.weight, self.final_logits_bias)  # [..., V]

    def decode(self, decoder_input_ids: Tensor, encoder_hidden: Tensor, attention_mask: Tensor | None = None,
               cache: Cache | None = None) -> Tensor:
        return self.lm_head(self.bart.decode_hidden(decoder_input_ids, encoder_hidden, attention_mask, cache))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, labels: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None) -> Output:
        """decoder_attention_mask [B, T]: 1/0 over the decoder's own keys (as transformers reads it), or a
        packed batch's segment ids (see decode_hidden)."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels")
            decoder_input_ids = self.decoder_inputs(labels)
        enc = self.encode(input_ids, attention_mask)  # [B, S, D]
        h = self.bart.decode_hidden(decoder_input_ids, enc, attention_mask,
                                    decoder_attention_mask=decoder_attention_mask)  # [B, T, D]
        out = Output(last_hidden_state=h)
        if labels is None:
            out.logits = self.lm_head(h)  # [B, T, V]
            return out
        where = labels != IGNORE
        out.loss, out.logits, _ = sparse_lm_loss(h[where], self.bart.shared.weight, self.final_logits_bias,
                                                 labels[where], training=self.training,
                                                 smoothing=self.label_smoothing)  # logits [M, V] or None
        out.losses["lm"] = out.loss
        return out


class BartForSequenceClassification(_EncoderDecoder):
    """Decoder's final state at the last `</s>` -> dense -> tanh -> classes (BART §3.1)."""

    def __init__(self, cfg: BartConfig, num_labels: int, *, classifier_dropout: float = 0.0) -> None:
        super().__init__()
        self.config, self.num_labels = cfg, num_labels
        self.bart = BartModel(cfg)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, num_labels)
        self.classifier_dropout = classifier_dropout
        init_weights(nn.ModuleList([self.dense, self.out]), cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None) -> Output:
        h = self.bart(input_ids, attention_mask).last_hidden_state  # [B, T, D]
        eos = input_ids == self.config.eos_token_id  # [B, T]
        if not bool(eos.any(1).all()):
            raise ValueError("every input row must contain </s>: the classifier reads the state at the last one")
        last = (eos * torch.arange(eos.shape[1], device=eos.device)).argmax(1)  # [B] index of the last </s>
        x = h[torch.arange(h.shape[0], device=h.device), last]  # [B, D]
        p, train = self.classifier_dropout, self.training
        out = Output(last_hidden_state=h, pooled=x)
        out.logits = self.out(dropout(torch.tanh(self.dense(dropout(x, p, train))), p, train))  # [B, C]
        if labels is not None:
            out.loss = (F.mse_loss(out.logits.squeeze(-1).float(), labels.float()) if self.num_labels == 1
                        else F.cross_entropy(out.logits.float(), labels))
        return out


class BartForTokenClassification(_EncoderDecoder):
    """Per-position decoder states -> classes (BART §3.2, token classification)."""

    def __init__(self, cfg: BartConfig, num_labels: int, *, classifier_dropout: float = 0.0) -> None:
        super().__init__()
        self.config, self.num_labels = cfg, num_labels
        self.bart = BartModel(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        self.classifier_dropout = classifier_dropout
        init_weights(self.classifier, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None) -> Output:
        h = self.bart(input_ids, attention_mask).last_hidden_state  # [B, T, D]
        out = Output(last_hidden_state=h)
        out.logits = self.classifier(dropout(h, self.classifier_dropout, self.training))  # [B, T, C]
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        return out


class BartForQuestionAnswering(_EncoderDecoder):
    """Start/end logits from every decoder state (HF's BartForQuestionAnswering; the input feeds both stacks)."""

    def __init__(self, cfg: BartConfig, num_labels: int = 2) -> None:
        super().__init__()
        if num_labels != 2:
            raise ValueError(f"question answering predicts a start and an end (2 labels), got {num_labels}")
        self.config, self.num_labels = cfg, 2
        self.bart = BartModel(cfg)
        self.span = SpanHead(cfg.hidden_size)
        init_weights(self.span, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                start_positions: Tensor | None = None, end_positions: Tensor | None = None) -> Output:
        h = self.bart(input_ids, attention_mask).last_hidden_state  # [B, T, D]
        out = Output(last_hidden_state=h)
        out.start_logits, out.end_logits = self.span(h)  # [B, T] each
        if start_positions is not None and end_positions is not None:
            out.loss = span_loss(out.start_logits, out.end_logits, start_positions, end_positions)
        return out


class SourceEncoder(nn.Module):
    """BART §3.4's new encoder: a small randomly initialised encoder over the source language's own
    vocabulary, whose output replaces BART's input token embeddings."""

    def __init__(self, cfg: BartConfig, vocab_size: int, num_layers: int = 2, pad_token_id: int = 1) -> None:
        super().__init__()
        small = cfg.replace(vocab_size=vocab_size, encoder_layers=num_layers, pad_token_id=pad_token_id,
                            bos_token_id=0, eos_token_id=min(2, vocab_size - 1), decoder_start_token_id=0)
        self.config = small
        self.embed = nn.Embedding(vocab_size, cfg.hidden_size, padding_idx=pad_token_id)
        self.stack = BartStack(small, decoder=False)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.stack(self.embed(input_ids), attention_mask)  # [B, S, D]


class BartForTranslation(BartForConditionalGeneration):
    """A pretrained BART (target language) fed by a new source-language encoder (BART §3.4).

    Stage 1 trains only the new encoder, BART's positional embeddings and the self-attention
    input projection of BART's first encoder layer; stage 2 trains everything, briefly.
    `input_ids` are source-vocabulary ids; labels and generation use BART's vocabulary.
    """

    def __init__(self, cfg: BartConfig, source_vocab_size: int, *, source_layers: int = 2,
                 source_pad_id: int = 1) -> None:
        super().__init__(cfg)
        self.source = SourceEncoder(cfg, source_vocab_size, source_layers, source_pad_id)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.bart.encode(None, attention_mask, embeds=self.source(input_ids, attention_mask))

    def set_stage(self, stage: int) -> list[str]:
        """Freeze for training stage 1 or 2; returns the names of the trainable parameters."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        stage1 = ("source.", "bart.encoder.pos.", "bart.encoder.layers.0.attn.qkv.")
        for name, p in self.named_parameters():
            p.requires_grad_(stage == 2 or name.startswith(stage1))
        return [n for n, p in self.named_parameters() if p.requires_grad]
