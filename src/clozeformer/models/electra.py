"""ELECTRA (Clark et al. 2020): a generator (small MLM) and a discriminator (replaced-token detector).

Shapes: B batch, T length, E embedding width, D discriminator width, G generator width,
V vocabulary, M masked positions.

Both networks are BERT encoders built from BERT's pieces (models/bert.py): embeddings of
width E, projected to the encoder width when they differ (HF's `embeddings_project`),
then post-norm layers. They share only the token and position embedding matrices
(ELECTRA §3.2); the generator's MLM head is tied to the shared token embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from clozeformer.config import ACTIVATIONS, Config
from clozeformer.models.bert import BertEmbeddings, bert_layers, check_length, embed_and_encode
from clozeformer.models.heads import (ClassificationHead, DiscriminatorHead, MLMHead, SpanHead, masked_lm_loss,
                                      sequence_loss, span_loss, token_loss)
from clozeformer.models.output import Output
from clozeformer.nn import init_weights
from clozeformer.nn.functional import IGNORE, dropout
from clozeformer.objectives.rtd import discriminator_loss, electra_loss, replaced_inputs


@dataclass(frozen=True)
class ElectraConfig(Config):
    """ELECTRA (Clark et al. 2020): a BERT-like discriminator and a smaller MLM generator.

    The fields describe the discriminator. The generator has the same depth, embedding size
    and vocabulary; its width is derived as google-research/electra's `get_generator_config`
    does: hidden = round(generator_fraction × H), heads = max(1, hidden // 64),
    intermediate = 4 × hidden. The generator_* size fields, when non-zero, override the
    derivation and the depth (needed to load checkpoints whose generator was sized otherwise).
    """

    model_type: ClassVar[str] = "electra"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # ELECTRA-Small (paper Table 6): H256, E128, L12, A4, F1024
        "small": dict(embedding_size=128, hidden_size=256, num_layers=12, num_heads=4, intermediate_size=1024),
        # ELECTRA-Small's widths at BERT-mini's depth (Turc et al. 2019's L4/H256)
        "mini": dict(embedding_size=128, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
        # BERT-tiny's shape (L2/H128); E = H/2 keeps ELECTRA-Small's E:H ratio. Generator H32, A1, F128.
        "tiny": dict(embedding_size=64, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
    }

    vocab_size: int = 30522
    embedding_size: int = 128  # E: token/position/type embedding width, shared by both networks
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    generator_fraction: float = 0.25  # google-research/electra's generator_hidden_size default
    generator_hidden_size: int = 0  # 0: round(generator_fraction × hidden_size)
    generator_num_heads: int = 0  # 0: max(1, generator hidden // 64)
    generator_intermediate_size: int = 0  # 0: 4 × generator hidden
    generator_num_layers: int = 0  # 0: the discriminator's depth (the paper's)
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    discriminator_weight: float = 50.0  # λ, ELECTRA §3.2

    @property
    def generator_hidden(self) -> int:
        return self.generator_hidden_size or max(1, round(self.generator_fraction * self.hidden_size))

    @property
    def generator_heads(self) -> int:
        return self.generator_num_heads or max(1, self.generator_hidden // 64)

    @property
    def generator_intermediate(self) -> int:
        return self.generator_intermediate_size or 4 * self.generator_hidden

    @property
    def generator_layers(self) -> int:
        return self.generator_num_layers or self.num_layers

    def __post_init__(self) -> None:
        self._positive("vocab_size", "embedding_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                       "max_positions", "type_vocab_size", "layer_norm_eps", "initializer_range",
                       "discriminator_weight")
        for name in ("generator_hidden_size", "generator_num_heads", "generator_intermediate_size",
                     "generator_num_layers"):
            self._check(getattr(self, name) >= 0, f"{name} must be ≥ 0 (0 derives it), got {getattr(self, name)}")
        self._check(self.hidden_size % self.num_heads == 0,
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        self._check(0.0 < self.generator_fraction <= 1.0, "generator_fraction must be in (0, 1]")
        self._check(self.generator_hidden % self.generator_heads == 0,
                    f"generator hidden {self.generator_hidden} is not divisible by its {self.generator_heads} heads")
        self._rates("dropout", "attention_dropout")
        self._check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}")
        self._token_ids("pad_token_id")


class ElectraEncoder(nn.Module):
    """Embeddings (width E) -> optional projection E -> D -> post-norm layers: the discriminator's sizes,
    or with `generator` the generator's."""

    def __init__(self, cfg: ElectraConfig, *, generator: bool = False, tok: nn.Embedding | None = None,
                 pos: nn.Embedding | None = None) -> None:
        super().__init__()
        dim, heads, ffn, depth = ((cfg.generator_hidden, cfg.generator_heads, cfg.generator_intermediate,
                                   cfg.generator_layers) if generator else
                                  (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.num_layers))
        self.max_positions = cfg.max_positions
        self.embeddings = BertEmbeddings(cfg, cfg.embedding_size, tok=tok, pos=pos)
        self.project = nn.Linear(cfg.embedding_size, dim) if cfg.embedding_size != dim else None
        self.layers = bert_layers(cfg, dim, heads, ffn, depth)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        check_length(input_ids, self.max_positions)
        # embeddings [B, T, E] -> projection [B, T, D] -> layers [B, T, D]
        return embed_and_encode(self.embeddings, self.project, self.layers, input_ids, attention_mask, token_type_ids)


class ElectraDiscriminator(nn.Module):
    """The discriminator alone (what fine-tuning and export use): one "replaced?" logit per token.

    labels (optional) [B, T]: 1 = replaced, 0 = original; the loss is BCE over non-pad tokens.
    """

    def __init__(self, cfg: ElectraConfig) -> None:
        super().__init__()
        self.config = cfg
        self.electra = ElectraEncoder(cfg)
        self.head = DiscriminatorHead(cfg.hidden_size, cfg.activation)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        h = self.electra(input_ids, attention_mask, token_type_ids)  # [B, T, D]
        out = Output(last_hidden_state=h, logits=self.head(h))  # [B, T]
        if labels is not None:
            out.loss = out.losses["disc"] = discriminator_loss(out.logits, labels.bool(), attention_mask)
        return out


class ElectraGenerator(nn.Module):
    """The generator: a narrower BERT MLM (width G), its head projecting back to E and tied to the
    token embeddings. With `labels` the head runs only at labelled positions: logits [M, V]."""

    def __init__(self, cfg: ElectraConfig, *, tok: nn.Embedding | None = None,
                 pos: nn.Embedding | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.electra = ElectraEncoder(cfg, generator=True, tok=tok, pos=pos)
        # google-research/electra and HF use exact gelu in the generator head, whatever hidden_act is
        self.mlm = MLMHead(cfg.generator_hidden, self.electra.embeddings.tok, "gelu", cfg.layer_norm_eps)
        shared = {id(m) for m in (tok, pos) if m is not None}
        for m in self.modules():  # init all but the shared embeddings (their owner initialised them)
            if id(m) not in shared and not any(True for _ in m.children()):
                init_weights(m, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None,
                sample_u: Tensor | None = None) -> Output:
        """With `sample_u` [M] (quantiles, one per label) also draws `sampled` [M] from the softmax."""
        h = self.electra(input_ids, attention_mask, token_type_ids)  # [B, T, G]
        out = Output(last_hidden_state=h)
        if labels is not None:  # logits [M, V] (None in training: see masked_lm_loss)
            out.losses["mlm"], out.logits, out.sampled = masked_lm_loss(self.mlm, h, labels, sample_u)
            out.loss = out.losses["mlm"]
        else:
            out.logits = self.mlm(h)  # [B, T, V]
        return out


class ElectraForPreTraining(nn.Module):
    """Generator + discriminator, trained jointly on replaced-token detection.

    forward(input_ids, attention_mask, token_type_ids, labels, replace_u): input_ids are the
    masked inputs and labels the originals at masked positions (objectives/rtd.rtd_mask);
    replace_u [B, T] is the uniform noise the generator's samples are drawn with. Returns
    loss = MLM loss + λ · discriminator loss, with losses {"mlm", "disc"}, logits [B, T] (the
    discriminator's, as HF's ElectraForPreTraining), generator_logits [M, V] (None in training,
    where the generator's head is fused into the MLM loss), sampled [M], disc_input_ids [B, T]
    and replaced [B, T].
    Without labels it runs the discriminator on input_ids as given.
    """

    def __init__(self, cfg: ElectraConfig) -> None:
        super().__init__()
        self.config = cfg
        self.discriminator = ElectraDiscriminator(cfg)
        emb = self.discriminator.electra.embeddings
        self.generator = ElectraGenerator(cfg, tok=emb.tok, pos=emb.pos)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None,
                replace_u: Tensor | None = None) -> Output:
        if labels is None:
            return self.discriminator(input_ids, attention_mask, token_type_ids)
        where = labels != IGNORE  # [B, T]
        if replace_u is None:  # no noise in the batch: draw it from the global RNG
            replace_u = torch.rand(labels.shape, device=labels.device)
        gen = self.generator(input_ids, attention_mask, token_type_ids, labels, replace_u[where])
        disc_ids, replaced = replaced_inputs(input_ids, labels, gen.sampled)  # [B, T] each; samples carry no gradient
        out = self.discriminator(disc_ids, attention_mask, token_type_ids)
        disc = discriminator_loss(out.logits, replaced, attention_mask)
        out.losses = {"mlm": gen.loss, "disc": disc}
        out.loss = electra_loss(gen.loss, disc, self.config.discriminator_weight)
        out.generator_logits, out.sampled, out.disc_input_ids, out.replaced = gen.logits, gen.sampled, disc_ids, replaced
        return out


class ElectraForSequenceClassification(nn.Module):
    """The discriminator's encoder + HF's ElectraClassificationHead on the first token: dropout -> dense ->
    gelu -> dropout -> out (exact gelu whatever hidden_act is, as HF). num_labels == 1 is regression."""

    def __init__(self, cfg: ElectraConfig, num_labels: int, *, classifier_dropout: float | None = None) -> None:
        super().__init__()
        self.config, self.num_labels = cfg, num_labels
        self.electra = ElectraEncoder(cfg)
        self.classifier_dropout = cfg.dropout if classifier_dropout is None else classifier_dropout
        self.classifier = ClassificationHead(cfg.hidden_size, num_labels, "gelu", self.classifier_dropout)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        h = self.electra(input_ids, attention_mask, token_type_ids)  # [B, T, D]
        out = Output(last_hidden_state=h, logits=self.classifier(h))  # [B, C]
        if labels is not None:
            out.loss = sequence_loss(out.logits, labels)
        return out


class ElectraForTokenClassification(nn.Module):
    """dropout -> linear on every token vector (HF's ElectraForTokenClassification); labels [B, T], -100 ignored."""

    def __init__(self, cfg: ElectraConfig, num_labels: int, *, classifier_dropout: float | None = None) -> None:
        super().__init__()
        self.config, self.num_labels = cfg, num_labels
        self.electra = ElectraEncoder(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        self.classifier_dropout = cfg.dropout if classifier_dropout is None else classifier_dropout
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> Output:
        h = self.electra(input_ids, attention_mask, token_type_ids)  # [B, T, D]
        out = Output(last_hidden_state=h, logits=self.classifier(dropout(h, self.classifier_dropout, self.training)))
        if labels is not None:
            out.loss = token_loss(out.logits, labels)
        return out


class ElectraForQuestionAnswering(nn.Module):
    """Start/end logits per token (HF's ElectraForQuestionAnswering)."""

    def __init__(self, cfg: ElectraConfig, num_labels: int = 2) -> None:
        super().__init__()
        if num_labels != 2:
            raise ValueError(f"question answering predicts a start and an end (2 labels), got {num_labels}")
        self.config, self.num_labels = cfg, 2
        self.electra = ElectraEncoder(cfg)
        self.span = SpanHead(cfg.hidden_size)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                start_positions: Tensor | None = None, end_positions: Tensor | None = None) -> Output:
        h = self.electra(input_ids, attention_mask, token_type_ids)  # [B, T, D]
        out = Output(last_hidden_state=h)
        out.start_logits, out.end_logits = self.span(h)  # [B, T] each
        if start_positions is not None and end_positions is not None:
            out.loss = span_loss(out.start_logits, out.end_logits, start_positions, end_positions)
        return out


__all__ = ["ElectraDiscriminator", "ElectraEncoder", "ElectraForPreTraining", "ElectraForQuestionAnswering",
           "ElectraForSequenceClassification", "ElectraForTokenClassification", "ElectraGenerator"]
