"""Tokenise corpora once into a memory-mapped token cache (reading is data/corpus.py).

Memory stays bounded whatever the corpus size: files are read line by line, tokenised
in batches of about `batch_chars` characters (a background thread reads the next batch
while the tokenizer's Rust thread pool encodes this one, with the GIL released), and
every token and offset goes straight to disk. A document of more than `_PIECE_SENTENCES`
sentences (a blank-line corpus without blank lines) is tokenised in pieces.

Cache layout, one directory per key under cache_dir (N tokens, S sentences, D documents):
  tokens.bin       <u2 or <u4 [N]   every sentence's ids concatenated, no special tokens
  sentences.bin    <i8 [S + 1]      sentence i is tokens[s[i]:s[i+1]]
  documents.bin    <i8 [D + 1]      document d is sentences d[d]:d[d+1]
  meta.json        counts, dtype, key, options; written last, so its presence (with file
                   sizes that agree with it) is what makes a cache complete

The key hashes the files' contents, the tokenizer and the options, so a changed file is
tokenised again into a new directory (a file that changes while it is being tokenised is
an error). Processes that need the same cache at once (one per rank) take a lock on its
directory: one builds, the others wait and map it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clozeformer.data.corpus import CorpusError, HubCorpus, check_file, format_of, source_pieces, sources
from clozeformer.io import atomic_files, write_json
from clozeformer.tokenizer import Tokenizer

__all__ = ["TokenCache", "content_id", "default_cache_dir", "digest", "load_corpus"]

FORMAT_VERSION = 4  # 2: special-token strings are plain text; 3: .tsv/.csv read as tables; 4: long sentences cut
_FILES = ("tokens.bin", "sentences.bin", "documents.bin")
# A document is tokenised in pieces of at most this many sentences (bounds memory; any
# number above a batch's worth does).
_PIECE_SENTENCES = 4096
_PIECE_CHARS = 1_000_000  # and about this many characters (tokenising holds ~100 bytes a character)


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


def digest(source) -> str:
    """sha256 of a file's bytes, or of a hub dataset's name and options (named, not hashed): what a run's data
    is, whatever path names it."""
    source = sources(source)[0]
    if isinstance(source, HubCorpus):
        return hashlib.sha256(source.spec.encode("utf-8")).hexdigest()
    check_file(source)
    with open(source, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_id(source) -> str:
    """A run's data file as its checkpoints record it: its content's sha256 (16 hex digits), not the path typed."""
    return f"sha256:{digest(source)[:16]}"


def _cache_key(paths: list[Path], tokenizer: Tokenizer, text_field: str, blank_line_docs: bool) -> str:
    digests = [f"{format_of(p)}:{digest(p)}" for p in paths]  # one content read as text or as a table
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
    if meta["dtype"] not in ("<u2", "<u4"):  # never map anything but token ids
        return None
    return meta


def _batches(paths: list[Path], options: dict, batch_docs: int, batch_chars: int):
    """Lists of (sentences, ends_document) pieces: at most batch_docs pieces or about batch_chars characters."""
    batch, chars = [], 0
    for path in paths:
        for _, sentences, ends in source_pieces(path, **options, max_sentences=_PIECE_SENTENCES,
                                                max_chars=_PIECE_CHARS):
            batch.append((sentences, ends))
            chars += sum(map(len, sentences))
            if len(batch) >= batch_docs or chars >= batch_chars:
                yield batch
                batch, chars = [], 0
    if batch:
        yield batch


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """items, produced `depth` ahead by a background thread; its exceptions re-raise here.

    Reading and splitting text is Python (holds the GIL); encoding is Rust (releases it),
    so the two overlap and both cores stay busy.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((done, e))

    thread = threading.Thread(target=produce, name="clozeformer-corpus-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _stats(paths: list[Path]) -> list[tuple[int, int]]:
    """(size, mtime) per file; (-1, -1) for one that has gone."""
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out.append((-1, -1))
        else:
            out.append((st.st_size, st.st_mtime_ns))
    return out


def _build(
    directory: Path,
    key: str,
    paths: list[Path],
    tokenizer: Tokenizer,
    *,
    options: dict,
    batch_docs: int,
    batch_chars: int,
    progress: bool,
    stats: list[tuple[int, int]] | None = None,
) -> None:
    """Tokenise paths into directory, streaming about batch_chars characters at a time.

    options are read_documents' keyword arguments (text_field, blank_line_docs); stats are
    the files' (size, mtime) when their key was computed, checked again before the cache
    is declared complete.
    """
    directory.mkdir(parents=True, exist_ok=True)
    dtype = _token_dtype(tokenizer.vocab_size)
    n_tokens = n_sentences = n_documents = 0
    last_doc_end = 0  # sentence offset where the current document began
    try:
        with atomic_files([directory / name for name in _FILES]) as (tok_f, sent_f, doc_f), \
                _progress_bar(progress) as bar:
            sent_f.write(np.zeros(1, "<i8").tobytes())
            doc_f.write(np.zeros(1, "<i8").tobytes())
            for batch in _prefetch(_batches(paths, options, batch_docs, batch_chars)):
                ids = tokenizer.encode_batch([s for piece, _ in batch for s in piece])  # one list per sentence
                lengths = np.fromiter(map(len, ids), np.int64, len(ids))  # [sentences in batch]
                piece_of_sentence = np.repeat(np.arange(len(batch)), [len(piece) for piece, _ in batch])
                # Sentences that tokenise to nothing are dropped, and so are documents left empty.
                kept = np.bincount(piece_of_sentence[lengths > 0], minlength=len(batch))  # [pieces]
                after_piece = n_sentences + np.cumsum(kept)  # sentence offset after each piece
                doc_ends = after_piece[np.fromiter((ends for _, ends in batch), bool, len(batch))]
                nonempty = doc_ends > np.concatenate([[last_doc_end], doc_ends[:-1]])
                lengths = lengths[lengths > 0]
                flat = np.fromiter(itertools.chain.from_iterable(ids), dtype, int(lengths.sum()))
                tok_f.write(flat.tobytes())
                sent_f.write((n_tokens + np.cumsum(lengths)).astype("<i8").tobytes())
                doc_f.write(doc_ends[nonempty].astype("<i8").tobytes())
                n_tokens += len(flat)
                n_sentences += len(lengths)
                n_documents += int(nonempty.sum())
                last_doc_end = int(doc_ends[-1]) if len(doc_ends) else last_doc_end
                bar.update(int(sum(ends for _, ends in batch)))
            if n_tokens == 0:  # raised inside the block: no file of this cache is written
                raise CorpusError(f"{', '.join(map(str, paths))}: no tokens after tokenisation")
            if stats is not None and _stats(paths) != stats:
                changed = [str(p) for p, a, b in zip(paths, stats, _stats(paths)) if a != b]
                raise CorpusError(f"{', '.join(changed)}: changed (or removed) while being tokenised; "
                                  "run again once it is complete")
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
        write_json(directory / "meta.json", meta)  # last: until it lands, the cache is incomplete
    except OSError as e:
        if e.filename is None or str(e.filename).startswith(str(directory)):  # not an error reading the corpus
            raise OSError(e.errno, f"cannot write the token cache ({e.strerror or e})", str(directory)) from e
        raise


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive lock on directory (flock on the directory itself: no lock file left behind)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, concurrent builders just duplicate work
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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
    batch_chars: int = 1 << 20,
    progress: bool = False,
) -> TokenCache:
    """Tokenise paths (a path or a list) once; later calls with the same content map the cache.

    batch_docs / batch_chars bound a tokenisation batch (documents / characters), and with
    it the memory used, whatever the corpus size.
    """
    paths = sources(paths)
    for p in paths:
        check_file(p)
    stats = _stats(paths)  # before hashing: a change from here on is caught at the end of the build
    key = _cache_key(paths, tokenizer, text_field, blank_line_docs)
    directory = Path(cache_dir if cache_dir is not None else default_cache_dir()) / key
    meta = _read_meta(directory, key)
    if meta is None:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            with _locked(directory):
                meta = _read_meta(directory, key)  # another process may have built it while we waited
                if meta is None:
                    options = {"text_field": text_field, "blank_line_docs": blank_line_docs}
                    _build(directory, key, paths, tokenizer, options=options, batch_docs=batch_docs,
                           batch_chars=batch_chars, progress=progress, stats=stats)
                    meta = _read_meta(directory, key)
        except BaseException:  # an error or Ctrl-C: leave no empty cache directory behind
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty
            raise
        if meta is None:
            raise CorpusError(f"{directory}: token cache is incomplete right after building it")
    return TokenCache(
        tokens=np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r"),
        sent_offsets=np.memmap(directory / "sentences.bin", dtype="<i8", mode="r"),
        doc_offsets=np.memmap(directory / "documents.bin", dtype="<i8", mode="r"),
        meta=meta,
    )
