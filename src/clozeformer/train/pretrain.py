"""`pretrain(...)`: corpus -> tokenizer -> token cache -> objective -> model -> fit.

The Python API behind `clozeformer pretrain`. A family (families.FAMILIES) names its objective;
OBJECTIVES gives each one how its batches are built from the token cache (`data`) and what
evaluation reports (`metrics`). A new objective adds a `data` builder of the same signature;
nothing else in `pretrain` changes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from clozeformer.config import MAX_VOCAB, MIN_MAX_LEN, typed
from clozeformer.data.cache import default_cache_dir, load_corpus
from clozeformer.data.corpus import check_reading, iter_texts, sources
from clozeformer.data.pretrain import (BertPretrainData, DenoisePretrainData, MLMSpec, SpanPretrainData,
                                       full_stop_ids, noise_ids)
from clozeformer.families import FAMILIES, Family
from clozeformer.interop.model_dir import load_model, save_model, trained_for
from clozeformer.models.bert import nsp_targets
from clozeformer.objectives.mlm import mlm_mask
from clozeformer.objectives.rtd import rtd_mask
from clozeformer.objectives.span import span_lengths
from clozeformer.models.output import Output
from clozeformer.nn.layers import mimetic_init
from clozeformer.io import read_json
from clozeformer.objectives.denoise import PRESETS
from clozeformer.tokenizer import Tokenizer
from clozeformer.train import distributed
from clozeformer.train.checkpoint import check_fresh, holds_run_dir, list_checkpoints, run_budget, run_section
from clozeformer.tasks.metrics import Pooled
from clozeformer.train.config import TrainConfig
from clozeformer.train.loop import count_tokens, fit
from clozeformer.nn.functional import IGNORE


def bert_metrics(out: Output, batch: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """(sum, count) pairs: loss per batch, MLM loss/accuracy per prediction, NSP per row."""
    labels = batch["labels"][batch["labels"] != IGNORE]
    m = labels.numel()
    metrics = {"loss": (out.loss.item(), 1),
               "mlm_loss": (out.losses["mlm"].item() * m, m),
               "mlm_acc": ((out.logits.argmax(-1) == labels).sum().item(), m)}
    if "nsp" in out.losses:
        y = nsp_targets(batch["next_sentence_label"])  # [P]: one per pair, also in packed rows
        n = y.numel()
        metrics["nsp_loss"] = (out.losses["nsp"].item() * n, n)
        metrics["nsp_acc"] = ((out.nsp_logits.argmax(-1) == y).sum().item(), n)
    return metrics


def bert_data(cache, tok: Tokenizer, *, max_len: int, batch_size: int, nsp: bool, whole_word: bool,
              mlm_rate: float, seed: int, eval_fraction: float, mask_fn=mlm_mask, **_: Any) -> BertPretrainData:
    spec = MLMSpec.from_tokenizer(tok, whole_word=whole_word, rate=mlm_rate)
    return BertPretrainData(cache, spec, max_len=max_len, batch_size=batch_size, nsp=nsp, seed=seed,
                            eval_fraction=eval_fraction, mask_fn=mask_fn)


def electra_data(cache, tok: Tokenizer, **kw: Any) -> BertPretrainData:
    """BERT's MLM-only batches, masked the ELECTRA way (objectives/rtd.rtd_mask: 85% [MASK], 15% kept)
    and carrying the generator's sampling noise `replace_u` [B, T], so a batch stays a pure function
    of (seed, index)."""
    return bert_data(cache, tok, **{**kw, "nsp": False}, mask_fn=rtd_mask)


def _auc(scores: Tensor, targets: Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    targets = targets.bool()
    if bool(targets.all()) or not bool(targets.any()):
        return float("nan")  # AUC needs both classes
    return float(roc_auc_score(targets.numpy(), scores.float().numpy()))


def electra_metrics(out: Output, batch: dict[str, Tensor]) -> dict[str, Any]:
    """Generator MLM loss/accuracy per prediction; discriminator loss/accuracy per non-pad token;
    discriminator ROC AUC for "replaced" over the whole eval set."""
    labels = batch["labels"][batch["labels"] != IGNORE]
    m = labels.numel()
    mask = batch.get("attention_mask")
    keep = mask.bool() if mask is not None else torch.ones_like(out.replaced)
    n = int(keep.sum())
    prob = out.logits.float().sigmoid()[keep]  # [N] P(replaced)
    target = out.replaced[keep]  # [N]
    return {"loss": (out.loss.item(), 1),
            "mlm_loss": (out.losses["mlm"].item() * m, m),
            "mlm_acc": ((out.generator_logits.argmax(-1) == labels).sum().item(), m),
            "disc_loss": (out.losses["disc"].item() * n, n),
            "disc_acc": (((prob > 0.5) == target).sum().item(), n),
            "replaced_frac": (target.sum().item(), n),
            "disc_auc": Pooled(_auc, (prob.cpu(), target.cpu()))}


def bart_data(cache, tok: Tokenizer, *, max_len: int, batch_size: int, noise: str, seed: int,
              eval_fraction: float, **_: Any) -> DenoisePretrainData:
    return DenoisePretrainData(cache, noise_ids(tok), noise, full_stops=full_stop_ids(tok), max_len=max_len,
                               batch_size=batch_size, seed=seed, eval_fraction=eval_fraction)


def t5_data(cache, tok: Tokenizer, *, max_len: int, batch_size: int, seed: int, eval_fraction: float,
            mlm_rate: float, **_: Any) -> SpanPretrainData:
    """Span corruption of `mlm_rate` of each document's tokens (T5's noise density; its recipe 0.15)."""
    return SpanPretrainData(cache, tok.sentinel_ids, tok.eos_id, max_len=max_len, batch_size=batch_size, seed=seed,
                            eval_fraction=eval_fraction, density=mlm_rate, decoder_start_id=tok.pad_id,
                            pad_id=tok.pad_id)


def seq2seq_metrics(out: Output, batch: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """Loss per batch; per target token: loss and next-token accuracy (teacher forcing)."""
    labels = batch["labels"][batch["labels"] != IGNORE]
    n = labels.numel()
    logits = out.logits if out.logits.dim() == 2 else out.logits[batch["labels"] != IGNORE]  # [N, V]
    return {"loss": (out.loss.item(), 1), "token_loss": (out.loss.item() * n, n),
            "token_acc": ((logits.argmax(-1) == labels).sum().item(), n)}


@dataclass(frozen=True)
class Objective:
    """A pretraining objective's part of `pretrain` (a family names its objective: families.Family).

    data(cache, tokenizer, *, max_len, batch_size, nsp, whole_word, mlm_rate, noise, seed,
    eval_fraction) returns an object with train_batch(index) -> dict and eval_batches(n) ->
    list[dict], each dict the model's forward keywords; each builder takes the options it uses.
    metrics(output, batch) -> {name: (sum, count) | Pooled}. specials: the roles the tokenizer
    must have (BART/RoBERTa-style tokenizers alias cls/sep to <s>/</s>, so a byte-level BPE serves
    BERT too). loss_key: the eval metric the plateau alarm compares with the unigram entropy.
    """

    metrics: Callable[[Output, dict[str, Tensor]], dict[str, Any]]
    data: Callable[..., Any]
    uses_noise: bool = False  # takes pretrain's `noise` preset (BART)
    masks_words: bool = False  # masks tokens for an MLM, so whole-word masking applies (BERT, RoBERTa, ELECTRA)
    specials: tuple[str, ...] = ("pad", "cls", "sep", "mask")  # special tokens the objective writes into rows
    sentinels: bool = False  # the objective needs <extra_id_N> (T5)
    loss_key: str = "mlm_loss"  # the held-out loss the plateau alarm watches
    text_share: float = 1.0  # share of that loss's targets that are corpus text (T5: the rest are sentinels, </s>)


OBJECTIVES = {
    "mlm": Objective(bert_metrics, bert_data, masks_words=True),  # BERT (with NSP if the family has it), RoBERTa
    "rtd": Objective(electra_metrics, electra_data, masks_words=True),
    "denoise": Objective(seq2seq_metrics, bart_data, uses_noise=True, specials=("pad", "bos", "eos", "mask"),
                         loss_key="token_loss"),
    # T5's targets: N noise tokens, K sentinels and </s>; K ≈ N / 3 (mean span 3), so text is ~3/4
    "span": Objective(seq2seq_metrics, t5_data, specials=("pad", "eos"), sentinels=True, loss_key="token_loss",
                      text_share=0.75),
}


SMALL_PRESETS = ("tiny", "mini")
WEIGHT_INITS = ("normal", "mimetic")  # the family's own init, or nn.layers.mimetic_init over it


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the corpus' token frequencies: the loss of a model that predicts every
    token from its frequency alone, the level an MLM sits at before it reads context."""
    counts = np.bincount(np.asarray(tokens), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


class PlateauAlarm:
    """fit's on_eval hook: says once, past `after` of the budget, when the held-out loss has never left
    `margin` nats of `level` (the unigram entropy, scaled to the share of targets that are text):
    the model predicts frequent tokens and has not begun to read context. Once, past `after`, when the
    held-out loss has risen `rise` nats above its best: the model learns the training text by heart (a
    small corpus read many times; BENCHMARKS.md, "Twenty minutes read this corpus forty times"). And, once, when
    ELECTRA's discriminator tells replaced tokens from originals no better than chance (held-out AUC below
    `auc_floor`): it gives every token nearly the same score, its token vectors collapsed to one
    (BENCHMARKS.md, "The papers' orderings": a peak lr too high for it)."""

    def __init__(self, key: str, level: float, *, after: float = 0.3, margin: float = 1.0, rise: float = 0.2,
                 auc_floor: float = 0.55, enabled: bool = True) -> None:
        self.key, self.level, self.after, self.margin, self.enabled = key, level, after, margin, enabled
        self.rise, self.auc_floor = rise, auc_floor
        self.best: tuple[float, int] | None = None  # (lowest held-out loss, its step)
        self.said: set[str] = set()

    def __call__(self, step: int, metrics: dict[str, float], progress: float) -> bool:
        if not self.enabled:
            return False
        loss, auc = metrics.get(self.key), metrics.get("disc_auc")
        if loss is not None and (self.best is None or loss < self.best[0]):
            self.best = (loss, step)
        if progress < self.after:  # early rises are the lr's warmup, not memory
            return False
        if "memorising" not in self.said and loss is not None and loss > self.best[0] + self.rise:
            self.said.add("memorising")
            warnings.warn(
                f"held-out {self.key} {loss:.2f} at step {step} ({progress:.0%} of the budget) has risen from its "
                f"best, {self.best[0]:.2f} at step {self.best[1]}: the model is learning the training text by heart "
                "rather than the language. Try: more text (--corpus); a shorter budget (--minutes/--steps); "
                "dropout in pretraining (--set dropout=0.1; BERT/ELECTRA also attention_dropout=0.1)", stacklevel=2)
        if "plateau" not in self.said and self.best is not None and self.best[0] > self.level - self.margin:
            self.said.add("plateau")
            warnings.warn(
                f"held-out {self.key} {loss:.2f} at step {step} ({progress:.0%} of the budget) has not come "
                f"{self.margin:g} nat below the unigram level {self.level:.2f}: the model predicts frequent tokens and "
                "does not read context yet. Try: more time (--minutes/--steps); a peak lr 2x lower or higher "
                "(--lr); a smaller model (--config tiny) or vocabulary (--vocab-size) on a small corpus; shorter "
                "rows (--max-len 64) for more updates; check that documents are real text, one per line "
                "(or --blank-line-docs)", stacklevel=2)
        if "collapse" not in self.said and auc is not None and auc < self.auc_floor:
            self.said.add("collapse")
            warnings.warn(
                f"held-out discriminator AUC {auc:.2f} at step {step} ({progress:.0%} of the budget): the "
                "discriminator scores replaced and original tokens alike, and its token vectors collapse toward "
                "one. Try a peak lr 2-4x lower (--lr)", stacklevel=2)
        return False

    @property
    def plateau(self) -> bool:
        return "plateau" in self.said

    @property
    def memorising(self) -> bool:
        return "memorising" in self.said


@typed
@holds_run_dir
def pretrain(corpus: Sequence[str | Path], *, model: str = "bert", config: str | None = None,
             run_dir: str | Path = "runs/pretrain", tokenizer: str | Path | Tokenizer | None = None,
             vocab_size: int | None = None, lowercase: bool | None = None,
             init: str | Path | None = None, max_len: int = 128, batch_size: int = 32, nsp: bool = True,
             whole_word: bool = False, mlm_rate: float | None = None, noise: str | None = None,
             weight_init: str | None = None, cross_document: bool = False,
             train: TrainConfig | dict[str, Any] | None = None,
             model_overrides: dict[str, Any] | None = None, text_field: str = "text", blank_line_docs: bool = False,
             eval_fraction: float = 0.02, cache_dir: str | Path | None = None, resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Pretrain a model from scratch (or continue from `init`) on text files; returns a summary.

    The final model (HF layout, with its tokenizer) is saved to run_dir/model. Under torchrun
    every rank calls this alike (see train/distributed.py). `nsp` applies to BERT only, `noise`
    (a objectives/denoise.py preset, default "bart-base") to BART only, `whole_word` to the MLM objectives
    (BERT, RoBERTa, ELECTRA); `mlm_rate` is the share of tokens masked (BERT, RoBERTa, ELECTRA) or corrupted
    (T5's noise density); BART's is in its noise. Without a tokenizer, the family's own kind is trained on the
    corpus (WordPiece, byte-level BPE, Unigram with sentinels) with `vocab_size` ids (default 8000);
    `lowercase` defaults to the family's habit (BERT/ELECTRA uncased, BART/T5 cased). An option that does not
    apply to the family, or to the tokenizer or model given, is refused by name.

    `train` is a TrainConfig, or a dict of TrainConfig fields over the defaults. For a new
    tiny or mini model those defaults are the family's small-budget recipe (Family.small_budget,
    each choice measured in BENCHMARKS.md) with dropout off in pretraining; `mlm_rate` (BERT/ELECTRA)
    and `weight_init` ("normal", or "mimetic": nn.layers.mimetic_init) likewise. A model continued
    with `init` keeps its own. `train={"minutes": 3}` trains for three minutes, the schedule
    spread over the time. Rows hold whole documents, each read as if alone (data/pretrain.py);
    `cross_document=True` lets attention and positions run across a row's documents instead.
    """
    if model not in FAMILIES:
        raise ValueError(f"unknown model family {model!r}; choose from {sorted(FAMILIES)}")
    if vocab_size is not None and not 1 <= vocab_size <= MAX_VOCAB:  # 0 was taken as the default 8000
        raise ValueError(f"vocab_size {vocab_size} is out of range; allowed: 1 … {MAX_VOCAB:,}")
    family = FAMILIES[model]
    recipe = OBJECTIVES[family.objective]
    _check_applies(model, recipe, init, tokenizer, vocab_size, lowercase, whole_word, mlm_rate, noise, weight_init)
    if resume and config is None and init is None:  # the run's own size, not the default's
        config = _run_preset(family, Path(run_dir))
    config_given, config = config, config or "mini"
    noise = "bart-base" if noise is None else noise
    nsp = nsp and family.nsp
    _check_arguments(recipe, model, config, init, tokenizer, max_len, batch_size, mlm_rate, noise, eval_fraction,
                     cross_document and nsp)
    check_reading(corpus, text_field=text_field, blank_line_docs=blank_line_docs)
    start = None if init is None else load_model(init)  # the model continued
    if start is not None:
        if (what := trained_for(start)) is not None:
            raise ValueError(f"--init {init} is {what}, not a pretrained model; continue pretraining from the model "
                             "directory a pretraining run saved")
        _agrees(start.config, model_overrides, f"--init {init}")
        if config_given is not None:  # a continued model keeps its size: a preset may only name it
            preset = family.config_cls.presets[config_given]
            differ = {k: getattr(start.config, k) for k, v in preset.items() if getattr(start.config, k, v) != v}
            if differ:
                raise ValueError(f"config {config_given!r} is not the size of the model continued from --init {init} "
                                 f"({', '.join(f'{k}={v!r}' for k, v in differ.items())}); leave out --config")
    # the model's config, refused before the corpus is read
    if start is None:
        new = _new_config(family, config, _ANY_TOKENIZER, max_len, nsp, model_overrides)
        _fits(new, max_len, nsp)
        _holds(family, new.replace(vocab_size=vocab_size or 8000))
    else:
        _fits(start.config, max_len, nsp)
    small = init is None and config in SMALL_PRESETS  # a continued model keeps its own config
    if resume and not isinstance(train, TrainConfig) and not {"steps", "minutes"} & set(train or {}):
        train = {**(train or {}), **run_budget(Path(run_dir))}  # the run's own budget, not the default 1000 steps
    train, mlm_rate, weight_init = _recipe(family, small, train, mlm_rate, weight_init)
    check_fresh(Path(run_dir), resume, steps=None if train.minutes > 0 else train.steps, run="pretraining")
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache_root.exists() and not cache_root.is_dir():  # before a tokenizer is trained
        said = "--cache-dir" if cache_dir is not None else "$CLOZEFORMER_CACHE" if os.environ.get(
            "CLOZEFORMER_CACHE") else "the token cache"
        raise ValueError(f"{said} {cache_root} is a file, not a directory")
    run_dir = Path(run_dir)
    corpus = sources(corpus)  # paths, or hf: dataset names
    dist = distributed.init(train.device)
    with distributed.main_first(dist):  # rank 0 trains the tokenizer and builds the cache; the others reuse them
        lowercase = family.lowercase if lowercase is None else lowercase
        tok = _tokenizer(tokenizer, init, run_dir, model, corpus, vocab_size or 8000, lowercase, text_field,
                         blank_line_docs,
                         resume or not dist.is_main, say=progress and dist.is_main)
        cache = load_corpus(corpus, tok, cache_dir=cache_dir, text_field=text_field, blank_line_docs=blank_line_docs,
                            progress=progress and dist.is_main)
    tok.check_known(cache.tokens, "the corpus", "leave out --tokenizer to train one on this corpus" if tokenizer
                    else "leave out --init: a new model gets a tokenizer trained on this corpus" if init
                    else "give a larger --vocab-size")

    net, exported = _model(family, config, start, tok, max_len, nsp, model_overrides, small, train.seed, weight_init)
    data = recipe.data(cache, tok, max_len=max_len, batch_size=batch_size, nsp=nsp, whole_word=whole_word,
                       mlm_rate=mlm_rate, noise=noise, seed=train.seed, eval_fraction=eval_fraction)
    data.cross_document = cross_document
    if batch_size > len(data.train_examples):  # every batch would repeat rows (and a huge one exhausts memory)
        again = f" (--tokenizer {run_dir / 'tokenizer'} reuses the one just trained)" if tokenizer is None and \
            init is None and (run_dir / "tokenizer").is_dir() else ""
        raise ValueError(f"batch_size {batch_size} is more than the {len(data.train_examples):,} training rows this "
                         f"corpus gives at max_len {max_len}; allowed: ≤ {len(data.train_examples):,}, or more "
                         f"text{again}")
    sample = [count_tokens(data.train_batch(i)) for i in range(4)]
    real = sum(c[1] for c in sample) / max(1, sum(c[2] for c in sample))
    entropy = unigram_entropy(cache.tokens, tok.vocab_size)
    if progress and dist.is_main:
        print(f"packing: {len(data.train_examples):,} training rows of ≤ {max_len} tokens, whole documents, "
              f"{real:.1%} of positions real tokens; unigram entropy {entropy:.2f} nats", file=sys.stderr, flush=True)
    data_state = {"corpus_key": cache.meta["key"], "max_len": max_len, "batch_size": batch_size, "nsp": nsp,
                  "whole_word": whole_word, "mlm_rate": mlm_rate, "eval_fraction": eval_fraction,
                  "cross_document": cross_document, **({"noise": noise} if recipe.uses_noise else {})}
    alarm = PlateauAlarm(recipe.loss_key, entropy * recipe.text_share, enabled=dist.is_main)
    summary = fit(net, data, train, run_dir, metrics_fn=recipe.metrics, resume=resume, tokenizer=tok,
                  extra_state={"data": data_state}, progress=progress, on_eval=alarm)
    if dist.is_main:  # the final checkpoint's model: complete even when FSDP sharded `net`
        final = family.model_cls(exported)  # the same weights; dropout as the family fine-tunes with
        final.load_state_dict(load_model(summary["checkpoint"]).state_dict())
        save_model(final, run_dir / "model", tok)
    distributed.barrier(dist)
    summary["model_dir"] = str(run_dir / "model")
    summary.update(n_tokens=cache.n_tokens, train_examples=len(data.train_examples),
                   eval_examples=len(data.eval_examples), parameters=sum(p.numel() for p in net.parameters()),
                   real_token_fraction=round(real, 4), unigram_entropy=round(entropy, 4), plateau=alarm.plateau,
                   memorising=alarm.memorising)
    return summary


def _recipe(family: Family, small: bool, train, mlm_rate: float | None,
            weight_init: str | None) -> tuple[TrainConfig, float, str]:
    """The TrainConfig, masking rate and initial weights: what the caller gave, the rest from the family's
    small-budget recipe for a new tiny/mini model (its warmup a share of the steps), else the defaults."""
    defaults = dict(family.small_budget) if small else {}
    recipe_rate, recipe_init = defaults.pop("mlm_rate", 0.15), defaults.pop("weight_init", "normal")
    mlm_rate = recipe_rate if mlm_rate is None else mlm_rate
    weight_init = recipe_init if weight_init is None else weight_init
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
    if not isinstance(train, TrainConfig):
        given, train = train or {}, {**defaults, **(train or {})}
        if train.get("minutes") and "warmup_steps" in given:
            raise ValueError(f"warmup_steps {given['warmup_steps']} counts steps; under a time budget the warmup is "
                             "a share of the time (give --warmup-fraction instead)")
        if not train.get("minutes") and not small and "warmup_fraction" in given:
            raise ValueError(f"warmup_fraction {given['warmup_fraction']} is a share of a --minutes budget (or of "
                             "a new tiny/mini model's steps); give --warmup in steps")
        if small and not train.get("minutes") and "warmup_steps" not in given:  # the recipe's share of the steps
            train["warmup_steps"] = max(1, round(train["warmup_fraction"] * (train.get("steps") or 1000)))
        train = TrainConfig(**train)
    return train, mlm_rate, weight_init


def _model(family: Family, config: str, start: nn.Module | None, tok: Tokenizer, max_len: int, nsp: bool,
           overrides: dict | None, small: bool, seed: int, weight_init: str) -> tuple[nn.Module, Any]:
    """The model to pretrain (`start`, the one continued, or a new preset sized for the tokenizer) and the config
    it is exported with; refuses a model whose vocabulary the tokenizer does not fit."""
    if start is not None:
        net = start
        cfg = exported = net.config
    else:
        exported = _new_config(family, config, tok, max_len, nsp, overrides)
        # small budgets: no dropout in pretraining (cramming §4.3: no time to overfit); the exported model
        # keeps the family's dropout in its config, for fine-tuning (there and in transformers)
        dropouts = [f.name for f in dataclasses.fields(family.config_cls) if f.name.endswith("dropout")]
        cfg = exported.replace(**{k: 0.0 for k in dropouts if small and k not in (overrides or {})})
        torch.manual_seed(seed)  # the seed fixes the initial weights too
        net = family.model_cls(cfg)
        if weight_init == "mimetic":
            mimetic_init(net)
    if cfg.vocab_size < tok.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model's vocabulary holds {cfg.vocab_size}")
    return net, exported


# What pretrain checks a new model's config against before any tokenizer exists: ids any tokenizer could give
_ANY_TOKENIZER = SimpleNamespace(vocab_size=2 ** 31 - 1, pad_id=0, bos_id=1, eos_id=2)


def _run_preset(family: Family, run_dir: Path) -> str | None:
    """The preset the run in `run_dir` was started with: the one its checkpoint's model config agrees with
    (dropouts aside: a small-budget run trains without them); None where none does (a --set size)."""
    saved = run_section(run_dir, "model_config")
    return next((name for name, fields in family.config_cls.presets.items() if saved and all(
        saved.get(k) == v for k, v in fields.items() if not k.endswith("dropout"))), None)


def _new_config(family: Family, config: str, tok, max_len: int, nsp: bool, overrides: dict | None):
    """A new model's config: the preset, what the tokenizer and max_len decide, then `overrides` (ConfigError
    for an unknown key or a value out of range)."""
    return family.config_cls.preset(config, **{**family.config_fields(tok, max_len),
                                               **({"nsp": nsp} if family.nsp else {}), **(overrides or {})})


def _agrees(cfg, overrides: dict | None, source: str) -> None:
    """A continued model keeps its own config: every override must already hold there (one it ignored would be
    lost without a word)."""
    wanted = type(cfg).from_dict({**cfg.to_dict(), **(overrides or {})})  # unknown keys and wrong types refused
    if differ := [k for k in overrides or {} if getattr(wanted, k) != getattr(cfg, k)]:
        raise ValueError(f"model_overrides (--set) {', '.join(f'{k}={overrides[k]!r}' for k in differ)}: the model "
                         f"continued from {source} has {', '.join(f'{k}={getattr(cfg, k)!r}' for k in differ)} and "
                         "keeps its own config (edit its config.json, or leave out --init)")


def _fits(cfg, max_len: int, nsp: bool) -> None:
    if max_len > getattr(cfg, "max_positions", max_len):  # T5's relative positions have no limit
        raise ValueError(f"max_len {max_len} exceeds the model's max_positions {cfg.max_positions}")
    if nsp and not cfg.nsp:
        raise ValueError("the model has no NSP head, so it pretrains without NSP: pass --no-nsp (Python: nsp=False)")


def memory_bytes() -> int:
    """This machine's memory for one process: the physical memory, or the cgroup's limit where lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def parameter_count(family: Family, cfg) -> int:
    """The parameters of `family.model_cls(cfg)`, exactly and at once for any depth or width: counted on the meta
    device (no storage) with every layer stack one layer deep, plus what a second layer adds to each stack."""
    depths = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if f.name.endswith("layers") and getattr(cfg, f.name) > 0}  # 0: another stack's depth
    shallow = dict.fromkeys(depths, 1)

    def count(**deeper) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in family.model_cls(cfg.replace(**{**shallow, **deeper})).parameters())

    base = count()
    return base + sum((depth - 1) * (count(**{name: 2}) - base) for name, depth in depths.items())


def _holds(family: Family, cfg) -> None:
    """A new model whose fp32 weights alone outgrow this machine's memory is refused by name (`--set
    num_layers=100000` ended in a MemoryError or the kernel's kill); training needs about 4x the weights."""
    params, memory = parameter_count(family, cfg), memory_bytes()
    if 4 * params > memory:
        raise ValueError(f"the model would have {params:,} parameters, whose fp32 weights alone need "
                         f"{4 * params / 2**30:,.1f} GiB, more than this machine's {memory / 2**30:,.1f} GiB; "
                         f"allowed: a config of at most {memory // 4:,} parameters (check --config and --set)")


def _check_applies(family: str, recipe: Objective, init, tokenizer, vocab_size, lowercase, whole_word: bool,
                   mlm_rate: float | None, noise: str | None, weight_init: str | None) -> None:
    """Options given that this family, tokenizer or continued model would not use are refused, not ignored."""
    if whole_word and not recipe.masks_words:
        raise ValueError(f"whole_word masking applies to the MLM objectives (bert, roberta, electra), not to "
                         f"{family} pretraining (leave out --whole-word)")
    if noise is not None and not recipe.uses_noise:
        raise ValueError(f"noise {noise!r} is a BART noise preset; {family} pretraining takes none (leave out --noise)")
    if mlm_rate is not None and recipe.uses_noise:
        raise ValueError(f"mlm_rate {mlm_rate}: BART's masking is part of its noise preset; choose one with --noise "
                         "(e.g. text-infilling, token-masking)")
    casing = None if lowercase is None else f"lowercase={lowercase} ({'--lowercase' if lowercase else '--cased'})"
    given = [name for name, value in (("vocab_size", vocab_size), (casing, lowercase)) if value is not None]
    source = f"--tokenizer {tokenizer}" if tokenizer is not None else f"--init {init}" if init is not None else None
    if given and source:
        raise ValueError(f"{', '.join(given)} shape{'s' if len(given) == 1 else ''} a tokenizer trained on the corpus; "
                         f"{source} brings its own (leave {'it' if len(given) == 1 else 'them'} out)")
    if weight_init is not None and init is not None:
        raise ValueError(f"weight_init {weight_init!r} initialises a new model; --init {init} continues from its "
                         "weights (leave out --weight-init)")


def _check_arguments(recipe: Objective, family: str, config: str, init, tokenizer, max_len: int, batch_size: int,
                     mlm_rate: float | None, noise: str, eval_fraction: float, cross_document_nsp: bool) -> None:
    """Everything that can be refused before the corpus is read: one ValueError naming the value."""
    if cross_document_nsp:
        raise ValueError("cross_document needs nsp=False: NSP reads one [CLS] per pair, each pair its own document")
    presets, tok_kind = FAMILIES[family].config_cls.presets, FAMILIES[family].tokenizer_kind
    if config not in presets:
        raise ValueError(f"unknown {family} preset {config!r}; choose from {sorted(presets)}")
    if not isinstance(max_len, int) or max_len < MIN_MAX_LEN:
        raise ValueError(f"max_len {max_len!r} is out of range; allowed: an integer ≥ {MIN_MAX_LEN}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size {batch_size} is out of range; allowed: an integer ≥ 1")
    if mlm_rate is not None and not 0 < mlm_rate < 1:
        raise ValueError(f"mlm_rate {mlm_rate} is out of range; allowed: a share in (0, 1)")
    if mlm_rate is not None and recipe.sentinels:
        try:
            span_lengths(max_len, mlm_rate)
        except ValueError:
            raise ValueError(f"mlm_rate {mlm_rate}: span corruption cannot make rows of exactly {max_len} input "
                             "tokens at that noise density; choose a lower one (T5's is 0.15)") from None
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction {eval_fraction} is out of range; allowed: [0, 1)")
    if recipe.uses_noise and noise not in PRESETS:
        raise ValueError(f"unknown noise {noise!r}; choose from {sorted(PRESETS)}")
    if init is not None:
        kind = read_json(Path(init) / "config.json", kind=dict).get("model_type") \
            if (Path(init) / "config.json").is_file() else None
        if kind is not None and kind != family:
            raise ValueError(f"--init {init} is a {kind} model; pretraining {family} continues a {family} model "
                             f"(use --model {kind}, or leave out --init)")
    if tokenizer is not None:
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer)
        lacks = [role for role in recipe.specials if role not in tok.specials]
        if recipe.sentinels and not tok.sentinels:
            lacks.append("sentinel (<extra_id_0>…)")
        if lacks:
            name = "the tokenizer" if isinstance(tokenizer, Tokenizer) else f"the tokenizer {tokenizer}"
            raise ValueError(f"{name} has no {', '.join(lacks)} token, which {family} pretraining needs; use a "
                             f"{tok_kind} tokenizer (train-tokenizer --kind {tok_kind})")




def _tokenizer(given, init, run_dir: Path, family: str, corpus, vocab_size, lowercase, text_field, blank_line_docs,
               resume, say: bool = False) -> Tokenizer:
    """The tokenizer given, else the init model's, else the run's own (trained once, reused on resume)."""
    if given is not None:
        tok = given if isinstance(given, Tokenizer) else Tokenizer.load(given)
        if init is not None and any((Path(init) / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
            own = Tokenizer.load(init).backend.get_vocab(with_added_tokens=True)
            if tok.backend.get_vocab(with_added_tokens=True) != own:  # the embeddings are rows of the init's ids
                raise ValueError(f"--tokenizer {given} numbers its tokens otherwise than --init {init}'s tokenizer, "
                                 "whose ids the continued embeddings belong to (leave out --tokenizer)")
        return tok
    if init is not None:
        return Tokenizer.load(init)
    own = run_dir / "tokenizer"
    if resume and (own / "tokenizer.json").exists():
        return Tokenizer.load(own)
    if resume and (found := list_checkpoints(run_dir)) and (found[-1] / "tokenizer.json").is_file():
        return Tokenizer.load(found[-1])  # a run started with --tokenizer: each checkpoint holds it
    texts = iter_texts(corpus, text_field=text_field, blank_line_docs=blank_line_docs)
    tok = Tokenizer.train(FAMILIES[family].tokenizer_kind, texts, vocab_size=vocab_size, lowercase=lowercase)
    own.mkdir(parents=True, exist_ok=True)
    tok.save(own)
    if say:
        print(f"tokenizer: {tok.vocab_size:,} ids trained on the corpus, saved to {own}; the tokenizers library breaks "
              f"ties in hash order, so a new run may number a few hundred ids differently: pass --tokenizer {own} "
              "(in place of --vocab-size) to repeat this run exactly (--resume and the other ranks reuse it)",
              file=sys.stderr, flush=True)
    return tok


__all__ = ["pretrain", "bert_metrics", "electra_metrics", "seq2seq_metrics", "Objective", "OBJECTIVES"]
