"""Pretraining batches from a token cache: whole documents packed into rows, for every family.

Every batch is a pure function of (seed, micro-batch index): the row order comes from a
per-epoch `torch.randperm`, the objective's randomness from a generator seeded with the
index. Resuming at step k therefore needs no data state beyond k itself.

Document-aware packing. Each document becomes one piece (several, when it is longer than a
row allows); pieces are packed into rows of at most max_len tokens by best-fit decreasing,
once, when the data is built, and each epoch visits the rows in a fresh seeded order. In a
batch a row's attention_mask holds segment ids (0 on padding, k on its k-th document): the
models restart positions at every document and keep attention inside it
(nn/attention.segment_ids), so each document is read as if it were alone in its row, and
almost no position is padding (`Packing.fill`; pretraining prints it). Windows that run
several documents together never grow the attention heads that read a word's neighbours
(BENCHMARKS.md, Korean: the position probe); whole documents alone do.

Pieces per family (the objective always sees one document at a time):
- BERT with NSP: runs of consecutive sentences of one document (≤ max_len − 3 tokens), each
  split at a random sentence boundary into A and its true continuation B; one time in two
  B is swapped for another piece's B from another document and cut to the same room
  (google-research/bert builds its pairs the same way; its short_seq_prob is left out).
  `[CLS] A [SEP] B [SEP]`, NSP read at every pair's [CLS]: next_sentence_label is [B, K].
- BERT without NSP, ELECTRA: a document (≤ max_len − 2 tokens), `[CLS] doc [SEP]`.
- BART: a document (≤ max_len − 2 tokens), `<s> doc </s>`, noised on its own (sentence
  permutation shuffles its sentences, rotation rotates it); the decoder rows hold the clean
  documents in the same order, each shifted right on its own.
- T5: a document (≤ the raw length span corruption turns into max_len tokens), span-
  corrupted on its own, ended by </s>. T5's noise and span counts depend on the length
  alone, so each piece's input and target lengths are known before sampling and rows are
  packed by them exactly.
Held-out documents (a seeded random `eval_fraction` of them, at least one) never appear in
training rows.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clozeformer.data.cache import TokenCache
from clozeformer.data.packing import (Packing, EpochOrder, seeded, document_pieces, gather_pieces, pack, place,
                                      sentence_chunks, split_documents, training_documents)
from clozeformer.objectives.denoise import PRESETS, NoiseIds, NoiseStep, denoise
from clozeformer.objectives.mlm import IGNORE, mlm_mask
from clozeformer.objectives.nsp import nsp_pairs
from clozeformer.objectives.span import DENSITY, MEAN_SPAN, noise_counts, span_corruption, span_lengths


EVAL_RATE = 0.15  # held-out MLM batches are masked at BERT's rate (BERT §3.1), whatever training uses


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
    """What every pretraining data class shares: packed training and held-out rows, batch k of
    training and the fixed eval batches, each a pure function of (seed, k) through
    `make_batch(pieces, row, n_rows, generator)` (pieces [Q, 2] of n_rows rows, row [Q])."""

    train_examples: Packing
    eval_examples: Packing
    batch_size: int
    seed: int
    # True: a row's documents are read as one text, attention and positions running across them
    # (RoBERTa's FULL-SENTENCES packing; the ablation of document-aware packing, BENCHMARKS.md)
    cross_document = False

    def _pack(self, cache: TokenCache, eval_fraction: float, capacity: int,
              pieces_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        """Split the documents, cut each side into pieces (pieces_of(docs) -> (pieces, costs)) and pack them."""
        if cache.n_tokens == 0:
            raise ValueError("the corpus has no tokens")
        held = split_documents(cache.n_documents, eval_fraction, self.seed)
        train_docs = training_documents(cache, held)
        if len(train_docs) == 0 and not held.all():
            raise ValueError(f"every one of the {int((~held).sum()):,} training documents repeats a held-out one: the "
                             "corpus is one text many times, or the tokenizer reads it as unknown tokens (check "
                             "--tokenizer)")
        self.train_examples = pack(*pieces_of(train_docs), capacity, self.seed)
        self.eval_examples = pack(*pieces_of(np.flatnonzero(held)), capacity, self.seed)
        if len(self.train_examples) == 0:
            raise ValueError("the corpus is too small to hold out evaluation documents and still train")
        self._order = EpochOrder(len(self.train_examples), self.seed)

    def make_batch(self, pieces: np.ndarray, row: np.ndarray, n_rows: int, g: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def _batch(self, packing: Packing, rows: np.ndarray, g: torch.Generator) -> dict[str, Tensor]:
        batch = self.make_batch(*packing.rows(rows), len(rows), g)
        if self.cross_document:
            for key in ("attention_mask", "decoder_attention_mask"):
                if key in batch:
                    batch[key] = (batch[key] > 0).long()
        return batch

    def train_batch(self, index: int) -> dict[str, Tensor]:
        """The `index`-th micro-batch (deterministic in seed and index)."""
        return self._batch(self.train_examples, self._order.indices(index, self.batch_size), seeded(self.seed, 3, index))

    def eval_batches(self, max_batches: int = 8) -> list[dict[str, Tensor]]:
        """Fixed held-out batches: the same rows and masks at every evaluation."""
        n = min(len(self.eval_examples), max_batches * self.batch_size)
        return [self._batch(self.eval_examples, np.arange(i, min(i + self.batch_size, n)), seeded(self.seed, 4, i))
                for i in range(0, n, self.batch_size)]


class BertPretrainData(_Batches):
    """Batches for BERT pretraining: MLM (+ NSP) over packed documents; ELECTRA's with mask_fn=rtd_mask
    (objectives/rtd.py: 85% [MASK], 15% kept, and the generator's sampling noise `replace_u`)."""

    def __init__(self, cache: TokenCache, spec: MLMSpec, *, max_len: int = 128, batch_size: int = 32,
                 nsp: bool = True, seed: int = 0, eval_fraction: float = 0.02,
                 mask_fn: Callable[..., dict[str, Tensor]] = mlm_mask) -> None:
        self.cache, self.spec, self.max_len, self.batch_size = cache, spec, max_len, batch_size
        self.nsp, self.seed, self.mask_fn = nsp, seed, mask_fn
        if nsp:
            def pieces_of(docs):
                chunks = sentence_chunks(cache, docs, max_len - 3)
                return chunks, chunks[:, 1] - chunks[:, 0] + 3  # [CLS] A [SEP] B [SEP]
        else:
            def pieces_of(docs):
                pieces = document_pieces(cache, docs, max_len - 2)
                return pieces, pieces[:, 1] - pieces[:, 0] + 2  # [CLS] doc [SEP]
        self._pack(cache, eval_fraction, max_len, pieces_of)

    def eval_batches(self, max_batches: int = 8) -> list[dict[str, Tensor]]:
        """Held-out batches masked at BERT's 15% whatever the training rate, so that runs at other rates
        report comparable MLM loss and accuracy."""
        train_spec, self.spec = self.spec, dataclasses.replace(self.spec, rate=EVAL_RATE)
        try:
            return super().eval_batches(max_batches)
        finally:
            self.spec = train_spec

    def make_batch(self, pieces: np.ndarray, row: np.ndarray, n_rows: int, g: torch.Generator) -> dict[str, Tensor]:
        s = self.spec
        if self.nsp:
            pairs = self._pairs(pieces, g)
            length = pairs["attention_mask"].sum(1)
            ids, seg = place(pairs["input_ids"], length, row, n_rows, s.pad_id)
            batch = {"input_ids": ids, "attention_mask": seg,
                     "token_type_ids": place(pairs["token_type_ids"], length, row, n_rows, 0)[0],
                     "next_sentence_label": place(pairs["next_sentence_label"][:, None],
                                                  torch.ones_like(length), row, n_rows, IGNORE)[0]}  # [R, K]
        else:
            docs, length = gather_pieces(self.cache.tokens, pieces, s.pad_id, s.cls_id, s.sep_id)
            ids, seg = place(docs, length, row, n_rows, s.pad_id)
            batch = {"input_ids": ids, "attention_mask": seg}
        batch.update(self.mask_fn(batch["input_ids"], mask_id=s.mask_id, vocab_size=s.vocab_size,
                                  special_ids=s.special_ids, generator=g, rate=s.rate, continuation=s.continuation))
        return batch

    def _pairs(self, chunks: np.ndarray, g: torch.Generator) -> dict[str, Tensor]:
        """`[CLS] A [SEP] B [SEP]` of every chunk [Q, 2], B swapped for a foreign one half the time."""
        s, tokens, so = self.spec, self.cache.tokens, self.cache.sent_offsets
        u = torch.rand(len(chunks), generator=g).numpy()
        cuts = np.empty(len(chunks), dtype=np.int64)
        for i, ((t0, t1), ui) in enumerate(zip(chunks, u)):
            inner = so[np.searchsorted(so, t0, "right"): np.searchsorted(so, t1, "left")]  # sentence starts inside
            cuts[i] = inner[int(ui * len(inner))] if len(inner) else t0 + 1 + int(ui * max(t1 - t0 - 1, 0))
        a, a_len = gather_pieces(tokens, np.stack([chunks[:, 0], cuts], 1), s.pad_id)
        b, b_len = gather_pieces(tokens, np.stack([cuts, chunks[:, 1]], 1), s.pad_id)
        sent = np.searchsorted(so, chunks[:, 0], "right") - 1
        doc = torch.from_numpy(np.searchsorted(self.cache.doc_offsets, sent, "right") - 1)
        return nsp_pairs(a, a_len, b, b_len, doc, max_len=a_len + b_len + 3, cls_id=s.cls_id, sep_id=s.sep_id,
                         pad_id=s.pad_id, generator=g)


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


def seq2seq_rows(source: Tensor, source_len: Tensor, target: Tensor, target_len: Tensor, decoder_start: int,
                 row: np.ndarray, n_rows: int, pad: int) -> dict[str, Tensor]:
    """Packed encoder–decoder rows from per-document sources [Q, S] and clean targets [Q, T] (with lengths):
    input_ids, attention_mask (segment ids), labels (-100 after each row), decoder_input_ids (each target
    shifted right on its own behind decoder_start) and decoder_attention_mask (segment ids)."""
    shifted = torch.cat([target.new_full((len(target), 1), decoder_start), target[:, :-1]], 1)  # [Q, T]
    input_ids, seg = place(source, source_len, row, n_rows, pad)
    labels, dec_seg = place(target, target_len, row, n_rows, IGNORE)
    decoder_input_ids, _ = place(shifted, target_len, row, n_rows, pad)
    return {"input_ids": input_ids, "attention_mask": seg, "labels": labels, "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": dec_seg}


class DenoisePretrainData(_Batches):
    """Batches for BART pretraining: documents `<s> doc </s>` (≤ max_len tokens), each noised on its own,
    packed into rows; the targets are the clean documents, packed alike (`seq2seq_rows`). Noises that
    grow a document (insertion, zero-length infilling) may make an encoder row longer than max_len."""

    def __init__(self, cache: TokenCache, spec: NoiseIds, noise: str | tuple[NoiseStep, ...] = "bart-base", *,
                 full_stops: list[int], max_len: int = 128, batch_size: int = 32, seed: int = 0,
                 eval_fraction: float = 0.02) -> None:
        if isinstance(noise, str) and noise not in PRESETS:
            raise ValueError(f"unknown noise preset {noise!r}; choose from {sorted(PRESETS)}")
        self.cache, self.spec, self.noise, self.full_stops = cache, spec, noise, torch.tensor(full_stops)
        self.max_len, self.batch_size, self.seed = max_len, batch_size, seed

        def pieces_of(docs):
            pieces = document_pieces(cache, docs, max_len - 2)
            return pieces, pieces[:, 1] - pieces[:, 0] + 2  # <s> doc </s>
        self._pack(cache, eval_fraction, max_len, pieces_of)

    def make_batch(self, pieces: np.ndarray, row: np.ndarray, n_rows: int, g: torch.Generator) -> dict[str, Tensor]:
        s = self.spec
        docs, length = gather_pieces(self.cache.tokens, pieces, s.pad, s.bos, s.eos)  # [Q, W]
        out = denoise(docs, length, self.noise, spec=s, generator=g, full_stop_ids=self.full_stops,
                      max_len=self.max_len)
        return seq2seq_rows(out["input_ids"], out["attention_mask"].sum(1), docs, length, s.eos, row, n_rows, s.pad)


class SpanPretrainData(_Batches):
    """Batches for T5 pretraining: documents span-corrupted one by one and packed into rows of at most
    max_len encoder tokens. A document longer than `raw` (the length span corruption turns into exactly
    max_len tokens) is cut into pieces of `raw`; one-token pieces are dropped (nothing to corrupt)."""

    def __init__(self, cache: TokenCache, sentinel_ids: list[int], eos_id: int, *, max_len: int = 128,
                 batch_size: int = 32, seed: int = 0, eval_fraction: float = 0.02, density: float = DENSITY,
                 mean_span: float = MEAN_SPAN, decoder_start_id: int = 0, pad_id: int = 0) -> None:
        if not sentinel_ids:
            raise ValueError("span corruption needs a tokenizer with sentinels <extra_id_0> … (a T5 tokenizer)")
        self.raw, self.target_len = span_lengths(max_len, density, mean_span)
        self.cache, self.sentinels, self.eos = cache, torch.tensor(sentinel_ids), eos_id
        self.batch_size, self.seed, self.density, self.mean_span = batch_size, seed, density, mean_span
        self.decoder_start, self.pad = decoder_start_id, pad_id

        # span corruption of n tokens: input n − N + K, then </s>; target N + K, then </s> (by piece length)
        counts = np.array([(0, 0), (0, 0)] + [noise_counts(n, density, mean_span) for n in range(2, self.raw + 1)])
        self._input_len = np.arange(self.raw + 1) - counts[:, 0] + counts[:, 1] + 1
        target_len = counts.sum(1) + 1

        def pieces_of(docs):
            pieces = document_pieces(cache, docs, self.raw)
            pieces = pieces[pieces[:, 1] - pieces[:, 0] >= 2]
            return pieces, self._input_len[pieces[:, 1] - pieces[:, 0]]  # corrupted input + </s>
        self._pack(cache, eval_fraction, max_len, pieces_of)
        # a row's decoder length is known before sampling too: batches group rows of similar length
        train = self.train_examples
        per_piece = target_len[train.pieces[:, 1] - train.pieces[:, 0]]
        self._order = EpochOrder(len(train), seed, np.add.reduceat(per_piece, train.offsets[:-1]), batch_size)

    def make_batch(self, pieces: np.ndarray, row: np.ndarray, n_rows: int, g: torch.Generator) -> dict[str, Tensor]:
        n = pieces[:, 1] - pieces[:, 0]
        docs, _ = gather_pieces(self.cache.tokens, pieces, self.pad)  # [Q, W]
        sources, targets = [None] * len(n), [None] * len(n)
        for length in np.unique(n):  # one call per length: T5's span counts depend on it alone
            which = np.flatnonzero(n == length)
            out = span_corruption(docs[which, :length], sentinel_ids=self.sentinels, eos_id=self.eos,
                                  density=self.density, mean_span=self.mean_span, generator=g)
            for j, q in enumerate(which):
                sources[q], targets[q] = out["input_ids"][j], out["labels"][j]
        src = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True, padding_value=self.pad)
        tgt = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=self.pad)
        return seq2seq_rows(src, torch.tensor([len(x) for x in sources]), tgt, torch.tensor([len(x) for x in targets]),
                            self.decoder_start, row, n_rows, self.pad)
