"""Source–target text pairs (translation, summarization) and their sequence-to-sequence batches.

A pair file is JSONL, one object per line with the source and target under named fields
(Multi30k: {"en": …, "de": …}). Errors name file:line, as for corpora (data/corpus.py).

Batches: `input_ids` [B, S] and `attention_mask` [B, S] for the source, `labels` [B, T]
for the target (-100 on padding); the model shifts labels right into its decoder inputs.
Batch k of training is a pure function of (seed, k), like pretraining batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clozeformer.data.corpus import CorpusError, _jsonl_text, _lines
from clozeformer.data.pretrain import _EpochOrder


def read_pairs(path: str | Path, source_field: str, target_field: str) -> list[tuple[str, str]]:
    """(source, target) texts of a JSONL file; blank lines skipped, a blank text is an error."""
    path = Path(path)
    pairs = []
    for n, line in _lines(path):
        if not line.strip():
            continue
        src, tgt = (_jsonl_text(path, n, line, f) for f in (source_field, target_field))
        if not src.strip() or not tgt.strip():
            raise CorpusError(f"{path}:{n}: blank {source_field if not src.strip() else target_field!r} text")
        pairs.append((src, tgt))
    if not pairs:
        raise CorpusError(f"{path}: no pairs (empty file)")
    return pairs


def _padded(rows: list[list[int]], pad: int) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class PairData:
    """Tokenised pairs as training/eval batches for an encoder–decoder."""

    def __init__(self, sources: list[list[int]], targets: list[list[int]], *, source_pad: int, batch_size: int = 32,
                 seed: int = 0, eval_sources: list[list[int]] | None = None,
                 eval_targets: list[list[int]] | None = None) -> None:
        if not sources or len(sources) != len(targets):
            raise ValueError(f"need as many sources as targets, and some: {len(sources)} vs {len(targets)}")
        self.sources, self.targets, self.source_pad = sources, targets, source_pad
        self.batch_size, self.seed = batch_size, seed
        self.eval_sources, self.eval_targets = eval_sources or [], eval_targets or []
        self.train_examples = np.arange(len(sources))
        self.eval_examples = np.arange(len(self.eval_sources))
        self._order = _EpochOrder(len(sources), seed)

    def _batch(self, src: list[list[int]], tgt: list[list[int]]) -> dict[str, Tensor]:
        ids = _padded(src, self.source_pad)
        lengths = torch.tensor([len(r) for r in src])
        return {"input_ids": ids, "attention_mask": (torch.arange(ids.shape[1]) < lengths[:, None]).long(),
                "labels": _padded(tgt, -100)}

    def train_batch(self, index: int) -> dict[str, Tensor]:
        rows = self._order.rows(self.train_examples, index, self.batch_size)
        return self._batch([self.sources[i] for i in rows], [self.targets[i] for i in rows])

    def eval_batches(self, max_batches: int = 8) -> list[dict[str, Tensor]]:
        n = min(len(self.eval_sources), max_batches * self.batch_size)
        return [self._batch(self.eval_sources[i: i + self.batch_size], self.eval_targets[i: i + self.batch_size])
                for i in range(0, n, self.batch_size)]
