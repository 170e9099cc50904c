"""`finetune(...)`, `evaluate(...)`, `predict(...)`: the Python API behind the CLI subcommands.

Fine-tuning is pretraining's path with a task in place of the objective: labelled rows ->
features -> batches -> a model with a head -> `fit`. Evaluation runs once per epoch; the
best model by the task's main metric is kept in run_dir/best (the model to use), the final
one in run_dir/last; both are HF-layout directories carrying the label set and the task
(config.json: id2label/label2id and "clozeformer" → "task"), so `evaluate`/`predict` need
only the model directory. Heads per family and kind:

    classification/regression  BERT pooler / ELECTRA [CLS] head / BART last </s>; T5 text to text
    token-classification       every token vector (BART: decoder states)
    extractive-qa              start/end logits over the tokens of each context window
    seq2seq                    BART / T5 with their LM heads (ROUGE or sacreBLEU on generations)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clozeformer.config import at_least, typed
from clozeformer.data.cache import content_id
from clozeformer.families import family_of
from clozeformer.interop.model_dir import (NOT_IN_TRANSFORMERS, TRANSLATOR, check_fits, load_model, load_state,
                                           save_model, trained_for)
from clozeformer.models.electra import ElectraForPreTraining
from clozeformer.tasks.spec import TaskError, TaskSpec, task_spec
from clozeformer.tasks.task import (TaskData, check_labels, check_options, example, features, kind_of, label_set,
                                    load_examples, metrics_fn, steps_per_epoch)
from clozeformer.tokenizer import Tokenizer
from clozeformer.train import distributed
from clozeformer.train.checkpoint import check_fresh, holds_run_dir, run_budget
from clozeformer.train.config import TrainConfig
from clozeformer.train.loop import evaluate as evaluate_batches, fit

def _head_model(base: nn.Module, spec: TaskSpec, seed: int) -> nn.Module:
    """The model that fine-tunes for `spec`: a new head on base's encoder (weights copied), or base itself
    for generation (seq2seq, T5 text to text)."""
    family, kind = family_of(base), kind_of(spec, base.config.model_type)
    if kind.generates:
        if not hasattr(base, "generate"):
            raise TaskError(f"{spec.kind} needs an encoder-decoder (BART, T5); this model is "
                            f"{type(base).__name__}")
        return base
    head = family.head(spec.kind)
    if head is None:
        how = " (text to text: use task seq2seq)" if family.text_to_text else ""
        raise TaskError(f"{family.name} has no {spec.kind} head{how}")
    name = head.__name__
    num_labels = kind.num_labels(spec)
    if type(base).__name__ == name and base.num_labels == num_labels and _same_labels(base, spec):
        return base  # continue fine-tuning the same head
    torch.manual_seed(seed)  # the new head's initial weights
    net = head(base.config, num_labels)
    source = base.discriminator if isinstance(base, ElectraForPreTraining) else base
    want = net.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in want and want[k].shape == v.shape
              and not k.startswith(("classifier.", "span.", "dense.", "out."))}
    if not shared:
        raise TaskError(f"{type(base).__name__} shares no encoder weights with {name}")
    load_state(net, shared, type(base).__name__)
    return net


def _same_labels(model: nn.Module, spec: TaskSpec) -> bool:
    return (getattr(model, "task", None) or {}).get("labels") == spec.labels


def _load(model_dir: str | Path) -> tuple[nn.Module, Tokenizer]:
    with warnings.catch_warnings():  # a bare encoder's missing pretraining heads are expected here
        warnings.filterwarnings("ignore", message=".*freshly initialised.*")
        model = load_model(model_dir)
    if trained_for(model) == TRANSLATOR:  # (a fine-tuned head may be fine-tuned further)
        raise ValueError(f"{model_dir} is {TRANSLATOR}: its inputs are another vocabulary's; continue its training "
                         "with clozeformer translate --resume, or use it with clozeformer generate")
    return model, check_fits(Tokenizer.load(model_dir), model, model_dir)


@typed
@holds_run_dir
def finetune(model: str | Path, task: str | TaskSpec, train: str | Path, eval: str | Path | None = None, *,
             run_dir: str | Path = "runs/finetune", epochs: int | None = None, batch_size: int = 32, lr: float = 5e-5,
             warmup_ratio: float = 0.1, weight_decay: float = 0.01, early_stopping: int | None = None,
             seed: int = 0, precision: str = "fp32", device: str = "auto", max_train_rows: int | None = None,
             max_eval_rows: int | None = None, keep_last: int = 1, log_every: int = 10, resume: bool = False,
             compile: bool = False, label_smoothing: float = 0.0, layer_decay: float = 1.0, relative_lr: bool = False,
             progress: bool = True,
             **task_options: Any) -> dict[str, Any]:
    """Fine-tune the model directory `model` on `task` (a kind or a preset name); returns a summary.

    task_options override TaskSpec fields (text_column, text_pair_column, label_column, metric,
    prefix, label_words, max_len, …). `epochs` defaults to 3, or, resumed, to the run's own. Evaluation
    on `eval` after every epoch keeps the best model (run_dir/best) by the main metric; early_stopping=N
    stops after N evaluations without a new best; layer_decay < 1 trains each layer at that factor of the lr
    of the layer above (the head at `lr`); relative_lr scales each matrix's lr by its size
    (TrainConfig.relative_lr)."""
    at_least(1, epochs=epochs, batch_size=batch_size, max_train_rows=max_train_rows, max_eval_rows=max_eval_rows,
             keep_last=keep_last, log_every=log_every)
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio {warmup_ratio} is out of range; allowed: a share in [0, 1)")
    if early_stopping is not None and (early_stopping < 1 or eval is None):
        raise ValueError("early_stopping needs an eval file and a patience ≥ 1")
    if max_eval_rows is not None and eval is None:
        raise ValueError(f"max_eval_rows {max_eval_rows} limits the eval file; there is none (give --eval, or leave "
                         "out --max-eval-rows)")
    check_fresh(Path(run_dir), resume, run="fine-tuning")
    base, tok = _load(model)
    family = base.config.model_type
    spec = task_spec(task, **task_options)
    check_options(spec, family, task_options)
    limit = base.config.max_length
    if limit is not None and spec.max_len > limit:
        if task_options.get("max_len") is not None:  # as pretrain and translate: a length given is a length meant
            raise ValueError(f"max_len {spec.max_len} exceeds the model's {limit} positions; allowed: max_len ≤ "
                             f"{limit}")
        spec = spec.replace(max_len=limit)  # a preset's or kind's default (QA's 384) fits a shorter model
    train_ex = load_examples(spec, train, "train")[:max_train_rows]
    eval_ex = load_examples(spec, eval, "validation")[:max_eval_rows] if eval is not None else []
    spec = spec.replace(labels=label_set(spec, train_ex))
    kind_of(spec, family).check(spec, train)
    check_labels(spec, eval_ex)
    net = _head_model(base, spec, seed)
    if (head := type(net).__name__) in NOT_IN_TRANSFORMERS:
        warnings.warn(f"transformers has no {head}: this model will load in clozeformer (load_model, evaluate, "
                      "predict), not in transformers")
    net.task = spec.to_dict()
    types = getattr(base.config, "type_vocab_size", 2)
    train_f, _ = features(spec, tok, family, train_ex, token_types=types)
    _known(tok, train_f, train)
    eval_f, eval_w = features(spec, tok, family, eval_ex, token_types=types)
    data = TaskData(train_f, eval_f, pad_id=tok.pad_id, batch_size=batch_size, seed=seed)
    per_epoch = steps_per_epoch(len(train_f), batch_size)
    if epochs is None:  # resumed without epochs: the run's own length, not the default's
        steps = run_budget(Path(run_dir)).get("steps", 3 * per_epoch) if resume else 3 * per_epoch
    else:
        steps = epochs * per_epoch
    check_fresh(Path(run_dir), resume, steps=steps, per_epoch=per_epoch)
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=int(warmup_ratio * steps), weight_decay=weight_decay,
                      eval_every=per_epoch, save_every=per_epoch, eval_batches=10**9, keep_last=keep_last,
                      log_every=min(log_every, per_epoch), seed=seed, precision=precision, device=device,
                      compile=compile, label_smoothing=label_smoothing, layer_decay=layer_decay,
                      relative_lr=relative_lr)
    run_dir = Path(run_dir)
    main = spec.main_metric
    keeper = _BestKeeper(net, tok, run_dir, main, early_stopping)
    # the files by their content: --resume from elsewhere works, an edited file is refused
    state = {"data": {"train": content_id(train), "eval": None if eval is None else content_id(eval),
                      "task": spec.to_dict(), "batch_size": batch_size, "train_rows": len(train_ex)}}
    summary = fit(net, data, cfg, run_dir, metrics_fn=metrics_fn(spec, tok, family, net, eval_ex, eval_w),
                  resume=resume, tokenizer=tok, extra_state=state, progress=progress, on_eval=keeper)
    if distributed.env_rank() == 0:
        save_model(net, run_dir / "last", tok)
        if not eval_ex:  # nothing to select by: the last model is the best one
            save_model(net, run_dir / "best", tok)
    best = keeper.best()
    summary.update(task=spec.kind, preset=spec.preset, metric=main, epochs=steps // per_epoch,
                   steps_per_epoch=per_epoch, train_examples=len(train_ex), eval_examples=len(eval_ex),
                   labels=spec.labels, best=best, model_dir=str(run_dir / "best"), last_dir=str(run_dir / "last"))
    return summary


class _BestKeeper:
    """fit's on_eval hook: save the model to run_dir/best when the main metric beats every earlier
    evaluation in metrics.jsonl; stop after `patience` evaluations without a new best.

    A pure function of metrics.jsonl (which fit trims to the checkpoint on resume), so it holds
    no state a resumed run would need back. Step-0 evaluations (before training) do not count.
    """

    def __init__(self, model: nn.Module, tok: Tokenizer, run_dir: Path, metric: str, patience: int | None) -> None:
        self.model, self.tok, self.run_dir, self.metric, self.patience = model, tok, run_dir, metric, patience

    def history(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r for r in rows if r["split"] == "eval" and r["step"] > 0 and self.metric in r]

    def best(self) -> dict | None:
        rows = self.history()
        return max(rows, key=lambda r: r[self.metric]) if rows else None  # max keeps the earliest of ties

    def __call__(self, step: int, metrics: dict[str, float], progress: float) -> bool:
        rows = self.history()
        if not rows:
            return False
        best = self.best()
        if best["step"] == step and distributed.env_rank() == 0:
            save_model(self.model, self.run_dir / "best", self.tok)
        since = sum(1 for r in rows if r["step"] > best["step"])
        return self.patience is not None and since >= self.patience


# a head fine-tuned elsewhere (transformers) records no task: its class names the kind
_HEAD_KINDS = {"SequenceClassification": "classification", "TokenClassification": "token-classification",
               "QuestionAnswering": "extractive-qa"}


def _task_of(model: nn.Module, model_dir) -> TaskSpec:
    """The task a fine-tuned model was trained for: ours from config.json, else (transformers' heads) its kind
    from the head's class and its labels from id2label, the columns the kind's defaults."""
    task = dict(getattr(model, "task", None) or {})
    if "kind" not in task:
        head = type(model).__name__
        kind = next((k for suffix, k in _HEAD_KINDS.items() if head.endswith(suffix)), None)
        if kind is None:
            raise TaskError(f"{model_dir}: no fine-tuning task recorded in its config.json (\"clozeformer\" → "
                            "\"task\") and no task head; fine-tune it first")
        regression = kind == "classification" and model.num_labels == 1
        names = None if regression or kind == "extractive-qa" else \
            task.get("labels") or [f"LABEL_{i}" for i in range(model.num_labels)]  # transformers' default names
        task = {**task, "kind": "regression" if regression else kind, "labels": names}
    return TaskSpec.from_dict(task)


def _known(tok: Tokenizer, feats: list[dict], source) -> None:
    """Text the model's tokenizer reads as mostly [UNK] is refused (Tokenizer.check_known)."""
    tok.check_known([i for f in feats for i in f["input_ids"]], str(source),
                    "use a model whose tokenizer was trained on text like this")


def _run(model: nn.Module, spec: TaskSpec, tok: Tokenizer, examples: list[dict], batch_size: int, *,
         labelled: bool, device: str, source) -> tuple[list, list[dict], list]:
    """(features, batches, windows) on `device`, model moved there."""
    family = model.config.model_type
    feats, wins = features(spec, tok, family, examples, labelled=labelled,
                           token_types=getattr(model.config, "type_vocab_size", 2))
    _known(tok, feats, source)
    dev = distributed.resolve_device(device)
    model.to(dev).eval()
    data = TaskData([], feats, pad_id=tok.pad_id, batch_size=batch_size, seed=0)
    return feats, [{k: v.to(dev) for k, v in b.items()} for b in data.eval_batches()], wins


@typed
def evaluate(model: str | Path, data: str | Path, *, batch_size: int = 32, device: str = "auto",
             max_rows: int | None = None) -> dict[str, float]:
    """The metrics of a fine-tuned model directory on a labelled file (read as in training)."""
    at_least(1, batch_size=batch_size, max_rows=max_rows)  # -1 rows dropped the last row without a word
    net, tok = _load(model)
    spec = _task_of(net, model)
    examples = load_examples(spec, data, "validation")[:max_rows]
    check_labels(spec, examples)
    family = net.config.model_type
    _, batches, wins = _run(net, spec, tok, examples, batch_size, labelled=True, device=device, source=data)
    dev = next(net.parameters()).device
    out = evaluate_batches(net, batches, metrics_fn(spec, tok, family, net, examples, wins), dev)
    return {"examples": len(examples), **out}


@torch.no_grad()
@typed
def predict(model: str | Path, inputs: str | Path | list[dict | str], *, batch_size: int = 32, device: str = "auto",
            max_rows: int | None = None) -> list[dict[str, Any]]:
    """Predictions of a fine-tuned model directory for a file (or a list of records, or of texts for the
    task's text column), one dict per input:
    its input fields plus "label" (+ "score"), "score" (regression), "tags", "answer" or "output"."""
    at_least(1, batch_size=batch_size, max_rows=max_rows)
    if isinstance(inputs, list) and not inputs:
        raise ValueError("predict: no inputs (an empty list)")
    net, tok = _load(model)
    spec = _task_of(net, model)
    family = net.config.model_type
    kind = kind_of(spec, family)
    if isinstance(inputs, list):
        text = kind.input_column(spec)
        if text is None and not all(isinstance(r, dict) for r in inputs):
            shape = (f'{{"{spec.tokens_column}": ["John", "lives", "here"]}}' if spec.kind == "token-classification"
                     else '{"question": "…", "context": "…"}')
            raise TaskError(f"{'an' if spec.kind[0] in 'aeiou' else 'a'} {spec.kind} model reads JSON records such as "
                            f"{shape}, one per line, not bare text")
        if blank := [i + 1 for i, r in enumerate(inputs) if isinstance(r, str) and not r.strip()]:
            raise TaskError(f"input {blank[0]}: empty text (nothing to predict from)")  # it was answered
        examples = [example(spec, (f"input {i + 1}", r if isinstance(r, dict) else {text: r}), labelled=False)
                    for i, r in enumerate(inputs)]
    else:
        examples = load_examples(spec, inputs, "test", labelled=False)
    examples = examples[:max_rows]
    _, batches, wins = _run(net, spec, tok, examples, batch_size, labelled=False, device=device,
                            source="the input" if isinstance(inputs, list) else inputs)
    outs = [(None if kind.generates else net(**b), b) for b in batches]  # no forward pass without targets
    preds = kind.predictions(spec, tok, net, outs, examples, wins)
    rows = [kind.row(spec, tok, ex, p) for ex, p in zip(examples, preds)]
    confidences = kind.confidences(outs)
    for row, p in zip(rows, confidences or []):
        row["score"] = p
    return rows


__all__ = ["evaluate", "finetune", "predict"]
