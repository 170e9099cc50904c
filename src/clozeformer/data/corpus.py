"""Read text corpora and tokenise them once into a memory-mapped token cache.

Formats, by extension after stripping a trailing `.gz`:
  .jsonl / .json   one JSON object per line, text under `text_field`, one document per line
  anything else    plain text: one document per line, or (blank_line_docs=True) BERT's format:
                   one sentence per line, documents separated by blank lines

Cache layout, one directory per key under cache_dir (N tokens, S sentences, D documents):
  tokens.bin       <u2 or <u4 [N]   every sentence's ids concatenated, no special tokens
  sentences.bin    <i8 [S + 1]      sentence i is tokens[s[i]:s[i+1]]
  documents.bin    <i8 [D + 1]      document d is sentences d[d]:d[d+1]
  meta.json        counts, dtype, key, options; written last, so its presence (with file
                   sizes that agree with it) is what makes a cache complete
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import os
import re
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clozeformer.tokenizer import Tokenizer

__all__ = ["CorpusError", "TokenCache", "default_cache_dir", "iter_texts", "load_corpus", "read_documents"]

FORMAT_VERSION = 1
_FILES = ("tokens.bin", "sentences.bin", "documents.bin")
# Split after sentence-final punctuation followed by whitespace; after the CJK full stop
# even without whitespace, since Chinese and Japanese put none between sentences.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=。)\s*")


class CorpusError(ValueError):
    """A corpus that cannot be read; the message names the file (and line when one applies)."""


def _split_sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def _as_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    paths = [Path(p) for p in paths]
    if not paths:
        raise CorpusError("no corpus files given")
    return paths


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if not path.is_file():
        raise CorpusError(f"{path}: not a regular file")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, decoded line without its newline); strict UTF-8, gzip if .gz."""
    _check_file(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                raw = raw.rstrip(b"\r\n")
                if b"\0" in raw:
                    col = raw.index(0) + 1
                    raise CorpusError(f"{path}:{n}: NUL byte at column {col}; this looks like a binary file")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusError(
                        f"{path}:{n}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                    ) from None
                yield n, line.removeprefix("\ufeff") if n == 1 else line
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CorpusError(f"{path}: corrupt gzip file ({e})") from None


def _jsonl_text(path: Path, n: int, line: str, field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}:{n}: malformed JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(record, dict):
        raise CorpusError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
    if field not in record:
        keys = ", ".join(map(repr, record)) or "none"
        raise CorpusError(f"{path}:{n}: no field {field!r} (keys present: {keys})")
    text = record[field]
    if not isinstance(text, str):
        keys = ", ".join(map(repr, record))
        kind = type(text).__name__
        raise CorpusError(f"{path}:{n}: field {field!r} is {kind}, not a string (keys present: {keys})")
    return text


def read_documents(
    path, *, text_field: str = "text", blank_line_docs: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, sentences) for each document of one file."""
    path = Path(path)
    jsonl = Path(path.name.removesuffix(".gz")).suffix in (".jsonl", ".json")
    found = False
    if blank_line_docs and not jsonl:
        start, sentences = 0, []
        for n, line in itertools.chain(_lines(path), [(0, "")]):  # a blank sentinel ends the last document
            if line := line.strip():
                start = start or n
                sentences.append(line)
            elif sentences:
                found = True
                yield start, sentences
                start, sentences = 0, []
    else:
        for n, line in _lines(path):
            if not line.strip():
                continue
            sentences = _split_sentences(_jsonl_text(path, n, line, text_field) if jsonl else line)
            if sentences:
                found = True
                yield n, sentences
    if not found:
        raise CorpusError(f"{path}: empty corpus (no text)")


def iter_texts(paths, **kw) -> Iterator[str]:
    """Every sentence of every document of paths (a path or a list), e.g. to train a tokenizer."""
    for path in _as_paths(paths):
        for _, sentences in read_documents(path, **kw):
            yield from sentences


@dataclass(frozen=True)
class TokenCache:
    """A tokenised corpus, memory-mapped (N tokens, S sentences, D documents)."""

    tokens: np.ndarray  # uint16|uint32 [N]
    sent_offsets: np.ndarray  # int64 [S + 1]
    doc_offsets: np.ndarray  # int64 [D + 1], in sentences
    meta: dict

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_sentences(self) -> int:
        return len(self.sent_offsets) - 1

    @property
    def n_documents(self) -> int:
        return len(self.doc_offsets) - 1

    def sentence(self, i: int) -> np.ndarray:
        return self.tokens[self.sent_offsets[i] : self.sent_offsets[i + 1]]

    def document(self, d: int) -> list[np.ndarray]:
        return [self.sentence(i) for i in range(self.doc_offsets[d], self.doc_offsets[d + 1])]


def _file_digest(path: Path) -> str:
    _check_file(path)
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_key(paths: list[Path], tokenizer: Tokenizer, text_field: str, blank_line_docs: bool) -> str:
    digests = [_file_digest(p) for p in paths]
    parts = [str(FORMAT_VERSION), *digests, tokenizer.fingerprint, text_field, str(blank_line_docs)]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _token_dtype(vocab_size: int) -> str:
    return "<u2" if vocab_size <= 1 << 16 else "<u4"  # ids < vocab_size


def _expected_sizes(meta: dict) -> dict[str, int]:
    itemsize = np.dtype(meta["dtype"]).itemsize
    return {
        "tokens.bin": meta["n_tokens"] * itemsize,
        "sentences.bin": (meta["n_sentences"] + 1) * 8,
        "documents.bin": (meta["n_documents"] + 1) * 8,
    }


def _read_meta(directory: Path, key: str) -> dict | None:
    """The meta of a complete cache in directory, else None (absent, torn or foreign)."""
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        sizes = _expected_sizes(meta)
        sizes_ok = all((directory / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not sizes_ok or meta.get("key") != key or meta.get("version") != FORMAT_VERSION:
        return None
    return meta


def _build(
    directory: Path,
    key: str,
    paths: list[Path],
    tokenizer: Tokenizer,
    *,
    options: dict,
    batch_docs: int,
    progress: bool,
) -> None:
    """Tokenise paths into directory, streaming batch_docs documents at a time.

    options are read_documents' keyword arguments (text_field, blank_line_docs)."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = _token_dtype(tokenizer.vocab_size)
    temps = {}
    n_tokens = n_sentences = n_documents = 0
    try:
        with contextlib.ExitStack() as stack:
            files = {}
            for name in _FILES:
                fd, temps[name] = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
                files[name] = stack.enter_context(os.fdopen(fd, "wb"))
            tok_f, sent_f, doc_f = (files[name] for name in _FILES)
            sent_f.write(np.zeros(1, "<i8").tobytes())
            doc_f.write(np.zeros(1, "<i8").tobytes())
            docs = (doc for p in paths for _, doc in read_documents(p, **options))
            bar = stack.enter_context(_progress_bar(progress))
            while batch := list(itertools.islice(docs, batch_docs)):
                ids = tokenizer.encode_batch([s for doc in batch for s in doc])  # one list per sentence
                lengths = np.fromiter(map(len, ids), np.int64, len(ids))  # [sentences in batch]
                # Sentences per document after dropping empty sentences, then empty documents.
                doc_of_sentence = np.repeat(np.arange(len(batch)), [len(doc) for doc in batch])
                per_doc = np.bincount(doc_of_sentence[lengths > 0], minlength=len(batch))
                per_doc = per_doc[per_doc > 0]
                lengths = lengths[lengths > 0]
                flat = np.fromiter(itertools.chain.from_iterable(ids), dtype, int(lengths.sum()))
                tok_f.write(flat.tobytes())
                sent_f.write((n_tokens + np.cumsum(lengths)).astype("<i8").tobytes())
                doc_f.write((n_sentences + np.cumsum(per_doc)).astype("<i8").tobytes())
                n_tokens += len(flat)
                n_sentences += len(lengths)
                n_documents += len(per_doc)
                bar.update(len(batch))
            for f in files.values():
                f.flush()
                os.fsync(f.fileno())
        if n_tokens == 0:
            raise CorpusError(f"{', '.join(map(str, paths))}: no tokens after tokenisation")
        meta = {
            "version": FORMAT_VERSION,
            "key": key,
            "files": [str(p) for p in paths],
            "n_tokens": n_tokens,
            "n_sentences": n_sentences,
            "n_documents": n_documents,
            "dtype": dtype,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer": tokenizer.fingerprint,
            "options": options,
        }
        fd, temps["meta.json"] = tempfile.mkstemp(dir=directory, prefix=".meta.json.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(meta, indent=2))
            f.flush()
            os.fsync(f.fileno())
        for name in (*_FILES, "meta.json"):  # meta last: until it lands, the cache is incomplete
            os.replace(temps[name], directory / name)
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)


def _progress_bar(enabled: bool):
    from tqdm import tqdm

    return tqdm(unit="doc", desc="tokenising", file=sys.stderr, disable=not enabled)


def default_cache_dir() -> Path:
    return Path(os.environ.get("CLOZEFORMER_CACHE") or Path.home() / ".cache" / "clozeformer" / "tokens")


def load_corpus(
    paths,
    tokenizer: Tokenizer,
    *,
    cache_dir=None,
    text_field: str = "text",
    blank_line_docs: bool = False,
    batch_docs: int = 2048,
    progress: bool = False,
) -> TokenCache:
    """Tokenise paths (a path or a list) once; later calls with the same content map the cache."""
    paths = _as_paths(paths)
    key = _cache_key(paths, tokenizer, text_field, blank_line_docs)
    directory = Path(cache_dir if cache_dir is not None else default_cache_dir()) / key
    meta = _read_meta(directory, key)
    if meta is None:
        options = {"text_field": text_field, "blank_line_docs": blank_line_docs}
        _build(directory, key, paths, tokenizer, options=options, batch_docs=batch_docs, progress=progress)
        meta = _read_meta(directory, key)
        if meta is None:
            raise CorpusError(f"{directory}: token cache is incomplete right after building it")
    return TokenCache(
        tokens=np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r"),
        sent_offsets=np.memmap(directory / "sentences.bin", dtype="<i8", mode="r"),
        doc_offsets=np.memmap(directory / "documents.bin", dtype="<i8", mode="r"),
        meta=meta,
    )
