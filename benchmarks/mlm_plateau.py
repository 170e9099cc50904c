"""Is the slow start of small-BERT pretraining ours? The same task in clozeformer and in transformers.

    python benchmarks/mlm_plateau.py [--steps 2000] [--words 300] [--lr 1e-3] [--out benchmarks/results/mlm_plateau]

A synthetic corpus where context decides every token: each line is a run of consecutive
words `w17 w18 w19 …` (mod --words, 8–29 words, random start), so a masked word is its left
neighbour plus one. Uniform guessing scores ln(words) nats; a model that reads one
neighbour scores near 0.

- clozeformer: `clozeformer.pretrain` as the CLI runs it (its WordPiece tokenizer, packed
  128-token windows, its MLM masking, held-out documents).
- transformers: `BertForMaskedLM` of the same shape (our `tiny` preset: L2 H128 A2 F512,
  dropout 0.1), fed by a pipeline that shares no code with ours: a whitespace vocabulary,
  126-word windows cut from the concatenated lines, a Bernoulli 15% mask with 80/10/10
  (as `DataCollatorForLanguageModeling`), a plain AdamW loop (weight decay 0.01, the same
  warmup and linear decay).
Both fp32, batch 32. Prints held-out MLM loss and accuracy every 50 steps side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import torch
import transformers

from clozeformer.models.bert import BertConfig
from clozeformer.train.config import TrainConfig, lr_factor
from clozeformer.train.pretrain import pretrain

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WINDOW, BATCH, EVAL_EVERY = 126, 32, 50


def write_corpus(path: Path, words: int, lines: int = 20000, seed: int = 0) -> list[list[str]]:
    r = random.Random(seed)
    rows = []
    for _ in range(lines):
        start, n = r.randrange(words), r.randrange(8, 30)
        rows.append([f"w{(start + i) % words}" for i in range(n)])
    path.write_text("".join(" ".join(row) + "\n" for row in rows), encoding="utf-8")
    return rows


def mask_like_transformers(ids: torch.Tensor, vocab: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """15% of non-special tokens selected by independent coins; 80% [MASK], 10% random, 10% kept."""
    labels = ids.clone()
    sel = (torch.rand(ids.shape, generator=g) < 0.15) & (ids >= len(SPECIALS))
    labels[~sel] = -100
    u = torch.rand(ids.shape, generator=g)
    out = torch.where(sel & (u < 0.8), SPECIALS.index("[MASK]"), ids)
    rand = torch.randint(len(SPECIALS), vocab, ids.shape, generator=g)
    return {"input_ids": torch.where(sel & (u >= 0.8) & (u < 0.9), rand, out), "labels": labels}


def run_transformers(rows: list[list[str]], cfg: BertConfig, train: TrainConfig, words: int) -> dict[int, tuple]:
    vocab = SPECIALS + [f"w{i}" for i in range(words)]
    index = {w: i for i, w in enumerate(vocab)}
    stream = [index[w] for row in rows for w in row]
    windows = torch.tensor([[2] + stream[i: i + WINDOW] + [3] for i in range(0, len(stream) - WINDOW, WINDOW)])
    held, windows = windows[:64], windows[64:]
    torch.manual_seed(train.seed)
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout))
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, eps=train.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, train))
    g = torch.Generator().manual_seed(train.seed)
    held_batch = mask_like_transformers(held, len(vocab), torch.Generator().manual_seed(1))
    curve = {}
    for step in range(train.steps + 1):
        if step % EVAL_EVERY == 0:
            model.eval()
            with torch.no_grad():
                out = model(**held_batch)
            lab = held_batch["labels"]
            acc = ((out.logits.argmax(-1) == lab) & (lab != -100)).sum() / (lab != -100).sum()
            curve[step] = (out.loss.item(), acc.item())
            model.train()
        if step == train.steps:
            break
        rows_ = windows[torch.randint(len(windows), (BATCH,), generator=g)]
        model(**mask_like_transformers(rows_, len(vocab), g)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
    return curve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--words", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="benchmarks/results/mlm_plateau")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = write_corpus(out / "corpus.txt", a.words)
    train = TrainConfig(steps=a.steps, lr=a.lr, warmup_steps=max(1, a.steps // 20), eval_every=EVAL_EVERY,
                        save_every=10**9)
    cfg = BertConfig.preset("tiny", vocab_size=a.words + len(SPECIALS), nsp=False)

    pretrain([out / "corpus.txt"], model="bert", config="tiny", run_dir=out / "clozeformer", vocab_size=a.words + 100,
             nsp=False, batch_size=BATCH, train=train, progress=False)
    ours = {r["step"]: (r["mlm_loss"], r["mlm_acc"])
            for r in map(json.loads, (out / "clozeformer" / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "eval"}
    theirs = run_transformers(rows, cfg, train, a.words)

    print(f"held-out MLM on consecutive words (uniform guessing: ln {a.words} = {math.log(a.words):.3f})")
    print("| step | clozeformer loss | acc | transformers loss | acc |\n|---|---|---|---|---|")
    for step in sorted(theirs):
        (lo, ao), (lt, at) = ours.get(step, (float("nan"),) * 2), theirs[step]
        print(f"| {step} | {lo:.3f} | {ao:.1%} | {lt:.3f} | {at:.1%} |")
    (out / "results.json").write_text(json.dumps({"clozeformer": ours, "transformers": theirs}, indent=1))


if __name__ == "__main__":
    main()
