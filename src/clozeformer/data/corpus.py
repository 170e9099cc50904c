"""Read text corpora: documents of sentences, with errors that name file:line.

Formats, by extension after stripping a trailing `.gz`:
  .jsonl / .json   one JSON object per line, text under `text_field`, one document per line
  anything else    plain text: one document per line, or (blank_line_docs=True) BERT's format:
                   one sentence per line, documents separated by blank lines

Skipped, not errors: blank (whitespace-only) lines, JSONL records whose text is blank,
sentences that tokenise to nothing (e.g. only control characters) and documents left with
no sentence. A file with no text at all is an error (CorpusError "empty corpus"); so is
invalid UTF-8, a NUL byte (a binary file), malformed JSON or a missing field, each named
as file:line. Lines of any length work (a 100k-character line is one document whose
sentences are cut into windows later).

Tokenising them into the memory-mapped cache is data/cache.py.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path


__all__ = ["CorpusError", "iter_texts", "read_documents"]

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
            head = f.peek(8192)[:8192]  # a NUL early on means binary (git's test), whatever comes first
            if b"\0" in head:
                at = head.index(0)
                line, col = head.count(b"\n", 0, at) + 1, at - head.rfind(b"\n", 0, at)
                raise CorpusError(f"{path}:{line}: NUL byte at column {col}; this looks like a binary file "
                                  "(or UTF-16 text), not UTF-8 text")
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


def _pieces(
    path: Path, *, text_field: str = "text", blank_line_docs: bool = False, max_sentences: int | None = None
) -> Iterator[tuple[int, list[str], bool]]:
    """(first line number, sentences, ends_document) for one file, max_sentences at most per piece."""
    jsonl = Path(path.name.removesuffix(".gz")).suffix in (".jsonl", ".json")
    cap = max_sentences or sys.maxsize
    found = False
    if blank_line_docs and not jsonl:
        start, sentences = 0, []
        for n, line in itertools.chain(_lines(path), [(0, "")]):  # a blank sentinel ends the last document
            if line := line.strip():
                if len(sentences) == cap:  # a very long document: hand on what we have
                    yield start, sentences, False
                    start, sentences = 0, []
                start = start or n
                sentences.append(line)
            elif sentences:
                found = True
                yield start, sentences, True
                start, sentences = 0, []
    else:
        for n, line in _lines(path):
            if not line.strip():
                continue
            sentences = _split_sentences(_jsonl_text(path, n, line, text_field) if jsonl else line)
            for i in range(0, len(sentences), cap):
                found = True
                yield n, sentences[i : i + cap], i + cap >= len(sentences)
    if not found:
        raise CorpusError(f"{path}: empty corpus (no text)")


def read_documents(
    path, *, text_field: str = "text", blank_line_docs: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, sentences) for each document of one file."""
    for start, sentences, _ in _pieces(Path(path), text_field=text_field, blank_line_docs=blank_line_docs):
        yield start, sentences


def iter_texts(paths, **kw) -> Iterator[str]:
    """Every sentence of every document of paths (a path or a list), e.g. to train a tokenizer."""
    for path in _as_paths(paths):
        for _, sentences in read_documents(path, **kw):
            yield from sentences
