"""The training loop: one readable function (its settings and schedule: train/config.py).

`fit` drives any model whose forward takes a batch dict and returns an Output with `loss`,
over any data object with `train_batch(index) -> dict` and `eval_batches() -> list[dict]`.
AMP, accumulation, clipping, evaluation, checkpoints, exact resume and logging are all here.

Exact resume: a batch is a pure function of (seed, micro-batch index); dropout draws from
torch's global RNG, reseeded at every step from (seed, step, rank); the schedule is a pure
function of the step. N straight steps and k + resume + (N − k) steps give bit-identical
losses on CPU, also on W ranks under torchrun resumed on W ranks (train/distributed.py;
resumed on another number of ranks, only the dropout masks differ).

Faults: checkpoints are written atomically, so a killed run (even SIGKILL) resumes from
its last complete one. SIGINT and SIGTERM only raise a flag; between two steps the loop
saves a checkpoint at the current step and raises TrainingInterrupted (exit 130 / 143 from
the CLI); a second signal stops at once, leaving the last complete checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import signal
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from clozeformer.io import atomic_write
from clozeformer.tasks.metrics import Pooled
from clozeformer.train import distributed
from clozeformer.train.checkpoint import check_fresh, latest_checkpoint, list_checkpoints, restore
from clozeformer.train.config import TrainConfig, fast_bf16, lr_factor
from clozeformer.nn.functional import IGNORE

class TrainingError(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training between two steps, after saving a checkpoint there."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; saved {checkpoint}; "
                         f"continue with --resume (resume=True)")


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 relative: bool = False) -> list[dict]:
    """AdamW's groups: no weight decay on biases and norm weights (BERT's exclusion list), and with
    layer_decay < 1 the lr scaled by layer_decay ** (top - depth) per group (`lr_scale`; layer-wise
    decay, ELECTRA's fine-tuning recipe, Clark et al. 2020 App. A).

    Depth follows the order parameters are registered in: the i-th layer to appear (`…layers.N.…`,
    encoder then decoder) is depth i, anything before the first layer (embeddings) depth 0, anything
    after a layer one deeper than it (final norms, a decoder's embeddings, the task head).

    relative: one group per parameter, each matrix's lr also scaled by its RMS now over the median
    matrix's (floored at 1e-3, as Adafactor floors it). Adam moves every weight by about lr per
    step whatever its size; Adafactor, which T5 was trained with, moves it by lr × its RMS. T5's init
    gives its embeddings RMS 1 and its cross-attention queries (d·d_kv)^-½ (the 1/√d_kv its attention
    omits), so one Adam lr moves `mini`'s embeddings 16× more slowly than its other matrices and those
    queries 8× faster. (A fused q/k/v matrix gets one scale: groups hold whole parameters.)
    """
    groups: dict[tuple[bool, int], list] = {}
    layers: dict[str, None] = {}  # layer prefixes in order of appearance
    for name, p in model.named_parameters():
        if layer := re.match(r"(.*\blayers\.\d+)\.", name):
            layers.setdefault(layer[1])
            depth = len(layers)
        else:
            depth = len(layers) + bool(layers)
        if p.requires_grad:  # one lr: BERT's two groups, as checkpoints from before layer decay hold them
            groups.setdefault((p.ndim >= 2, depth if layer_decay != 1.0 else 0), []).append(p)
    top = max((depth for _, depth in groups), default=0)
    out = [{"params": params, "weight_decay": weight_decay if decays else 0.0,
            "lr_scale": layer_decay ** (top - depth)}
           for (decays, depth), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]
    if not relative:
        return out
    rms = {p: max(_rms(p), 1e-3) for group in out for p in group["params"] if p.ndim >= 2}
    median = statistics.median(rms.values()) if rms else 1.0
    return [{**group, "params": [p], "lr_scale": group["lr_scale"] * rms.get(p, median) / median}
            for group in out for p in group["params"]]


@torch.no_grad()
def _rms(p: Tensor) -> float:
    full = p.full_tensor() if hasattr(p, "full_tensor") else p  # an FSDP shard: the whole parameter's
    return full.float().pow(2).mean().sqrt().item()


def _autocast(device: torch.device, precision: str):
    bf16 = precision == "bf16" or precision == "auto" and fast_bf16(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """A batch onto the training device; to CUDA through pinned memory, without waiting for the copy."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(model: nn.Module, batches: list[dict[str, Tensor]], metrics_fn: Callable, device: torch.device,
             precision: str = "fp32") -> dict[str, float]:
    """Averages of metrics_fn's (sum, count) pairs over `batches` (and its Pooled metrics over all
    of them); model left in eval mode."""
    model.eval()
    sums: dict[str, list[float]] = {}
    pooled: dict[str, tuple[Callable, list]] = {}
    with torch.no_grad(), _autocast(device, precision):
        for batch in batches:
            batch = to_device(batch, device)
            for key, value in metrics_fn(model(**batch), batch).items():
                if isinstance(value, Pooled):
                    pooled.setdefault(key, (value.fn, []))[1].append(value.tensors)
                    continue
                acc = sums.setdefault(key, [0.0, 0.0])
                acc[0] += float(value[0])
                acc[1] += float(value[1])
    out = {k: s / n for k, (s, n) in sums.items() if n > 0}
    out.update({k: float(fn(*(torch.cat(parts) for parts in zip(*chunks)))) for k, (fn, chunks) in pooled.items()})
    return out


class MetricsLog:
    """metrics.jsonl in the run directory, written by rank 0 only (enabled).

    On resume, lines after the checkpoint are dropped, and so is a last line torn by a killed run.
    """

    def __init__(self, path: Path, resume_step: int | None, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.rows: list[dict] = []
        if not enabled:
            return
        if resume_step is not None and path.exists():
            try:
                text = path.read_text(encoding="utf-8")
                complete = text[: text.rfind("\n") + 1]  # only newline-terminated lines were fully written
                rows = [json.loads(line) for line in complete.splitlines()]
                self.rows = [r for r in rows if r["step"] <= resume_step]
            except (UnicodeDecodeError, ValueError, TypeError, KeyError) as e:  # bytes, JSON, a row without a step
                raise TrainingError(f"{path}: not a metrics log this run wrote ({type(e).__name__}: {e}); move it "
                                    "aside to resume (the checkpoints do not depend on it)") from None
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


class StopSignals:
    """While active, SIGINT and SIGTERM only set `signum`, so the loop can stop between steps.

    A second signal raises KeyboardInterrupt at once, unless it comes within ECHO seconds of the first: under
    torchrun a Ctrl-C (the terminal signals the whole process group) or a scheduler's SIGTERM to every process
    reaches each rank twice, directly and forwarded by torchrun, and stopped it without a checkpoint. Handlers
    can only be installed from the main thread; elsewhere this does nothing and signals keep their usual effect.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    ECHO = 2.0  # seconds

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first = 0.0
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if time.monotonic() - self._first < self.ECHO:
                return  # the same stop, delivered twice
            raise KeyboardInterrupt
        self.signum, self._first = signum, time.monotonic()


def dropout_seed(seed: int, step: int, rank: int) -> int:
    """The global RNG's seed for optimizer step `step` on `rank`: dropout then needs no saved RNG state."""
    # 5: a purpose tag apart from data/pretrain.py's 1-4; ints (unlike str) hash alike in every process
    return hash((seed, 5, step, rank)) & 0x7FFF_FFFF_FFFF_FFFF


def plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("eval", "o-")):
        pts = [(r["step"], r["loss"]) for r in rows if r["split"] == split and "loss" in r]
        if pts:
            ax.plot(*zip(*pts), style, label=f"{split} loss", markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def count_tokens(batch: dict[str, Tensor]) -> tuple[int, int, int]:
    """(encoder tokens, all real tokens, all positions) of a batch; the decoder's count for seq2seq.

    A mask holds 0 on padding (1, or a packed row's segment ids, elsewhere); a decoder without
    its own mask counts its labelled positions.
    """
    mask = batch.get("attention_mask")
    encoder = int(torch.count_nonzero(mask)) if mask is not None else batch["input_ids"].numel()
    real, positions = encoder, batch["input_ids"].numel()
    if "decoder_input_ids" in batch:
        dec = batch.get("decoder_attention_mask")
        real += int(torch.count_nonzero(dec)) if dec is not None else int((batch["labels"] != IGNORE).sum())
        positions += batch["decoder_input_ids"].numel()
    return encoder, real, positions


def _clock(kind: str) -> Callable[[], float]:
    if kind == "process":  # CPU seconds per thread: a busy 2-thread process advances it at wall speed
        return lambda: time.process_time() / torch.get_num_threads()
    return time.perf_counter


class NonFinite:
    """Steps whose loss was not finite (their updates skipped on the device, Parallel.step_if_finite),
    counted on the device so that a step never waits for the host to read its loss."""

    def __init__(self, device: torch.device) -> None:
        self._count = torch.zeros((), dtype=torch.long, device=device)
        self._first = torch.zeros((), dtype=torch.long, device=device)  # the first one's number; 0: none
        self.seen = 0  # how many the host has read so far

    def count(self, bad: Tensor, step: int) -> None:
        """bad: 0-dim bool, whether step number `step` was skipped."""
        self._first = torch.where(bad & (self._first == 0), step, self._first)
        self._count += bad

    def new(self) -> bool:
        """Read the count (a host sync): were there non-finite steps since the last read?"""
        n, self.seen = self.seen, int(self._count)
        return self.seen > n

    @property
    def first_step(self) -> int:
        return int(self._first)


def fit(model: nn.Module, data, cfg: TrainConfig, run_dir: str | Path, *, metrics_fn: Callable,
        resume: bool = False, tokenizer=None, extra_state: dict | None = None, progress: bool = True,
        on_eval: Callable[[int, dict[str, float], float], bool] | None = None) -> dict:
    """Train `model` on `data` for cfg.steps optimizer steps (or cfg.minutes); returns the final summary.

    metrics_fn(output, batch) -> {name: (sum, count)}; must include "loss". Under torchrun
    every rank calls fit alike; rank 0 alone logs and writes files. on_eval(step, metrics,
    progress), called after each evaluation once its row is in metrics.jsonl (progress: the
    share of the steps or of the time budget done), returns True to stop early: a checkpoint is
    saved at that step and fit returns (fine-tuning keeps the best model there; pretraining
    watches for the unigram plateau).

    With a time budget the elapsed seconds (of the loop, evaluation and saving included) are
    kept in each checkpoint, so a resumed run spends what is left; they are averaged over ranks
    so every rank follows one schedule and stops at the same step. The schedule then depends
    on the machine's speed, so such a run is not bit-reproducible.
    """
    run_dir = Path(run_dir)
    check_fresh(run_dir, resume, steps=None if cfg.minutes > 0 else cfg.steps)
    dist = distributed.init(cfg.device)
    device = dist.device
    _prepare(model, cfg, device)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    def make_opt(module: nn.Module) -> torch.optim.Optimizer:
        # the fused kernel updates all parameters in one pass (3x faster than the per-tensor loop on
        # CPU for small models); FSDP's sharded DTensors take the default implementation
        fused = device.type in ("cpu", "cuda") and not cfg.fsdp
        groups = param_groups(module, cfg.weight_decay, cfg.layer_decay, cfg.relative_lr)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)

    opt = make_opt(model)
    state = {"train_config": cfg.to_dict(), "model_config": model.config.to_dict(), **(extra_state or {})}

    step, elapsed = _resume(run_dir, state, model, opt, verbose=progress and dist.is_main) if resume else (0, 0.0)
    if cfg.minutes <= 0 and cfg.warmup_steps >= cfg.steps > 1 and dist.is_main:
        warnings.warn(f"warmup_steps {cfg.warmup_steps} ≥ steps {cfg.steps}: the learning rate never reaches its "
                      f"peak {cfg.lr:g} and never decays")
    par = distributed.parallelize(model, opt, make_opt, dist, fsdp=cfg.fsdp)
    # evaluation and checkpoints use the module itself; only the training step runs compiled
    net = torch.compile(par.net, dynamic=True) if cfg.compile else par.net
    log = MetricsLog(run_dir / "metrics.jsonl", step if resume else None, enabled=dist.is_main)
    # every rank evaluates the whole (small) eval set: single-process results, no reduction
    eval_set = data.eval_batches(cfg.eval_batches)
    summary: dict[str, Any] = {}
    if not resume and eval_set:
        summary["eval_before"] = evaluate(model, eval_set, metrics_fn, device, cfg.precision)
        log.write({"step": 0, "split": "eval", "elapsed_s": 0.0, **summary["eval_before"]})

    budget = 60.0 * cfg.minutes
    clock = _clock(cfg.clock)
    bar = tqdm(total=cfg.steps if not budget else round(budget), initial=step if not budget else round(elapsed),
               disable=not (progress and dist.is_main), desc="train", dynamic_ncols=True,
               unit="step" if not budget else "s")
    window, window_start = [0, 0, 0], time.perf_counter()  # encoder tokens, real tokens, positions
    nonfinite = NonFinite(device)
    clock_start, elapsed_start = clock(), elapsed
    with StopSignals() as stop:
        while step < cfg.steps and not (budget and elapsed >= budget):
            par.net.train()
            torch.manual_seed(dropout_seed(cfg.seed, step, dist.rank))
            lr = cfg.lr * lr_factor(step, cfg, elapsed)
            for group in par.opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)  # older checkpoints have none
            loss_sum, counts = _forward_backward(net, par, data, step, cfg, dist)
            # ranks agree on the mean loss (so skip alike), the global token counts, the mean elapsed time
            # and whether any rank was signalled: one all_reduce of the loss on the device, one of the rest
            loss_sum = distributed.mean_over_ranks(loss_sum, dist)
            *counts, elapsed, stopping = distributed.sum_over_ranks(
                [*counts, elapsed_start + clock() - clock_start, stop.signum is not None], dist)
            elapsed /= dist.world_size
            window = [a + b for a, b in zip(window, counts)]
            grad_norm = par.clip_grad_norm(cfg.clip_norm)
            nonfinite.count(par.step_if_finite(loss_sum), step + 1)
            par.opt.zero_grad(set_to_none=True)
            step += 1
            last = step == cfg.steps or bool(budget and elapsed >= budget)
            log_now = step % cfg.log_every == 0 or last
            eval_now = bool(eval_set) and (step % cfg.eval_every == 0 or last)
            save_now = step % cfg.save_every == 0 or last or stopping

            if (log_now or eval_now or save_now) and nonfinite.new() and cfg.nan_policy == "stop":
                bar.close()  # the host reads the step's results here, and only here
                kept = (f"checkpoints in {run_dir / 'checkpoints'} are intact" if list_checkpoints(run_dir) else
                        "no checkpoint was saved before it")
                raise TrainingError(f"non-finite loss at step {nonfinite.first_step}; stopped ({kept}); lower the "
                                    "learning rate or use nan_policy='skip'")
            if log_now and math.isfinite(loss_value := float(loss_sum)):
                tps = window[0] / max(time.perf_counter() - window_start, 1e-9)
                log.write({"step": step, "split": "train", "loss": loss_value, "lr": lr,
                           "grad_norm": float(grad_norm), "tokens_per_s": tps,
                           "real_frac": window[1] / max(window[2], 1), "elapsed_s": round(elapsed, 2)})
                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tps:,.0f}")
                window, window_start = [0, 0, 0], time.perf_counter()
            bar.update(1 if not budget else round(elapsed) - bar.n)
            early = False
            if eval_now:
                summary["eval"] = evaluate(model, eval_set, metrics_fn, device, cfg.precision)
                log.write({"step": step, "split": "eval", "elapsed_s": round(elapsed, 2), **summary["eval"]})
                if progress and dist.is_main:
                    bar.write(f"step {step}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in summary["eval"].items()),
                              file=sys.stderr)
                done = min(1.0, elapsed / budget) if budget else step / cfg.steps
                early = on_eval is not None and bool(on_eval(step, summary["eval"], done))
            if save_now or early:
                state["elapsed_s"] = elapsed
                saved_to = par.save(run_dir, step, state, tokenizer, cfg.keep_last)
                if dist.is_main:
                    plot_losses(log.rows, run_dir / "loss.png")
            if stopping and not last:  # never mid-step: the step just taken is in the checkpoint
                bar.close()
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, step, saved_to)
            if early:
                summary["stopped_early"] = True
                break
    bar.close()
    summary.update(steps=step, skipped_steps=nonfinite.seen, run_dir=str(run_dir), elapsed_s=round(elapsed, 1),
                   checkpoint=str(run_dir / "checkpoints" / f"step-{step:07d}"), plot=str(run_dir / "loss.png"))
    return summary


def _prepare(model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
    """The model on its device, its loss smoothed as cfg says (text-writing models only)."""
    if cfg.label_smoothing and not hasattr(model, "label_smoothing"):
        raise TrainingError(f"label_smoothing {cfg.label_smoothing:g}: only models that write text (T5, BART) "
                            f"have a loss to smooth, not {type(model).__name__}")
    if hasattr(model, "label_smoothing"):
        model.label_smoothing = cfg.label_smoothing
    model.to(device)
    model.untrained = ()  # weights load_model found missing are trained from here on (and exported)


def _resume(run_dir: Path, state: dict, model: nn.Module, opt: torch.optim.Optimizer, *,
            verbose: bool) -> tuple[int, float]:
    """Model and optimizer from the latest complete checkpoint (every rank reads all of it, whatever world
    size wrote it), which must belong to the same run; its step and elapsed seconds."""
    found = latest_checkpoint(run_dir)
    if found is None:
        raise TrainingError(f"--resume: no complete checkpoint under {run_dir / 'checkpoints'}")
    ckpt, saved = found
    _check_same(saved, state, ckpt)
    restore(ckpt, saved, model, opt)
    if verbose:
        print(f"resumed from step {saved['step']} ({ckpt})", file=sys.stderr, flush=True)
    return saved["step"], float(saved.get("elapsed_s", 0.0))


def _forward_backward(net: nn.Module, par, data, step: int, cfg: TrainConfig,
                      dist: distributed.Dist) -> tuple[Tensor, list[int]]:
    """One optimizer step's forward and backward passes over this rank's rows of its `grad_accum`
    micro-batches (gradients synchronised on the last): the mean loss, on the device, and the
    token counts (encoder tokens, real tokens, positions)."""
    loss_sum, counts = torch.zeros((), device=dist.device), [0, 0, 0]
    for micro in range(cfg.grad_accum):
        batch = distributed.shard(data.train_batch(step * cfg.grad_accum + micro), dist)
        counts = [a + b for a, b in zip(counts, count_tokens(batch))]
        batch = to_device(batch, dist.device)
        with par.grad_sync(micro == cfg.grad_accum - 1):
            with _autocast(dist.device, cfg.precision):
                loss = net(**batch)  # scalar: this rank's mean loss
            (loss / cfg.grad_accum).backward()
        loss_sum = loss_sum + loss.detach().float() / cfg.grad_accum
    return loss_sum, counts


def _check_same(saved: dict, now: dict, ckpt: Path) -> None:
    """Resuming with a different model or training setup would silently train something else."""
    now = json.loads(json.dumps(now))  # compare as saved: tuples become lists
    # checkpoints hold the full model and optimizer, so DDP <-> FSDP may change on resume too
    ignore = {"steps", "minutes", "eval_every", "save_every", "keep_last", "log_every", "device", "eval_batches", "fsdp",
              "compile"}
    # a TrainConfig field newer than the checkpoint reads as its default (the behaviour it was trained with)
    known = {"train_config": json.loads(json.dumps(TrainConfig().to_dict()))}
    for section in ("model_config", "train_config", "data"):
        old, new = {**known.get(section, {}), **saved.get(section, {})}, now.get(section, {})
        # a run extended (more steps) may warm up over its share of the new length (the recipe's warmup is one)
        extended = section == "train_config" and old.get("steps") != new.get("steps")
        skip = ignore | ({"warmup_steps"} if extended else set())
        diff = sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))
        if diff:
            raise TrainingError(f"cannot resume from {ckpt}: {section} changed ({', '.join(diff)}: "
                                f"{[old.get(k) for k in diff]} -> {[new.get(k) for k in diff]})")


__all__ = ["Pooled", "TrainConfig", "TrainingError", "TrainingInterrupted", "evaluate", "fit", "lr_factor"]
