"""Small padded batches and run readers shared by the test modules (imported as `batches`: pytest puts
tests/ on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TIMINGS = ("elapsed_s",)  # wall-clock fields of metrics.jsonl rows: never the same twice


def rows(run_dir, split="train"):
    """metrics.jsonl rows of one split, without their timings."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in map(json.loads, lines) if r["split"] == split]


def padded_batch(vocab: int, seed: int = 0):
    """ids [3, 17] from 5..vocab-1 with rows padded (id 0) after 17, 11 and 5 tokens; mask; segment ids 0 then 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 17), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    return ids, mask, types
