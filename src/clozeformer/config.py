"""Frozen, validated model configs with named presets: the base every family's config builds on.

Each family declares its config dataclass beside its model (models/bert.py's BertConfig, …), so a
new family is its model file and its family module. `BertConfig.preset("mini", vocab_size=8000)`
builds a preset with overrides; `to_dict` / `from_dict` round-trip through JSON and refuse unknown
keys, so a typo in a config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

VERSION = "0.1.0"  # the package's, as pyproject.toml says; written into every saved config

# The shortest row any objective or task is given: an NSP pair's [CLS] A [SEP] B [SEP], T5's sentinels,
# <s>…</s> around a BART document, a QA window's question and context.
MIN_MAX_LEN = 8
MAX_VOCAB = 2 ** 20  # tokenizers to train: above the largest vocabularies in use (~256k)
MAX_LENGTH_PENALTY = 50  # beam search: any length up to 10^6 to this power is still a float
LENGTH_CAP = 4096  # a text read or written where the positions set no limit (T5's relative buckets): time, memory
MAX_NUM_BEAMS = 256  # beam search: beams x batch x vocabulary scores per step (256 x 16 x 32k: 0.5 GB)

ACTIVATIONS = ("gelu", "gelu_new", "relu")
# Field annotations (strings under `from __future__ import annotations`) -> accepted JSON types.
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


class ConfigError(ValueError):
    pass


# A public function's argument annotations (strings) -> the types a value of them may have.
ARG_TYPES = {"int": numbers.Integral, "float": numbers.Real, "bool": bool, "str": str, "Path": os.PathLike,
             "None": type(None)}


def check_type(name: str, value: Any, annotation: str) -> None:
    """`value`, given for `name`, against a simple annotation ("int", "float | None", "str | Path", …; any other
    annotation passes): a TypeError naming both, where the value would fail deep inside, or silently mean
    something else ("no" as a flag, 2.5 steps, a Tokenizer where a path goes)."""
    parts = [a.strip() for a in annotation.split("|")]
    if not all(a in ARG_TYPES for a in parts):
        return
    if not isinstance(value, tuple(ARG_TYPES[a] for a in parts)) or (isinstance(value, bool) and "bool" not in parts):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise TypeError(f"{name} must be {' or '.join(parts)}, got {type(value).__name__} {shown}")


def at_least(low: int, **values: Any) -> None:
    """Each named count (None: not given) is at least `low`, else a ValueError naming it and the range."""
    for name, value in values.items():
        if value is not None and not value >= low:
            raise ValueError(f"{name} {value} is out of range; allowed: an integer ≥ {low}")


def typed(fn: Callable) -> Callable:
    """Check each call's arguments against `fn`'s simple annotations (check_type), before any work."""
    signature = inspect.signature(fn)
    annotations = {n: p.annotation for n, p in signature.parameters.items()
                   if isinstance(p.annotation, str) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            if name in annotations:
                check_type(name, value, annotations[name])
        return fn(*args, **kwargs)

    return checked


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
