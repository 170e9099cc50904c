"""Pretraining examples from a token cache, and the batches the objectives make of them.

Every batch is a pure function of (seed, micro-batch index): the example order comes from a
per-epoch `torch.randperm`, the objective's randomness from a generator seeded with the
index. Resuming at step k therefore needs no data state beyond k itself.

Examples ([start, stop) ranges of a TokenStream over the cache):
- with NSP: runs of consecutive sentences of one document, at most max_len − 3 tokens;
  each is split at a random sentence boundary into A and its true continuation B
  (google-research/bert builds its pairs the same way; its short_seq_prob is left out).
- without NSP: windows of max_len − 2 positions over the stream of the training documents,
  crossing document ends, each end marked by [SEP] (RoBERTa's FULL-SENTENCES packing), so
  no padding.
BART (DenoisePretrainData) and T5 (SpanPretrainData) use the packed windows too: `<s> … </s>`
rows noised by objectives/denoise.py (documents unmarked: `</s>` ends the row), and raw
windows, each document ended by `</s>`, of exactly the length that T5's span corruption
turns into max_len encoder tokens.
Held-out documents (a seeded random `eval_fraction` of them, at least one) never appear in
training examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clozeformer.data.cache import TokenCache
from clozeformer.objectives.denoise import PRESETS, NoiseIds, NoiseStep, denoise
from clozeformer.objectives.mlm import mlm_mask
from clozeformer.objectives.nsp import nsp_pairs
from clozeformer.objectives.span import DENSITY, MEAN_SPAN, span_corruption, span_lengths


def _seeded(*parts: int) -> torch.Generator:
    # a distinct, reproducible stream per (seed, purpose, index)
    return torch.Generator().manual_seed(hash(parts) & 0x7FFF_FFFF_FFFF_FFFF)


def split_documents(n_docs: int, eval_fraction: float, seed: int, runs: int = 8) -> np.ndarray:
    """bool [n_docs]: True for held-out documents, about eval_fraction of them.

    They form up to `runs` contiguous runs at seeded places. Packed windows (MLM-only BERT,
    T5) stream over consecutive documents, so a corpus of one short review per line still
    fills held-out windows, and training keeps long runs.
    """
    held = np.zeros(n_docs, dtype=bool)
    if eval_fraction > 0 and n_docs > 1:
        k = min(n_docs - 1, max(1, round(n_docs * eval_fraction)))
        r = min(runs, k)
        sizes = np.full(r, k // r) + (np.arange(r) < k % r)  # k documents in r runs
        gaps = np.sort(torch.randint(n_docs - k + 1, (r,), generator=_seeded(seed, 1)).numpy())
        for start, size in zip(gaps + np.cumsum(sizes) - sizes, sizes):  # training documents before run i: gaps[i]
            held[start : start + size] = True
    return held


def sentence_chunks(cache: TokenCache, docs: np.ndarray, budget: int) -> np.ndarray:
    """[N, 2] token ranges: consecutive sentences of one document, each ≤ budget tokens.

    A sentence longer than the budget is cut into budget-sized windows.
    """
    out = []
    so, do = cache.sent_offsets, cache.doc_offsets
    for d in docs:
        start = so[do[d]]
        for s in range(do[d], do[d + 1]):
            s_begin, s_end = so[s], so[s + 1]
            if s_end - start > budget and s_begin > start:
                out.append((start, s_begin))
                start = s_begin
            while s_end - start > budget:
                out.append((start, start + budget))
                start += budget
        if so[do[d + 1]] > start:
            out.append((start, so[do[d + 1]]))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


class TokenStream:
    """The documents of a token cache as one stream, each document followed by `sep`.

    RoBERTa's FULL-SENTENCES packing lets windows cross document ends and marks each end with
    a separator; T5 ends every packed document with </s>. Without the mark a one-review-per-line
    corpus reads as one run-on text. A position in the stream is a token index plus the number
    of documents before it. With sep=None documents run on unmarked and positions are token
    indices (BART's rows, and the sentence chunks of BERT with NSP, which never cross a document).
    """

    def __init__(self, cache: TokenCache, sep: int | None) -> None:
        self.cache, self.sep = cache, sep
        ends = np.asarray(cache.sent_offsets)[np.asarray(cache.doc_offsets)[1:]].astype(np.int64)
        # stream position of each document's separator (its last token's position + 1)
        self.ends = ends if sep is None else ends + np.arange(len(ends))

    def bounds(self, docs: np.ndarray) -> tuple[int, int]:
        """[start, stop) of consecutive documents docs[0] … docs[-1], their separators included."""
        start = 0 if docs[0] == 0 else int(self.ends[docs[0] - 1]) + (self.sep is not None)
        return start, int(self.ends[docs[-1]]) + (self.sep is not None)

    def windows(self, docs: np.ndarray, size: int) -> np.ndarray:
        """[N, 2] windows of `size` positions over each run of consecutive selected documents."""
        if len(docs) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        out = []
        for run in np.split(docs, np.flatnonzero(np.diff(docs) != 1) + 1):
            t0, t1 = self.bounds(run)
            starts = np.arange(t0, t1, size)
            out.append(np.stack([starts, np.minimum(starts + size, t1)], 1))
        return np.concatenate(out).astype(np.int64)

    def rows(self, ranges: np.ndarray) -> list[np.ndarray]:
        """The token ids at each [start, stop) range of stream positions."""
        tokens = self.cache.tokens
        if self.sep is None:
            return [np.asarray(tokens[t0:t1], dtype=np.int64) for t0, t1 in ranges]
        out = []
        for t0, t1 in ranges:
            pos = np.arange(t0, t1)
            doc = np.searchsorted(self.ends, pos)  # the document each position is in (or ends)
            row = np.full(len(pos), self.sep, dtype=np.int64)
            inside = self.ends[doc] != pos
            row[inside] = tokens[pos[inside] - doc[inside]]
            out.append(row)
        return out


def _pad_rows(rows: list[np.ndarray], fill: int) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(r) for r in rows))
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out), torch.tensor([len(r) for r in rows])


class _EpochOrder:
    """Training examples in a fresh seeded permutation each epoch; batch k is rows [k·b, (k+1)·b)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.n, generator=_seeded(self.seed, 2, epoch)).numpy())
        return self._perm[1]

    def rows(self, examples: np.ndarray, index: int, batch_size: int) -> np.ndarray:
        picks = [examples[self._epoch(j // self.n)[j % self.n]]
                 for j in range(index * batch_size, (index + 1) * batch_size)]
        return np.stack(picks)


@dataclass
class MLMSpec:
    """What the MLM objective needs from the tokenizer."""

    mask_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    vocab_size: int
    special_ids: list[int]
    continuation: Tensor | None = None  # bool [V]: whole-word masking when set
    rate: float = 0.15

    @classmethod
    def from_tokenizer(cls, tok, *, whole_word: bool = False, rate: float = 0.15) -> "MLMSpec":
        cont = torch.from_numpy(tok.continuation_mask()) if whole_word else None
        return cls(tok.mask_id, tok.cls_id, tok.sep_id, tok.pad_id, tok.vocab_size, tok.special_ids, cont, rate)


class _Batches:
    """What every pretraining data class shares: batch k of training and the fixed eval batches,
    each a pure function of (seed, k) through `make_batch(ranges, generator)`."""

    train_examples: np.ndarray
    eval_examples: np.ndarray
    batch_size: int
    seed: int
    _order: _EpochOrder

    def make_batch(self, ranges: np.ndarray, g: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def train_batch(self, index: int) -> dict[str, Tensor]:
        """The `index`-th micro-batch (deterministic in seed and index)."""
        return self.make_batch(self._order.rows(self.train_examples, index, self.batch_size),
                               _seeded(self.seed, 3, index))

    def eval_batches(self, max_batches: int = 8) -> list[dict[str, Tensor]]:
        """Fixed held-out batches: the same examples and masks at every evaluation."""
        ex = self.eval_examples[: max_batches * self.batch_size]
        return [self.make_batch(ex[i: i + self.batch_size], _seeded(self.seed, 4, i))
                for i in range(0, len(ex), self.batch_size)]


class BertPretrainData(_Batches):
    """Batches for BERT pretraining: MLM (+ NSP) over a token cache."""

    def __init__(self, cache: TokenCache, spec: MLMSpec, *, max_len: int = 128, batch_size: int = 32,
                 nsp: bool = True, seed: int = 0, eval_fraction: float = 0.02) -> None:
        if cache.n_tokens == 0:
            raise ValueError("the corpus has no tokens")
        self.cache, self.spec, self.max_len, self.batch_size = cache, spec, max_len, batch_size
        self.nsp, self.seed = nsp, seed
        held = split_documents(cache.n_documents, eval_fraction, seed)
        self.stream = TokenStream(cache, None if nsp else spec.sep_id)
        make = (lambda docs: sentence_chunks(cache, docs, max_len - 3)) if nsp else \
            (lambda docs: self.stream.windows(docs, max_len - 2))
        self.train_examples = make(np.flatnonzero(~held))
        self.eval_examples = make(np.flatnonzero(held))
        if len(self.train_examples) == 0:
            raise ValueError("the corpus is too small to hold out evaluation documents and still train")
        self._order = _EpochOrder(len(self.train_examples), seed)


    def make_batch(self, ranges: np.ndarray, g: torch.Generator) -> dict[str, Tensor]:
        s = self.spec
        tokens = self.cache.tokens
        if self.nsp:
            a_rows, b_rows = [], []
            u = torch.rand(len(ranges), generator=g).numpy()
            for (t0, t1), ui in zip(ranges, u):
                cuts = self._boundaries(t0, t1)
                cut = cuts[int(ui * len(cuts))] if len(cuts) else t0 + 1 + int(ui * max(t1 - t0 - 1, 0))
                a_rows.append(tokens[t0:cut])
                b_rows.append(tokens[cut:t1])
            a, a_len = _pad_rows(a_rows, s.pad_id)
            b, b_len = _pad_rows(b_rows, s.pad_id)
            sent = np.searchsorted(self.cache.sent_offsets, ranges[:, 0], "right") - 1
            doc = torch.from_numpy(np.searchsorted(self.cache.doc_offsets, sent, "right") - 1)
            batch = nsp_pairs(a, a_len, b, b_len, doc, max_len=self.max_len, cls_id=s.cls_id, sep_id=s.sep_id,
                              pad_id=s.pad_id, generator=g)
        else:
            body, length = _pad_rows(self.stream.rows(ranges), s.pad_id)
            n, w = body.shape
            p = torch.arange(w + 2)[None, :]
            ids = torch.full((n, w + 2), s.pad_id, dtype=torch.long)
            ids[:, 1:-1] = body
            ids[:, 0] = s.cls_id
            ids = ids.scatter(1, (length + 1)[:, None], s.sep_id)
            batch = {"input_ids": ids, "attention_mask": (p <= length[:, None] + 1).long()}
        batch.update(mlm_mask(batch["input_ids"], mask_id=s.mask_id, vocab_size=s.vocab_size,
                              special_ids=s.special_ids, generator=g, rate=s.rate, continuation=s.continuation))
        return batch

    def _boundaries(self, t0: int, t1: int) -> np.ndarray:
        so = self.cache.sent_offsets
        lo, hi = np.searchsorted(so, t0, "right"), np.searchsorted(so, t1, "left")
        return so[lo:hi]


def noise_ids(tok) -> NoiseIds:
    """BART's special ids from a tokenizer (bos/eos/pad/mask; <unk> is never drawn as a random token)."""
    return NoiseIds(bos=tok.bos_id, eos=tok.eos_id, pad=tok.pad_id, mask=tok.mask_id, vocab_size=tok.vocab_size,
                    special_ids=tuple(i for i in tok.special_ids if i not in (tok.bos_id, tok.eos_id, tok.pad_id,
                                                                              tok.mask_id)))


# Tokens that end a sentence for BART's sentence permutation, once the BPE/Unigram word-start
# marks are stripped: ".", "!", "?", the ellipsis and the CJK full stop, alone or repeated.
_SENTENCE_ENDS = set(".!?…。")


def full_stop_ids(tok) -> list[int]:
    stops = []
    for i in range(tok.vocab_size):
        piece = tok.tokens([i])[0].lstrip("Ġ▁")
        if piece and set(piece) <= _SENTENCE_ENDS and i not in tok.special_ids:
            stops.append(i)
    return stops


class DenoisePretrainData(_Batches):
    """Batches for BART pretraining: packed windows of max_len − 2 tokens, `<s> … </s>`, noised.

    Windows run over consecutive training documents (like BERT without NSP), so a row holds
    several sentences for sentence permutation to shuffle. The targets are the clean rows.
    """

    def __init__(self, cache: TokenCache, spec: NoiseIds, noise: str | tuple[NoiseStep, ...] = "bart-base", *,
                 full_stops: list[int], max_len: int = 128, batch_size: int = 32, seed: int = 0,
                 eval_fraction: float = 0.02) -> None:
        if cache.n_tokens == 0:
            raise ValueError("the corpus has no tokens")
        if isinstance(noise, str) and noise not in PRESETS:
            raise ValueError(f"unknown noise preset {noise!r}; choose from {sorted(PRESETS)}")
        self.cache, self.spec, self.noise, self.full_stops = cache, spec, noise, torch.tensor(full_stops)
        self.max_len, self.batch_size, self.seed = max_len, batch_size, seed
        held = split_documents(cache.n_documents, eval_fraction, seed)
        self.stream = TokenStream(cache, None)
        self.train_examples = self.stream.windows(np.flatnonzero(~held), max_len - 2)
        self.eval_examples = self.stream.windows(np.flatnonzero(held), max_len - 2)
        if len(self.train_examples) == 0:
            raise ValueError("the corpus is too small to hold out evaluation documents and still train")
        self._order = _EpochOrder(len(self.train_examples), seed)


    def make_batch(self, ranges: np.ndarray, g: torch.Generator) -> dict[str, Tensor]:
        s = self.spec
        body, length = _pad_rows(self.stream.rows(ranges), s.pad)
        ids = torch.full((len(ranges), body.shape[1] + 2), s.pad, dtype=torch.long)
        ids[:, 1:-1] = body
        ids[:, 0] = s.bos
        ids = ids.scatter(1, (length + 1)[:, None], s.eos)  # <s> body </s> <pad>…
        return denoise(ids, length + 2, self.noise, spec=s, generator=g, full_stop_ids=self.full_stops,
                       max_len=self.max_len)


class SpanPretrainData(_Batches):
    """Batches for T5 pretraining: windows of exactly the raw length that span corruption turns
    into `max_len` encoder tokens (T5's packing: no padding anywhere, static shapes).

    Windows run over consecutive training documents; a stream's last, shorter window is dropped.
    """

    def __init__(self, cache: TokenCache, sentinel_ids: list[int], eos_id: int, *, max_len: int = 128,
                 batch_size: int = 32, seed: int = 0, eval_fraction: float = 0.02, density: float = DENSITY,
                 mean_span: float = MEAN_SPAN) -> None:
        if cache.n_tokens == 0:
            raise ValueError("the corpus has no tokens")
        if not sentinel_ids:
            raise ValueError("span corruption needs a tokenizer with sentinels <extra_id_0> … (a T5 tokenizer)")
        self.raw, self.target_len = span_lengths(max_len, density, mean_span)
        self.cache, self.sentinels, self.eos = cache, torch.tensor(sentinel_ids), eos_id
        self.stream = TokenStream(cache, eos_id)
        self.batch_size, self.seed, self.density, self.mean_span = batch_size, seed, density, mean_span
        held = split_documents(cache.n_documents, eval_fraction, seed)

        def full(docs):
            w = self.stream.windows(docs, self.raw)
            return w[w[:, 1] - w[:, 0] == self.raw]

        self.train_examples, self.eval_examples = full(np.flatnonzero(~held)), full(np.flatnonzero(held))
        if len(self.train_examples) == 0:
            raise ValueError(f"the corpus is too small for one training window of {self.raw} tokens "
                             f"(max_len {max_len}); use a smaller max_len or more text")
        self._order = _EpochOrder(len(self.train_examples), seed)


    def make_batch(self, ranges: np.ndarray, g: torch.Generator) -> dict[str, Tensor]:
        rows = torch.from_numpy(np.stack(self.stream.rows(ranges)))
        out = span_corruption(rows, sentinel_ids=self.sentinels, eos_id=self.eos, density=self.density,
                              mean_span=self.mean_span, generator=g)
        return {**out, "attention_mask": torch.ones_like(out["input_ids"])}
