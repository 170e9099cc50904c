"""Training checkpoints: written atomically, verified on load, rotated.

    run_dir/checkpoints/step-0000100/
        config.json, model.safetensors, tokenizer.json …   the model, in HF layout (loads anywhere)
        optimizer.safetensors                             AdamW moments + RNG states
        trainer_state.json                                step, configs, sha256 of every file

A checkpoint is assembled in a temporary directory and renamed into place, so a killed run
leaves only complete checkpoints; a checkpoint whose files do not match the checksums in
its trainer_state.json is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clozeformer.interop.hf import FAMILIES, load_state, save_model
from clozeformer.io import load_tensors, read_json, save_tensors, write_json

STATE_FILE = "trainer_state.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": torch.as_tensor(v) for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("state."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer,
                    state: dict[str, Any], tokenizer=None, keep_last: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:07d}."))
    try:
        save_model(model, tmp, tokenizer)
        tensors, groups = optimizer_tensors(opt)
        tensors["rng.torch_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.torch_cuda"] = torch.cuda.get_rng_state()
        save_tensors(tmp / "optimizer.safetensors", tensors)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(tmp / STATE_FILE, {**state, "step": step, "param_groups": groups, "files": files})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []


def verify(ckpt: Path) -> dict[str, Any]:
    """trainer_state.json of a complete, uncorrupted checkpoint, else ValueError."""
    state = read_json(ckpt / STATE_FILE)
    for name, digest in state["files"].items():
        if not (ckpt / name).is_file() or _sha256(ckpt / name) != digest:
            raise ValueError(f"{ckpt / name}: missing or corrupted (checksum mismatch)")
    return state


def latest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies; corrupted newer ones are skipped with a warning."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            return ckpt, verify(ckpt)
        except (ValueError, FileNotFoundError, KeyError) as e:
            warnings.warn(f"skipping checkpoint {ckpt.name}: {e}", stacklevel=2)
    return None


def restore(ckpt: Path, state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer) -> None:
    from_hf = FAMILIES[model.config.model_type][3]
    weights, _ = from_hf(load_tensors(ckpt / "model.safetensors"))
    missing = load_state(model, weights, str(ckpt / "model.safetensors"))
    if missing:
        raise ValueError(f"{ckpt}: checkpoint lacks parameters {missing[:4]}")
    tensors = load_tensors(ckpt / "optimizer.safetensors")
    load_optimizer(opt, tensors, state["param_groups"])
    torch.set_rng_state(tensors["rng.torch_cpu"])
    if "rng.torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"])
