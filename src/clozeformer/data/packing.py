"""Documents into rows: held-out split, pieces (whole documents, or runs of sentences), best-fit
packing, gathering a batch's pieces into padded rows, and the seeded order rows are read in.

Shared by the pretraining data (data/pretrain.py) and the fine-tuning data (`EpochOrder`, `pad_rows`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clozeformer.data.cache import TokenCache


def seeded(*parts: int) -> torch.Generator:
    # a distinct, reproducible stream per (seed, purpose, index)
    return torch.Generator().manual_seed(hash(parts) & 0x7FFF_FFFF_FFFF_FFFF)


def pad_rows(rows, value: int) -> Tensor:
    """Rows of ids (lists or 1-d tensors) -> long [len(rows), longest], `value` after each row's end."""
    return torch.nn.utils.rnn.pad_sequence([torch.as_tensor(r, dtype=torch.long) for r in rows], batch_first=True,
                                           padding_value=value)


def split_documents(n_docs: int, eval_fraction: float, seed: int, runs: int = 8) -> np.ndarray:
    """bool [n_docs]: True for held-out documents, about eval_fraction of them, in up to `runs`
    contiguous runs at seeded places (so held-out text is spread over the corpus in a few stretches)."""
    held = np.zeros(n_docs, dtype=bool)
    if eval_fraction > 0 and n_docs > 1:
        k = min(n_docs - 1, max(1, round(n_docs * eval_fraction)))
        r = min(runs, k)
        sizes = np.full(r, k // r) + (np.arange(r) < k % r)  # k documents in r runs
        gaps = np.sort(torch.randint(n_docs - k + 1, (r,), generator=seeded(seed, 1)).numpy())
        for start, size in zip(gaps + np.cumsum(sizes) - sizes, sizes):  # training documents before run i: gaps[i]
            held[start : start + size] = True
    return held


def training_documents(cache: TokenCache, held: np.ndarray) -> np.ndarray:
    """Indices of the documents not held out, less exact copies of a held-out document (a file
    given twice, overlapping files, repeated short texts), so held-out text never trains."""
    bounds = np.asarray(cache.sent_offsets)[np.asarray(cache.doc_offsets)]
    lengths = np.diff(bounds)
    tokens = cache.tokens

    def text(d: int) -> bytes:
        return tokens[bounds[d] : bounds[d + 1]].tobytes()

    held_docs = np.flatnonzero(held)
    held_texts = {text(d) for d in held_docs}
    train = np.flatnonzero(~held)
    same_length = train[np.isin(lengths[train], lengths[held_docs])]  # only these can be copies
    copies = [d for d in same_length if text(d) in held_texts]
    return np.setdiff1d(train, np.asarray(copies, dtype=train.dtype)) if copies else train


def document_pieces(cache: TokenCache, docs: np.ndarray, size: int) -> np.ndarray:
    """[N, 2] token ranges: each selected document whole, or cut into pieces of `size` tokens (the
    last shorter) when it is longer. Empty documents give none."""
    bounds = np.asarray(cache.sent_offsets)[np.asarray(cache.doc_offsets)]  # document d: tokens bounds[d]:bounds[d+1]
    start, stop = bounds[docs], bounds[docs + 1]
    n = -(-(stop - start) // size)  # pieces per document
    first = np.repeat(start, n) + size * (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    return np.stack([first, np.minimum(first + size, np.repeat(stop, n))], 1).astype(np.int64).reshape(-1, 2)


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


@dataclass(frozen=True)
class Packing:
    """Rows of whole pieces: row r holds pieces[offsets[r]:offsets[r + 1]], each a [start, stop) token range."""

    pieces: np.ndarray  # int64 [P, 2]
    offsets: np.ndarray  # int64 [R + 1]
    fill: float  # Σ piece costs / (R × capacity): the share of row positions that are real tokens

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pieces [Q, 2] of rows `index`, row after row, and the batch row [Q] (0 … len(index) − 1) of each."""
        first, counts = self.offsets[index], self.offsets[index + 1] - self.offsets[index]
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.pieces[np.repeat(first, counts) + within], np.repeat(np.arange(len(index)), counts)


def pack(pieces: np.ndarray, costs: np.ndarray, capacity: int, seed: int) -> Packing:
    """Best-fit decreasing: pieces by cost, largest first, each into the open row with the least room
    that still holds it (a new row when none does); rows then in a seeded random order.

    costs [P]: positions each piece takes in a row (its tokens and special tokens), 1 ≤ cost ≤ capacity.
    Many short documents fill rows almost completely (fill ≥ 99% on the shared corpora).
    """
    if len(costs) and (costs.min() < 1 or costs.max() > capacity):
        raise ValueError(f"piece costs must be in [1, {capacity}]")
    by_room: list[list[int]] = [[] for _ in range(capacity + 1)]  # open rows by room left
    count = np.zeros(capacity + 1, dtype=np.int64)
    members: list[list[int]] = []
    for p in np.argsort(-costs, kind="stable"):
        c = int(costs[p])
        fits = np.flatnonzero(count[c:])
        if len(fits):
            room = c + int(fits[0])
            row = by_room[room].pop()
            count[room] -= 1
        else:
            room, row = capacity, len(members)
            members.append([])
        members[row].append(int(p))
        by_room[room - c].append(row)
        count[room - c] += 1
    order = torch.randperm(len(members), generator=seeded(seed, 0)).numpy() if members else np.zeros(0, int)
    rows = [members[r] for r in order]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    take = np.asarray([p for r in rows for p in r], dtype=np.int64)
    fill = float(costs.sum()) / (len(rows) * capacity) if rows else 1.0
    return Packing(pieces[take].reshape(-1, 2), offsets, fill)


def gather_pieces(tokens: np.ndarray, pieces: np.ndarray, pad: int, before: int | None = None,
                  after: int | None = None) -> tuple[Tensor, Tensor]:
    """The tokens of each piece, optionally between `before` and `after` ids: ids [Q, W] padded with
    `pad`, lengths [Q]."""
    n = pieces[:, 1] - pieces[:, 0]  # [Q]
    lead = int(before is not None)
    length = n + lead + int(after is not None)
    width = int(length.max()) if len(n) else 1
    at = np.arange(width - lead)
    inside = at[None, :] < n[:, None]  # [Q, W − lead]
    body = np.asarray(tokens[np.where(inside, pieces[:, :1] + at, 0)], dtype=np.int64)
    ids = np.full((len(n), width), pad, dtype=np.int64)
    ids[:, lead:] = np.where(inside, body, pad)
    if before is not None:
        ids[:, 0] = before
    if after is not None:
        ids[np.arange(len(n)), n + lead] = after
    return torch.from_numpy(ids), torch.from_numpy(length)


def place(values: Tensor, lengths: Tensor, row: np.ndarray, n_rows: int, fill: int) -> tuple[Tensor, Tensor]:
    """Lay pieces end to end in their rows.

    values [Q, W] (piece q valid up to lengths[q]), row [Q] (non-decreasing: pieces arrive row after
    row) -> (out [R, T] with T the longest row, filled with `fill` after it; segment ids [R, T]:
    0 on padding, k on the row's k-th piece).
    """
    row_t = torch.from_numpy(np.asarray(row, dtype=np.int64))
    first = torch.from_numpy(np.searchsorted(row, row).astype(np.int64))  # [Q] index of the row's first piece
    end = lengths.cumsum(0)
    start = end - lengths - (end - lengths)[first]  # [Q] offset of each piece in its row
    widths = torch.zeros(n_rows, dtype=torch.long).index_add_(0, row_t, lengths)  # [R]
    width = max(1, int(widths.max())) if n_rows else 1
    at = torch.arange(values.shape[1])
    valid = at[None, :] < lengths[:, None]  # [Q, W]
    r = row_t[:, None].expand_as(valid)[valid]
    c = (start[:, None] + at)[valid]
    out = torch.full((n_rows, width), fill, dtype=values.dtype)
    out[r, c] = values[valid]
    seg = torch.zeros(n_rows, width, dtype=torch.long)
    seg[r, c] = (torch.arange(len(row_t)) - first + 1)[:, None].expand_as(valid)[valid]
    return out, seg


GROUP_WINDOW = 64  # batches whose rows are sorted together by length (T5: the decoder's)


def batch_within(batch_size: int, rows: int) -> int:
    """The batch size for `rows` training examples: no more than there are, as a DataLoader's one short batch
    (EpochOrder runs on into the next epoch, so a larger batch held rows two or three times per step)."""
    if batch_size > rows > 0:
        warnings.warn(f"batch_size {batch_size} is more than the {rows:,} training rows; each batch holds all "
                      f"{rows:,} (one step per epoch)")
        return rows
    return batch_size


class EpochOrder:
    """Training examples in a fresh seeded permutation each epoch; batch k is rows [k·b, (k+1)·b).

    With `key` (one length per example) and `group` (the batch size), each window of GROUP_WINDOW
    groups of the permutation is sorted by key, cut into groups and the groups shuffled: a batch
    then holds examples of similar length (little padding) and still comes at a random step.
    """

    def __init__(self, n: int, seed: int, key: np.ndarray | None = None, group: int = 1) -> None:
        self.n, self.seed, self.key, self.group = n, seed, key, group
        self._perm: tuple[int, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            g = seeded(self.seed, 2, epoch)
            perm = torch.randperm(self.n, generator=g).numpy()
            if self.key is not None:
                window = GROUP_WINDOW * self.group
                parts = []
                for w in range(0, self.n, window):
                    part = perm[w:w + window]
                    part = part[np.argsort(self.key[part], kind="stable")]
                    groups = [part[i:i + self.group] for i in range(0, len(part), self.group)]
                    parts += [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
                perm = np.concatenate(parts)
            self._perm = (epoch, perm)
        return self._perm[1]

    def indices(self, index: int, batch_size: int) -> np.ndarray:
        """Example indices of batch `index`."""
        return np.asarray([self._epoch(j // self.n)[j % self.n]
                           for j in range(index * batch_size, (index + 1) * batch_size)], dtype=np.int64)

    def rows(self, examples: np.ndarray, index: int, batch_size: int) -> np.ndarray:
        return examples[self.indices(index, batch_size)]
