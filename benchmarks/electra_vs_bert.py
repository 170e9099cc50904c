"""ELECTRA vs BERT at equal compute (Clark et al. 2020 §3.3 in miniature), then SST-2 fine-tuning.

    python benchmarks/electra_vs_bert.py --minutes 10 [--out benchmarks/results/electra_vs_bert]

1. One WordPiece tokenizer (8k, uncased) trained once on ../shared/data/corpus/en_reviews.txt;
   one token cache; both arms read the same packed 128-token windows (batch 32).
2. Pretraining, the same budget for each arm: `--minutes` 2-core-minutes of this process's CPU
   time (time.process_time(), so other jobs on the machine do not eat into it), counted from
   the start of the arm's `pretrain(...)` call. The schedule is sized from a short calibration
   of each arm's step cost; the budget itself is enforced exactly: once spent, the arm is
   stopped after the step in flight (the trainer's own SIGTERM path: checkpoint, then stop).
   - BERT: MLM only (no NSP), packed windows; encoder H256 L4 A4 F1024, E = H = 256.
   - ELECTRA: the same encoder as its discriminator (E = H = 256, so the two encoders are
     identical in shape); generator 1/4 width (H64, 1 head, F256), λ = 50.
   Both: AdamW lr 1e-3, 10% warmup, linear decay, bf16 autocast where the CPU has fast bf16.
3. Fine-tuning, one fixed recipe for every arm (none / BERT / ELECTRA): SST-2 train.tsv ->
   dev.tsv accuracy; encoder + classification head on the [CLS] vector; 3 epochs, batch 32,
   lr 1e-4, 10% warmup + linear decay, weight decay 0.01, max_len 64, seed 0, fp32.
Prints and writes results.json in --out: dev accuracy, steps, tokens, CPU and wall seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning would be billed as CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from clozeformer.config import BertConfig, ElectraConfig  # noqa: E402
from clozeformer.data.cache import load_corpus  # noqa: E402
from clozeformer.interop.hf import load_model  # noqa: E402
from clozeformer.models.bert import BertModel  # noqa: E402
from clozeformer.models.electra import ElectraForPreTraining  # noqa: E402
from clozeformer.models.heads import ClassificationHead  # noqa: E402
from clozeformer.tokenizer import Tokenizer  # noqa: E402
from clozeformer.train import pretrain as pretrain_mod  # noqa: E402
from clozeformer.train.loop import TrainConfig, TrainingInterrupted, fast_bf16, lr_factor, param_groups  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CORPUS = DATA / "corpus" / "en_reviews.txt"
SST2 = DATA / "sst2"
ENCODER = dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
MAX_LEN, BATCH = 128, 32


class CpuBudget:
    """Wraps an arm's data: once `seconds` of process CPU time are spent since `start`, ask the trainer
    to stop after the current step (SIGTERM to ourselves: fit saves a checkpoint and raises)."""

    def __init__(self, data, seconds: float, start: float) -> None:
        self.data, self.seconds, self.start, self.sent = data, seconds, start, False
        self.train_examples, self.eval_examples = data.train_examples, data.eval_examples

    def train_batch(self, index: int):
        if not self.sent and time.process_time() - self.start >= self.seconds:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return self.data.train_batch(index)

    def eval_batches(self, n: int = 8):
        return self.data.eval_batches(n)


def step_cost(model_cls, cfg, batch_fn, precision: str, n: int = 5) -> float:
    """CPU seconds of one training step (forward, backward, AdamW), median of n after a warm-up."""
    torch.manual_seed(0)
    model = model_cls(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    costs = []
    for i in range(n + 1):
        batch = batch_fn(i)
        t0 = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            costs.append(time.process_time() - t0)
    return sorted(costs)[len(costs) // 2]


def pretrain_arm(name: str, tok: Tokenizer, cache_dir: Path, out: Path, budget_s: float, lr: float,
                 precision: str) -> dict:
    recipe = pretrain_mod.RECIPES[name]
    cfg_cls = BertConfig if name == "bert" else ElectraConfig
    overrides = dict(ENCODER, **({"embedding_size": 256} if name == "electra" else {}))
    cfg = cfg_cls.preset("mini", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id,
                         **({"nsp": False} if name == "bert" else {}), **overrides)
    cache = load_corpus([CORPUS], tok, cache_dir=cache_dir, progress=False)
    data = recipe.data(cache, tok, max_len=MAX_LEN, batch_size=BATCH, nsp=False, whole_word=False, mlm_rate=0.15,
                       seed=0, eval_fraction=0.02)
    per_step = step_cost(recipe.model_cls, cfg, data.train_batch, precision)
    steps = max(10, int(budget_s * 0.97 / per_step))  # ~3% for evaluation and checkpoints
    print(f"[{name}] calibrated {per_step:.2f} CPU-s/step -> schedule of {steps} steps", flush=True)

    run_dir = out / f"pretrain_{name}"
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    budgeted = lambda *a, **k: CpuBudget(recipe.data(*a, **k), budget_s, start_cpu)  # noqa: E731
    pretrain_mod.RECIPES[name] = dataclasses.replace(recipe, data=budgeted)
    train = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 10), precision=precision,
                        eval_every=10 ** 9, save_every=10 ** 9, eval_batches=8, log_every=10, seed=0)
    try:
        summary = pretrain_mod.pretrain([CORPUS], model=name, config="mini", run_dir=run_dir, tokenizer=tok,
                                        max_len=MAX_LEN, batch_size=BATCH, nsp=False, train=train,
                                        model_overrides=overrides, cache_dir=cache_dir, progress=False)
        ckpt, done = summary["checkpoint"], summary["steps"]
    except TrainingInterrupted as e:
        ckpt, done = e.checkpoint, e.step
    finally:
        pretrain_mod.RECIPES[name] = recipe
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    trains = [r for r in rows if r["split"] == "train"]
    return {"model": load_model(ckpt), "steps": done, "scheduled_steps": steps, "tokens": done * BATCH * MAX_LEN,
            "cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "calibrated_cpu_s_per_step": round(per_step, 3),
            "eval_before": evals[0] if evals else None, "eval_after": evals[-1] if len(evals) > 1 else None,
            "last_train_loss": trains[-1]["loss"] if trains else None}


class Classifier(nn.Module):
    """An encoder ([B, T] ids -> [B, T, D]) + classification head on [CLS]."""

    def __init__(self, encoder: nn.Module, dim: int, num_labels: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassificationHead(dim, num_labels, "gelu", dropout=0.1)
        self.head.apply(lambda m: (nn.init.normal_(m.weight, 0, 0.02), nn.init.zeros_(m.bias))
                        if isinstance(m, nn.Linear) else None)

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids, attention_mask)
        return self.head(h.last_hidden_state if hasattr(h, "last_hidden_state") else h)


def read_sst2(path: Path, tok: Tokenizer, max_len: int) -> list[tuple[list[int], int]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(tok.encode(r["sentence"], max_length=max_len), int(r["label"]))
                for r in csv.DictReader(f, delimiter="\t")]


def collate(rows, pad: int):
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, (r, _) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, (ids != pad).long(), torch.tensor([y for _, y in rows])


def finetune(encoder: nn.Module, dim: int, train, dev, pad: int, *, epochs=3, lr=1e-4, batch=32, seed=0) -> dict:
    torch.manual_seed(seed)
    model = Classifier(encoder, dim)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=lr, eps=1e-6)
    steps = epochs * math.ceil(len(train) / batch)
    sched = TrainConfig(steps=steps, lr=lr, warmup_steps=steps // 10)
    g = torch.Generator().manual_seed(seed)
    t0, c0, step = time.perf_counter(), time.process_time(), 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=g).tolist()
        for i in range(0, len(order), batch):
            ids, mask, y = collate([train[j] for j in order[i: i + batch]], pad)
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, sched)
            loss = F.cross_entropy(model(ids, mask), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(dev), 128):
            ids, mask, y = collate(dev[i: i + 128], pad)
            correct += int((model(ids, mask).argmax(-1) == y).sum())
    return {"dev_acc": round(correct / len(dev), 4), "steps": step, "cpu_s": round(time.process_time() - c0, 1),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0, help="per arm: 2-core-minutes of CPU (×120 CPU-s)")
    ap.add_argument("--out", default="benchmarks/results/electra_vs_bert")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ft-epochs", type=int, default=3)
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--arms", default="none,bert,electra")
    ap.add_argument("--ft-rows", type=int, default=0, help="fine-tune on the first N training rows (0: all; for smoke tests)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget_s = args.minutes * 2 * 60
    precision = "bf16" if fast_bf16(torch.device("cpu")) else "fp32"
    print(f"budget per arm: {budget_s:.0f} CPU-s ({args.minutes} 2-core-minutes), {torch.get_num_threads()} threads, "
          f"{precision}", flush=True)

    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        tok = Tokenizer.load(tok_dir)
    else:
        tok = Tokenizer.train_wordpiece(CORPUS.read_text(encoding="utf-8").splitlines(), vocab_size=8000)
        tok.save(tok_dir)
    cache_dir = out / "cache"
    load_corpus([CORPUS], tok, cache_dir=cache_dir, progress=False)  # built once, outside the budgets
    train = read_sst2(SST2 / "train.tsv", tok, 64)
    train = train[: args.ft_rows] if args.ft_rows else train
    dev = read_sst2(SST2 / "dev.tsv", tok, 64)

    results: dict = {"budget_cpu_s_per_arm": budget_s, "precision": precision, "encoder": ENCODER,
                     "tokenizer_vocab": tok.vocab_size, "finetune": {"epochs": args.ft_epochs, "lr": args.ft_lr,
                                                                     "batch": 32, "max_len": 64, "seed": 0}}
    previous = out / "results.json"  # arms measured earlier under the same budget are kept, so arms can run apart
    if previous.is_file():
        old = json.loads(previous.read_text())
        if old.get("budget_cpu_s_per_arm") == budget_s and old.get("finetune") == results["finetune"]:
            results.update({k: v for k, v in old.items() if k in ("none", "bert", "electra")})
    for arm in args.arms.split(","):
        if arm == "none":
            torch.manual_seed(0)
            cfg = BertConfig.preset("mini", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, nsp=False, **ENCODER)
            encoder, info = BertModel(cfg), {"steps": 0, "tokens": 0, "cpu_s": 0.0, "wall_s": 0.0}
        else:
            info = pretrain_arm(arm, tok, cache_dir, out, budget_s, args.lr, precision)
            model = info.pop("model")
            encoder = model.bert if arm == "bert" else \
                (model.discriminator if isinstance(model, ElectraForPreTraining) else model).electra
        ft = finetune(encoder, ENCODER["hidden_size"], train, dev, tok.pad_id, epochs=args.ft_epochs, lr=args.ft_lr)
        results[arm] = {"pretrain": info, "sst2": ft}
        print(f"[{arm}] {json.dumps(results[arm])}", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))

    print("\n| pretraining | steps | tokens seen | CPU s | wall s | SST-2 dev acc |")
    print("|---|---|---|---|---|---|")
    for arm in [a for a in ("none", "bert", "electra") if a in results]:
        p, f = results[arm]["pretrain"], results[arm]["sst2"]
        print(f"| {arm} | {p['steps']} | {p['tokens']:,} | {p['cpu_s']} | {p['wall_s']} | {f['dev_acc']:.4f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
