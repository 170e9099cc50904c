"""Frozen, validated model configs with named presets.

One dataclass per family. `Config.preset("mini", vocab_size=8000)` builds a preset with
overrides; `to_dict` / `from_dict` round-trip through JSON and refuse unknown keys, so a
typo in a config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

VERSION = "0.1.0"  # the package's, as pyproject.toml says; written into every saved config

# The shortest row any objective or task is given: an NSP pair's [CLS] A [SEP] B [SEP], T5's sentinels,
# <s>…</s> around a BART document, a QA window's question and context.
MIN_MAX_LEN = 8

ACTIVATIONS = ("gelu", "gelu_new", "relu")
# Field annotations (strings under `from __future__ import annotations`) -> accepted JSON types.
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    model_type: ClassVar[str] = ""
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls, name: str, **overrides: Any):
        if name not in cls.presets:
            raise ConfigError(f"unknown {cls.model_type} preset {name!r}; choose from {sorted(cls.presets)}")
        return cls.from_dict({**cls.presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @property
    def max_length(self) -> int | None:
        """The longest input its positions allow (None: no limit, as T5's relative positions)."""
        return getattr(self, "max_positions", None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """A config from JSON-like data: unknown keys and values of the wrong type are ConfigErrors."""
        if not isinstance(data, dict):
            raise ConfigError(f"a {cls.model_type} config must be a mapping of keys to values, "
                              f"got {type(data).__name__}")
        data = dict(data)
        kind = data.pop("model_type", cls.model_type)
        if kind != cls.model_type:
            raise ConfigError(f"config is for model_type {kind!r}, not {cls.model_type!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - set(fields)))
        if unknown:
            hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, fields, 1)) else repr(k)
                     for k in unknown]
            raise ConfigError(f"unknown {cls.model_type} config key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(hints)}; known keys: {', '.join(sorted(fields))}")
        for name, value in data.items():
            expected = _TYPES.get(str(fields[name].type))
            # bool is an int in Python, but `num_layers=true` is a mistake, not a 1
            if expected and (not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)):
                raise ConfigError(f"{cls.model_type} config: {name} must be {fields[name].type}, "
                                  f"got {type(value).__name__} {value!r}")
        return cls(**data)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def _check(self, condition: bool, message: str) -> None:
        if not condition:
            raise ConfigError(f"{self.model_type} config: {message}")

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            self._check(0 < value < math.inf, f"{name} must be positive and finite, got {value}")

    def _rates(self, *names: str) -> None:
        for name in names:
            self._check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)")

    def _token_ids(self, *names: str) -> None:
        for name in names:
            self._check(0 <= getattr(self, name) < self.vocab_size, f"{name} must be a vocabulary id")


@dataclass(frozen=True)
class BertConfig(Config):
    """BERT (Devlin et al. 2019): post-norm encoder with learned absolute positions."""

    model_type: ClassVar[str] = "bert"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # tiny/mini/small follow Turc et al. 2019 ("Well-read students"); base is BERT-Base.
        "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
        "mini": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
        "small": dict(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=2048),
        "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    }

    vocab_size: int = 30522
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    nsp: bool = True  # build the next-sentence-prediction head

    def __post_init__(self) -> None:
        self._positive("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                       "max_positions", "type_vocab_size", "layer_norm_eps", "initializer_range")
        self._check(self.hidden_size % self.num_heads == 0,
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        self._rates("dropout", "attention_dropout")
        self._check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}")
        self._token_ids("pad_token_id")


@dataclass(frozen=True)
class RobertaConfig(BertConfig):
    """RoBERTa (Liu et al. 2019): BERT's encoder without NSP or token types, on byte-level BPE.
    Positions start after the padding id (transformers' layout): a row's first token takes
    position pad_token_id + 1, so max_positions = 514 holds 512 tokens."""

    model_type: ClassVar[str] = "roberta"
    vocab_size: int = 50265
    max_positions: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    nsp: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(not self.nsp, "RoBERTa has no next-sentence prediction (nsp must be false)")
        self._check(self.max_positions > self.pad_token_id + 1,
                    f"max_positions {self.max_positions} leaves no position after the padding id {self.pad_token_id}")

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1

    @property
    def max_length(self) -> int:
        """The longest input: positions pad_token_id + 1 … max_positions − 1."""
        return self.max_positions - self.position_offset


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
    layer_norm_eps: float = 1e-5
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


@dataclass(frozen=True)
class ElectraConfig(Config):
    """ELECTRA (Clark et al. 2020): a BERT-like discriminator and a smaller MLM generator.

    The fields describe the discriminator. The generator has the same depth, embedding size
    and vocabulary; its width is derived as google-research/electra's `get_generator_config`
    does: hidden = round(generator_fraction × H), heads = max(1, hidden // 64),
    intermediate = 4 × hidden. The generator_* size fields, when non-zero, override the
    derivation (needed to load checkpoints whose generator was sized otherwise).
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

    def __post_init__(self) -> None:
        self._positive("vocab_size", "embedding_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                       "max_positions", "type_vocab_size", "layer_norm_eps", "initializer_range",
                       "discriminator_weight")
        for name in ("generator_hidden_size", "generator_num_heads", "generator_intermediate_size"):
            self._check(getattr(self, name) >= 0, f"{name} must be ≥ 0 (0 derives it), got {getattr(self, name)}")
        self._check(self.hidden_size % self.num_heads == 0,
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        self._check(0.0 < self.generator_fraction <= 1.0, "generator_fraction must be in (0, 1]")
        self._check(self.generator_hidden % self.generator_heads == 0,
                    f"generator hidden {self.generator_hidden} is not divisible by its {self.generator_heads} heads")
        self._rates("dropout", "attention_dropout")
        self._check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}")
        self._token_ids("pad_token_id")


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
