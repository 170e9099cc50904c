"""Shared tools of the parameter-name maps (interop/encoders.py, interop/seq2seq.py)."""

from __future__ import annotations

import re

import torch
from torch import Tensor

def _rename(key: str, table: dict[str, str]) -> str | None:
    for src, dst in table.items():
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def _pieces_of(table: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, int, int]]:
    """HF module -> (our fused module, its index among the pieces, number of pieces)."""
    return {name: (module, j, len(names)) for module, names in table.items() for j, name in enumerate(names)}


def _join(parts: dict[str, list]) -> dict[str, Tensor]:
    """Our fused tensors from their HF pieces, in order (q, k, v -> qkv); every piece must be there."""
    for key, pieces in parts.items():
        if any(p is None for p in pieces):
            raise ValueError(f"{key}: the checkpoint lacks part of this projection")
    return {key: torch.cat(pieces) for key, pieces in parts.items()}


def _from_hf(hf: dict[str, Tensor], top: dict[str, str], piece, redundant: re.Pattern
             ) -> tuple[dict[str, Tensor], list[str]]:
    """HF state -> (ours, ignored HF keys) for the encoder-decoders: `top` maps our names to HF's
    one to one; `piece(key)` gives (our fused name, index, count) for an HF layer key, or None;
    keys `redundant` matches (tied copies, buffers) are dropped without a word."""
    inverse_top = {v: k for k, v in top.items()}
    ours, ignored, parts = {}, [], {}
    for key, t in hf.items():
        target = None if key in inverse_top else piece(key)
        if key in inverse_top:
            ours[inverse_top[key]] = t
        elif target is not None:
            name, j, n = target
            parts.setdefault(name, [None] * n)[j] = t
        elif not redundant.search(key):
            ignored.append(key)
    return {**ours, **_join(parts)}, ignored
