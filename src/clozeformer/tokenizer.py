"""Tokenizers: train, load and save a `tokenizers.Tokenizer`, and know its special tokens.

`Tokenizer` wraps the Rust backend, a role -> token map (roles: "pad", "unk", "cls", "sep",
"mask", "bos", "eos") and T5's sentinels (`<extra_id_i>`, index i -> token). Everything that
needs a special id asks by role (or `sentinel_id(i)`), so no id is hard-coded outside this file.

Three kinds, one per family:

- `wordpiece` (BERT, ELECTRA): "##" continues a word; [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
- `bpe` (BART): GPT-2's byte-level BPE, "Ġ" starts a word; <s>=0 <pad>=1 </s>=2 <unk>=3,
  <mask>=V-1; cls/sep alias bos/eos.
- `unigram` (T5): SentencePiece-style Unigram, "▁" starts a word; <pad>=0 </s>=1 <unk>=2,
  sentinel <extra_id_i>=V-1-i.

A saved tokenizer is a directory with `tokenizer.json` (the backend, exactly) and
`tokenizer_config.json` (the HF keys for the specials, sentinels and `do_lower_case`), so
the same directory loads in `transformers.AutoTokenizer` with the same ids. `load` also
reads what others wrote: BERT's vocab.txt, BART/RoBERTa's vocab.json + merges.txt, and T5's
SentencePiece spiece.model (with the `sentencepiece` package).

Shapes: V = vocab_size (with added tokens).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from clozeformer.config import MAX_VOCAB
from clozeformer.io import atomic_write

__all__ = ["KINDS", "TOKENIZER_FILES", "Tokenizer", "TokenizerError"]

# BERT's specials in BERT's order, so a trained vocab has [PAD]=0 ... [MASK]=4.
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# BART's (fairseq's dictionary) order: <s>=0 <pad>=1 </s>=2 <unk>=3; <mask> is appended after
# the merges, so it is the last id (50264 in bart-base). cls/sep alias bos/eos as in HF's
# BartTokenizer config, so BERT-shaped code (classification heads, MLM specs) asks by role.
BART_SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
BART_ALIASES = {"cls": "bos", "sep": "eos"}
# T5's SentencePiece order: <pad>=0 </s>=1 <unk>=2 (the spiece.model of t5-base).
T5_SPECIALS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
T5_EXTRA_IDS = 100  # T5's sentinels <extra_id_0..99> (HF T5Tokenizer's default extra_ids)
SPECIALS_OF_KIND = {"wordpiece": BERT_SPECIALS, "bpe": BART_SPECIALS, "unigram": T5_SPECIALS}  # as trained here
_NO_LIMIT = 10 ** 20  # a model_max_length at least this is transformers' "no limit" (its 1e30)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "vocab.txt")  # what load() reads, in order
_SENTINEL = "<extra_id_{}>"
_SENTINEL_RE = re.compile(r"<extra_id_(\d+)>")
_METASPACE = "\u2581"  # "▁": SentencePiece's visible space, the start of a word
_BYTE_LEVEL_SPACE = "\u0120"  # "Ġ": GPT-2's byte-to-unicode image of the space byte 0x20
KINDS = ("wordpiece", "bpe", "unigram")
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


# shares of a text's tokens read as the unknown token: above the first a warning, above the second an error
UNKNOWN_WARNED, UNKNOWN_REFUSED = 0.05, 0.5


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded, saved or used as asked."""


def bert_template(cls_token: str, sep_token: str, backend: Backend) -> processors.TemplateProcessing:
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
    """Roles whose conventional name is in the vocab (first match wins).

    A vocab with <s> and </s> but no [CLS]/[SEP] is RoBERTa/BART's: cls and sep alias bos and eos.
    """
    specials = {}
    for role, names in _CONVENTIONAL.items():
        for name in names:
            if backend.token_to_id(name) is not None:
                specials[role] = name
                break
    if "bos" in specials and "eos" in specials:
        for alias, role in BART_ALIASES.items():
            specials.setdefault(alias, specials[role])
    return specials


def _detect_sentinels(backend: Backend) -> list[str]:
    """<extra_id_0>, <extra_id_1>, ... as far as the vocab holds them without a gap."""
    sentinels = []
    while backend.token_to_id(_SENTINEL.format(len(sentinels))) is not None:
        sentinels.append(_SENTINEL.format(len(sentinels)))
    return sentinels


def _config_sentinels(config: dict) -> list[str] | None:
    """Sentinels a config names (T5: `extra_ids`, and `additional_special_tokens` in transformers 4
    or `extra_special_tokens` in 5); None when it names none, so the vocab decides."""
    found = {}
    for key in ("additional_special_tokens", "extra_special_tokens"):
        values = config.get(key) or []
        for value in values.values() if isinstance(values, dict) else values:
            value = value.get("content") if isinstance(value, dict) else value
            match = _SENTINEL_RE.fullmatch(value) if isinstance(value, str) else None
            if match:
                found[int(match.group(1))] = value
    n = config.get("extra_ids")
    if not found and isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        return [_SENTINEL.format(i) for i in range(n)]
    if not found:
        return None
    if sorted(found) != list(range(len(found))):
        raise TokenizerError(f"sentinels must be <extra_id_0> ... <extra_id_{len(found) - 1}> without gaps, "
                             f"got indices {sorted(found)}")
    return [found[i] for i in range(len(found))]


def _find(component: dict | None, kind: str) -> dict | None:
    """The first serialised normalizer/pre-tokenizer of this type, Sequences searched; else None."""
    if not isinstance(component, dict):
        return None
    if component.get("type") == kind:
        return component
    for key in ("normalizers", "pretokenizers"):
        for child in component.get(key) or []:
            if (found := _find(child, kind)) is not None:
                return found
    return None


def _t5_template(eos_token: str, backend: Backend) -> processors.TemplateProcessing:
    """T5's `A </s>` and `A </s> B </s>` (HF T5Tokenizer's template; one segment id)."""
    return processors.TemplateProcessing(
        single=f"$A {eos_token}",
        pair=f"$A {eos_token} $B {eos_token}",
        special_tokens=[(eos_token, backend.token_to_id(eos_token))],
    )


def _bart_processor(specials: dict[str, str], backend: Backend, add_prefix_space: bool) -> processors.RobertaProcessing:
    """RoBERTa/BART's `<s> A </s>` and `<s> A </s> </s> B </s>` (one segment id)."""
    cls_token, sep_token = specials.get("cls", specials["bos"]), specials.get("sep", specials["eos"])
    return processors.RobertaProcessing(
        (sep_token, backend.token_to_id(sep_token)),
        (cls_token, backend.token_to_id(cls_token)),
        trim_offsets=True,
        add_prefix_space=add_prefix_space,
    )


def _unigram_pipeline(backend: Backend) -> None:
    """T5's SentencePiece pre-tokenisation as HF's T5Tokenizer builds it: split on whitespace
    (which also drops repeated and edge spaces), then mark each word's start with "▁"."""
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always")]
    )
    backend.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always")


# A Unigram special piece scores this, so text spelling "</s>" or "<pad>" segments into
# ordinary pieces (as SentencePiece never emits a control symbol from text); converted
# tokenizers give them 0.0, the best score of all.
_UNREACHABLE = -1e6


def _unreachable_specials(backend: Backend, tokens: list[str]) -> Backend:
    """backend with the Unigram scores of `tokens` set to _UNREACHABLE (special tokens are matched
    before the model, so only text that spells them out changes)."""
    state = json.loads(backend.to_str())
    vocab = state["model"]["vocab"]
    changed = False
    for piece in vocab:
        if piece[0] in tokens and piece[1] != _UNREACHABLE:
            piece[1], changed = _UNREACHABLE, True
    return Backend.from_str(json.dumps(state)) if changed else backend


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

    def __init__(
        self,
        backend: Backend,
        specials: dict[str, str],
        lowercase: bool | None = None,
        sentinels: list[str] | None = None,
        *,
        clean_up_spaces: bool = False,
        model_max_length: int | None = None,
    ):
        """sentinels: the tokens of sentinel 0, 1, ...; None finds <extra_id_0>, ... in the vocab.
        clean_up_spaces: decode joins " ." and " n't" as transformers' clean_up_tokenization_spaces does (a
        WordPiece imported with it; never ours); model_max_length: what its tokenizer_config.json says."""
        if backend.get_vocab_size(with_added_tokens=True) == 0:
            raise TokenizerError("the vocabulary is empty")
        unk = getattr(backend.model, "unk_token", None)  # WordPiece's (and a BPE's) stand-in for unknown pieces
        if unk is not None and backend.model.token_to_id(unk) is None:
            raise TokenizerError(f"the {type(backend.model).__name__} model's unknown token {unk!r} is not in its "
                                 "vocabulary (the first unknown word would fail)")
        for role, token in specials.items():
            if backend.token_to_id(token) is None:
                raise TokenizerError(f"special token {token!r} for role {role!r} is not in the vocabulary")
        sentinels = _detect_sentinels(backend) if sentinels is None else list(sentinels)
        for i, token in enumerate(sentinels):
            if backend.token_to_id(token) is None:
                raise TokenizerError(f"sentinel {i} {token!r} is not in the vocabulary")
        # Padding and truncation are per call here (a tokenizer.json may carry e.g. MiniLM's
        # fixed padding to 128), so the backend itself never pads or truncates.
        backend.no_padding()
        backend.no_truncation()
        if isinstance(backend.model, models.Unigram):
            backend = _unreachable_specials(backend, [t for r, t in specials.items() if r != "unk"])
        # Text is text: "[MASK]", "</s>" or "<extra_id_0>" written in a corpus or a task file are
        # characters, never the special ids (encode(..., specials=True) reads a typed prompt's).
        backend.encode_special_tokens = True
        self.backend = backend
        self.specials = dict(specials)
        self.sentinels = sentinels
        if lowercase is None:
            lowercase = _lowercases(json.loads(backend.to_str()).get("normalizer"))
        self.lowercase = lowercase
        self.clean_up_spaces = clean_up_spaces
        self.model_max_length = model_max_length

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
        if vocab_size <= len(BERT_SPECIALS):
            raise TokenizerError(f"vocab_size={vocab_size} leaves no room beside the {len(BERT_SPECIALS)} specials")
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
        backend.post_processor = bert_template(BERT_SPECIALS["cls"], BERT_SPECIALS["sep"], backend)
        return cls(backend, BERT_SPECIALS, lowercase=lowercase, sentinels=[])

    @classmethod
    def train_bpe(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int,
        lowercase: bool = False,
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train BART's byte-level BPE (GPT-2's): <s>=0 <pad>=1 </s>=2 <unk>=3, <mask>=V-1.

        Every one of the 256 bytes is in the initial alphabet, so no text is ever unknown (<unk>
        exists for HF's config only). No prefix space (BART's add_prefix_space=False): the first
        word of a text is "Hello", later ones "ĠHello". <mask> matches with lstrip, as in HF's
        BartTokenizer, so "a <mask> b" is `a`, ` <mask>`, `Ġb`. cls/sep alias bos/eos.
        """
        if vocab_size <= 256 + len(BART_SPECIALS):
            raise TokenizerError(f"vocab_size={vocab_size} leaves no room beside the 256 bytes and 5 specials")
        backend = Backend(models.BPE())
        if lowercase:
            backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 1,  # <mask> is added after the merges, as the last id
            min_frequency=min_frequency,
            special_tokens=[BART_SPECIALS[r] for r in ("bos", "pad", "eos", "unk")],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        backend.train_from_iterator(texts, trainer)
        backend.add_special_tokens([AddedToken(BART_SPECIALS["mask"], lstrip=True, normalized=False, special=True)])
        specials = BART_SPECIALS | {alias: BART_SPECIALS[role] for alias, role in BART_ALIASES.items()}
        backend.post_processor = _bart_processor(specials, backend, add_prefix_space=False)
        return cls(backend, specials, lowercase=lowercase, sentinels=[])

    @classmethod
    def train_unigram(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int,
        lowercase: bool = False,
        extra_ids: int = T5_EXTRA_IDS,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train T5's SentencePiece-style Unigram: <pad>=0 </s>=1 <unk>=2, sentinel i = V-1-i.

        NFKC first (T5's SentencePiece normalisation; it composes Hangul, never splits it).
        vocab_size counts the extra_ids sentinels; the trainer may stop below it on a small
        corpus. Characters never seen in training map to <unk>.
        """
        if extra_ids < 0 or vocab_size <= extra_ids + len(T5_SPECIALS):
            raise TokenizerError(f"vocab_size={vocab_size} leaves no room beside {extra_ids} sentinels and 3 specials")
        backend = Backend(models.Unigram())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        backend.normalizer = normalizers.Sequence(steps)
        _unigram_pipeline(backend)
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size - extra_ids,
            special_tokens=[T5_SPECIALS[r] for r in ("pad", "eos", "unk")],
            unk_token=T5_SPECIALS["unk"],
            show_progress=show_progress,
        )
        backend.train_from_iterator(texts, trainer)
        # Through JSON once: the reader rounds some trained f64 scores by an ulp, and a second
        # pass is stable, so the fingerprint of this tokenizer equals that of its saved copy.
        backend = Backend.from_str(backend.to_str())
        # Added from the last down, so <extra_id_0> gets the highest id (T5's layout).
        sentinels = [_SENTINEL.format(i) for i in range(extra_ids)]
        backend.add_special_tokens(sentinels[::-1])
        backend.post_processor = _t5_template(T5_SPECIALS["eos"], backend)
        return cls(backend, T5_SPECIALS, lowercase=lowercase, sentinels=sentinels)

    @classmethod
    def train(cls, kind: str, texts: Iterable[str], **kwargs) -> Tokenizer:
        """train_wordpiece / train_bpe / train_unigram by kind ("wordpiece", "bpe", "unigram"; a family's
        is families.FAMILIES[name].tokenizer_kind)."""
        if kind not in KINDS:
            raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose from {', '.join(KINDS)}")
        if not 1 <= kwargs.get("vocab_size", 1) <= MAX_VOCAB:  # tokenizers aborts the process when it cannot allocate
            raise TokenizerError(f"vocab_size {kwargs['vocab_size']} is out of range; allowed: 1 … {MAX_VOCAB:,}")
        if isinstance(texts, str):  # one str is an iterable of letters: a vocabulary of single characters
            raise TypeError("texts must be an iterable of strings (one per line or document), not one str")
        tok = getattr(cls, f"train_{kind}")(texts, **kwargs)
        if tok.vocab_size <= len(set(tok.specials.values()) | set(tok.sentinels)):
            raise TokenizerError("no text to learn from: the vocabulary holds only the special tokens (the texts "
                                 "were empty or blank)")
        if "vocab_size" in kwargs and tok.vocab_size > kwargs["vocab_size"]:
            warnings.warn(f"vocab_size={kwargs['vocab_size']} is below the corpus' alphabet: the vocabulary holds "
                          f"{tok.vocab_size} ids (every character, the specials and no merged pieces)")
        return tok

    @classmethod
    def load(cls, path) -> Tokenizer:
        """Load a directory, or one of its files: tokenizer.json (preferred), vocab.json +
        merges.txt (BART/RoBERTa), spiece.model (T5, needs `sentencepiece`) or vocab.txt (BERT).

        Roles and sentinels come from tokenizer_config.json beside the file when there is one,
        else from the conventional names in the vocab.
        """
        path = Path(path)
        if path.is_dir():
            for name in TOKENIZER_FILES:
                if (path / name).is_file():
                    path = path / name
                    break
            else:
                raise TokenizerError(f"{path}: no tokenizer.json or vocab.txt "
                                     "(nor vocab.json + merges.txt, spiece.model) in this directory")
        elif not path.is_file():
            raise TokenizerError(f"{path}: no such tokenizer file or directory")
        config = _read_config(path.parent / "tokenizer_config.json")
        lowercase = config.get("do_lower_case")
        lowercase = lowercase if isinstance(lowercase, bool) else None
        sentinels = _config_sentinels(config)
        if path.name in ("vocab.json", "merges.txt"):
            kind = "bpe_files"
        else:
            kind = {".json": "tokenizer_json", ".model": "spiece"}.get(path.suffix, "vocab_txt")

        if kind == "tokenizer_json":
            try:
                backend = Backend.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception on bad JSON
                raise TokenizerError(f"{path}: not a valid tokenizer.json ({e})") from None
        elif kind == "bpe_files":
            backend = cls._from_vocab_json(path.parent / "vocab.json", path.parent / "merges.txt", config)
        elif kind == "spiece":
            backend = cls._from_spiece(path)
            if sentinels is None and str(config.get("tokenizer_class", "")).startswith("T5"):
                sentinels = [_SENTINEL.format(i) for i in range(T5_EXTRA_IDS)]  # HF T5Tokenizer's default
            # T5's converter appends them after the pieces from the last down: <extra_id_0> = V-1.
            backend.add_special_tokens([t for t in (sentinels or [])[::-1] if backend.token_to_id(t) is None])
        else:
            backend, lowercase = cls._from_vocab_txt(path, config)
        specials = _detect_specials(backend) | _config_specials(config)

        if kind != "tokenizer_json":
            # Specials must match whole before normalisation, else "[MASK]" splits into "[", "mask", "]".
            # A byte-level <mask> eats the space before it where its config says lstrip (as transformers 4 saved
            # BART/RoBERTa's); a bare "<mask>", or none named, does not (transformers 5).
            mask = config.get("mask_token")
            lstrip = kind == "bpe_files" and isinstance(mask, dict) and mask.get("lstrip", False) is True
            backend.add_special_tokens(
                [AddedToken(t, lstrip=lstrip and t == specials.get("mask"), normalized=False, special=True)
                 for t in sorted(set(specials.values()))]
            )
        if kind == "vocab_txt" and "cls" in specials and "sep" in specials:
            backend.post_processor = bert_template(specials["cls"], specials["sep"], backend)
        elif kind == "bpe_files" and "cls" in specials and "sep" in specials:
            backend.post_processor = _bart_processor(specials, backend, bool(config.get("add_prefix_space", False)))
        elif kind == "spiece" and "eos" in specials:
            backend.post_processor = _t5_template(specials["eos"], backend)
        # transformers 5 skips the clean-up for BPE unless told twice (it strips real spaces there)
        clean_up = config.get("clean_up_tokenization_spaces") is True and (
            not isinstance(backend.model, models.BPE)
            or config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output") is True)
        longest = config.get("model_max_length")
        longest = longest if isinstance(longest, int) and 0 < longest < _NO_LIMIT else None
        try:
            return cls(backend, specials, lowercase=lowercase, sentinels=sentinels, clean_up_spaces=clean_up,
                       model_max_length=longest)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from None

    @staticmethod
    def _from_vocab_json(vocab: Path, merges: Path, config: dict) -> Backend:
        """BART/RoBERTa/GPT-2's vocab.json + merges.txt as byte-level BPE (HF RobertaTokenizer's build)."""
        if not (vocab.is_file() and merges.is_file()):
            raise TokenizerError(f"{vocab.parent}: a byte-level BPE needs both vocab.json and merges.txt")
        try:
            model = models.BPE.from_file(str(vocab), str(merges))
        except Exception as e:
            raise TokenizerError(f"{vocab.parent}: not a valid vocab.json + merges.txt pair ({e})") from None
        backend = Backend(model)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space", False)))
        backend.decoder = decoders.ByteLevel()
        return backend

    @staticmethod
    def _from_spiece(path: Path) -> Backend:
        """A SentencePiece Unigram model (T5's spiece.model) as HF's converter builds it.

        `sentencepiece` reads and checks the file; its own protobuf schema (`sentencepiece_model_pb2`, which
        needs `protobuf`) gives what its API does not expose: piece types and the normaliser's settings.
        """
        try:
            import sentencepiece
            import sentencepiece.sentencepiece_model_pb2 as spm
        except Exception as e:  # not installed, or a protobuf runtime older than its generated schema accepts
            raise TokenizerError(f"{path}: reading a SentencePiece model needs the `sentencepiece` and `protobuf` "
                                 f"packages (pip install -U 'clozeformer[hf]'; here: {e}), or give a tokenizer.json "
                                 "instead") from None
        try:
            sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except Exception as e:
            raise TokenizerError(f"{path}: not a valid SentencePiece model ({e})") from None
        proto = spm.ModelProto.FromString(sp.serialized_model_proto())
        if proto.trainer_spec.model_type != spm.TrainerSpec.UNIGRAM:
            raise TokenizerError(f"{path}: only Unigram SentencePiece models are supported "
                                 f"(model_type={spm.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)})")
        kinds = spm.ModelProto.SentencePiece
        pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
        unk_id = sp.unk_id() if sp.unk_id() >= 0 else None
        vocab = [(piece, score) for piece, score, _ in pieces]
        backend = Backend(models.Unigram(vocab, unk_id=unk_id, byte_fallback=proto.trainer_spec.byte_fallback))
        norm = proto.normalizer_spec
        steps = [normalizers.Precompiled(norm.precompiled_charsmap)] if norm.precompiled_charsmap else []
        if norm.remove_extra_whitespaces:
            steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
        if steps:
            backend.normalizer = normalizers.Sequence(steps)
        scheme = "always" if norm.add_dummy_prefix else "never"
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme=scheme)
        backend.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme=scheme)
        # Control and unknown pieces never come out of a segmentation; user-defined ones match whole.
        backend.add_special_tokens([p for p, _, kind in pieces if kind in (kinds.CONTROL, kinds.UNKNOWN)])
        backend.add_tokens([AddedToken(p, normalized=False) for p, _, kind in pieces if kind == kinds.USER_DEFINED])
        return backend

    @staticmethod
    def _from_vocab_txt(path: Path, config: dict) -> tuple[Backend, bool]:
        """A BERT vocab.txt with the normaliser it was built with (HF BertTokenizer's)."""
        lowercase = config.get("do_lower_case", True)
        unk = _config_specials(config).get("unk", BERT_SPECIALS["unk"])
        try:
            model = models.WordPiece.from_file(str(path), unk_token=unk, max_input_chars_per_word=100)
        except Exception as e:
            raise TokenizerError(f"{path}: not a valid WordPiece vocab.txt ({e})") from None
        if model.token_to_id(unk) is None:  # tokenizers would fail on the first unknown word, deep in a run
            raise TokenizerError(f"{path}: not a WordPiece vocab.txt: it has no unknown token {unk!r} "
                                 "(one token per line, the specials among them)")
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

    def save(self, directory, *, model_max_length: int | None = None) -> None:
        """Write tokenizer.json and tokenizer_config.json (each atomically) into directory; its
        model_max_length is the tokenizer's own, else the one given (a model's positions: save_model)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": self.lowercase,
                  "clean_up_tokenization_spaces": self.clean_up_spaces}
        if (longest := self.model_max_length or model_max_length) is not None:
            config["model_max_length"] = longest  # transformers' truncation=True cuts there (no limit unset)
        if self.clean_up_spaces and isinstance(self.backend.model, models.BPE):
            config["clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"] = True
        serialised = json.loads(self.backend.to_str())
        normalizer = serialised.get("normalizer") or {}
        if isinstance(self.backend.model, models.WordPiece):
            config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
        else:
            config["model_input_names"] = ["input_ids", "attention_mask"]  # BART/T5: no segment ids
        if isinstance(self.backend.model, models.WordPiece) and normalizer.get("type") == "BertNormalizer":
            # transformers 5's BertTokenizer rebuilds its normaliser from these keys and drops
            # the one in tokenizer.json, so it is named only when the rebuild is identical;
            # anything else (our Hangul-safe Sequence) loads verbatim as PreTrainedTokenizerFast.
            # So do BART (RobertaTokenizer) and T5 (T5Tokenizer): ours load verbatim too.
            config |= {
                "tokenizer_class": "BertTokenizerFast",
                "strip_accents": normalizer.get("strip_accents"),
                "tokenize_chinese_chars": normalizer.get("handle_chinese_chars", True),
            }
        if byte_level := _find(serialised.get("pre_tokenizer"), "ByteLevel"):
            config["add_prefix_space"] = bool(byte_level.get("add_prefix_space"))
        config |= {f"{role}_token": token for role, token in self.specials.items()}
        if self.sentinels:
            # T5Tokenizer's keys: transformers 4 reads additional_special_tokens, 5 extra_special_tokens.
            config |= {"extra_ids": len(self.sentinels), "additional_special_tokens": list(self.sentinels)}
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
        specials: bool = False,
    ) -> list[int]:
        """Ids of text (and pair); with max_length, truncated longest-first so all fits.

        specials: special-token strings in the text ("[MASK]", "<extra_id_0>") are the special
        tokens, as in a prompt typed for fill-mask or generate; otherwise they are plain text.
        """
        if max_length is not None:
            n_special = self.backend.num_special_tokens_to_add(pair is not None) if add_special_tokens else 0
            if max_length <= n_special:
                raise TokenizerError(f"max_length={max_length} leaves no room beside {n_special} special tokens")
            self.backend.enable_truncation(max_length)
        self.backend.encode_special_tokens = not specials
        try:
            return self.backend.encode(text, pair, add_special_tokens=add_special_tokens).ids
        finally:
            self.backend.no_truncation()
            self.backend.encode_special_tokens = True

    def encode_batch(self, texts: list[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        """Ids of many texts at once, on the backend's Rust thread pool (no offsets computed)."""
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        return self._cleaned(self.backend.decode(_as_list(ids), skip_special_tokens=skip_special_tokens))

    def decode_batch(self, batch, *, skip_special_tokens: bool = True) -> list[str]:
        batch = [_as_list(ids) for ids in batch]
        return [self._cleaned(t) for t in self.backend.decode_batch(batch, skip_special_tokens=skip_special_tokens)]

    def _cleaned(self, text: str) -> str:
        """transformers' clean_up_tokenization_spaces, where the tokenizer's config asks for it."""
        if self.clean_up_spaces:
            for spaced in (" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"):
                text = text.replace(spaced, spaced.strip())
        return text

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
    def bos_id(self) -> int:
        return self.special_id("bos")

    @property
    def eos_id(self) -> int:
        return self.special_id("eos")

    @property
    def sentinel_ids(self) -> list[int]:
        """Index i -> id of <extra_id_i> (T5: V-1-i); [] when the tokenizer has none."""
        return [self.backend.token_to_id(t) for t in self.sentinels]

    def sentinel_id(self, i: int) -> int:
        if not 0 <= i < len(self.sentinels):
            raise TokenizerError(f"no sentinel {i}: this tokenizer has {len(self.sentinels)} (<extra_id_0> ...)")
        return self.backend.token_to_id(self.sentinels[i])

    @property
    def special_ids(self) -> list[int]:
        """Ids of every role's token and every sentinel, sorted."""
        return sorted({self.backend.token_to_id(t) for t in self.specials.values()} | set(self.sentinel_ids))

    def check_known(self, ids, what: str, fix: str) -> None:
        """Refuse (TokenizerError) text whose tokens are mostly the unknown token, and warn where more than
        UNKNOWN_WARNED of them are: a tokenizer trained on other text (another language, script) reads it
        as a run of [UNK], which trains and predicts nothing. `ids` any id array; other specials not counted."""
        if "unk" not in self.specials:
            return
        ids = np.asarray(ids)  # counted, not copied: a pretraining corpus may be 10^8 tokens
        unk = self.unk_id
        text = ids.size - int(np.isin(ids, [i for i in self.special_ids if i != unk]).sum())
        share = int((ids == unk).sum()) / text if text else 0.0
        message = (f"this tokenizer reads {share:.0%} of {what}'s tokens as {self.specials['unk']}: it was trained "
                   f"on other text; {fix}")
        if share > UNKNOWN_REFUSED:
            raise TokenizerError(message)
        if share > UNKNOWN_WARNED:
            warnings.warn(message)

    def continuation_mask(self) -> np.ndarray:
        """bool [V]: True where a token continues the word before it, for whole-word masking.

        WordPiece: "##ing" (the model's continuing prefix). Byte-level BPE: a token not starting
        with "Ġ" (the space byte), e.g. "ing" in "Ġsing|ing"; the first word of a text has no
        space before it, so callers treat the token after a special (or position 0) as a word
        start. Unigram/Metaspace: a piece not starting with "▁". Special tokens (roles,
        sentinels, any added special) are False; other models are all False.
        """
        mask = np.zeros(self.vocab_size, dtype=bool)
        model = self.backend.model
        pre_tokenizer = json.loads(self.backend.to_str()).get("pre_tokenizer")
        prefix = getattr(model, "continuing_subword_prefix", None)
        if isinstance(model, (models.WordPiece, models.BPE)) and prefix:
            continues = lambda t: t.startswith(prefix) and len(t) > len(prefix)  # noqa: E731
        elif isinstance(model, models.BPE) and _find(pre_tokenizer, "ByteLevel"):
            continues = lambda t: not t.startswith(_BYTE_LEVEL_SPACE)  # noqa: E731
        elif metaspace := _find(pre_tokenizer, "Metaspace"):
            start = metaspace.get("replacement", _METASPACE)
            continues = lambda t: not t.startswith(start)  # noqa: E731
        else:
            return mask
        special = set(self.specials.values()) | set(self.sentinels)
        special |= {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        for token, i in self.backend.get_vocab(with_added_tokens=True).items():
            mask[i] = token not in special and continues(token)
        return mask

    @property
    def fingerprint(self) -> str:
        """sha256 of the serialised backend, the specials and sentinels: equal fingerprints tokenise equally."""
        h = hashlib.sha256(self.backend.to_str().encode("utf-8"))
        h.update(json.dumps(self.specials, sort_keys=True).encode("utf-8"))
        if self.sentinels:  # only when there are any, so WordPiece fingerprints stay as they were
            h.update(json.dumps(self.sentinels).encode("utf-8"))
        return h.hexdigest()

    def __repr__(self) -> str:
        kind = type(self.backend.model).__name__
        return (
            f"Tokenizer({kind}, vocab_size={self.vocab_size}, lowercase={self.lowercase}, specials={self.specials}, "
            f"sentinels={len(self.sentinels)})"
        )
