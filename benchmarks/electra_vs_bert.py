"""The papers' orderings at equal compute, in miniature: ELECTRA > BERT > no pretraining (Clark et al. 2020
§3.3) on SST-2 and CoLA, and BART's and T5's pretraining against their unpretrained selves on SST-2.

    python benchmarks/electra_vs_bert.py --minutes 20 --seeds 0,1,2
    python benchmarks/electra_vs_bert.py --minutes 20 --arms bart-none,bart,t5-none,t5 --tasks sst2
    python benchmarks/electra_vs_bert.py --base ko_reviews --lines 28400 --arms none,bert --tasks nsmc --seeds 0

Corpus: ../shared/data/corpus/en_reviews.txt (movie and product review sentences, no SST-2/CoLA
eval text); `--corpus` adds files (e.g. the demo's stdlib text). `--base ko_reviews --tasks nsmc` runs the same
protocol in Korean (200,000 reviews, NSMC), `--lines N` pretrains on the first N documents of the base corpus only:
what the same minutes do with less text. Pretraining: every arm gets
`--minutes` two-core-minutes of this process's CPU time, i.e. twice as many CPU-minutes whatever
`--threads` (TrainConfig clock "process", so other jobs on the machine do not eat into it;
ELECTRA's generator is paid from its own budget), the
`mini` size of its family (L4 H256, BART/T5 L4+4 d256; `--config` another preset for every arm), the small-budget recipe of
`clozeformer pretrain` (mimetic init, no dropout, whole documents packed into rows of 128 tokens,
batch 32; `--lr`, `--weight-init`, `--pretrain-dropout` change it), bf16 where the CPU has native bf16. BERT trains MLM only (no NSP), as ELECTRA; the
two encoders are the same shape (ELECTRA's E = H = 256; its generator is a quarter of the width).
BERT, ELECTRA and the unpretrained encoder share one WordPiece tokenizer; BART (byte-level BPE)
and T5 (Unigram + sentinels) train their own, which their unpretrained arms use too.

Fine-tuning: `clozeformer.finetune`, one recipe for every arm: 3 epochs, batch 32, lr 1e-4 (`--finetune-lr`),
10% warmup, one lr for all layers (`--layer-decay`) and matrices (`--finetune-relative-lr`), fp32, `--seeds`;
the score is the last epoch's dev metric (nothing is selected on dev). `--probe` adds a linear probe per task:
logistic regression on the frozen encoder's mean-pooled last layer, what pretraining taught before any fine-tuning. `--pretrained-from DIR`
fine-tunes the models (and tokenizers) an earlier run left in DIR instead of pretraining again, e.g. under
another fine-tuning recipe (unpretrained arms are built anew).
SST-2 accuracy, CoLA Matthews correlation. BART classifies from the decoder's state at the last
</s>; T5 answers as text ("sst2 sentence: …" -> "positive"/"negative"). Results accumulate in
--out/results.json, so arms can run apart; the table prints mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

from clozeformer.data.corpus import iter_texts
from clozeformer.data.packing import pad_rows
from clozeformer.families import FAMILIES
from clozeformer.interop.model_dir import load_model, save_model
from clozeformer.tasks.metrics import classification
from clozeformer.tasks.readers import read_records
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.finetune import finetune
from clozeformer.train.config import fast_bf16
from clozeformer.train.pretrain import pretrain

sys.path.insert(0, str(Path(__file__).parent))
from small_budget import machine  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAMILY = {"none": "bert", "bert": "bert", "electra": "electra", "bart-none": "bart", "bart": "bart",
          "t5-none": "t5", "t5": "t5"}
METRIC = {"sst2": "accuracy", "cola": "mcc", "nsmc": "accuracy"}
HELD_OUT = ("mlm_loss", "mlm_acc", "disc_auc", "disc_acc", "replaced_frac", "token_loss", "token_acc")


def tokenizer(kind: str, corpus: list[Path], out: Path) -> Path:
    """One tokenizer per kind, trained once on the pretraining corpus (8k; WordPiece uncased, the others cased)."""
    path = out / "tokenizers" / kind
    if not (path / "tokenizer.json").is_file():
        tok = Tokenizer.train(kind, iter_texts(corpus), vocab_size=8000, lowercase=kind == "wordpiece")
        path.mkdir(parents=True, exist_ok=True)
        tok.save(path)
    return path


def pretrained(arm: str, args, corpus: list[Path], out: Path) -> tuple[Path, dict]:
    family = FAMILY[arm]
    unpretrained = arm.endswith("none")
    if args.pretrained_from and not unpretrained:  # an earlier run's model (and tokenizer), figures from its log
        earlier = Path(args.pretrained_from) / "pretrain" / arm
        rows = [json.loads(r) for r in (earlier / "metrics.jsonl").read_text().splitlines()]
        last_eval = [r for r in rows if r["split"] == "eval"][-1]
        return earlier / "model", {"steps": rows[-1]["step"], "pretrained_from": str(earlier),
                                   **{k: round(v, 4) for k, v in last_eval.items() if k in HELD_OUT}}
    tok_dir = tokenizer(FAMILIES[family].tokenizer_kind, corpus, out)
    model_dir = out / "pretrain" / arm / "model"
    if unpretrained:  # the same shape, random weights (the family's own init, seed 0), built again every run
        tok = Tokenizer.load(tok_dir)
        config_cls, model_cls = FAMILIES[family].config_cls, FAMILIES[family].model_cls
        ids = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id)
        if family == "bart":
            ids.update(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, decoder_start_token_id=tok.eos_id)
        if family == "t5":
            ids.update(eos_token_id=tok.eos_id)
        torch.manual_seed(0)
        save_model(model_cls(config_cls.preset(args.config, **ids, **({"nsp": False} if family == "bert" else {}))),
                   model_dir, tok)
        return model_dir, {"steps": 0}
    train = {"minutes": args.clock_minutes, "clock": "process", "precision": args.precision, "eval_every": 500,
             "eval_batches": 16, "save_every": 10 ** 9, "seed": args.pretrain_seed,
             **({"lr": args.lr} if args.lr else {})}
    config_cls = FAMILIES[family].config_cls
    overrides = {"embedding_size": config_cls.presets[args.config].get("hidden_size")} if family == "electra" else {}
    if args.pretrain_dropout is not None:  # every dropout rate of the family's config (the recipe sets them to 0)
        overrides.update({f.name: args.pretrain_dropout for f in dataclasses.fields(config_cls)
                          if f.name.endswith("dropout")})
    s = pretrain(corpus, model=family, config=args.config, run_dir=out / "pretrain" / arm, tokenizer=tok_dir,
                 nsp=False, max_len=128, batch_size=32, train=train, cache_dir=out / "cache", progress=False,
                 model_overrides=overrides or None,
                 **({"weight_init": args.weight_init} if args.weight_init else {}))
    info = {"steps": s["steps"], "elapsed_s": s["elapsed_s"], "real_token_fraction": s["real_token_fraction"],
            "plateau": s["plateau"], **{k: round(v, 4) for k, v in s["eval"].items() if k in HELD_OUT}}
    return Path(s["model_dir"]), info


def fine_tuned(model_dir: Path, arm: str, task: str, seed: int, args, out: Path) -> float:
    data = DATA / task
    run_dir = out / "finetune" / arm / task / f"seed{seed}"
    finetune(model_dir, task, data / "train.tsv", data / "dev.tsv", run_dir=run_dir, epochs=3, batch_size=32,
             lr=args.finetune_lr, layer_decay=args.layer_decay, relative_lr=args.finetune_relative_lr,
             warmup_ratio=0.1, seed=seed, precision="fp32", progress=False)
    evals = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in evals if r["split"] == "eval"][-1][METRIC[task]]  # the last epoch's


@torch.no_grad()
def probed(model_dir: Path, task: str) -> float:
    """A linear probe of what pretraining taught, apart from any fine-tuning: the frozen encoder's last layer,
    mean-pooled over each sentence's tokens, standardised, into scikit-learn's logistic regression fitted on the
    task's train split; the dev metric. (BART and T5: their encoders.)"""
    from sklearn.linear_model import LogisticRegression

    model, tok = load_model(model_dir).eval(), Tokenizer.load(model_dir)
    encode = getattr(model, "encode", None) or (lambda ids, mask: model(ids, mask).last_hidden_state)

    def features(split: str) -> tuple[torch.Tensor, list[int]]:
        rows = [fields for _, fields in read_records(DATA / task / f"{split}.tsv")]
        pooled = []
        for i in range(0, len(rows), 64):
            ids = [tok.encode(r["sentence"], max_length=128) for r in rows[i:i + 64]]
            batch, mask = pad_rows(ids, tok.pad_id), pad_rows([[1] * len(x) for x in ids], 0)
            h = encode(batch, mask).float() * mask.unsqueeze(-1)
            pooled.append(h.sum(1) / mask.sum(1, keepdim=True))
        return torch.cat(pooled), [int(r["label"]) for r in rows]

    (x, y), (x_dev, y_dev) = features("train"), features("dev")
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000).fit(((x - mu) / sd).numpy(), y)
    return classification(clf.predict(((x_dev - mu) / sd).numpy()).tolist(), y_dev)[METRIC[task]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="pretraining budget per arm, two-core-minutes of CPU")
    ap.add_argument("--arms", default="none,bert,electra,bart-none,bart,t5-none,t5")
    ap.add_argument("--tasks", default="sst2,cola", help=f"from {','.join(METRIC)}; BART and T5 arms skip CoLA")
    ap.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds ('': no fine-tuning, e.g. with --probe)")
    ap.add_argument("--base", default="en_reviews", choices=["en_reviews", "ko_reviews"],
                    help="the pretraining corpus, ../shared/data/corpus/BASE.txt")
    ap.add_argument("--lines", type=int, help="pretrain on the first N documents (lines) of the base corpus only")
    ap.add_argument("--corpus", nargs="*", default=[], help="more pretraining text besides the base corpus")
    ap.add_argument("--precision", help="default: bf16 where the CPU has native bf16, else fp32")
    ap.add_argument("--config", default="mini", help="the size of every arm (a preset of each family)")
    ap.add_argument("--lr", type=float, help="peak pretraining lr of the arms run (default: the family's recipe)")
    ap.add_argument("--pretrain-seed", type=int, default=0, help="the pretraining run's seed (initial weights, "
                    "batches, masks); the fine-tuning seeds are --seeds")
    ap.add_argument("--pretrain-dropout", type=float, help="dropout in pretraining (default: the recipe's, none "
                    "for tiny/mini); fine-tuning keeps the family's")
    ap.add_argument("--weight-init", choices=["normal", "mimetic"],
                    help="initial weights of the arms pretrained (default: the family's recipe)")
    ap.add_argument("--threads", type=int, help="torch threads (default torch's); e.g. two runs of 1 thread side "
                    "by side, each with its own --arms: the budget stays the same CPU time")
    ap.add_argument("--finetune-lr", type=float, default=1e-4, help="peak lr of every fine-tuning run")
    ap.add_argument("--layer-decay", type=float, default=1.0, help="fine-tuning's layer-wise lr decay (1: none)")
    ap.add_argument("--finetune-relative-lr", action="store_true",
                    help="fine-tune with each matrix's lr scaled by its size (TrainConfig.relative_lr)")
    ap.add_argument("--probe", action="store_true", help="also a linear probe of each arm's frozen encoder per task")
    ap.add_argument("--pretrained-from", metavar="DIR", help="fine-tune the arms' models an earlier --out holds")
    ap.add_argument("--out", default="benchmarks/results/electra_vs_bert")
    args = ap.parse_args()
    if unknown := set(args.tasks.split(",")) - set(METRIC):
        ap.error(f"--tasks: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(METRIC)}")
    seeds = [s for s in args.seeds.split(",") if s]
    if not all(s.isdigit() for s in seeds):
        ap.error(f"--seeds {args.seeds!r}: comma-separated integers (or '' for none)")
    seeds = list(map(int, seeds))
    if args.lines is not None and args.lines < 1:
        ap.error(f"--lines {args.lines}: at least 1 (a count of documents)")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.precision = args.precision or ("bf16" if fast_bf16(torch.device("cpu")) else "fp32")
    base = DATA / "corpus" / f"{args.base}.txt"
    if args.lines:  # the first N documents, one per line
        with base.open(encoding="utf-8") as f:
            head = [line for _, line in zip(range(args.lines), f)]
        base = out / f"{args.base}.first{args.lines}.txt"
        base.write_text("".join(head), encoding="utf-8")
    corpus = [base, *map(Path, args.corpus)]
    print(machine(), f"-> {args.precision}; budget {args.minutes:g} two-core-minutes per arm", flush=True)
    # the process clock counts CPU seconds per thread: this many minutes of it are args.minutes × 2 CPU-minutes
    args.clock_minutes = args.minutes * 2 / torch.get_num_threads()

    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    setup = {"minutes": args.minutes, "corpus": [p.name for p in corpus], "precision": args.precision,
             **({"lr": args.lr} if args.lr else {}), **({"weight_init": args.weight_init} if args.weight_init else {}),
             **({"config": args.config} if args.config != "mini" else {}),
             **({"pretrain_dropout": args.pretrain_dropout} if args.pretrain_dropout is not None else {}),
             **({"pretrain_seed": args.pretrain_seed} if args.pretrain_seed else {}),
             **({"finetune_lr": args.finetune_lr} if args.finetune_lr != 1e-4 else {}),
             **({"layer_decay": args.layer_decay} if args.layer_decay != 1.0 else {}),
             **({"finetune_relative_lr": True} if args.finetune_relative_lr else {})}
    if results.get("setup", setup) != setup:  # arms of another budget or corpus are not comparable
        results = {}
    results["setup"] = setup
    for arm in args.arms.split(","):
        model_dir, info = pretrained(arm, args, corpus, out)
        print(f"[{arm}] pretraining {json.dumps(info)}", flush=True)
        scores = {}
        for task in args.tasks.split(","):
            if FAMILY[arm] in ("bart", "t5") and task == "cola":
                continue
            if args.probe:
                scores[f"{task}_probe"] = [probed(model_dir, task)]
                print(f"[{arm}] {task} linear probe {scores[f'{task}_probe'][0]:.4f}", flush=True)
            if seeds:
                scores[task] = [fine_tuned(model_dir, arm, task, seed, args, out) for seed in seeds]
                print(f"[{arm}] {task} {scores[task]}", flush=True)
        disk = json.loads(results_path.read_text()) if results_path.is_file() else {}
        if disk.get("setup") == setup:  # runs of other arms beside this one may have written since: theirs win
            results = {**results, **disk}
        results[arm] = {"pretrain": info, **scores}
        results_path.write_text(json.dumps(results, indent=1))

    def cell(xs):
        if not xs:
            return "—"
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.3f} ± {sd:.3f}"

    print(f"\n{args.minutes:g} two-core-minutes of pretraining per arm, {args.precision}, corpus "
          f"{', '.join(setup['corpus'])}")
    tasks = [t for m in METRIC for t in (f"{m}_probe", m) if any(t in results[a] for a in FAMILY if a in results)]
    print("| arm | steps | held-out (MLM acc / disc AUC / token acc) | "
          + " | ".join(f"{t.replace('_probe', ' linear probe')} {METRIC[t.removesuffix('_probe')]}" for t in tasks) + " |\n|---|---|---|" + "---|" * len(tasks))
    for arm in FAMILY:
        if arm in results:
            p = results[arm]["pretrain"]
            held = " / ".join(f"{k} {p[k]:.3f}" for k in ("mlm_acc", "disc_auc", "token_acc") if k in p) or "—"
            print(f"| {arm} | {p['steps']:,} | {held} | " + " | ".join(cell(results[arm].get(t)) for t in tasks) + " |")


if __name__ == "__main__":
    main()
