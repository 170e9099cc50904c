"""`pretrain(...)`: corpus -> tokenizer -> token cache -> objective -> model -> fit.

The Python API behind `clozeformer pretrain`. Each family adds a `Recipe` to RECIPES: its
config and model classes, how its batches are built from the token cache (`data`) and what
evaluation reports (`metrics`). A family with its own data class (BART's denoising) adds
a `data` builder of the same signature; nothing else in `pretrain` changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clozeformer.config import BartConfig, BertConfig, ElectraConfig, T5Config
from clozeformer.data.cache import load_corpus
from clozeformer.data.corpus import iter_texts, sources
from clozeformer.data.pretrain import (BertPretrainData, DenoisePretrainData, MLMSpec, SpanPretrainData,
                                       full_stop_ids, noise_ids)
from clozeformer.interop.hf import load_model, save_model
from clozeformer.models.bart import BartForConditionalGeneration
from clozeformer.models.bert import BertForPreTraining
from clozeformer.models.electra import ElectraForPreTraining
from clozeformer.objectives.rtd import rtd_mask
from clozeformer.models.output import Output
from clozeformer.models.t5 import T5ForConditionalGeneration
from clozeformer.tokenizer import Tokenizer
from clozeformer.train import distributed
from clozeformer.train.loop import Pooled, TrainConfig, fit


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


def bert_data(cache, tok: Tokenizer, *, max_len: int, batch_size: int, nsp: bool, whole_word: bool,
              mlm_rate: float, seed: int, eval_fraction: float, **_: Any) -> BertPretrainData:
    spec = MLMSpec.from_tokenizer(tok, whole_word=whole_word, rate=mlm_rate)
    return BertPretrainData(cache, spec, max_len=max_len, batch_size=batch_size, nsp=nsp, seed=seed,
                            eval_fraction=eval_fraction)


class ElectraPretrainData:
    """ELECTRA's batches: BERT's packed MLM-only windows (BertPretrainData(nsp=False)), masked the
    ELECTRA way (objectives/rtd.rtd_mask: 85% [MASK], 15% kept) and carrying the generator's
    sampling noise `replace_u` [B, T], so a batch stays a pure function of (seed, index)."""

    def __init__(self, inner: BertPretrainData) -> None:
        self.inner = inner
        self.train_examples, self.eval_examples = inner.train_examples, inner.eval_examples

    def _rtd(self, batch: dict[str, Tensor], purpose: int, index: int) -> dict[str, Tensor]:
        original = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])  # undo BERT's masking
        # purposes 6/7: apart from data/pretrain.py's 1-4 and the loop's dropout seed 5
        g = torch.Generator().manual_seed(hash((self.inner.seed, purpose, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        s = self.inner.spec
        return {**batch, **rtd_mask(original, mask_id=s.mask_id, vocab_size=s.vocab_size, special_ids=s.special_ids,
                                    generator=g, rate=s.rate, continuation=s.continuation)}

    def train_batch(self, index: int) -> dict[str, Tensor]:
        return self._rtd(self.inner.train_batch(index), 6, index)

    def eval_batches(self, max_batches: int = 8) -> list[dict[str, Tensor]]:
        return [self._rtd(b, 7, i) for i, b in enumerate(self.inner.eval_batches(max_batches))]


def electra_data(cache, tok: Tokenizer, **kw: Any) -> ElectraPretrainData:
    return ElectraPretrainData(bert_data(cache, tok, **{**kw, "nsp": False}))


def _auc(scores: Tensor, targets: Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    targets = targets.bool()
    if bool(targets.all()) or not bool(targets.any()):
        return float("nan")  # AUC needs both classes
    return float(roc_auc_score(targets.numpy(), scores.float().numpy()))


def electra_metrics(out: Output, batch: dict[str, Tensor]) -> dict[str, Any]:
    """Generator MLM loss/accuracy per prediction; discriminator loss/accuracy per non-pad token;
    discriminator ROC AUC for "replaced" over the whole eval set."""
    labels = batch["labels"][batch["labels"] != -100]
    m = labels.numel()
    mask = batch.get("attention_mask")
    keep = mask.bool() if mask is not None else torch.ones_like(out.replaced)
    n = int(keep.sum())
    prob = out.disc_logits.float().sigmoid()[keep]  # [N] P(replaced)
    target = out.replaced[keep]  # [N]
    return {"loss": (out.loss.item(), 1),
            "mlm_loss": (out.losses["mlm"].item() * m, m),
            "mlm_acc": ((out.logits.argmax(-1) == labels).sum().item(), m),
            "disc_loss": (out.losses["disc"].item() * n, n),
            "disc_acc": (((prob > 0.5) == target).sum().item(), n),
            "replaced_frac": (target.sum().item(), n),
            "disc_auc": Pooled(_auc, (prob.cpu(), target.cpu()))}


def bart_data(cache, tok: Tokenizer, *, max_len: int, batch_size: int, noise: str, seed: int,
              eval_fraction: float, **_: Any) -> DenoisePretrainData:
    return DenoisePretrainData(cache, noise_ids(tok), noise, full_stops=full_stop_ids(tok), max_len=max_len,
                               batch_size=batch_size, seed=seed, eval_fraction=eval_fraction)


def t5_data(cache, tok: Tokenizer, *, max_len: int, batch_size: int, seed: int, eval_fraction: float,
            **_: Any) -> SpanPretrainData:
    return SpanPretrainData(cache, tok.sentinel_ids, tok.eos_id, max_len=max_len, batch_size=batch_size, seed=seed,
                            eval_fraction=eval_fraction)


def seq2seq_metrics(out: Output, batch: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """Loss per batch; per target token: loss and next-token accuracy (teacher forcing)."""
    labels = batch["labels"][batch["labels"] != -100]
    n = labels.numel()
    logits = out.logits if out.logits.dim() == 2 else out.logits[batch["labels"] != -100]  # [N, V]
    return {"loss": (out.loss.item(), 1), "token_loss": (out.loss.item() * n, n),
            "token_acc": ((logits.argmax(-1) == labels).sum().item(), n)}


def _bert_config(tok: Tokenizer, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "max_positions": max(512, max_len)}


def _bart_config(tok: Tokenizer, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "bos_token_id": tok.bos_id,
            "eos_token_id": tok.eos_id, "decoder_start_token_id": tok.eos_id, "max_positions": max(1024, max_len)}


def _t5_config(tok: Tokenizer, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "eos_token_id": tok.eos_id,
            "decoder_start_token_id": tok.pad_id}


@dataclass(frozen=True)
class Recipe:
    """One family's part of `pretrain`.

    data(cache, tokenizer, *, max_len, batch_size, nsp, whole_word, mlm_rate, noise, seed,
    eval_fraction) returns an object with train_batch(index) -> dict and eval_batches(n) ->
    list[dict], each dict the model's forward keywords; each builder takes the options it uses.
    metrics(output, batch) -> {name: (sum, count) | Pooled}. config(tokenizer, max_len) -> the
    config fields the tokenizer decides. uses_nsp: the config takes pretrain's `nsp` flag (BERT).
    """

    config_cls: type
    model_cls: type
    metrics: Callable[[Output, dict[str, Tensor]], dict[str, Any]]
    data: Callable[..., Any]
    config: Callable[[Tokenizer, int], dict[str, Any]]
    uses_nsp: bool = False


RECIPES = {
    "bert": Recipe(BertConfig, BertForPreTraining, bert_metrics, bert_data, _bert_config, uses_nsp=True),
    "electra": Recipe(ElectraConfig, ElectraForPreTraining, electra_metrics, electra_data, _bert_config),
    "bart": Recipe(BartConfig, BartForConditionalGeneration, seq2seq_metrics, bart_data, _bart_config),
    "t5": Recipe(T5Config, T5ForConditionalGeneration, seq2seq_metrics, t5_data, _t5_config),
}


def pretrain(corpus: Sequence[str | Path], *, model: str = "bert", config: str = "mini", run_dir: str | Path = "runs/pretrain",
             tokenizer: str | Path | Tokenizer | None = None, vocab_size: int = 8000, lowercase: bool | None = None,
             init: str | Path | None = None, max_len: int = 128, batch_size: int = 32, nsp: bool = True,
             whole_word: bool = False, mlm_rate: float = 0.15, noise: str = "bart-base",
             train: TrainConfig = TrainConfig(),
             model_overrides: dict[str, Any] | None = None, text_field: str = "text", blank_line_docs: bool = False,
             eval_fraction: float = 0.02, cache_dir: str | Path | None = None, resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Pretrain a model from scratch (or continue from `init`) on text files; returns a summary.

    The final model (HF layout, with its tokenizer) is saved to run_dir/model. Under torchrun
    every rank calls this alike (see train/distributed.py). `nsp` applies to BERT only, `noise`
    (a objectives/denoise.py preset) to BART only. Without a tokenizer, the family's own kind
    is trained on the corpus (WordPiece, byte-level BPE, Unigram with sentinels); `lowercase`
    defaults to the family's habit (BERT/ELECTRA uncased, BART/T5 cased).
    """
    if model not in RECIPES:
        raise ValueError(f"unknown model family {model!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[model]
    nsp = nsp and recipe.uses_nsp
    run_dir = Path(run_dir)
    corpus = sources(corpus)  # paths, or hf: dataset names
    dist = distributed.init(train.device)
    with distributed.main_first(dist):  # rank 0 trains the tokenizer and builds the cache; the others reuse them
        lowercase = model in ("bert", "electra") if lowercase is None else lowercase
        tok = _tokenizer(tokenizer, init, run_dir, model, corpus, vocab_size, lowercase, text_field, blank_line_docs,
                         resume or not dist.is_main)
        cache = load_corpus(corpus, tok, cache_dir=cache_dir, text_field=text_field, blank_line_docs=blank_line_docs,
                            progress=progress and dist.is_main)

    if init is not None:
        net = load_model(init)
        cfg = net.config
    else:
        cfg = recipe.config_cls.preset(config, **{**recipe.config(tok, max_len),
                                                  **({"nsp": nsp} if recipe.uses_nsp else {}),
                                                  **(model_overrides or {})})
        torch.manual_seed(train.seed)  # the seed fixes the initial weights too
        net = recipe.model_cls(cfg)
    if cfg.vocab_size < tok.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model's vocabulary holds {cfg.vocab_size}")
    if max_len > getattr(cfg, "max_positions", max_len):  # T5's relative positions have no limit
        raise ValueError(f"max_len {max_len} exceeds the model's max_positions {cfg.max_positions}")
    if nsp and not cfg.nsp:
        raise ValueError("nsp=True but the model has no NSP head (pass nsp=False)")

    data = recipe.data(cache, tok, max_len=max_len, batch_size=batch_size, nsp=nsp, whole_word=whole_word,
                       mlm_rate=mlm_rate, noise=noise, seed=train.seed, eval_fraction=eval_fraction)
    data_state = {"corpus_key": cache.meta["key"], "max_len": max_len, "batch_size": batch_size, "nsp": nsp,
                  "whole_word": whole_word, "mlm_rate": mlm_rate, "eval_fraction": eval_fraction,
                  **({"noise": noise} if model == "bart" else {})}
    summary = fit(net, data, train, run_dir, metrics_fn=recipe.metrics, resume=resume, tokenizer=tok,
                  extra_state={"data": data_state}, progress=progress)
    if dist.is_main:  # the final checkpoint's model: complete even when FSDP sharded `net`
        save_model(load_model(summary["checkpoint"]), run_dir / "model", tok)
    distributed.barrier(dist)
    summary["model_dir"] = str(run_dir / "model")
    summary.update(n_tokens=cache.n_tokens, train_examples=len(data.train_examples),
                   eval_examples=len(data.eval_examples), parameters=sum(p.numel() for p in net.parameters()))
    return summary


def _tokenizer(given, init, run_dir: Path, family: str, corpus, vocab_size, lowercase, text_field, blank_line_docs,
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
    tok = Tokenizer.train(family, iter_texts(corpus, text_field=text_field, blank_line_docs=blank_line_docs),
                          vocab_size=vocab_size, lowercase=lowercase)
    own.mkdir(parents=True, exist_ok=True)
    tok.save(own)
    return tok


__all__ = ["pretrain", "bert_metrics", "electra_metrics", "seq2seq_metrics", "ElectraPretrainData", "Recipe",
           "RECIPES"]
