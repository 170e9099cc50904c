"""Training checkpoints: written atomically, verified on load, rotated.

    run_dir/checkpoints/step-0000100/
        config.json, model.safetensors, tokenizer.json …   the model, in HF layout (loads anywhere)
        optimizer.safetensors                             AdamW moments + RNG states
        trainer_state.json                                step, configs, sha256 of every file

A checkpoint is assembled in a temporary directory and renamed into place, so a killed run
leaves only complete checkpoints, and a failed save (a full disk) stops the run with a
CheckpointError that names the file and leaves no temporary directory behind. A checkpoint
whose files do not match the checksums in its trainer_state.json is skipped with a warning
and the previous one is used. trainer_state.json names files: each must be a plain name
inside the checkpoint (no separators, no "..", no symlink out), or the checkpoint is refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clozeformer.interop.model_dir import load_weights, save_model
from clozeformer.io import load_tensors, member, read_json, save_tensors, write_json

try:
    import fcntl
except ImportError:  # Windows: runs there are not held
    fcntl = None

STATE_FILE = "trainer_state.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "optimizer.safetensors")
_NAME = re.compile(r"step-(\d{7,})")  # step-{step:07d}


class CheckpointError(OSError):
    """A checkpoint that could not be written; the checkpoints before it are untouched."""


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


_IMPLEMENTATION = ("fused", "foreach", "capturable", "differentiable")  # how this optimizer steps, not its state


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Restore `opt` from a checkpoint's tensors and param_groups, keeping its own implementation flags: an FSDP
    run's groups said fused=False, and a DDP or one-process resume then stepped unfused with a fused scaler."""
    groups = [{**g, **{k: now[k] for k in _IMPLEMENTATION if k in now}} for g, now in zip(groups, opt.param_groups)] \
        + groups[len(opt.param_groups):]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("state."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer,
                    state: dict[str, Any], tokenizer=None, keep_last: int = 2) -> Path:
    """Write run_dir/checkpoints/step-NNNNNNN; on failure raise CheckpointError, leaving the earlier ones intact.

    keep_last > 0 then deletes all but the keep_last newest checkpoints up to this step
    (never this one; checkpoints of later steps, from a run this one resumed before, stay).
    """
    root = Path(run_dir) / "checkpoints"
    name = f"step-{step:07d}"
    final = root / name
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
        save_model(model, tmp, tokenizer)
        tensors, groups = optimizer_tensors(opt)
        tensors["rng.torch_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.torch_cuda"] = torch.cuda.get_rng_state()
        save_tensors(tmp / "optimizer.safetensors", tensors)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(tmp / STATE_FILE, {**state, "step": step, "param_groups": groups, "files": files})
        _swap_in(tmp, final)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise CheckpointError(_failure(root, name, e)) from e
        raise
    _fsync_dir(root)
    if keep_last > 0:
        older = [c for c in list_checkpoints(run_dir) if _step_of(c) < step]
        for old in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename tmp to final; an existing final (the same step saved again) is replaced, or kept on failure."""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = tmp.with_name(tmp.name + ".old")
    os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _failure(root: Path, name: str, e: OSError) -> str:
    """One line: which checkpoint and file failed, why, and what is still there."""
    what = f"{Path(e.filename).name}: {e.strerror}" if e.filename and e.strerror else str(e)
    intact = [c.name for c in list_checkpoints(root.parent)] if root.is_dir() else []
    if not intact:
        return f"checkpoint {name} not saved: {what}; no earlier checkpoint in {root}"
    return f"checkpoint {name} not saved: {what}; earlier checkpoints intact in {root}: {', '.join(intact)}"


def _fsync_dir(path: Path) -> None:
    """Make the renames in path durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _step_of(ckpt: Path) -> int:
    return int(_NAME.fullmatch(ckpt.name)[1])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """run_dir/checkpoints/step-N directories (not symlinks, not temporaries), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=_step_of)


def verify(ckpt: Path) -> dict[str, Any]:
    """trainer_state.json of a complete, uncorrupted checkpoint, else ValueError (or OSError)."""
    state_file = ckpt / STATE_FILE
    state = read_json(state_file, kind=dict)
    files, step = state.get("files"), state.get("step")
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        raise ValueError(f"{state_file}: 'files' must map file names to sha256 digests")
    absent = [n for n in REQUIRED_FILES if n not in files]
    if absent:
        raise ValueError(f"{state_file}: no checksum for {', '.join(absent)}")
    if not isinstance(step, int) or isinstance(step, bool) or ckpt.name != f"step-{step:07d}":
        raise ValueError(f"{state_file}: step {step!r} does not match the directory name {ckpt.name}")
    if not isinstance(state.get("param_groups"), list):
        raise ValueError(f"{state_file}: 'param_groups' must be a list")
    for name, digest in files.items():
        path = member(ckpt, name)  # refuses "../x", "/etc/x", "a/b", symlinks out
        if not path.is_file() or _sha256(path) != digest:
            raise ValueError(f"{path}: missing or corrupted (checksum mismatch)")
    return state


def _state(ckpt: Path) -> dict[str, Any] | None:
    """A checkpoint's trainer_state.json where it reads and names the directory's step (its files unchecked: an
    empty or damaged directory says nothing of the run; restoring verifies the rest)."""
    try:
        state = read_json(ckpt / STATE_FILE, kind=dict)
    except (ValueError, OSError):
        return None
    return state if state.get("step") == _step_of(ckpt) else None


def _described(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(checkpoint, its state) for each whose state reads, oldest first."""
    return [(c, state) for c in list_checkpoints(run_dir) if (state := _state(c)) is not None]


def _run_kind(state: dict[str, Any]) -> str:
    """What wrote a checkpoint: a fine-tuning (its data names the task), a translation (its stage) or a
    pretraining run."""
    data = state.get("data") if isinstance(state.get("data"), dict) else {}
    return "fine-tuning" if "task" in data else "translation" if "stage" in state else "pretraining"


def run_section(run_dir: Path, section: str) -> dict[str, Any]:
    """One section ("train_config", "model_config", …) of the newest readable checkpoint's state in `run_dir` ({}
    where none reads): what a run resumed without its options keeps of its own."""
    described = _described(run_dir)
    saved = described[-1][1].get(section) if described else None
    return saved if isinstance(saved, dict) else {}


def run_budget(run_dir: Path) -> dict[str, Any]:
    """The steps and minutes the run in `run_dir` was given: a run resumed without a budget keeps its own."""
    saved = run_section(run_dir, "train_config")
    return {k: saved[k] for k in ("steps", "minutes") if k in saved}


def check_fresh(run_dir: Path, resume: bool, *, to_resume: bool = True, steps: int | None = None,
                run: str | None = None, per_epoch: int | None = None) -> None:
    """Checked before any work: a new run may not overwrite another's checkpoints or saved models
    (model/, best/, last/), and --resume needs a checkpoint to continue (where `to_resume`), of the
    same kind of `run` ("pretraining", "fine-tuning", "translation") and not past `steps` (`per_epoch`
    given: said in epochs)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir} is a file, not a directory")
    found = list_checkpoints(run_dir)
    if resume:
        described = _described(run_dir)  # an empty or damaged directory says nothing of the run
        if to_resume and not described:
            raise ValueError(f"--resume: {run_dir} holds no checkpoint to continue; leave out --resume to start "
                             "a run there")
        if described and run is not None and (kind := _run_kind(described[-1][1])) != run:
            raise ValueError(f"--resume: {run_dir} holds a {kind} run; this command continues {run} runs (give "
                             "the run directory it wrote)")
        if described and steps is not None and (step := _step_of(described[-1][0])) > steps:
            if per_epoch:
                raise ValueError(f"--resume: {run_dir} is at step {step} ({step / per_epoch:g} epochs of {per_epoch} "
                                 f"steps), past epochs {steps // per_epoch}; give --epochs {step // per_epoch + 1} "
                                 "or more to train further")
            raise ValueError(f"--resume: {run_dir} is at step {step}, past steps {steps}; give --steps above {step} "
                             "to train further")
        return
    if (run_dir / "config.json").is_file():  # a model directory, not a run's: the run would write into it
        raise ValueError(f"--run-dir {run_dir} is a model directory (config.json); give a new directory for the run")
    saved = [f"{name}/" for name in ("model", "best", "last") if (run_dir / name).exists()]
    if found or saved:
        what = f"checkpoints up to {found[-1].name}" if found else ", ".join(saved)
        raise ValueError(f"{run_dir} already holds a run ({what}); continue it with --resume, or give another "
                         "--run-dir")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for one run (rank 0; made if new, and removed again if the run leaves it empty): another
    process running into it is refused before any work, as is a directory that takes no files. Two runs in one
    directory overwrote each other's tokenizer and checkpoints and both said they had finished."""
    from clozeformer.train.distributed import env_rank  # distributed imports this module

    run_dir = Path(run_dir)
    if env_rank() != 0 or (run_dir.exists() and not run_dir.is_dir()) or fcntl is None:
        yield  # not a directory: check_fresh says so
        return
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{run_dir} is in use by another run (a clozeformer process is training there); wait "
                             "for it to end, or give another --run-dir") from None
        for d in (run_dir, run_dir / "checkpoints"):  # a read-only one failed at the first save, the work lost
            if d.is_dir():
                try:
                    tempfile.TemporaryFile(dir=d).close()
                except OSError as e:
                    raise OSError(f"cannot write into {d} ({e.strerror})") from None
        yield
    finally:
        os.close(fd)  # releases the lock
        if made:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty: a run refused before its first file


def holds_run_dir(fn: Callable) -> Callable:
    """`fn` (pretrain, finetune, train_translation) runs holding its `run_dir` argument (run_lock)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def held(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with run_lock(bound.arguments["run_dir"]):
            return fn(*args, **kwargs)

    return held


def latest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies; corrupted newer ones are skipped with a warning."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            return ckpt, verify(ckpt)
        except (ValueError, OSError) as e:
            warnings.warn(f"skipping checkpoint {ckpt.name}: {e}", stacklevel=2)
    return None


def restore(ckpt: Path, state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Model, optimizer and RNG state from a checkpoint that `verify` accepted."""
    missing = load_weights(model, ckpt)  # an ELECTRA pair: generator/ as well
    if missing:
        raise ValueError(f"{ckpt}: checkpoint lacks parameters {missing[:4]}")
    tensors = load_tensors(ckpt / "optimizer.safetensors")
    try:
        load_optimizer(opt, tensors, state["param_groups"])
        torch.set_rng_state(tensors["rng.torch_cpu"])
    except (KeyError, TypeError, IndexError, RuntimeError) as e:
        raise ValueError(f"{ckpt}: optimizer state does not fit this model ({type(e).__name__}: {e})") from None
    if "rng.torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"])
