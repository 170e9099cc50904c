"""A recipe for minutes: the small-budget pretraining choices, one change at a time, at one time budget.

    python benchmarks/small_budget.py --family bert --config tiny --steps 800 --seeds 0,1
    python benchmarks/small_budget.py --family bert --config tiny --minutes 1.5 --seeds 0,1
    python benchmarks/small_budget.py --family electra --corpus ../shared/data/corpus/en_reviews.txt --variants recipe,init=normal

Every variant starts from the family's small-budget recipe (train/pretrain.py, Recipe.small_budget:
the defaults of `clozeformer pretrain` for tiny/mini models) and changes what its name says:

    lr=X  b2=X  warmup=X (share of the budget)  schedule=linear|cosine|constant  clip=X  decay=X
    relative=0|1 (each matrix's lr scaled by its size, TrainConfig.relative_lr)
    mask=X (BERT/ELECTRA)  dropout=X (every dropout of the model)  init=normal|mimetic
    cross=1 (attention across the documents of a row)  max_len=N  batch=N
    set.FIELD=VALUE (a model config field, as `pretrain --set`)                  (join with +)

Each run gets the same tokenizer (trained once), the same corpus and either `--steps` (the same
updates for every variant: on CPU a run is a pure function of its seed, so only the seeds differ)
or `--minutes` of this process's CPU time per thread (TrainConfig clock "process"). This machine's
speed drifts by up to a third within a session, so time-budgeted A/B runs measure the drift as
much as the change; the table gives each variant's milliseconds per step too, so a change that
costs time (dropout, more masking) can be weighed. Each run reports the held-out loss at the end
(BERT/ELECTRA: MLM at 15% masking whatever
the run trained with, ELECTRA's from the generator, with the discriminator's AUC; BART/T5:
target-token loss and accuracy). The corpus defaults to the demo's, the standard library's own
documentation. Prints the CPU's capability and the precision used (bf16 only where the CPU has
native bf16), then a markdown table: mean over seeds, and each seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from clozeformer.demo import stdlib_documents, write_corpus
from clozeformer.train.config import fast_bf16
from clozeformer.train.pretrain import pretrain

DEFAULT_VARIANTS = {
    "bert": "recipe,init=normal,dropout=0.1,cross=1,mask=0.15,mask=0.4,lr=1e-3,lr=4e-3,b2=0.98,warmup=0.1,"
            "schedule=cosine",
    "electra": "recipe,init=normal,dropout=0.1,cross=1,lr=1e-3,lr=4e-3",
    "bart": "recipe,init=normal,dropout=0.1,cross=1,lr=1e-3,lr=4e-3",
    "t5": "recipe,relative=0+lr=2e-3,relative=0+lr=1e-3,init=normal,dropout=0.1,cross=1,lr=2e-3,lr=5e-4",
}
TRAIN_KEYS = {"lr": ("lr", float), "b2": ("betas", lambda v: (0.9, float(v))), "warmup": ("warmup_fraction", float),
              "schedule": ("schedule", str), "clip": ("clip_norm", float), "decay": ("weight_decay", float),
              "relative": ("relative_lr", lambda v: v not in ("0", ""))}


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
    return (f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"bf16 flags: {', '.join(bf16) or 'none'}, {torch.get_num_threads()} threads")


def options(spec: str) -> dict:
    """pretrain() keywords for a variant name such as "lr=1e-3+b2=0.98" ("recipe": none)."""
    kw: dict = {"train": {}}
    for part in spec.split("+"):
        if part == "recipe":
            continue
        key, _, value = part.partition("=")
        if key in TRAIN_KEYS:
            name, cast = TRAIN_KEYS[key]
            kw["train"][name] = cast(value)
        elif key == "mask":
            kw["mlm_rate"] = float(value)
        elif key == "dropout":
            kw["dropout"] = float(value)
        elif key == "init":
            kw["weight_init"] = value
        elif key == "cross":
            kw["cross_document"] = value not in ("0", "")
        elif key in ("max_len", "batch"):
            kw["max_len" if key == "max_len" else "batch_size"] = int(value)
        elif key.startswith("set."):  # a model config field, as `pretrain --set`
            kw.setdefault("overrides", {})[key[4:]] = json.loads(value)
        else:
            raise SystemExit(f"unknown variant key {key!r} in {spec!r}")
    return kw


def run(args, spec: str, seed: int, tokenizer, out: Path) -> dict:
    kw = options(spec)
    budget = {"steps": args.steps} if args.steps else {"minutes": args.minutes, "clock": "process"}
    train = {**budget, "precision": args.precision, "seed": seed, "eval_every": 10 ** 9,
             "eval_batches": args.eval_batches, "save_every": 10 ** 9, **kw.pop("train")}
    if args.steps and "warmup_fraction" in train:  # a share of the steps instead of the time
        train["warmup_steps"] = round(train.pop("warmup_fraction") * args.steps)
    overrides = kw.pop("overrides", {})
    if "dropout" in kw:
        p = kw.pop("dropout")
        overrides.update({"dropout": p} if args.family == "t5" else {"dropout": p, "attention_dropout": p,
                         **({"activation_dropout": p} if args.family == "bart" else {})})
    nsp = kw.pop("nsp", False)
    kw.setdefault("max_len", args.max_len)
    kw.setdefault("batch_size", args.batch_size)
    run_dir = out / f"{args.family}-{spec.replace('=', '').replace('+', '_')}-s{seed}"
    s = pretrain([args.corpus], model=args.family, config=args.config, run_dir=run_dir, tokenizer=tokenizer,
                 blank_line_docs=args.blank_line_docs, nsp=nsp, train=train, model_overrides=overrides,
                 cache_dir=out / "cache", progress=False, **kw)
    key = {"bert": "mlm", "electra": "mlm", "bart": "token", "t5": "token"}[args.family]
    ev = s["eval"]
    row = {"steps": s["steps"], "ms_per_step": 1000 * s["elapsed_s"] / s["steps"], "loss": ev[f"{key}_loss"],
           "acc": ev[f"{key}_acc"], "plateau": s["plateau"], "real": s["real_token_fraction"]}
    if args.family == "electra":
        row["auc"] = ev["disc_auc"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="bert", choices=sorted(DEFAULT_VARIANTS))
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--corpus", help="default: the demo's corpus (stdlib documentation), written to --out")
    ap.add_argument("--blank-line-docs", action="store_true", help="corpus format (on for the default corpus)")
    ap.add_argument("--minutes", type=float, default=1.5)
    ap.add_argument("--steps", type=int, help="a fixed number of steps instead of --minutes")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", help="comma-separated (default: the family's list)")
    ap.add_argument("--precision", help="default: bf16 where the CPU has native bf16, else fp32")
    ap.add_argument("--out", default="benchmarks/results/small_budget")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.precision = args.precision or ("bf16" if fast_bf16(torch.device("cpu")) else "fp32")
    if args.corpus is None:
        args.corpus, args.blank_line_docs = write_corpus(out / "stdlib_docs.txt", stdlib_documents()), True
    print(machine(), f"-> {args.precision}", flush=True)

    # one tokenizer for every run: the first run trains it (the family's kind), the others load it
    variants = (args.variants or DEFAULT_VARIANTS[args.family]).split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    tokenizer, results = None, {}
    for spec in variants:
        for seed in seeds:
            row = run(args, spec, seed, tokenizer, out)
            tokenizer = tokenizer or next(out.glob(f"{args.family}-*/tokenizer"))
            results.setdefault(spec, []).append(row)
            print(f"[{spec} seed {seed}] {json.dumps(row)}", flush=True)
    (out / f"{args.family}_{args.config}.json").write_text(json.dumps(results, indent=1))

    extra = " | disc AUC" if args.family == "electra" else ""
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
    print(f"\n{args.family} {args.config}, {budget} per run, {args.precision}, corpus {args.corpus}")
    print(f"| variant | steps | ms/step | held-out loss | accuracy{extra} | per seed (accuracy) |")
    print("|---|---|---|---|---|" + ("---|" if extra else "") + "---|")
    for spec, rows in results.items():
        mean = lambda k: statistics.mean(r[k] for r in rows)  # noqa: E731
        auc = f" | {mean('auc'):.3f}" if extra else ""
        print(f"| {spec} | {mean('steps'):,.0f} | {mean('ms_per_step'):.0f} | {mean('loss'):.3f} | "
              f"{mean('acc'):.1%}{auc} | " + " / ".join(f"{r['acc']:.1%}" for r in rows) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
