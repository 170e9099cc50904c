"""`pretrain(...)`: corpus -> tokenizer -> token cache -> objective -> model -> fit.

The Python API behind `clozeformer pretrain`; each family adds its recipe to RECIPES.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clozeformer.config import BertConfig
from clozeformer.data.cache import load_corpus
from clozeformer.data.corpus import iter_texts
from clozeformer.data.pretrain import BertPretrainData, MLMSpec
from clozeformer.interop.hf import load_model, save_model
from clozeformer.models.bert import BertForPreTraining
from clozeformer.models.output import Output
from clozeformer.tokenizer import Tokenizer
from clozeformer.train import distributed
from clozeformer.train.loop import TrainConfig, fit


def bert_metrics(out: Output, batch: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """(sum, count) pairs: loss per batch, MLM loss/accuracy per prediction, NSP per row."""
    labels = batch["labels"][batch["labels"] != -100]
    m = labels.numel()
    metrics = {"loss": (out.loss.item(), 1),
               "mlm_loss": (out.losses["mlm"].item() * m, m),
               "mlm_acc": ((out.logits.argmax(-1) == labels).sum().item(), m)}
    if "nsp" in out.losses:
        n = batch["next_sentence_label"].numel()
        metrics["nsp_loss"] = (out.losses["nsp"].item() * n, n)
        metrics["nsp_acc"] = ((out.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum().item(), n)
    return metrics


@dataclass(frozen=True)
class Recipe:
    config_cls: type
    model_cls: type
    metrics: Any


RECIPES = {"bert": Recipe(BertConfig, BertForPreTraining, bert_metrics)}


def pretrain(corpus: Sequence[str | Path], *, model: str = "bert", config: str = "mini", run_dir: str | Path = "runs/pretrain",
             tokenizer: str | Path | Tokenizer | None = None, vocab_size: int = 8000, lowercase: bool = True,
             init: str | Path | None = None, max_len: int = 128, batch_size: int = 32, nsp: bool = True,
             whole_word: bool = False, mlm_rate: float = 0.15, train: TrainConfig = TrainConfig(),
             model_overrides: dict[str, Any] | None = None, text_field: str = "text", blank_line_docs: bool = False,
             eval_fraction: float = 0.02, cache_dir: str | Path | None = None, resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Pretrain a model from scratch (or continue from `init`) on text files; returns a summary.

    The final model (HF layout, with its tokenizer) is saved to run_dir/model. Under torchrun
    every rank calls this alike (see train/distributed.py).
    """
    if model not in RECIPES:
        raise ValueError(f"unknown model family {model!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[model]
    run_dir = Path(run_dir)
    corpus = [Path(p) for p in corpus]
    dist = distributed.init(train.device)
    with distributed.main_first(dist):  # rank 0 trains the tokenizer and builds the cache; the others reuse them
        tok = _tokenizer(tokenizer, init, run_dir, corpus, vocab_size, lowercase, text_field, blank_line_docs,
                         resume or not dist.is_main)
        cache = load_corpus(corpus, tok, cache_dir=cache_dir, text_field=text_field, blank_line_docs=blank_line_docs,
                            progress=progress and dist.is_main)

    if init is not None:
        net = load_model(init)
        cfg = net.config
    else:
        cfg = recipe.config_cls.preset(config, **{"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id,
                                                  "max_positions": max(512, max_len), "nsp": nsp,
                                                  **(model_overrides or {})})
        torch.manual_seed(train.seed)  # the seed fixes the initial weights too
        net = recipe.model_cls(cfg)
    if cfg.vocab_size < tok.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model's vocabulary holds {cfg.vocab_size}")
    if max_len > cfg.max_positions:
        raise ValueError(f"max_len {max_len} exceeds the model's max_positions {cfg.max_positions}")
    if nsp and not cfg.nsp:
        raise ValueError("nsp=True but the model has no NSP head (pass nsp=False)")

    spec = MLMSpec.from_tokenizer(tok, whole_word=whole_word, rate=mlm_rate)
    data = BertPretrainData(cache, spec, max_len=max_len, batch_size=batch_size, nsp=nsp, seed=train.seed,
                            eval_fraction=eval_fraction)
    data_state = {"corpus_key": cache.meta["key"], "max_len": max_len, "batch_size": batch_size, "nsp": nsp,
                  "whole_word": whole_word, "mlm_rate": mlm_rate, "eval_fraction": eval_fraction}
    summary = fit(net, data, train, run_dir, metrics_fn=recipe.metrics, resume=resume, tokenizer=tok,
                  extra_state={"data": data_state}, progress=progress)
    if dist.is_main:  # the final checkpoint's model: complete even when FSDP sharded `net`
        save_model(load_model(summary["checkpoint"]), run_dir / "model", tok)
    distributed.barrier(dist)
    summary["model_dir"] = str(run_dir / "model")
    summary.update(n_tokens=cache.n_tokens, train_examples=len(data.train_examples),
                   eval_examples=len(data.eval_examples), parameters=sum(p.numel() for p in net.parameters()))
    return summary


def _tokenizer(given, init, run_dir: Path, corpus, vocab_size, lowercase, text_field, blank_line_docs,
               resume) -> Tokenizer:
    """The tokenizer given, else the init model's, else the run's own (trained once, reused on resume)."""
    if isinstance(given, Tokenizer):
        return given
    if given is not None:
        return Tokenizer.load(given)
    if init is not None:
        return Tokenizer.load(init)
    own = run_dir / "tokenizer"
    if (own / "tokenizer.json").exists() and resume:
        return Tokenizer.load(own)
    tok = Tokenizer.train_wordpiece(iter_texts(corpus, text_field=text_field, blank_line_docs=blank_line_docs),
                                    vocab_size=vocab_size, lowercase=lowercase)
    own.mkdir(parents=True, exist_ok=True)
    tok.save(own)
    return tok


__all__ = ["pretrain", "bert_metrics", "RECIPES"]
