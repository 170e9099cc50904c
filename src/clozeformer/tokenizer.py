"""Tokenizers: train, load and save a `tokenizers.Tokenizer`, and know its special tokens.

`Tokenizer` wraps the Rust backend and a role -> token map (roles: "pad", "unk", "cls",
"sep", "mask"; later families add "bos", "eos", sentinels). Everything that needs a
special id asks by role, so no id is hard-coded outside this file.

A saved tokenizer is a directory with `tokenizer.json` (the backend, exactly) and
`tokenizer_config.json` (the HF keys for the specials and `do_lower_case`), so the same
directory loads in `transformers.AutoTokenizer`.

Shapes: V = vocab_size (with added tokens).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from clozeformer.io import atomic_write

__all__ = ["Tokenizer", "TokenizerError"]

# BERT's specials in BERT's order, so a trained vocab has [PAD]=0 ... [MASK]=4.
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# Conventional names per role, used to find the specials of a vocab that comes without a config.
_CONVENTIONAL = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]",),
    "sep": ("[SEP]",),
    "mask": ("[MASK]", "<mask>"),
    "bos": ("<s>",),
    "eos": ("</s>",),
}
# Roles HF tokenizer configs name as "<role>_token".
_HF_ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
_WORDPIECE_PREFIX = "##"


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded, saved or used as asked."""


def _bert_template(cls_token: str, sep_token: str, backend: Backend) -> processors.TemplateProcessing:
    """`[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` with segment id 1 on the B half (BERT §3)."""
    return processors.TemplateProcessing(
        single=f"{cls_token} $A {sep_token}",
        pair=f"{cls_token} $A {sep_token} $B:1 {sep_token}:1",
        special_tokens=[(t, backend.token_to_id(t)) for t in (cls_token, sep_token)],
    )


def _read_config(path: Path) -> dict:
    """A tokenizer_config.json as plain JSON data; {} when absent."""
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not a valid JSON tokenizer config ({e})") from None
    if not isinstance(config, dict):
        raise TokenizerError(f"{path}: tokenizer config must be a JSON object, got {type(config).__name__}")
    return config


def _config_specials(config: dict) -> dict[str, str]:
    """Roles from HF keys `<role>_token`; values are strings or {"content": ...} dicts."""
    specials = {}
    for role in _HF_ROLES:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            specials[role] = value
    return specials


def _detect_specials(backend: Backend) -> dict[str, str]:
    """Roles whose conventional name is in the vocab (first match wins)."""
    specials = {}
    for role, names in _CONVENTIONAL.items():
        for name in names:
            if backend.token_to_id(name) is not None:
                specials[role] = name
                break
    return specials


def _lowercases(normalizer: dict | None) -> bool:
    """Whether a serialised normalizer (nested Sequences included) lowercases."""
    if not normalizer:
        return False
    kind = normalizer.get("type")
    if kind == "Lowercase":
        return True
    if kind == "BertNormalizer":
        return bool(normalizer.get("lowercase"))
    if kind == "Sequence":
        return any(_lowercases(n) for n in normalizer.get("normalizers", []))
    return False


def _as_list(ids) -> list[int]:
    """numpy arrays, torch tensors and plain sequences -> list[int]."""
    return ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]


class Tokenizer:
    """Our thin wrapper around a `tokenizers.Tokenizer` plus the roles of its special tokens."""

    def __init__(self, backend: Backend, specials: dict[str, str], lowercase: bool | None = None):
        for role, token in specials.items():
            if backend.token_to_id(token) is None:
                raise TokenizerError(f"special token {token!r} for role {role!r} is not in the vocabulary")
        # Padding and truncation are per call here (a tokenizer.json may carry e.g. MiniLM's
        # fixed padding to 128), so the backend itself never pads or truncates.
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.specials = dict(specials)
        if lowercase is None:
            lowercase = _lowercases(json.loads(backend.to_str()).get("normalizer"))
        self.lowercase = lowercase

    # ---- building ----------------------------------------------------------------

    @classmethod
    def train_wordpiece(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        *,
        lowercase: bool = True,
        min_frequency: int = 2,
        limit_alphabet: int = 6000,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train a BERT-style WordPiece vocab; [PAD] [UNK] [CLS] [SEP] [MASK] get ids 0..4."""
        backend = Backend(models.WordPiece(unk_token=BERT_SPECIALS["unk"], max_input_chars_per_word=100))
        steps = [
            normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
        ]
        if lowercase:
            # Strip accents without breaking Hangul: NFD splits a syllable into jamo and only
            # NFC puts it back (HF's BertNormalizer(lowercase=True) stops after NFD, so
            # Korean ends up as jamo).
            steps += [normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]
            steps += [normalizers.Lowercase()]
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix=_WORDPIECE_PREFIX)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
            special_tokens=list(BERT_SPECIALS.values()),
            continuing_subword_prefix=_WORDPIECE_PREFIX,
            show_progress=show_progress,
        )
        backend.train_from_iterator(texts, trainer)
        backend.post_processor = _bert_template(BERT_SPECIALS["cls"], BERT_SPECIALS["sep"], backend)
        return cls(backend, BERT_SPECIALS, lowercase=lowercase)

    @classmethod
    def load(cls, path) -> Tokenizer:
        """Load a directory holding tokenizer.json (preferred) or vocab.txt, or either file."""
        path = Path(path)
        if path.is_dir():
            for name in ("tokenizer.json", "vocab.txt"):
                if (path / name).is_file():
                    path = path / name
                    break
            else:
                raise TokenizerError(f"{path}: no tokenizer.json or vocab.txt in this directory")
        elif not path.is_file():
            raise TokenizerError(f"{path}: no such tokenizer file or directory")
        config = _read_config(path.parent / "tokenizer_config.json")

        if path.suffix == ".json":
            try:
                backend = Backend.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception on bad JSON
                raise TokenizerError(f"{path}: not a valid tokenizer.json ({e})") from None
            lowercase = config.get("do_lower_case")
            lowercase = lowercase if isinstance(lowercase, bool) else None
        else:
            backend, lowercase = cls._from_vocab_txt(path, config)
        specials = _detect_specials(backend) | _config_specials(config)
        if path.suffix != ".json":
            # Specials must match whole before normalisation, else "[MASK]" splits into "[", "mask", "]".
            backend.add_special_tokens(sorted(set(specials.values())))
            if "cls" in specials and "sep" in specials:
                backend.post_processor = _bert_template(specials["cls"], specials["sep"], backend)
        return cls(backend, specials, lowercase=lowercase)

    @staticmethod
    def _from_vocab_txt(path: Path, config: dict) -> tuple[Backend, bool]:
        """A BERT vocab.txt with the normaliser it was built with (HF BertTokenizer's)."""
        lowercase = config.get("do_lower_case", True)
        unk = _config_specials(config).get("unk", BERT_SPECIALS["unk"])
        try:
            model = models.WordPiece.from_file(str(path), unk_token=unk, max_input_chars_per_word=100)
        except Exception as e:
            raise TokenizerError(f"{path}: not a valid WordPiece vocab.txt ({e})") from None
        backend = Backend(model)
        # HF's own normaliser, not our Hangul-safe one: an existing vocab was built with it.
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=config.get("tokenize_chinese_chars", True),
            strip_accents=config.get("strip_accents"),
            lowercase=lowercase,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix=_WORDPIECE_PREFIX)
        return backend, lowercase

    def save(self, directory) -> None:
        """Write tokenizer.json and tokenizer_config.json (each atomically) into directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": self.lowercase}
        normalizer = json.loads(self.backend.to_str()).get("normalizer") or {}
        if isinstance(self.backend.model, models.WordPiece):
            config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
        if isinstance(self.backend.model, models.WordPiece) and normalizer.get("type") == "BertNormalizer":
            # transformers 5's BertTokenizer rebuilds its normaliser from these keys and drops
            # the one in tokenizer.json, so it is named only when the rebuild is identical;
            # anything else (our Hangul-safe Sequence) loads verbatim as PreTrainedTokenizerFast.
            config |= {
                "tokenizer_class": "BertTokenizerFast",
                "strip_accents": normalizer.get("strip_accents"),
                "tokenize_chinese_chars": normalizer.get("handle_chinese_chars", True),
            }
        config |= {f"{role}_token": token for role, token in self.specials.items()}
        atomic_write(directory / "tokenizer.json", self.backend.to_str(pretty=True))
        config_text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        atomic_write(directory / "tokenizer_config.json", config_text)

    # ---- encoding ----------------------------------------------------------------

    def encode(
        self,
        text: str,
        pair: str | None = None,
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
    ) -> list[int]:
        """Ids of text (and pair); with max_length, truncated longest-first so all fits."""
        if max_length is None:
            return self.backend.encode(text, pair, add_special_tokens=add_special_tokens).ids
        n_special = self.backend.num_special_tokens_to_add(pair is not None) if add_special_tokens else 0
        if max_length <= n_special:
            raise TokenizerError(f"max_length={max_length} leaves no room beside {n_special} special tokens")
        self.backend.enable_truncation(max_length)
        try:
            return self.backend.encode(text, pair, add_special_tokens=add_special_tokens).ids
        finally:
            self.backend.no_truncation()

    def encode_batch(self, texts: list[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        """Ids of many texts at once, on the backend's Rust thread pool (no offsets computed)."""
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(_as_list(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch, *, skip_special_tokens: bool = True) -> list[str]:
        batch = [_as_list(ids) for ids in batch]
        return self.backend.decode_batch(batch, skip_special_tokens=skip_special_tokens)

    def tokens(self, ids) -> list[str]:
        return [self.backend.id_to_token(i) for i in _as_list(ids)]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    # ---- vocabulary --------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def special_id(self, role: str) -> int:
        """Id of the special token playing role ("pad", "mask", ...)."""
        if role not in self.specials:
            have = ", ".join(self.specials) or "none"
            raise TokenizerError(f"this tokenizer has no {role!r} special token (it has: {have})")
        return self.backend.token_to_id(self.specials[role])

    @property
    def pad_id(self) -> int:
        return self.special_id("pad")

    @property
    def unk_id(self) -> int:
        return self.special_id("unk")

    @property
    def cls_id(self) -> int:
        return self.special_id("cls")

    @property
    def sep_id(self) -> int:
        return self.special_id("sep")

    @property
    def mask_id(self) -> int:
        return self.special_id("mask")

    @property
    def special_ids(self) -> list[int]:
        return sorted({self.backend.token_to_id(t) for t in self.specials.values()})

    def continuation_mask(self) -> np.ndarray:
        """bool [V]: True where a token continues a word ("##ing"); all False for non-WordPiece models."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        prefix = getattr(self.backend.model, "continuing_subword_prefix", None)
        if not isinstance(self.backend.model, models.WordPiece) or not prefix:
            return mask
        special = set(self.specials.values())
        for token, i in self.backend.get_vocab(with_added_tokens=True).items():
            mask[i] = token.startswith(prefix) and len(token) > len(prefix) and token not in special
        return mask

    @property
    def fingerprint(self) -> str:
        """sha256 of the serialised backend and the specials: equal fingerprints tokenise equally."""
        h = hashlib.sha256(self.backend.to_str().encode("utf-8"))
        h.update(json.dumps(self.specials, sort_keys=True).encode("utf-8"))
        return h.hexdigest()

    def __repr__(self) -> str:
        kind = type(self.backend.model).__name__
        return (
            f"Tokenizer({kind}, vocab_size={self.vocab_size}, lowercase={self.lowercase}, specials={self.specials})"
        )
