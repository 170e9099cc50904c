"""Read text corpora: documents of sentences, with errors that name file:line.

Formats, by extension after stripping a trailing `.gz`:
  .jsonl / .json   one JSON object per line, text under `text_field`, one document per line
  .tsv / .csv      a header row, then one document per row, text in the column `text_field`
                   (standard quoting, the `csv` module; the task files' reader too)
  anything else    plain text: one document per line, or (blank_line_docs=True) BERT's format:
                   one sentence per line, documents separated by blank lines

Skipped, not errors: blank (whitespace-only) lines, JSONL records whose text is blank,
sentences that tokenise to nothing (e.g. only control characters) and documents left with
no sentence. A file with no text at all is an error (CorpusError "empty corpus"); so is
invalid UTF-8, a NUL byte (a binary file), malformed JSON or a missing field, each named
as file:line. Lines of any length work (a 100k-character line is one document; a sentence
longer than 10,000 characters is cut at spaces, and windows cut sentences further later).

A corpus may also be a Hugging Face `datasets` dataset, named `hf:NAME[:CONFIG]` with
optional `?split=train&field=text&data_files=…` (e.g. `hf:allenai/c4:en`, as T5 used, or
`hf:json?data_files=/data/part-*.jsonl` for `datasets`' own local loaders). It is streamed,
one record per document, never downloaded whole; without the `datasets` package or the
network it needs, the error says so.

Tokenising them into the memory-mapped cache is data/cache.py.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
import re
import sys
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


__all__ = ["CorpusError", "HubCorpus", "check_reading", "iter_texts", "read_documents", "sources"]

# Split after sentence-final punctuation followed by whitespace; after the CJK full stop
# even without whitespace, since Chinese and Japanese put none between sentences.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=。)\s*")


class CorpusError(ValueError):
    """A corpus that cannot be read; the message names the file (and line when one applies)."""


def split_sentences(text: str) -> list[str]:
    return [c for s in (p.strip() for p in _SENTENCE_END.split(text)) if s for c in _bounded(s)]


# Characters of one sentence: a longer one (a line without sentence ends) is cut at spaces into sentences of at
# most this, so tokenising it holds a bounded amount (one 50 MB line took 6 GB); windows cut them further.
_LONGEST_SENTENCE = 10_000


def _bounded(sentence: str) -> list[str]:
    out, start = [], 0
    while len(sentence) - start > _LONGEST_SENTENCE:
        cut = sentence.rfind(" ", start + 1, start + _LONGEST_SENTENCE)
        cut = cut if cut > start else start + _LONGEST_SENTENCE  # no space: cut inside the word
        out.append(sentence[start:cut])
        start = cut
    out.append(sentence[start:])
    return [c for c in (c.strip() for c in out) if c]


def _pieces(sentences: list[str], cap: int, max_chars: int) -> Iterator[tuple[list[str], bool]]:
    """(sentences, last) runs of at most `cap` sentences and about `max_chars` characters (one sentence at least)."""
    i = 0
    while i < len(sentences):
        j, size = i, 0
        while j < len(sentences) and j - i < cap and (j == i or size + len(sentences[j]) <= max_chars):
            size += len(sentences[j])
            j += 1
        yield sentences[i:j], j == len(sentences)
        i = j


@dataclass(frozen=True)
class HubCorpus:
    """A `datasets` dataset named as a corpus: `hf:NAME[:CONFIG][?split=…&field=…&data_files=…]`."""

    spec: str
    name: str
    config: str | None = None
    split: str | None = None  # None: "train" (or the caller's default split)
    field: str | None = None  # default: the corpus text field
    data_files: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "HubCorpus":
        body, _, query = spec.removeprefix(HUB_PREFIX).partition("?")
        name, _, config = body.partition(":")
        options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        unknown = set(options) - {"split", "field", "data_files"}
        if not name or unknown:
            raise CorpusError(f"{spec}: expected hf:NAME[:CONFIG][?split=…&field=…&data_files=…]"
                              + (f"; unknown option {sorted(unknown)[0]!r}" if unknown else ""))
        return cls(spec, name, config or None, options.get("split"), options.get("field"), options.get("data_files"))

    def load(self, *, split: str = "train", streaming: bool = False):
        """The `datasets` split (streamed, or all of it); clear errors without the package or the data."""
        try:
            import datasets
        except ImportError:
            raise CorpusError(f"{self.spec}: reading a hub dataset needs the `datasets` package "
                              "(pip install 'clozeformer[hf]'), or pass a local file") from None
        try:
            return datasets.load_dataset(self.name, self.config, split=self.split or split, streaming=streaming,
                                         data_files=self.data_files)
        except Exception as e:  # datasets raises many kinds (connection, missing files, bad names)
            raise CorpusError(f"{self.spec}: cannot load this dataset ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); naming a hub dataset needs network "
                              "access, or its files through data_files=") from None

    def texts(self, text_field: str) -> Iterator[tuple[int, str]]:
        """(record number from 1, text) of the streamed split."""
        field = self.field or text_field
        try:
            for n, record in enumerate(self.load(streaming=True), 1):
                if field not in record:
                    raise CorpusError(f"{self.spec}: record {n} has no field {field!r} "
                                      f"(fields: {', '.join(map(repr, record))}); add ?field=…")
                if not isinstance(record[field], str):
                    raise CorpusError(f"{self.spec}: record {n}: field {field!r} is "
                                      f"{type(record[field]).__name__}, not a string")
                yield n, record[field]
        except CorpusError:
            raise
        except Exception as e:  # datasets raises many kinds (connection, missing files, bad names)
            raise CorpusError(f"{self.spec}: cannot load this dataset ({type(e).__name__}: {e}); naming a hub "
                              "dataset needs network access, or its files through data_files=") from None

    def stat(self):
        raise OSError("a hub dataset has no file status")


HUB_PREFIX = "hf:"


def sources(paths) -> list:
    """Corpus sources: Paths, and HubCorpus for `hf:` names."""
    if isinstance(paths, (str, os.PathLike, HubCorpus)):
        paths = [paths]
    out = [p if isinstance(p, HubCorpus) else HubCorpus.parse(p) if str(p).startswith(HUB_PREFIX) else Path(p)
           for p in paths]
    if not out:
        raise CorpusError("no corpus files given")
    seen: dict = {}
    for p in out:  # one file twice would double it and leak held-out documents into training
        key = p if isinstance(p, HubCorpus) else _identity(p)
        if key in seen:
            raise CorpusError(f"{p}: given twice (also as {seen[key]}); give each corpus once")
        seen[key] = p
    return out


TABLES = {".tsv": "\t", ".csv": ","}  # suffix -> delimiter


def format_of(source) -> str:
    """"hf", "jsonl", "tsv", "csv" or "text": how a source is read."""
    if isinstance(source, HubCorpus):
        return "hf"
    suffix = Path(source.name.removesuffix(".gz")).suffix.lower()
    return "jsonl" if suffix in (".jsonl", ".json") else suffix[1:] if suffix in TABLES else "text"


def _records(source) -> bool:
    """A source of records with a text field (JSONL, TSV/CSV, a hub dataset), not plain text."""
    return format_of(source) != "text"


def check_reading(paths, *, text_field: str = "text", blank_line_docs: bool = False) -> None:
    """Refuse a missing source, or a reading option no source would use: it would change nothing (CorpusError)."""
    srcs = sources(paths)
    for src in srcs:  # every file, before the first is read
        check_file(src)
    if text_field != "text" and not any(map(_records, srcs)):
        raise CorpusError(f"text_field {text_field!r} names the field of JSONL records, the column of a TSV/CSV "
                          "file or a hf: dataset's field; "
                          f"{', '.join(map(str, srcs))} {'is' if len(srcs) == 1 else 'are'} plain text "
                          "(leave out --text-field)")
    if blank_line_docs and all(map(_records, srcs)):
        raise CorpusError(f"blank_line_docs reads plain text in BERT's format; {', '.join(map(str, srcs))} "
                          f"{'holds' if len(srcs) == 1 else 'hold'} records (leave out --blank-line-docs)")


def _identity(path: Path):
    """The file itself (device, inode) where it exists, so links and spellings of one file agree."""
    try:
        st = path.stat()
    except OSError:
        return path.absolute()
    return (st.st_dev, st.st_ino)



def check_file(path: Path) -> None:
    if isinstance(path, HubCorpus):
        return
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if not path.is_file():
        raise CorpusError(f"{path}: not a regular file")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, decoded line without its newline); strict UTF-8, gzip if .gz."""
    check_file(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.peek(8192)[:8192]  # a NUL early on means binary (git's test), whatever comes first
            if b"\0" in head:
                at = head.index(0)
                line, col = head.count(b"\n", 0, at) + 1, at - head.rfind(b"\n", 0, at)
                raise CorpusError(f"{path}:{line}: NUL byte at column {col}; this looks like a binary file "
                                  "(or UTF-16 text), not UTF-8 text")
            yield from _decoded(str(path), f)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CorpusError(f"{path}: corrupt gzip file ({e})") from None


def read_stdin() -> Iterator[tuple[int, str]]:
    """read_lines for standard input ("-"), held to the same strict UTF-8."""
    if sys.stdin is None:
        raise CorpusError("standard input is closed; give the input as a file (--input FILE)")
    raw = getattr(sys.stdin, "buffer", None)  # a text stream without one (a test's) gives back its bytes
    yield from _decoded("stdin", raw if raw is not None else
                        (line.encode("utf-8", "surrogateescape") for line in sys.stdin))


def _decoded(name: str, raw_lines) -> Iterator[tuple[int, str]]:
    n = 0
    for raw in (part for raw in raw_lines for part in raw.rstrip(b"\r\n").split(b"\r")):
        n += 1  # a lone CR ends a line too (old Mac files), as Python's open() reads text
        if b"\0" in raw:
            col = raw.index(0) + 1
            raise CorpusError(f"{name}:{n}: NUL byte at column {col}; this looks like a binary file")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(f"{name}:{n}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                              ) from None
        yield n, line.removeprefix("\ufeff") if n == 1 else line


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(text: str, path, line: int | None = None) -> Any:
    """json.loads with errors that name path:line (`line` None: the error's own line in a whole document):
    malformed, nested too deeply, a number too long to read, or an escaped half of a surrogate pair (no
    character: nothing downstream could encode it)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}:{line or e.lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise CorpusError(f"{path}:{line or 1}: JSON nested too deeply to read") from None
    except ValueError as e:  # an integer of more than 4,300 digits
        raise CorpusError(f"{path}:{line or 1}: a JSON number that cannot be read ({str(e).split(':')[0]})") from None
    if _SURROGATE_ESCAPE.search(text):  # pairs decode to one character; a lone half stays a surrogate
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise CorpusError(f"{path}:{line or 1}: the escape \\u{ord(e.object[e.start]):04x} is half of a "
                              "surrogate pair, not a character") from None
    return value


def jsonl_text(path: Path, n: int, line: str, field: str) -> str:
    record = parse_json(line, path, n)
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


def table_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for each non-blank row of a TSV/CSV file with a header row, streamed;
    an empty header, a column named twice or a row of another width is a CorpusError naming file:line."""
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader((line + "\n" for _, line in read_lines(path)), delimiter=delimiter)
    rows = iter(reader)
    try:
        header = next(rows, None)
        if header is None or not any(h.strip() for h in header):
            raise CorpusError(f"{path}:1: empty file (no header row)")
        if twice := sorted({h for h in header if header.count(h) > 1}):  # a dict would keep the last silently
            raise CorpusError(f"{path}:1: column {', '.join(map(repr, twice))} named twice in the header; name "
                              "each once")
        end = reader.line_num
        for row in rows:
            start, end = end + 1, reader.line_num  # a quoted field may span lines
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                runs = f"; the row runs on to line {end}: a quote opened there and never closed?" if end > start \
                    else ""
                raise CorpusError(f"{path}:{start}: {len(row)} fields where the header has {len(header)} "
                                  f"({', '.join(header)}){runs}")
            yield start, dict(zip(header, row))
    except csv.Error as e:
        raise CorpusError(f"{path}:{reader.line_num}: not readable as {'TSV' if delimiter == chr(9) else 'CSV'} "
                          f"({e})") from None


def _table_texts(path: Path, field: str) -> Iterator[tuple[int, str]]:
    for n, row in table_rows(path, TABLES[f".{format_of(path)}"]):
        if field not in row:
            raise CorpusError(f"{path}:1: no column {field!r} (columns present: {', '.join(row)}); name the text's "
                              "column with --text-field")
        yield n, row[field]


def source_pieces(
    path, *, text_field: str = "text", blank_line_docs: bool = False, max_sentences: int | None = None,
    max_chars: int | None = None,
) -> Iterator[tuple[int, list[str], bool]]:
    """(first line number, sentences, ends_document) for one source, at most max_sentences and about max_chars
    characters per piece."""
    kind = format_of(path)
    cap, budget = max_sentences or sys.maxsize, max_chars or sys.maxsize
    found = False
    if blank_line_docs and kind == "text":
        start, sentences, size = 0, [], 0
        for n, line in itertools.chain(read_lines(path), [(0, "")]):  # a blank sentinel ends the last document
            if line := line.strip():
                for sentence in _bounded(line):
                    if sentences and (len(sentences) == cap or size + len(sentence) > budget):  # a very long
                        yield start, sentences, False  # document: hand on what we have
                        start, sentences, size = 0, [], 0
                    start = start or n
                    sentences.append(sentence)
                    size += len(sentence)
            elif sentences:
                found = True
                yield start, sentences, True
                start, sentences, size = 0, [], 0
    else:  # one document per line (record)
        records = path.texts(text_field) if kind == "hf" else _table_texts(path, text_field) if kind in ("tsv", "csv") \
            else ((n, jsonl_text(path, n, line, text_field) if kind == "jsonl" else line)
                  for n, line in read_lines(path) if line.strip())
        for n, text in records:
            for piece, last in _pieces(split_sentences(text), cap, budget):
                found = True
                yield n, piece, last
    if not found:
        raise CorpusError(f"{path.spec if kind == 'hf' else path}: empty corpus (no text)")


def read_documents(
    path, *, text_field: str = "text", blank_line_docs: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, sentences) for each document of one file."""
    for start, sentences, _ in source_pieces(sources(path)[0], text_field=text_field, blank_line_docs=blank_line_docs):
        yield start, sentences


def iter_texts(paths, **kw) -> Iterator[str]:
    """Every sentence of every document of paths (a path or a list), e.g. to train a tokenizer."""
    for path in sources(paths):
        for _, sentences in read_documents(path, **kw):
            yield from sentences
