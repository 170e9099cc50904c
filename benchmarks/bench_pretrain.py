"""One BERT pretraining step (MLM + NSP): clozeformer vs transformers, same config, same batch.

    python benchmarks/bench_pretrain.py [--steps 6] [--warmup 2] [--precision fp32,bf16]

Config L4 H256 A4 F1024, vocab 30522, batch 32x128, dropout 0.1 in both; a step is
forward + loss + backward + AdamW + zero_grad. Both models run in this process, alternated
step by step, from the same initial weights. Prints median ms/step, tokens/s and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import transformers

from clozeformer.interop.hf import bert_config_to_hf, bert_state_to_hf
from clozeformer.models.bert import BertConfig, BertForPreTraining


def make_batch(b: int, t: int, vocab: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (b, t), generator=g)
    half = t // 2
    ids[:, 0], ids[:, half - 1], ids[:, -1] = 101, 102, 102  # [CLS] A [SEP] B [SEP]
    types = torch.zeros_like(ids)
    types[:, half:] = 1
    mask = torch.ones_like(ids)
    mask[: b // 8, -t // 4:] = 0  # a few padded rows
    pick = (torch.rand(b, t, generator=g) < 0.15) & mask.bool()
    pick[:, [0, half - 1, t - 1]] = False
    labels = torch.where(pick, ids, -100)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
            "next_sentence_label": torch.randint(0, 2, (b,), generator=g)}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def step_args(**extra) -> argparse.Namespace:
    """The options every step benchmark shares (+ `extra`: name -> (type, default)); applies --threads and
    prints the versions, thread count and CPU."""
    ap = argparse.ArgumentParser()
    for name, (kind, default) in {"steps": (int, 6), "warmup": (int, 2), "batch": (int, 32), "seq": (int, 128),
                                  "precision": (str, "fp32,bf16"), "threads": (int, 0), **extra}.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{cpu_name()}")
    return args


def race(models: dict, batch: dict, precision: str, steps: int, warmup: int, loss_fn=None) -> dict[str, float]:
    """Median seconds per training step (forward, loss, backward, AdamW) of each model.

    The models take turns step by step, so a slow spell of the machine hits them alike.
    `loss_fn(model, batch)` defaults to `model(**batch).loss`.
    """
    loss_fn = loss_fn or (lambda model, b: model(**b).loss)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for k, m in models.items()}  # as fit uses
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(warmup + steps):
        for name, model in models.items():
            model.train()
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(model, batch)
            loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def step_flops(models: dict, batch: dict, loss_fn=None) -> dict[str, float]:
    """Floating-point operations of one forward + backward of each model (matmuls and attention, as counted by
    torch.utils.flop_counter; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    loss_fn = loss_fn or (lambda model, b: model(**b).loss)
    out = {}
    for name, model in models.items():
        model.train()
        with FlopCounterMode(display=False) as counter:
            loss_fn(model, batch).backward()
        model.zero_grad(set_to_none=True)
        out[name] = float(counter.get_total_flops())
    return out


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one large square matmul on this machine's threads: the ceiling a step's matmuls can reach."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def print_race(rows: list[tuple[str, dict[str, float]]], tokens: int, flops: dict[str, float] | None = None) -> None:
    """The markdown table of `race` results (tokens per step given) and the ratio to transformers' bf16.

    With `flops` (step_flops), also each side's matmul GFLOP/s as a share of this machine's GEMM peak in that
    precision: how far from the ceiling each implementation runs, and what a given ratio would need.
    """
    peaks = {p: gemm_peak(torch.bfloat16 if p == "bf16" else torch.float32) for p, _ in rows} if flops else {}
    extra = " ours GFLOP/s (% of GEMM peak) | theirs GFLOP/s (%) |" if flops else ""
    print(f"\n| precision | clozeformer ms/step | tok/s | transformers ms/step | tok/s | ratio |{extra}")
    print("|---|---|---|---|---|---|" + "---|---|" * bool(flops))
    for precision, med in rows:
        ours_t, theirs_t = med["clozeformer"], med["transformers"]
        line = (f"| {precision} | {ours_t * 1e3:.0f} | {tokens / ours_t:,.0f} | {theirs_t * 1e3:.0f} | "
                f"{tokens / theirs_t:,.0f} | {theirs_t / ours_t:.2f}x |")
        if flops:
            rate = {k: flops[k] / med[k] for k in med}
            line += "".join(f" {rate[k] / 1e9:,.0f} ({100 * rate[k] / peaks[precision]:.0f}%) |"
                            for k in ("clozeformer", "transformers"))
        print(line)
    if flops:
        print("\nper step: " + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP" for k, v in flops.items()) + "; GEMM peak "
              + ", ".join(f"{p} {v / 1e9:,.0f} GFLOP/s" for p, v in peaks.items()))
    best_hf_bf16 = dict(rows).get("bf16", {}).get("transformers")
    if best_hf_bf16:
        best_ours = min(m["clozeformer"] for _, m in rows)
        print(f"\nours (best precision) vs transformers bf16: {best_hf_bf16 / best_ours:.2f}x")
        if flops and "bf16" in peaks:
            floor = flops["clozeformer"] / peaks["bf16"]  # every matmul at the GEMM peak, everything else free
            print(f"at the bf16 GEMM peak with nothing else costing time, ours would take {floor * 1e3:.0f} ms/step: "
                  f"at most {best_hf_bf16 / floor:.2f}x transformers bf16")


def main() -> None:
    args = step_args()
    torch.manual_seed(0)
    cfg = BertConfig.preset("mini", vocab_size=30522)
    ours = BertForPreTraining(cfg)
    hf_cfg = transformers.BertConfig(**{k: v for k, v in bert_config_to_hf(cfg).items() if k != "architectures"})
    theirs = transformers.BertForPreTraining(hf_cfg)
    theirs.load_state_dict(bert_state_to_hf(ours.state_dict()), strict=False)  # same start
    batch = make_batch(args.batch, args.seq, cfg.vocab_size, torch.Generator().manual_seed(0))
    tokens = args.batch * args.seq

    models = {"clozeformer": ours, "transformers": theirs}
    rows = [(precision, race(models, batch, precision, args.steps, args.warmup))
            for precision in args.precision.split(",")]
    print_race(rows, tokens, step_flops(models, batch))


if __name__ == "__main__":
    main()
