"""Scale-out with torch.distributed, launched by torchrun: ranks, the process group, sharding.

    torchrun --nproc_per_node 4 -m clozeformer pretrain ...

torchrun gives every process WORLD_SIZE, RANK and LOCAL_RANK (and the rendezvous address);
without them everything here is a no-op on one process, so `fit` reads the same either way.

Scale-out leaves the global batch alone: rank r of W trains on rows [r·B/W, (r+1)·B/W) of
micro-batch `index`, the very batch one process would train on. Gradients are averaged over
ranks (DDP, or FSDP2's reduce-scatter), which equals the gradient of the global batch when
every rank's loss is a mean over the same number of terms (packed MLM rows predict a fixed
count each: objectives/mlm.py); logged losses are the mean over ranks. Checkpoints hold the
full, unsharded model and optimizer, so a run saved on W ranks resumes on any other number.

Two ways to spread the model:
- DDP (default): a full replica per rank, gradients all-reduced after backward.
- FSDP2 (`fully_shard`, TrainConfig.fsdp): parameters, gradients and AdamW moments sharded
  over ranks, one unit per block of every nn.ModuleList plus the root (which keeps tied
  embeddings and heads together). Rank 0 keeps an unsharded CPU copy to write checkpoints.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as td
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

from clozeformer.train.checkpoint import save_checkpoint


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank among world_size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun); needs no process group."""
    return int(os.environ.get("RANK", "0"))


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """'auto' is CUDA when present, else CPU; under torchrun each process takes GPU LOCAL_RANK.
    A device this machine lacks, or a name torch does not know, is a one-line ValueError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world_size > 1:
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r} is not a device name; allowed: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: CUDA is not available here (torch {torch.__version__}); use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type not in ("cpu", "mps") or device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} is not available here; allowed: auto, cpu, cuda, cuda:N")
    return device


def init(device: str = "auto") -> Dist:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) once; later calls only report it.

    The group is torn down at interpreter exit, so `pretrain` and `fit` may both call this.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if td.is_initialized():  # set up by torchrun's caller, or by an earlier init()
        world, rank = td.get_world_size(), td.get_rank()
    dev = resolve_device(device, local, world)
    if world > 1 and not td.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        td.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                              device_id=dev if dev.type == "cuda" else None)
        atexit.register(_teardown)
    return Dist(rank, world, local, dev)


def _teardown() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.world_size > 1:
        td.barrier()


@contextlib.contextmanager
def main_first(dist: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (training a tokenizer, building a cache); the others after it."""
    if not dist.is_main:
        barrier(dist)
    yield
    if dist.is_main:
        barrier(dist)


def sum_over_ranks(values: list[float], dist: Dist) -> list[float]:
    """Element-wise sums over ranks of a few floats (one float64 all_reduce); unchanged on one process."""
    if dist.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)  # [len(values)]
    td.all_reduce(t)
    return t.tolist()


def mean_over_ranks(value: Tensor, dist: Dist) -> Tensor:
    """The mean over ranks of a 0-dim tensor, on the device (not read by the host); unchanged on one process."""
    if dist.world_size == 1:
        return value
    value = value.clone()
    td.all_reduce(value)
    return value / dist.world_size


def shard(batch: dict[str, Tensor], dist: Dist) -> dict[str, Tensor]:
    """This rank's rows [r·B/W, (r+1)·B/W) of a global batch whose every tensor is [B, …]."""
    if dist.world_size == 1:
        return batch
    n = next(iter(batch.values())).shape[0]
    if n % dist.world_size:
        raise ValueError(f"batch size {n} is not divisible by the world size {dist.world_size}: every rank "
                         f"takes an equal share of the global batch; choose a batch size that is a multiple "
                         f"of the number of processes")
    k = n // dist.world_size
    return {key: v[dist.rank * k: (dist.rank + 1) * k] for key, v in batch.items()}


class LossOf(nn.Module):
    """model(**batch).loss as a module: what DDP wraps, so it traces gradients from the loss alone
    (and not from outputs such as BERT's pooled vector, which MLM-only pretraining leaves unused)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: Tensor) -> Tensor:
        return self.model(**batch).loss


@dataclass
class Parallel:
    """The model as this rank trains it.

    net(**batch) -> loss, through DDP or FSDP2 as set up; model: the module itself (sharded in
    place under FSDP), for evaluation; shadow: FSDP on rank 0 only, an unsharded CPU copy of
    model and optimizer that checkpoints are written from.
    """

    net: nn.Module
    model: nn.Module
    opt: torch.optim.Optimizer
    dist: Dist
    fsdp: bool = False
    shadow: tuple[nn.Module, torch.optim.Optimizer] | None = None

    def grad_sync(self, on: bool):
        """Context for one forward and backward: reduce gradients across ranks only when `on` (the
        last micro-batch of a step)."""
        if isinstance(self.net, nn.parallel.DistributedDataParallel) and not on:
            return self.net.no_sync()
        if self.fsdp:
            self.model.set_requires_gradient_sync(on)
        return contextlib.nullcontext()

    def clip_grad_norm(self, max_norm: float) -> Tensor:
        """Clip to max_norm; the global gradient norm (before clipping, a 0-dim tensor on the device, not
        read), the same on every rank."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def step_if_finite(self, loss: Tensor) -> Tensor:
        """One optimizer step, skipped where `loss` (0-dim, the same on every rank) is not finite; returns
        that verdict (0-dim bool, True = skipped) on the device. The fused AdamW skips on the device (its
        `found_inf`, as torch.amp.GradScaler drives it: parameters, moments and step count stay as they
        were) without the host reading the loss; FSDP's unfused optimizer needs the host's answer."""
        bad = ~torch.isfinite(loss)
        if self.opt.defaults.get("fused"):
            self.opt.found_inf, self.opt.grad_scale = bad.float(), None
            self.opt.step()
        elif not bool(bad):
            self.opt.step()
        return bad

    def save(self, run_dir: Path, step: int, state: dict, tokenizer, keep_last: int) -> Path:
        """Write checkpoint `step` from rank 0 while the others wait; every rank must call this."""
        model, opt = self.model, self.opt
        if self.fsdp:  # every rank joins the gathers, tensor by tensor; rank 0 keeps them in its full copy
            keep = self.shadow is not None
            weights = {k: _full(v, keep) for k, v in model.state_dict().items()}
            moments = opt.state_dict()
            moments["state"] = _each_state(moments["state"], lambda i, v: _full(v, keep))
            if keep:
                model, opt = self.shadow
                model.load_state_dict(weights)
                opt.load_state_dict(moments)
        path = Path(run_dir) / "checkpoints" / f"step-{step:07d}"
        if self.dist.is_main:
            path = save_checkpoint(run_dir, step, model, opt, state, tokenizer, keep_last)
        barrier(self.dist)
        return path


def parallelize(model: nn.Module, opt: torch.optim.Optimizer, make_opt: Callable[[nn.Module], torch.optim.Optimizer],
                dist: Dist, *, fsdp: bool = False) -> Parallel:
    """Spread `model` (on dist.device, restored if resuming) over the ranks; one process keeps it as is.

    make_opt builds an optimizer for a module; FSDP needs a new one over the sharded
    parameters, into which `opt`'s state (a resumed run's) is sharded. FSDP shards `model`
    in place; rank 0 then holds a full CPU copy of model and optimizer state for checkpoints.
    """
    if dist.world_size == 1:
        if fsdp:
            warnings.warn("--fsdp shards the model over torchrun's processes; this run has one, so it trains unsharded "
                          "(launch with torchrun --nproc_per_node N)")
        return Parallel(LossOf(model), model, opt, dist)
    if not fsdp:
        # static_graph: every step uses the same parameters, so DDP finds the ones the loss never
        # touches (BERT's pooler without NSP) in the first step and need not wait for them, nor
        # walk the autograd graph every step as find_unused_parameters=True does
        net = nn.parallel.DistributedDataParallel(
            LossOf(model), device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            static_graph=True)
        return Parallel(net, model, opt, dist)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world_size,))  # all ranks, on this run's device type
    full = opt.state_dict()  # index-keyed, unsharded: empty for a fresh run
    shadow = None
    if dist.is_main:
        copied = copy.deepcopy(model).cpu()
        shadow = (copied, make_opt(copied))
    for blocks in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:
        for block in blocks:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)  # the root unit: embeddings, heads, tied weights
    opt = make_opt(model)
    params = [p for group in opt.param_groups for p in group["params"]]  # index order of state_dict()
    full["state"] = _each_state(full["state"], lambda i, v: _shard_like(v, params[i]))
    opt.load_state_dict(full)
    return Parallel(LossOf(model), model, opt, dist, fsdp=True, shadow=shadow)


def _each_state(state: dict[int, dict[str, Tensor]], fn: Callable[[int, Tensor], Tensor]) -> dict:
    """fn(param index, tensor) over an optimizer state, in sorted order: each call may be a
    collective, and a loaded checkpoint's key order differs between processes (safetensors)."""
    return {i: {k: fn(i, state[i][k]) for k in sorted(state[i])} for i in sorted(state)}


def _full(t: Tensor, keep: bool) -> Tensor | None:
    """The unsharded value of a DTensor (an all-gather every rank joins), on the CPU if `keep`."""
    full = t.full_tensor() if isinstance(t, DTensor) else t
    return full.cpu() if keep else None


def _shard_like(t: Tensor, param: Tensor) -> Tensor:
    """Shard an optimizer state tensor the way its parameter is; scalars (AdamW's step) stay whole."""
    if isinstance(param, DTensor) and t.shape == param.shape:
        return distribute_tensor(t.to(param.device), param.device_mesh, param.placements)
    return t


__all__ = ["Dist", "LossOf", "Parallel", "barrier", "env_rank", "init", "main_first", "parallelize", "resolve_device",
           "shard", "sum_over_ranks"]
