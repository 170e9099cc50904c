"""T5 on Multi30k EN→DE, text to text: `translate English to German: …` → German, from scratch.

    python benchmarks/t5_multi30k.py [--config tiny] [--train-minutes 24] [--pretrain-steps 0] [--batch-size 64]
    torchrun --standalone --nproc_per_node 2 benchmarks/t5_multi30k.py ...   # one single-threaded rank per core

1. One Unigram tokenizer (T5 layout: pad 0, eos 1, unk 2, 100 sentinels on top) trained
   on the English and German sides of the training set.
2. Optionally (--pretrain-steps > 0) span-corruption pretraining on both sides first.
3. Supervised training on the prefixed pairs (one `fit`: eval, checkpoints, plots; bf16 where the CPU
   runs it natively, else fp32 — the CPU's capability is printed first),
   for as many steps as fit `--train-minutes` 2-core-minutes of this process's CPU time
   (calibrated on a few steps first; CPU time, so other jobs on the machine do not count;
   under torchrun, the CPU time of all ranks together).
4. The final model saved to RUN_DIR/model (score it again with `clozeformer generate`), then
   sacreBLEU on test2016 with greedy and beam-4 decoding, and the wall and CPU time of each
   phase (CPU seconds / 2 = minutes of the 2-core machine).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning would be billed as CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from clozeformer.data.pairs import PairData, read_pairs  # noqa: E402
from clozeformer.interop.model_dir import load_model, save_model  # noqa: E402
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration  # noqa: E402
from clozeformer.tokenizer import Tokenizer  # noqa: E402
from clozeformer.train import distributed  # noqa: E402
from clozeformer.train.config import TrainConfig, fast_bf16  # noqa: E402
from clozeformer.train.loop import fit  # noqa: E402
from clozeformer.train.pretrain import pretrain, seq2seq_metrics  # noqa: E402
from clozeformer.train.translate import bleu  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from small_budget import machine  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"
PREFIX = "translate English to German: "  # T5's own prefix for this task (Raffel et al., App. D)


def calibrate(model, data, precision: str, cpu_seconds: float, dist: distributed.Dist, probe: int = 16) -> int:
    """Steps that fit `cpu_seconds` of CPU time (all ranks together), from the mean of `probe` steps on a
    copy, each rank on its share of the batch (the first two, warm-up, left out; bucketed batches vary in
    length, so the mean and not the median)."""
    trial = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(trial.parameters(), lr=1e-4, fused=True)
    cost = []
    for i in range(probe):
        start = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = trial(**distributed.shard(data.train_batch(i), dist)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        cost.append(time.process_time() - start)
    (per_step,) = distributed.sum_over_ranks([statistics.mean(cost[2:])], dist)
    return max(10, int(cpu_seconds * 0.95 / per_step))  # 5% for evaluation and checkpoints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default="runs/bench-t5-multi30k")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--pretrain-steps", type=int, default=0)
    ap.add_argument("--train-minutes", type=float, default=24.0, help="2-core-minutes of CPU for training")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count instead of --train-minutes")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--precision", choices=["fp32", "bf16"],
                    help="default: bf16 where the CPU runs it natively (AVX512-BF16/AMX), else fp32")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--buckets", type=int, default=64,
                    help="length-bucketed batches, pools of this many batches (0: uniform batches)")
    ap.add_argument("--seed", type=int, default=0, help="model init, batch order and dropout")
    ap.add_argument("--test-rows", type=int, default=0, help="score only the first N test pairs (0: all 1,000)")
    args = ap.parse_args()
    args.precision = args.precision or ("bf16" if fast_bf16(torch.device("cpu")) else "fp32")
    print(machine(), "->", args.precision, flush=True)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    train_pairs = read_pairs(DATA / "train.jsonl", "en", "de")
    dev_pairs = read_pairs(DATA / "dev.jsonl", "en", "de")
    test_pairs = read_pairs(DATA / "test2016.jsonl", "en", "de")
    test_pairs = test_pairs[: args.test_rows] if args.test_rows else test_pairs
    dist = distributed.init("cpu")
    say = print if dist.is_main else (lambda *a, **k: None)
    say(f"torch {torch.__version__}, {dist.world_size} process(es) of {torch.get_num_threads()} threads, "
        f"{len(train_pairs):,} training pairs")

    t0, c0 = time.perf_counter(), time.process_time()
    text = run / "train.en-de.txt"
    with distributed.main_first(dist):  # rank 0 trains the tokenizer, the others read it
        if dist.is_main:
            text.write_text("".join(f"{en}\n{de}\n" for en, de in train_pairs), encoding="utf-8")
            tok = Tokenizer.train("unigram", (line for pair in train_pairs for line in pair),
                                  vocab_size=args.vocab_size)
            tok.save(run / "tokenizer")
        else:
            tok = Tokenizer.load(run / "tokenizer")
    if args.pretrain_steps:
        pre = pretrain([text], model="t5", config=args.config, run_dir=run / "pretrain", tokenizer=tok,
                       max_len=64, batch_size=args.batch_size,
                       train=TrainConfig(steps=args.pretrain_steps, lr=args.lr, warmup_steps=200,
                                         precision=args.precision, eval_every=1000, save_every=1000))
        pretrained = load_model(pre["model_dir"])
        model = T5ForConditionalGeneration(dataclasses.replace(pretrained.config, dropout=args.dropout))
        model.load_state_dict(pretrained.state_dict())
    else:
        torch.manual_seed(args.seed)
        cfg = T5Config.preset(args.config, vocab_size=tok.vocab_size, dropout=args.dropout)
        model = T5ForConditionalGeneration(cfg)
    t1 = time.perf_counter()

    def encode(pairs):
        return ([tok.encode(PREFIX + en, max_length=96) for en, _ in pairs],
                [tok.encode(de, max_length=96) for _, de in pairs])

    sources, targets = encode(train_pairs)
    eval_sources, eval_targets = encode(dev_pairs)
    data = PairData(sources, targets, source_pad=tok.pad_id, batch_size=args.batch_size, seed=args.seed,
                    eval_sources=eval_sources, eval_targets=eval_targets, buckets=args.buckets)
    steps = args.steps or calibrate(model, data, args.precision, args.train_minutes * 120, dist)
    say(f"training for {steps} steps ({steps * args.batch_size / len(train_pairs):.1f} epochs)", flush=True)
    c1 = time.process_time()
    result = fit(model, data, TrainConfig(steps=steps, lr=args.lr, warmup_steps=300, schedule="linear",
                                          precision=args.precision, eval_every=1000, save_every=2000,
                                          eval_batches=4, label_smoothing=args.label_smoothing, seed=args.seed),
                 run / "train", metrics_fn=seq2seq_metrics, tokenizer=tok)
    t2, c2 = time.perf_counter(), time.process_time()
    cpu_setup, cpu_train = distributed.sum_over_ranks([c1 - c0, c2 - c1], dist)  # all ranks
    if not dist.is_main:  # rank 0 decodes the test set alone (half a minute)
        return
    save_model(model, run / "model", tok)  # score it again: clozeformer generate runs/…/model --num-beams 4
    scores = {f"bleu_beam{b}": bleu(model, tok, tok, [(PREFIX + en, de) for en, de in test_pairs], num_beams=b,
                                    max_new_tokens=80, batch_size=64) for b in (1, 4)}
    t3, c3 = time.perf_counter(), time.process_time()
    out = {"config": args.config, "precision": args.precision, "model_dir": str(run / "model"),
           "dropout": args.dropout, "label_smoothing": args.label_smoothing, "buckets": args.buckets,
           "vocab_size": args.vocab_size, "seed": args.seed, "steps": steps,
           "pretrain_steps": args.pretrain_steps,
           "epochs": steps * args.batch_size / len(train_pairs), "eval": result.get("eval"), **scores,
           "wall_minutes": {"tokenizer+pretrain": (t1 - t0) / 60, "train": (t2 - t1) / 60, "decode": (t3 - t2) / 60,
                            "total": (t3 - t0) / 60},
           "processes": dist.world_size,
           "two_core_minutes": {"train": cpu_train / 120, "decode": (c3 - c2) / 120,
                                "total": (cpu_setup + cpu_train + c3 - c2) / 120}}
    print(json.dumps(out, indent=2))
    (run / "result.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
