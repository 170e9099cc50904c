"""Translation with a pretrained BART and a new source encoder, trained in two stages (BART §3.4).

    train_translation("runs/bart-de/model", "train.jsonl", source_field="en", target_field="de", ...)

BART was pretrained on the target language; a small randomly initialised encoder with its
own vocabulary (a byte-level BPE trained here on the source side) replaces BART's input
embeddings. Stage 1 trains only the new encoder, BART's positional embeddings and the
self-attention input projection of BART's first encoder layer, leaving the rest of BART
intact while the new encoder learns to speak to it; stage 2 trains every parameter for a
few steps. Each stage is one `fit` (checkpoints, resume, eval, plots); the result is saved
as BART's directory plus `source/` (the new encoder and its tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clozeformer.config import LENGTH_CAP, MAX_NUM_BEAMS, MIN_MAX_LEN, at_least, typed
from clozeformer.data.cache import content_id
from clozeformer.data.pairs import PairData, read_pairs
from clozeformer.infer import generate_texts
from clozeformer.interop.model_dir import load_model, save_model, trained_for
from clozeformer.models.bart import BartForConditionalGeneration, BartForTranslation
from clozeformer.tasks import metrics
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.checkpoint import check_fresh, holds_run_dir, latest_checkpoint
from clozeformer.train.config import TrainConfig
from clozeformer.train.loop import fit
from clozeformer.train.pretrain import seq2seq_metrics


def bleu(model, source_tok: Tokenizer, target_tok: Tokenizer, pairs: list[tuple[str, str]], **generation) -> float:
    """sacreBLEU of the model's translations of the sources against the references."""
    hyps = generate_texts(model, source_tok, [s for s, _ in pairs], target_tokenizer=target_tok, **generation)
    return metrics.bleu(hyps, [t for _, t in pairs])["bleu"]


MAX_SOURCE_LAYERS = 24


@typed
@holds_run_dir
def train_translation(bart_dir: str | Path, train_file: str | Path, *, source_field: str, target_field: str,
                      run_dir: str | Path = "runs/translate", eval_file: str | Path | None = None,
                      test_file: str | Path | None = None, source_tokenizer: str | Path | None = None,
                      source_vocab_size: int | None = None, source_layers: int = 2, max_len: int = 128,
                      batch_size: int = 32, buckets: int = 0,
                      stage1: TrainConfig | dict[str, Any] = TrainConfig(steps=1000, lr=5e-4),
                      stage2: TrainConfig | dict[str, Any] = TrainConfig(steps=200, lr=5e-5), num_beams: int | None = None,
                      max_new_tokens: int = 64, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a BART-based translator in two stages; returns a summary (BLEU on `test_file` if given).

    buckets > 0 batches pairs of similar lengths (data/pairs.PairData), so less of each batch is padding.
    Without `source_tokenizer` a byte-level BPE of `source_vocab_size` ids (default 8000) is trained on the
    sources; `num_beams` (default 4) is the beam search scored beside greedy decoding on `test_file`.
    """
    stage1, stage2 = (TrainConfig(**cfg) if isinstance(cfg, dict) else cfg for cfg in (stage1, stage2))  # as pretrain
    at_least(1, batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams,
             source_vocab_size=source_vocab_size)
    at_least(0, buckets=buckets)
    at_least(MIN_MAX_LEN, max_len=max_len)
    if max_new_tokens > LENGTH_CAP or (num_beams or 1) > MAX_NUM_BEAMS:  # checked here, not after both stages
        raise ValueError(f"max_new_tokens {max_new_tokens} and num_beams {num_beams}: allowed: max_new_tokens ≤ "
                         f"{LENGTH_CAP}, num_beams ≤ {MAX_NUM_BEAMS}")
    if source_tokenizer is not None and source_vocab_size is not None:
        raise ValueError(f"source_vocab_size {source_vocab_size} shapes a source tokenizer trained on the pairs; "
                         f"--source-tokenizer {source_tokenizer} brings its own (leave it out)")
    if source_field == target_field:
        raise ValueError(f"--source and --target are both {source_field!r}; a translation reads two fields")
    if not 1 <= source_layers <= MAX_SOURCE_LAYERS:  # a deeper one would exhaust the memory, not train
        raise ValueError(f"source_layers {source_layers} is out of range; allowed: 1 … {MAX_SOURCE_LAYERS} "
                         "(BART §3.4's new encoder is small)")
    if num_beams is not None and test_file is None:
        raise ValueError(f"num_beams {num_beams} is the beam search scored on the test pairs; without --test "
                         "nothing is decoded (give --test, or leave out --num-beams)")
    run_dir = Path(run_dir)
    for stage in (1, 2):  # before any work: a new run never overwrites another; --resume continues stage 1 or 2
        check_fresh(run_dir / f"stage{stage}", resume, to_resume=stage == 1, run="translation")
    check_fresh(run_dir, resume, to_resume=False)  # the translator saved in model/
    bart = load_model(bart_dir)
    if type(bart) is not BartForConditionalGeneration:
        what = trained_for(bart) or f"a {bart.config.model_type} model"
        raise ValueError(f"{bart_dir} is {what}; --bart needs a pretrained BART (BartForConditionalGeneration)")
    if max_len > bart.config.max_length:
        raise ValueError(f"max_len {max_len} exceeds the BART model's {bart.config.max_length} positions; "
                         f"allowed: max_len ≤ {bart.config.max_length}")
    target_tok = Tokenizer.load(bart_dir)
    train_pairs = read_pairs(train_file, source_field, target_field)
    eval_pairs = read_pairs(eval_file, source_field, target_field) if eval_file else []
    test_pairs = read_pairs(test_file, source_field, target_field) if test_file else []  # its errors before training
    source_tok = _source_tokenizer(source_tokenizer, run_dir, [s for s, _ in train_pairs], source_vocab_size or 8000,
                                   resume)

    def encode(pairs):
        return ([source_tok.encode(s, max_length=max_len) for s, _ in pairs],
                [target_tok.encode(t, max_length=max_len) for _, t in pairs])

    data = PairData(*encode(train_pairs), source_pad=source_tok.pad_id, batch_size=batch_size, seed=stage1.seed,
                    buckets=buckets, **dict(zip(("eval_sources", "eval_targets"), encode(eval_pairs))))
    torch.manual_seed(stage1.seed)  # the new encoder's initial weights
    model = BartForTranslation(bart.config, source_tok.vocab_size, source_layers=source_layers,
                               source_pad_id=source_tok.pad_id)
    model.load_state_dict(bart.state_dict(), strict=False)  # everything but the new encoder
    state = {"data": {"train": content_id(train_file), "source_field": source_field, "target_field": target_field,
                      "max_len": max_len, "batch_size": batch_size, "buckets": buckets}}
    summary: dict[str, Any] = {"source_vocab_size": source_tok.vocab_size}
    for stage, cfg in ((1, stage1), (2, stage2)):
        trainable = model.set_stage(stage)
        stage_dir = run_dir / f"stage{stage}"
        found = latest_checkpoint(stage_dir) if resume else None
        if found is not None and found[1]["step"] >= cfg.steps:  # this stage finished before
            model = load_model(found[0])
            model.set_stage(stage)
            summary[f"stage{stage}"] = {"steps": found[1]["step"], "resumed": "complete"}
            continue
        result = fit(model, data, cfg, stage_dir, metrics_fn=seq2seq_metrics, resume=found is not None,
                     tokenizer=target_tok, extra_state={**state, "stage": stage}, progress=progress)
        result["trainable_parameters"] = sum(p.numel() for n, p in model.named_parameters() if n in set(trainable))
        summary[f"stage{stage}"] = result
    model.requires_grad_(True)
    out = save_model(model, run_dir / "model", target_tok, source_tokenizer=source_tok)
    summary["model_dir"] = str(out)
    if test_file:
        for beams in (1, num_beams or 4):
            summary[f"bleu_beam{beams}"] = bleu(model, source_tok, target_tok, test_pairs, num_beams=beams,
                                                max_new_tokens=max_new_tokens)
    return summary


def _source_tokenizer(given, run_dir: Path, texts: list[str], vocab_size: int, resume: bool) -> Tokenizer:
    if given is not None:
        return Tokenizer.load(given)
    own = run_dir / "source_tokenizer"
    if resume and (own / "tokenizer.json").is_file():
        return Tokenizer.load(own)
    tok = Tokenizer.train("bpe", texts, vocab_size=vocab_size)
    own.mkdir(parents=True, exist_ok=True)
    tok.save(own)
    return tok


__all__ = ["train_translation", "bleu"]
