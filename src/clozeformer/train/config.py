"""A training run's settings (TrainConfig), its pure learning-rate schedule, and the precision choice.

Frozen and validated on construction, so a bad value fails before any work; saved in every
checkpoint's trainer_state.json, which resume compares against (loop._check_same).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clozeformer.config import check_type
from clozeformer.train import distributed

PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the device runs it natively (fast_bf16), else fp32
SCHEDULES = ("linear", "cosine", "constant")
CLOCKS = ("wall", "process")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 0  # 0: 1000, or no limit under a time budget (`minutes`)
    lr: float = 5e-4
    warmup_steps: int = 100
    schedule: str = "linear"  # decay after warmup: linear or cosine to 0, or constant
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6  # BERT's AdamW epsilon
    clip_norm: float = 1.0
    label_smoothing: float = 0.0  # of the written text's loss (T5, BART); evaluation reports plain cross-entropy
    layer_decay: float = 1.0  # < 1: each layer's lr this factor of the next one up's (loop.param_groups)
    relative_lr: bool = False  # each matrix's lr × its initial RMS / the median matrix's (as Adafactor; T5's recipe)
    grad_accum: int = 1
    precision: str = "fp32"
    eval_every: int = 200
    eval_batches: int = 8
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    nan_policy: str = "stop"  # on a non-finite loss: "stop" (checkpoints intact) or "skip" the step
    fsdp: bool = False  # under torchrun: shard the model with FSDP2 instead of replicating it (DDP)
    compile: bool = False  # torch.compile the training forward (model and loss) and its backward
    # A time budget (cramming, Geiping & Goldstein 2023): > 0 runs warmup and decay over elapsed time
    # and stops when it is spent; `steps` is then only an upper bound and `warmup_steps` unused.
    minutes: float = 0.0
    warmup_fraction: float = 0.1  # of the time budget
    clock: str = "wall"  # "wall", or "process": CPU seconds / threads, immune to other jobs on the machine

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # each of the declared type: "2" and 2.5 steps, nan warmup, a seed
            check_type(f.name, getattr(self, f.name), f.type)  # "abc" failed deep in torch, or trained on
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2 and all(
                isinstance(b, numbers.Real) and not isinstance(b, bool) for b in self.betas)):
            raise TypeError(f"betas must be two numbers (B1, B2), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.steps == 0:
            object.__setattr__(self, "steps", 1 << 62 if self.minutes > 0 else 1000)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.nan_policy not in ("stop", "skip"):
            raise ValueError("nan_policy must be 'stop' or 'skip'")
        for name in ("steps", "grad_accum", "eval_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")
        floats = ("lr", "minutes", "warmup_fraction", "weight_decay", "eps", "clip_norm", "label_smoothing",
                  "layer_decay", "betas")
        finite = lambda v: all(map(math.isfinite, v)) if isinstance(v, tuple) else math.isfinite(v)  # noqa: E731
        if bad := [f"{name}={getattr(self, name)}" for name in floats if not finite(getattr(self, name))]:
            raise ValueError(f"{', '.join(bad)}: must be a finite number")
        if self.lr <= 0 or self.warmup_steps < 0 or self.eps <= 0:
            raise ValueError(f"lr and eps must be > 0 and warmup_steps ≥ 0, got {self.lr}, {self.eps} and "
                             f"{self.warmup_steps}")
        if not self.minutes >= 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"minutes must be ≥ 0 and warmup_fraction in [0, 1), got {self.minutes} and "
                             f"{self.warmup_fraction}")
        distributed.resolve_device(self.device)  # a device this machine lacks fails here, before any work
        for name in ("eval_batches", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.clip_norm > 0 or not self.weight_decay >= 0 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"clip_norm must be > 0, weight_decay ≥ 0 and betas in [0, 1), got {self.clip_norm}, "
                             f"{self.weight_decay} and {self.betas}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lr_factor(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Multiplier of cfg.lr at optimizer step `step` (0-based): linear warmup, then decay.

    With a time budget (cfg.minutes) both run over the `elapsed` seconds instead: warmup over the
    first warmup_fraction of the budget, decay to 0 at its end (warmup_fraction 0.5 and linear
    decay is cramming's triangle).
    """
    if cfg.minutes > 0:
        t = elapsed / (60.0 * cfg.minutes)
        if t < cfg.warmup_fraction:
            return t / cfg.warmup_fraction
        progress = (t - cfg.warmup_fraction) / (1.0 - cfg.warmup_fraction)
    elif step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    else:
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, progress)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


@functools.lru_cache(maxsize=None)  # asked at every step under precision "auto"
def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds this device up: CUDA with bf16, or a CPU with AVX512-BF16/AMX.

    On CPUs without those instructions bf16 matmuls are emulated and slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
