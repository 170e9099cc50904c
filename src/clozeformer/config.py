"""Frozen, validated model configs with named presets.

One dataclass per family. `Config.preset("mini", vocab_size=8000)` builds a preset with
overrides; `to_dict` / `from_dict` round-trip through JSON and refuse unknown keys, so a
typo in a config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, ClassVar

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
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_positions", "type_vocab_size"):
            self._check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        self._check(self.hidden_size % self.num_heads == 0,
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("dropout", "attention_dropout"):
            self._check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)")
        self._check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}")
        self._check(0 <= self.pad_token_id < self.vocab_size, "pad_token_id must be a vocabulary id")


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
        for name in ("vocab_size", "hidden_size", "encoder_layers", "decoder_layers", "num_heads",
                     "intermediate_size", "max_positions"):
            self._check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        self._check(self.hidden_size % self.num_heads == 0,
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            self._check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)")
        self._check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            self._check(0 <= getattr(self, name) < self.vocab_size, f"{name} must be a vocabulary id")
