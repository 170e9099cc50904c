"""`clozeformer` subcommands. Parsing only: every command calls the Python API.

Errors that describe bad input or a failing environment (a clozeformer error class,
ValueError, OSError, MemoryError) end the command with one line on stderr,
`clozeformer: error: <what, where>`, and exit status 1; warnings print as one line
`clozeformer: warning: <what>`. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from pathlib import Path

from clozeformer.cliargs import (COMPILE_HELP, COUNT, LABEL_SMOOTHING_HELP, MAX_LEN, NONNEGATIVE, POSITIVE,
                                 PRECISION_HELP, PRECISIONS, RATE, RELATIVE_LR_HELP, SEED, SHARE, VOCAB, FamilyNames,
                                 Parser, number, one_line)
from clozeformer.config import MAX_LENGTH_PENALTY, VERSION
from clozeformer.io import atomic_write, check_new_dir, check_output_file

DEFAULT_NEW_TOKENS = 64  # generate: new tokens per line when neither the user nor the model says


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_demo(args) -> None:
    from clozeformer.demo import run_demo

    run_demo(args.out, minutes=args.minutes, steps=args.steps, progress=not args.quiet)


def _print_summary(summary: dict) -> None:
    """A training run's JSON summary on stdout, once: under torchrun by rank 0 alone (stdout pipes into jq)."""
    from clozeformer.train import distributed

    if distributed.env_rank() == 0:
        print(json.dumps(summary, indent=2, default=str))


def cmd_pretrain(args) -> None:
    from clozeformer.train.pretrain import pretrain

    given = dict(steps=args.steps, minutes=args.minutes, lr=args.lr, warmup_steps=args.warmup,
                 warmup_fraction=args.warmup_fraction, schedule=args.schedule, weight_decay=args.weight_decay,
                 betas=tuple(args.betas) if args.betas else None, clip_norm=args.clip, grad_accum=args.grad_accum,
                 precision=args.precision, eval_every=args.eval_every, eval_batches=args.eval_batches,
                 save_every=args.save_every, keep_last=args.keep_last, log_every=args.log_every, seed=args.seed,
                 device=args.device, nan_policy=args.nan_policy, fsdp=args.fsdp,
                 compile=args.compile or None, relative_lr=args.relative_lr)
    # options left unset take the recipe's defaults (for tiny/mini: the small-budget recipe)
    train = {k: v for k, v in given.items() if v is not None}
    if args.cased and args.lowercase:
        raise ValueError("--cased and --lowercase contradict each other")
    from clozeformer.families import FAMILIES

    if args.no_nsp and not FAMILIES[args.model].nsp:
        raise ValueError(f"--no-nsp: {args.model} pretraining has no NSP to leave out (BERT's); leave out --no-nsp")
    overrides = {}
    for kv in args.set:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {kv!r}")
        if key in overrides:
            raise ValueError(f"--set {key} is given twice ({overrides[key]!r}, {value!r}); give it once")
        overrides[key] = value
    summary = pretrain(args.corpus, model=args.model, config=args.config, run_dir=args.run_dir,
                       tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                       lowercase=False if args.cased else (True if args.lowercase else None), noise=args.noise,
                       init=args.init, max_len=args.max_len, batch_size=args.batch_size, nsp=not args.no_nsp,
                       whole_word=args.whole_word, mlm_rate=args.mlm_rate, train=train, weight_init=args.weight_init,
                       cross_document=args.cross_document,
                       model_overrides={k: _value(v) for k, v in overrides.items()}, text_field=args.text_field,
                       blank_line_docs=args.blank_line_docs, cache_dir=args.cache_dir, resume=args.resume,
                       progress=not args.quiet)
    _print_summary(summary)


def cmd_fill_mask(args) -> None:
    from clozeformer import load_model, load_tokenizer
    from clozeformer.infer import check_fits, fill_mask, fill_mask_input, mlm_model

    model = mlm_model(load_model(args.model, allow_pickle=args.allow_pickle))
    tok = check_fits(load_tokenizer(args.model), model, args.model)
    for text in args.text:  # every text checked before the first is answered
        fill_mask_input(model, tok, text, args.top_k)
    for text in args.text:
        n = len(tok.encode(text, specials=True))
        if n > model.config.max_length:
            warnings.warn(f"text of {n} tokens truncated to the model's {model.config.max_length} positions")
        print(text)
        for i, preds in enumerate(fill_mask(model, tok, text, top_k=args.top_k)):
            # a byte-level BPE piece shows as its text ("Ġthe" -> "the"); WordPiece pieces decode to themselves
            print(f"  [MASK] #{i + 1}: " + ", ".join(f"{tok.decode([p.token_id]).strip() or p.token} ({p.score:.3f})"
                                                    for p in preds))


def cmd_noise(args) -> None:
    import os

    from clozeformer import load_model, load_tokenizer
    from clozeformer.view import render_html, render_text, view

    if args.html:
        check_output_file(args.html, "--html", kinds=(".html", ".htm"))
    if args.model and args.tokenizer:
        raise ValueError(f"--model {args.model} brings its own tokenizer; leave out --tokenizer {args.tokenizer}")
    if args.allow_pickle and not args.model:
        raise ValueError("--allow-pickle reads a model's pickled weights; there is no --model (leave it out)")
    if args.second is not None and not args.second.strip():
        raise ValueError("--second is empty; give the text the random NotNext segment comes from")
    source = args.model or args.tokenizer
    tok = load_tokenizer(source) if source else None
    model = load_model(args.model, allow_pickle=args.allow_pickle) if args.model else None
    v = view(args.objective, " ".join(args.text), tokenizer=tok, model=model, seed=args.seed, rate=args.rate,
             second=args.second)
    print(render_text(v, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    if args.html:
        atomic_write(Path(args.html), render_html(v).encode())
        print(f"wrote {args.html}")


def cmd_generate(args) -> None:
    from clozeformer.data.corpus import read_lines, read_stdin
    from clozeformer.infer import generate_texts, load_generator

    # a file is read before the model loads (its errors first); stdin after (a bad model does not wait for it)
    lines = None if args.input == "-" else [line for _, line in read_lines(Path(args.input))]  # strict UTF-8
    model, tok, target_tok = load_generator(args.model, allow_pickle=args.allow_pickle)
    given = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=args.sample,
                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                 length_penalty=args.length_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                 min_new_tokens=args.min_new_tokens, early_stopping=args.early_stopping)
    # options left out take the model's saved generation settings (generation_config.json), as in transformers
    options = {k: v for k, v in given.items() if v is not None}
    saved = getattr(model, "generation_defaults", None) or {}
    settings = {**saved, **options}
    # transformers warns and ignores these; an option given is meant to change the output
    if args.seed is not None and not settings.get("do_sample"):
        raise ValueError(f"--seed {args.seed} seeds sampling; without --sample the output is the same for every "
                         "seed (add --sample, or leave out --seed)")
    longest = settings.get("max_new_tokens") or settings.get("max_length", DEFAULT_NEW_TOKENS + 1) - 1
    if (settings.get("min_new_tokens") or 0) > longest:
        raise ValueError(f"--min-new-tokens {settings['min_new_tokens']} is above the {longest} new tokens allowed "
                         "(--max-new-tokens)")
    for keys, needs, mode in ((("temperature", "top_k", "top_p"), settings.get("do_sample"), "--sample"),
                              (("length_penalty", "early_stopping"), settings.get("num_beams", 1) > 1,
                               "--num-beams N (N > 1)")):
        if (unused := [f"--{k.replace('_', '-')}" for k in keys if k in options]) and not needs:
            raise ValueError(f"{', '.join(unused)} change{'s' if len(unused) == 1 else ''} nothing without {mode}; "
                             f"add {mode}, or leave {'it' if len(unused) == 1 else 'them'} out")
    if lines is None:
        lines = [line for _, line in read_stdin()]
    if not lines:  # as predict: an empty input is a mistake, not a request for no output
        raise ValueError(f"{'stdin' if args.input == '-' else args.input} holds no input lines (one text per line)")
    if "max_new_tokens" not in options and "max_length" not in saved and "max_new_tokens" not in saved:
        options["max_new_tokens"] = DEFAULT_NEW_TOKENS
    prefix = args.prefix if args.prefix is not None else (getattr(model, "task", None) or {}).get("prefix") or ""
    for out in generate_texts(model, tok, lines, batch_size=args.batch_size, prefix=prefix, seed=args.seed or 0,
                              target_tokenizer=target_tok, **options):
        print(out, flush=True)


def cmd_translate(args) -> None:
    from clozeformer.train.checkpoint import run_budget
    from clozeformer.train.config import TrainConfig
    from clozeformer.train.translate import train_translation

    common = dict(precision=args.precision, seed=args.seed, device=args.device, eval_every=args.eval_every,
                  save_every=args.save_every, warmup_steps=args.warmup, compile=args.compile,
                  label_smoothing=args.label_smoothing)
    steps = {}  # a stage resumed without its --stageN-steps keeps its own; else the default
    for stage, given, default in ((1, args.stage1_steps, 1000), (2, args.stage2_steps, 200)):
        own = run_budget(Path(args.run_dir) / f"stage{stage}").get("steps") if args.resume else None
        steps[stage] = given or own or default
    summary = train_translation(args.bart, args.train, source_field=args.source, target_field=args.target,
                                run_dir=args.run_dir, eval_file=args.eval, test_file=args.test,
                                source_tokenizer=args.source_tokenizer, source_vocab_size=args.source_vocab_size,
                                source_layers=args.source_layers, max_len=args.max_len, batch_size=args.batch_size,
                                buckets=args.buckets,
                                stage1=TrainConfig(steps=steps[1], lr=args.stage1_lr, **common),
                                stage2=TrainConfig(steps=steps[2], lr=args.stage2_lr, **common),
                                num_beams=args.num_beams, resume=args.resume, progress=not args.quiet)
    _print_summary(summary)


def _task_options(args) -> dict:
    """TaskSpec overrides given on the command line (unset ones keep the preset's/kind's default)."""
    words = None
    if args.label_words:
        words = {}
        for kv in args.label_words:
            label, eq, word = kv.partition("=")
            if not eq:
                raise ValueError(f"--label-words expects LABEL=WORD, got {kv!r}")
            if label in words:
                raise ValueError(f"--label-words gives label {label!r} twice ({words[label]!r}, {word!r}); give it once")
            words[label] = word
    names = ("text_column", "text_pair_column", "label_column", "source_column", "target_column", "tokens_column",
             "tags_column", "metric", "prefix", "pair_prefix", "max_len", "stride", "max_answer_len",
             "max_new_tokens", "num_beams")
    return {**{n: getattr(args, n) for n in names}, "label_words": words}


def cmd_finetune(args) -> None:
    from clozeformer.train.finetune import finetune

    summary = finetune(args.model, args.task, args.train, args.eval, run_dir=args.run_dir, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, warmup_ratio=args.warmup_ratio,
                       weight_decay=args.weight_decay, early_stopping=args.early_stopping, seed=args.seed,
                       precision=args.precision, device=args.device, max_train_rows=args.max_train_rows,
                       max_eval_rows=args.max_eval_rows, keep_last=args.keep_last, resume=args.resume,
                       compile=args.compile, label_smoothing=args.label_smoothing, layer_decay=args.layer_decay,
                       relative_lr=args.relative_lr, progress=not args.quiet, **_task_options(args))
    _print_summary(summary)


def cmd_evaluate(args) -> None:
    from clozeformer.train.finetune import evaluate

    print(json.dumps(evaluate(args.model, args.data, batch_size=args.batch_size, device=args.device,
                              max_rows=args.max_rows), indent=2))


def cmd_predict(args) -> None:
    from clozeformer.data.corpus import read_lines, read_stdin
    from clozeformer.train.finetune import predict

    if args.output:
        check_output_file(args.output, "--output", kinds=(".jsonl", ".json", ".tsv", ".txt"), inputs=(args.input,))

    text = args.input == "-" or args.input.endswith(".txt")
    if text:  # stdin or a .txt file: JSON records, or plain text lines (the text of single-text tasks)
        name = "stdin" if args.input == "-" else args.input
        records = []
        for n, line in read_stdin() if args.input == "-" else read_lines(Path(args.input)):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line) if line.lstrip().startswith("{") else line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{name}:{n}: malformed JSON: {e.msg} at column {e.colno}") from None
        if not records:
            raise ValueError(f"predict --input {args.input}: {name} held no input (JSON records or text lines, one "
                             "per line)")
        inputs = records
    else:
        inputs = args.input
    rows = predict(args.model, inputs, batch_size=args.batch_size, device=args.device, max_rows=args.max_rows)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        if args.format == "jsonl":
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            import csv

            keys = list(dict.fromkeys(k for row in rows for k in row))
            w = csv.writer(out, delimiter="\t")
            w.writerow(keys)
            for row in rows:
                w.writerow([json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else
                            "" if v is None else v for v in (row.get(k) for k in keys)])
    finally:
        if args.output:
            out.close()


def cmd_convert(args) -> None:
    from clozeformer import load_model, load_tokenizer, save_model
    from clozeformer.tokenizer import TOKENIZER_FILES

    check_new_dir(args.dst, "DST")
    model = load_model(args.src, allow_pickle=args.allow_pickle)
    src = Path(args.src)
    # No tokenizer files: convert the model alone. A tokenizer that is there but broken is an error.
    has_tokenizer = any((src / name).is_file() for name in TOKENIZER_FILES)
    tok = load_tokenizer(src) if has_tokenizer else None
    out = save_model(model, args.dst, tok)
    print(f"wrote {out} ({model.config.model_type}, {'with' if tok else 'without'} tokenizer)")


def cmd_train_tokenizer(args) -> None:
    from clozeformer.data.corpus import check_reading, iter_texts
    from clozeformer.tokenizer import Tokenizer

    check_reading(args.corpus, text_field=args.text_field, blank_line_docs=args.blank_line_docs)
    check_new_dir(args.out, "--out")
    if args.cased and args.lowercase:
        raise ValueError("--cased and --lowercase contradict each other")
    if args.extra_ids is not None and args.kind != "unigram":
        raise ValueError(f"--extra-ids (T5 sentinels) needs --kind unigram, not {args.kind}")
    # WordPiece lowercases unless --cased (BERT uncased); BART's BPE and T5's Unigram keep case
    # unless --lowercase, as those models were trained.
    lowercase = not args.cased if args.kind == "wordpiece" else args.lowercase
    kw = {"extra_ids": args.extra_ids} if args.extra_ids is not None else {}
    texts = iter_texts(args.corpus, text_field=args.text_field, blank_line_docs=args.blank_line_docs)
    tok = Tokenizer.train(args.kind, texts, vocab_size=args.vocab_size, lowercase=lowercase, show_progress=True, **kw)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    tok.save(args.out)
    print(f"wrote {args.out}/tokenizer.json ({tok.vocab_size} tokens)")


def _corpus_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-field", default="text", help="JSONL field or TSV/CSV column holding the text (default: text)")
    p.add_argument("--blank-line-docs", action="store_true",
                   help="documents separated by blank lines, one sentence per line (default: one document per line)")
    p.add_argument("--cased", action="store_true", help="keep case and accents when training a tokenizer")


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="pretrain a tiny BERT offline on the stdlib docs (3 min on 2 cores)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=POSITIVE, help="training time (default 2.5)")
    p.add_argument("--steps", type=COUNT, help="train exactly this many steps instead of minutes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_demo)


def _pretrain_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a model on text files")
    p.add_argument("--model", default="bert", choices=FamilyNames())
    p.add_argument("--noise", help="bart: noise preset (default bart-base; bart-large, text-infilling, "
                                   "token-masking, token-deletion, sentence-permutation, document-rotation, "
                                   "token-insertion)")
    p.add_argument("--lowercase", action="store_true", help="lowercase when training a tokenizer (roberta/bart/t5: "
                                                            "cased by default; bert/electra: uncased unless --cased)")
    p.add_argument("--config", help="preset of a new model: tiny, mini (default); small (bert, roberta, electra, t5), "
                                    "base (all but electra), small-v1_1, base-v1_1 (t5)")
    p.add_argument("--corpus", nargs="+", required=True,
                   help=".txt / .jsonl / .tsv / .csv files, optionally .gz, or "
                        "hf:NAME[:CONFIG][?split=&field=&data_files=] "
                        "to stream a `datasets` dataset (e.g. hf:allenai/c4:en)")
    p.add_argument("--run-dir", default="runs/pretrain")
    p.add_argument("--tokenizer", help="existing tokenizer (dir or file); default: train one on the corpus")
    p.add_argument("--vocab-size", type=VOCAB, help="ids of the tokenizer trained on the corpus (default: 8000)")
    p.add_argument("--init", help="continue pretraining from this model directory")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override model config fields")
    p.add_argument("--max-len", type=MAX_LEN, default=128)
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--no-nsp", action="store_true", help="MLM only (BERT): one document per segment of a row")
    p.add_argument("--whole-word", action="store_true", help="whole-word masking")
    p.add_argument("--cross-document", action="store_true",
                   help="let attention and positions run across the documents packed in a row (default: each "
                        "document is read alone)")
    p.add_argument("--weight-init", choices=["normal", "mimetic"],
                   help="initial weights: the family's own, or mimetic attention + sinusoidal positions "
                        "(default: the recipe's; mimetic for new tiny/mini models but ELECTRA's)")
    p.add_argument("--mlm-rate", type=RATE, help="share of tokens masked (BERT, RoBERTa, ELECTRA) or corrupted "
                                                 "(T5's noise density); default: the recipe's")
    p.add_argument("--minutes", type=POSITIVE, help="time budget: warmup and decay over elapsed time, stop when spent")
    p.add_argument("--steps", type=COUNT, help="optimizer steps (default 1000; under --minutes, no limit)")
    p.add_argument("--lr", type=POSITIVE, help="peak learning rate (default: the recipe's)")
    p.add_argument("--warmup", type=NONNEGATIVE, help="warmup steps (default 100; a new tiny/mini model's recipe: "
                                                      "30%% of --steps)")
    p.add_argument("--warmup-fraction", type=SHARE, help="warmup share of a --minutes budget (default 0.1; the "
                                                          "tiny/mini recipe's 0.3), or of a new tiny/mini model's "
                                                          "--steps")
    p.add_argument("--schedule", choices=["linear", "cosine", "constant"], help="decay after warmup (default linear)")
    p.add_argument("--betas", type=SHARE, nargs=2, metavar=("B1", "B2"), help="AdamW betas (default: the recipe's)")
    p.add_argument("--weight-decay", type=number(float, 0), help="default 0.01")
    p.add_argument("--relative-lr", action=argparse.BooleanOptionalAction,
                   help=RELATIVE_LR_HELP + " (default: the recipe's; on for new tiny/mini T5)")
    p.add_argument("--clip", type=POSITIVE, help="gradient norm clip (default 1.0)")
    p.add_argument("--grad-accum", type=COUNT, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--eval-every", type=COUNT, help="default 200")
    p.add_argument("--eval-batches", type=COUNT, help="default 8")
    p.add_argument("--save-every", type=COUNT, help="default 500")
    p.add_argument("--keep-last", type=COUNT, help="default 2")
    p.add_argument("--log-every", type=COUNT, help="steps between train rows in metrics.jsonl (default 10)")
    p.add_argument("--seed", type=SEED, help="initial weights, batches and masks (default 0)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto: CUDA when present)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--nan-policy", choices=["stop", "skip"], help="on a non-finite loss (default stop)")
    p.add_argument("--fsdp", action="store_true", default=None,
                   help="under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP")
    p.add_argument("--cache-dir", help="token cache (default: $CLOZEFORMER_CACHE or ~/.cache/clozeformer/tokens)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run's last good checkpoint (on any number of processes)")
    p.add_argument("--quiet", action="store_true")
    _corpus_options(p)
    p.set_defaults(fn=cmd_pretrain)


def _fill_mask_parser(sub) -> None:
    p = sub.add_parser("fill-mask", help="predict [MASK] tokens with a saved or imported model")
    p.add_argument("model")
    p.add_argument("text", nargs="+")
    p.add_argument("--top-k", type=COUNT, default=5)
    p.add_argument("--allow-pickle", action="store_true", help="allow loading .bin/.pt weights (weights_only)")
    p.set_defaults(fn=cmd_fill_mask)


def _noise_parser(sub) -> None:
    p = sub.add_parser("noise", help="show what a pretraining objective does to a sentence")
    p.add_argument("text", nargs="+")
    p.add_argument("--objective", required=True,
                   help="mlm, whole-word-mlm, nsp, token-masking, token-deletion, text-infilling, "
                        "sentence-permutation, document-rotation, token-insertion, bart-base, span-corruption, rtd")
    p.add_argument("--tokenizer", help="tokenizer dir/file for real subwords (default: the text's own words)")
    p.add_argument("--model", help="model dir (its tokenizer; rtd needs an ELECTRA model)")
    p.add_argument("--second", help="nsp: a second text, the source of the random NotNext segment")
    p.add_argument("--rate", type=RATE, help="masking/noise rate (default: the objective's own)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--html", help="also write the view to this HTML file")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(fn=cmd_noise)


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text with an encoder-decoder (BART, T5), one output per line")
    p.add_argument("model")
    p.add_argument("--input", default="-", help="text file, one source per line, or - for stdin (default)")
    p.add_argument("--prefix", help='prepended to every line (T5 task prefixes: "summarize: "; default: the prefix '
                                    'a fine-tuned model was trained with, else none)')
    saved = " (default: the model's generation_config.json, else {})".format
    p.add_argument("--max-new-tokens", type=COUNT, help=saved(DEFAULT_NEW_TOKENS))
    p.add_argument("--num-beams", type=COUNT, help=saved(1))
    p.add_argument("--sample", action="store_true", default=None, help="sample instead of greedy/beam search")
    p.add_argument("--temperature", type=POSITIVE, help=saved(1.0))
    p.add_argument("--top-k", type=COUNT, help=saved(50))
    p.add_argument("--top-p", type=number(float, 0, 1, open_low=True), help=saved(1.0))
    p.add_argument("--length-penalty", type=number(float, -MAX_LENGTH_PENALTY, MAX_LENGTH_PENALTY), help=saved(1.0))
    p.add_argument("--no-repeat-ngram-size", type=NONNEGATIVE, help=saved(0))
    p.add_argument("--min-new-tokens", type=NONNEGATIVE, help=saved(0))
    p.add_argument("--early-stopping", action="store_true", default=None, help=saved(False))
    p.add_argument("--batch-size", type=COUNT, default=16)
    p.add_argument("--seed", type=SEED, help="with --sample: the sampling seed (default 0)")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(fn=cmd_generate)


def _translate_parser(sub) -> None:
    p = sub.add_parser("translate", help="train a translator: pretrained BART + a new source encoder, two stages")
    p.add_argument("--bart", required=True, help="pretrained BART directory (target language)")
    p.add_argument("--train", required=True, help="JSONL pairs")
    p.add_argument("--source", required=True, help="JSONL field of the source text (e.g. en)")
    p.add_argument("--target", required=True, help="JSONL field of the target text (e.g. de)")
    p.add_argument("--eval", help="JSONL pairs for per-stage evaluation (loss, token accuracy)")
    p.add_argument("--test", help="JSONL pairs to report sacreBLEU on at the end")
    p.add_argument("--run-dir", default="runs/translate")
    p.add_argument("--source-tokenizer", help="default: a byte-level BPE trained on the source side")
    p.add_argument("--source-vocab-size", type=VOCAB, help="ids of the source tokenizer trained on the pairs "
                                                             "(default: 8000)")
    p.add_argument("--source-layers", type=COUNT, default=2)
    p.add_argument("--max-len", type=MAX_LEN, default=128)
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--label-smoothing", type=SHARE, default=0.0, help=LABEL_SMOOTHING_HELP)
    p.add_argument("--buckets", type=NONNEGATIVE, default=0,
                   help="batch pairs of similar lengths, sorting pools of this many batches (0: off)")
    p.add_argument("--stage1-steps", type=COUNT, help="(default 1000; resumed without it: the stage's own)")
    p.add_argument("--stage1-lr", type=POSITIVE, default=5e-4)
    p.add_argument("--stage2-steps", type=COUNT, help="(default 200; resumed without it: the stage's own)")
    p.add_argument("--stage2-lr", type=POSITIVE, default=5e-5)
    p.add_argument("--warmup", type=NONNEGATIVE, default=50)
    p.add_argument("--num-beams", type=COUNT, help="beam search scored beside greedy on --test (default: 4)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--eval-every", type=COUNT, default=200)
    p.add_argument("--save-every", type=COUNT, default=500)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_translate)


def _finetune_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model on a labelled task (classification, regression, "
                                        "token-classification, extractive-qa, seq2seq, or a preset)")
    p.add_argument("--model", required=True, help="model directory (ours or transformers') with its tokenizer")
    p.add_argument("--task", required=True, help="classification, regression, token-classification, extractive-qa, "
                                                 "seq2seq, or a preset: cola, sst2, stsb, mrpc, rte, mnli, nsmc")
    p.add_argument("--train", required=True, help=".tsv/.csv/.jsonl (QA: SQuAD .json or question/context/answers records), or "
                                                  "hf:NAME[:CONFIG][?split=…] (e.g. hf:nyu-mll/glue:sst2)")
    p.add_argument("--eval", help="labelled file evaluated after every epoch (selects the best model)")
    p.add_argument("--run-dir", default="runs/finetune")
    p.add_argument("--epochs", type=COUNT, help="(default 3; resumed without it: the run's own)")
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--lr", type=POSITIVE, default=5e-5)
    p.add_argument("--warmup-ratio", type=SHARE, default=0.1)
    p.add_argument("--weight-decay", type=number(float, 0), default=0.01)
    p.add_argument("--label-smoothing", type=SHARE, default=0.0, help=LABEL_SMOOTHING_HELP)
    p.add_argument("--layer-decay", type=number(float, 0, 1, open_low=True), default=1.0,
                   help="each layer's lr this factor of the next one up's, the task head at --lr (ELECTRA's "
                        "fine-tuning: 0.8); 1: one lr")
    p.add_argument("--relative-lr", action="store_true", help=RELATIVE_LR_HELP)
    p.add_argument("--early-stopping", type=COUNT, metavar="PATIENCE",
                   help="stop after PATIENCE evaluations without a new best")
    p.add_argument("--max-train-rows", type=COUNT)
    p.add_argument("--max-eval-rows", type=COUNT)
    p.add_argument("--keep-last", type=COUNT, default=1, help="training checkpoints kept (for --resume)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    for name in ("text", "text-pair", "label", "source", "target", "tokens", "tags"):
        p.add_argument(f"--{name}-column")
    p.add_argument("--metric", help="main metric (model selection): accuracy, f1, macro_f1, mcc, pearson, spearman, "
                                    "exact_match, rouge, bleu")
    p.add_argument("--prefix", help='T5 input prefix, e.g. "summarize: " or "translate English to German: "')
    p.add_argument("--pair-prefix", help='T5: before the second text of a pair (e.g. "sentence2: ")')
    p.add_argument("--label-words", nargs="+", metavar="LABEL=WORD", help="T5: target word per label")
    p.add_argument("--max-len", type=MAX_LEN, help="tokens per example (default 128; extractive QA 384; at most "
                                                   "the model's positions)")
    p.add_argument("--stride", type=NONNEGATIVE, help="extractive QA: tokens shared by neighbouring windows "
                                                      "(default a third of --max-len)")
    p.add_argument("--max-answer-len", type=COUNT, help="extractive QA: longest answer in tokens (default 30)")
    p.add_argument("--max-new-tokens", type=COUNT, help="seq2seq and T5's answers: tokens generated (default 64)")
    p.add_argument("--num-beams", type=COUNT, help="seq2seq and T5's answers: beam width (default 1, greedy)")
    p.set_defaults(fn=cmd_finetune)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a fine-tuned model on a labelled file")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--max-rows", type=COUNT, help="read only the first N rows (default: all)")
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=cmd_evaluate)


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predictions of a fine-tuned model, JSONL (default) or TSV")
    p.add_argument("--model", required=True)
    p.add_argument("--input", default="-", help="file read as in training, or - (stdin) or a .txt file: JSON "
                   "records or text lines")
    p.add_argument("--output", help="default: stdout")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "tsv"])
    p.add_argument("--batch-size", type=COUNT, default=32)
    p.add_argument("--max-rows", type=COUNT, help="read only the first N rows (default: all)")
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=cmd_predict)


def _convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="import a transformers model directory (or re-export ours)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(fn=cmd_convert)


def _train_tokenizer_parser(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train a WordPiece, byte-level BPE or Unigram tokenizer on text files")
    p.add_argument("--corpus", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--vocab-size", type=VOCAB, default=8000)
    p.add_argument("--kind", default="wordpiece", choices=["wordpiece", "bpe", "unigram"],
                   help="wordpiece (BERT, ELECTRA), bpe (BART, byte-level), unigram (T5) (default: wordpiece)")
    p.add_argument("--extra-ids", type=NONNEGATIVE, help="unigram: number of T5 sentinels <extra_id_i> (default: 100)")
    p.add_argument("--lowercase", action="store_true", help="bpe/unigram: lowercase (they keep case by default)")
    _corpus_options(p)
    p.set_defaults(fn=cmd_train_tokenizer)


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="clozeformer", description=__doc__)
    ap.add_argument("--version", action="version", version=f"clozeformer {VERSION}")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_demo_parser, _pretrain_parser, _fill_mask_parser, _noise_parser, _generate_parser, _translate_parser,
                _finetune_parser, _evaluate_parser, _predict_parser, _convert_parser, _train_tokenizer_parser):
        add(sub)
    return ap


def _user_error(e: BaseException) -> bool:
    """Bad input or a failing environment (reported in one line), as opposed to a bug (traceback)."""
    if isinstance(e, (ValueError, OSError, MemoryError)):
        return True
    if type(e).__module__.split(".")[0] == "clozeformer":  # our own error classes, e.g. TrainingError
        return True
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    return oom is not None and isinstance(e, oom)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"clozeformer: warning: {one_line(str(message))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a bad option (1, its line already printed)
        return e.code if isinstance(e.code, int) else 1
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            args.fn(args)
        except KeyboardInterrupt as e:  # Ctrl-C, or TrainingInterrupted: SIGINT/SIGTERM after saving a checkpoint
            print(f"clozeformer: {str(e) or 'interrupted'}", file=sys.stderr)
            return 128 + getattr(e, "signum", signal.SIGINT)  # as a shell reports a signal: 130, 143
        except Exception as e:
            if not _user_error(e):
                raise
            print(f"clozeformer: error: {one_line(e)}", file=sys.stderr)
            return 1
    return 0
