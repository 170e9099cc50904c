"""`--compile` against eager: each family's pretraining step through the real training loop.

    python benchmarks/bench_compile.py [--config mini] [--steps 30] [--families bert,electra,bart,t5]

Each family pretrains `--steps` steps on the demo corpus (the standard library's documentation;
one tokenizer per family, trained once), rows of 128 tokens × 32, the small-budget recipe, in
the precision the CPU runs natively, once eager and once with TrainConfig(compile=True), from
the same weights and batches. A step's time is read from metrics.jsonl (tokens/s of each
10-step window); the first window of the compiled run holds the compilation and is reported
apart. Prints the CPU capability, then a markdown table with compiled/eager as a ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from clozeformer.demo import stdlib_documents, write_corpus
from clozeformer.train.config import fast_bf16
from clozeformer.train.pretrain import pretrain

sys.path.insert(0, str(Path(__file__).parent))
from small_budget import machine  # noqa: E402


def run(family: str, compiled: bool, args, corpus: Path, out: Path) -> dict:
    run_dir = out / f"{family}-{'compiled' if compiled else 'eager'}"
    tok = out / f"{family}-eager" / "model" if compiled else None
    start = time.perf_counter()
    pretrain([corpus], model=family, config=args.config, run_dir=run_dir, tokenizer=tok, blank_line_docs=True,
             max_len=128, batch_size=32, cache_dir=out / "cache", progress=False,
             train=dict(steps=args.steps, log_every=10, eval_every=10 ** 9, eval_batches=1, save_every=10 ** 9,
                        precision=args.precision, compile=compiled))
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in rows if r["split"] == "train"]
    return {"first_window_s": 10 * 128 * 32 / tps[0], "tokens_per_s": statistics.median(tps[1:]),
            "wall_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="mini")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--families", default="bert,electra,bart,t5")
    ap.add_argument("--precision", help="default: bf16 where the CPU has native bf16, else fp32")
    ap.add_argument("--out", default="benchmarks/results/compile")
    args = ap.parse_args()
    if args.steps < 20:
        raise SystemExit("--steps must be ≥ 20 (the first 10-step window holds the compilation)")
    args.precision = args.precision or ("bf16" if fast_bf16(torch.device("cpu")) else "fp32")
    print(machine(), "->", args.precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(out / "corpus.txt", stdlib_documents(1_000_000))
    print(f"\n{args.config}, {args.steps} steps of 32 × 128 tokens, {args.precision}\n")
    print("| family | eager tokens/s | compiled tokens/s | compiled / eager | first 10 steps, eager / compiled |")
    print("|---|---|---|---|---|")
    for family in args.families.split(","):
        e, c = run(family, False, args, corpus, out), run(family, True, args, corpus, out)
        print(f"| {family} | {e['tokens_per_s']:,.0f} | {c['tokens_per_s']:,.0f} | "
              f"{c['tokens_per_s'] / e['tokens_per_s']:.2f}× | {e['first_window_s']:.1f} s / {c['first_window_s']:.1f} s |",
              flush=True)


if __name__ == "__main__":
    main()
