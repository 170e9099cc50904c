"""Atomic writes and safe reads: the only way clozeformer touches files it owns.

Every file is written to a temporary name in the same directory, flushed, fsynced and
renamed into place, so a killed process leaves either the old file or the new one, never
half of one. Weights are read from safetensors; pickles only on explicit request and then
with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class UnsafeFileError(ValueError):
    pass


def atomic_write(path: str | Path, data: bytes | str) -> None:
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, st_save(tensors, metadata=metadata))


def load_tensors(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """safetensors always; `.bin`/`.pt` pickles only with allow_pickle, and then weights_only."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise UnsafeFileError(f"{path}: refusing to unpickle a {path.suffix} file (it can run code); "
                                  "convert it to safetensors or pass allow_pickle=True / --allow-pickle")
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        return st_load(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (SafetensorError, ValueError) as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from None
