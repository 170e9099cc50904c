"""BART §3.4 on Multi30k EN→DE: pretrain a small BART on German, then train a new English encoder.

    python benchmarks/bart_translation.py [--pretrain-lr 3e-4] [--pretrain-steps 600]
                                          [--stage1-steps 600] [--stage2-steps 2000] [--stage2-lr 3e-4]
                                          [--buckets 64] [--precision fp32|bf16]

1. A byte-level BPE and a BART (`mini` preset unless --config) are pretrained by
   denoising (bart-base noise: sentence permutation + 30% text infilling) on the German
   side of Multi30k's training set — the target language, as BART was English for the
   paper's Romanian→English.
2. `train_translation` adds a randomly initialised English encoder (its own BPE) and trains
   stage 1 (new encoder, positions, first layer's q/k/v) then stage 2 (everything).
3. sacreBLEU on test2016 with greedy and beam-4 decoding; wall time of each phase.

Everything runs through the public API (`pretrain`, `train_translation`); the run
directory (default runs/bench-translation) keeps logs, checkpoints and plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning would be billed as CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from clozeformer.data.pairs import PairData, read_pairs  # noqa: E402
from clozeformer.interop.model_dir import load_model  # noqa: E402
from clozeformer.tokenizer import Tokenizer  # noqa: E402
from clozeformer.train.config import TrainConfig, fast_bf16  # noqa: E402
from clozeformer.train.pretrain import pretrain  # noqa: E402
from clozeformer.train.translate import train_translation  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from small_budget import machine  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


@torch.no_grad()
def source_use(model, sources: list[list[int]], targets: list[list[int]], pad_id: int) -> tuple[float, float]:
    """Mean loss on (source, target) pairs, then with each target given another row's source. Equal losses
    mean the decoder ignores its encoder (a language model of the target side, whatever the input)."""
    model.eval()
    batch = PairData(sources, targets, source_pad=pad_id, batch_size=len(sources), eval_sources=sources,
                     eval_targets=targets).eval_batches(1)[0]
    other = {**batch, "input_ids": batch["input_ids"].roll(1, 0), "attention_mask": batch["attention_mask"].roll(1, 0)}
    return round(model(**batch).loss.item(), 4), round(model(**other).loss.item(), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default="runs/bench-translation")
    ap.add_argument("--config", default="mini")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--stage1-steps", type=int, default=600)
    ap.add_argument("--stage2-steps", type=int, default=2000)
    ap.add_argument("--stage2-lr", type=float, default=3e-4)
    ap.add_argument("--pretrain-lr", type=float, default=3e-4)  # 1e-3 collapses the encoder (BENCHMARKS.md)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--buckets", type=int, default=64,
                    help="length-bucketed translation batches, pools of this many batches (0: uniform batches)")
    ap.add_argument("--precision", choices=["fp32", "bf16"],
                    help="default: bf16 where the CPU runs it natively (AVX512-BF16/AMX), else fp32")
    args = ap.parse_args()
    args.precision = args.precision or ("bf16" if fast_bf16(torch.device("cpu")) else "fp32")
    print(machine(), "->", args.precision, flush=True)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    german = run / "train.de.txt"
    german.write_text("".join(json.loads(line)["de"] + "\n" for line in open(DATA / "train.jsonl", encoding="utf-8")),
                      encoding="utf-8")

    t0, c0 = time.perf_counter(), time.process_time()
    pre = pretrain([german], model="bart", config=args.config, run_dir=run / "bart-de", vocab_size=args.vocab_size,
                   lowercase=False, max_len=64, batch_size=args.batch_size,
                   train=TrainConfig(steps=args.pretrain_steps, lr=args.pretrain_lr, warmup_steps=100,
                                     precision=args.precision, eval_every=500, save_every=500),
                   progress=True)
    t1, c1 = time.perf_counter(), time.process_time()
    summary = train_translation(pre["model_dir"], DATA / "train.jsonl", source_field="en", target_field="de",
                                run_dir=run / "translate", eval_file=DATA / "dev.jsonl",
                                test_file=DATA / "test2016.jsonl", source_vocab_size=args.vocab_size,
                                max_len=64, batch_size=args.batch_size, buckets=args.buckets, num_beams=4,
                                max_new_tokens=64,
                                stage1=TrainConfig(steps=args.stage1_steps, lr=1e-3, warmup_steps=100,
                                                   precision=args.precision, eval_every=500, save_every=500),
                                stage2=TrainConfig(steps=args.stage2_steps, lr=args.stage2_lr, warmup_steps=100,
                                                   precision=args.precision, eval_every=500, save_every=1000))
    t2, c2 = time.perf_counter(), time.process_time()
    dev = read_pairs(DATA / "dev.jsonl", "en", "de")[:256]
    de_tok, en_tok = Tokenizer.load(pre["model_dir"]), Tokenizer.load(Path(summary["model_dir"]) / "source")
    german_ids = [de_tok.encode(de, max_length=64) for _, de in dev]
    uses = {"pretrained (clean German in, same out)": source_use(load_model(pre["model_dir"]), german_ids, german_ids,
                                                                 de_tok.pad_id),
            "translator (English in, German out)": source_use(load_model(summary["model_dir"]),
                                                              [en_tok.encode(en, max_length=64) for en, _ in dev],
                                                              german_ids, en_tok.pad_id)}
    result = {"precision": args.precision, "buckets": args.buckets, "model_dir": summary["model_dir"],
              "pretrain_eval": pre.get("eval"), "pretrain_wall_minutes": (t1 - t0) / 60,
              "translate_wall_minutes": (t2 - t1) / 60, "pretrain_two_core_minutes": (c1 - c0) / 120,
              "translate_two_core_minutes": (c2 - c1) / 120, "bleu_greedy": summary["bleu_beam1"],
              "bleu_beam4": summary["bleu_beam4"], "stage1_eval": summary["stage1"].get("eval"),
              "stage2_eval": summary["stage2"].get("eval"),
              "dev_loss_true_vs_other_source": uses}
    print(json.dumps(result, indent=2))
    (run / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
