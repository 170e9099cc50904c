"""Inference helpers over any model with an MLM head."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from clozeformer.config import LENGTH_CAP, at_least, typed
from clozeformer.interop.model_dir import check_fits
from clozeformer.data.packing import pad_rows
from clozeformer.tokenizer import Tokenizer


@dataclass(frozen=True)
class Prediction:
    token: str
    token_id: int
    score: float  # softmax probability
    sequence: str  # the input with this token in place of the [MASK]


@torch.no_grad()
@typed
def fill_mask(model: nn.Module, tokenizer: Tokenizer, text: str, top_k: int = 5) -> list[list[Prediction]]:
    """Top-k predictions for every [MASK] in `text` (one list per mask, left to right).

    `model`: a BERT with its MLM head, an ELECTRA generator, or an ELECTRA pair (its generator).
    """
    model = mlm_model(model)
    check_fits(tokenizer, model, "the tokenizer given")  # another's ids indexed past the vocabulary
    ids, where = fill_mask_input(model, tokenizer, text, top_k)
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device)).logits[0, where].float()  # [masks, V]
    probs = logits.softmax(-1)
    probs[:, tokenizer.special_ids] = 0.0  # never propose [CLS], [PAD] …
    top = probs.topk(top_k, dim=-1)
    results = []
    for i, (scores, cand) in zip(where, zip(top.values.tolist(), top.indices.tolist())):
        row = []
        for score, tid in zip(scores, cand):
            filled = list(ids)
            filled[i] = tid
            row.append(Prediction(tokenizer.tokens([tid])[0], tid, score, tokenizer.decode(filled)))
        results.append(row)
    return results


def fill_mask_input(model: nn.Module, tokenizer: Tokenizer, text: str, top_k: int) -> tuple[list[int], list[int]]:
    """(ids of `text` as the model reads it, truncated to its positions; where the masks are), or a one-line
    error: top_k out of range, no mask, or every mask beyond the model's positions."""
    candidates = tokenizer.vocab_size - len(set(tokenizer.special_ids))
    if not 1 <= top_k <= candidates:
        raise ValueError(f"top_k {top_k} is out of range; allowed: 1 to {candidates} (the vocabulary's non-special "
                         "tokens)")
    mask_token = tokenizer.tokens([tokenizer.mask_id])[0]
    ids = tokenizer.encode(text, max_length=model.config.max_length, specials=True)
    where = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
    if not where:
        if tokenizer.mask_id in tokenizer.encode(text, specials=True):
            raise ValueError(f"every {mask_token} in the text lies beyond the model's {model.config.max_length} "
                             f"positions; shorten the text before it")
        also = f" (this model's mask token is {mask_token}, not [MASK])" if "[MASK]" in text and \
            mask_token != "[MASK]" else ""
        raise ValueError(f"no {mask_token} in {text!r}{also}")
    return ids, where


def mlm_model(model: nn.Module) -> nn.Module:
    """The part of `model` that predicts masked tokens; a one-line error where there is none, or where
    its head was not in the checkpoint (load_model's `untrained`: freshly initialised, random words)."""
    from clozeformer.models.electra import ElectraForPreTraining
    from clozeformer.models.heads import MLMHead

    if isinstance(model, ElectraForPreTraining):
        model = model.generator
    if not isinstance(getattr(model, "mlm", None), MLMHead):
        hint = ("; use `clozeformer generate` with a <mask> or <extra_id_0> prompt"
                if hasattr(model, "generate") else "")
        raise ValueError(f"fill-mask needs a masked-LM head (a BERT or RoBERTa, or an ELECTRA generator); this model is a "
                         f"{type(model).__name__}{hint}")
    untrained = [k for k in getattr(model, "untrained", ()) if k.startswith("mlm.")]
    if untrained:
        raise ValueError(f"this {type(model).__name__} has no trained MLM head (its checkpoint lacks "
                         f"{', '.join(untrained[:3])}): it would predict random words; pretrain or fine-tune it "
                         "with MLM first")
    return model


@dataclass(frozen=True)
class RTDRow:
    """One token of a replaced-token-detection view."""

    original: str
    masked_input: str  # what the generator saw ([MASK], or the original where a selected token was kept)
    sample: str | None  # the generator's sample at a selected position, else None
    p_replaced: float  # the discriminator's P(replaced) for the token it saw
    replaced: bool  # whether the discriminator's input really differs from the original here


@torch.no_grad()
def replaced_token_detection(model: nn.Module, tokenizer: Tokenizer, text: str, *, seed: int = 0,
                             rate: float = 0.15) -> list[RTDRow]:
    """ELECTRA's step on one text, token by token: mask (objectives/rtd.rtd_mask, seeded), let the
    generator sample replacements, and read the discriminator's P(replaced) for every token.

    `model` is an ELECTRA pretraining pair (generator + discriminator, e.g. a pretrain run's model dir).
    """
    from clozeformer.nn.functional import IGNORE
    from clozeformer.objectives.rtd import rtd_mask

    if not hasattr(model, "generator"):
        raise ValueError("replaced-token detection needs the ELECTRA generator too: load the pretraining "
                         "directory (with generator/), not a discriminator alone")
    ids = torch.tensor([tokenizer.encode(text, max_length=model.config.max_positions)])  # [1, T]
    batch = rtd_mask(ids, mask_id=tokenizer.mask_id, vocab_size=model.config.vocab_size,
                     special_ids=tokenizer.special_ids, generator=torch.Generator().manual_seed(seed), rate=rate)
    model.eval()
    device = next(model.parameters()).device
    out = model(batch["input_ids"].to(device), labels=batch["labels"].to(device),
                replace_u=batch["replace_u"].to(device))
    selected = (batch["labels"][0] != IGNORE).tolist()
    seen = out.disc_input_ids[0].tolist()
    p = out.logits[0].float().sigmoid().tolist()
    originals, masked, samples = (tokenizer.tokens(x) for x in (ids[0].tolist(), batch["input_ids"][0].tolist(), seen))
    return [RTDRow(originals[i], masked[i], samples[i] if selected[i] else None, p[i], bool(seen[i] != ids[0, i]))
            for i in range(ids.shape[1])]


def load_generator(path, *, allow_pickle: bool = False) -> tuple[nn.Module, Tokenizer, Tokenizer | None]:
    """(model, source tokenizer, target tokenizer or None) of a BART/T5 directory; a translator
    (BART + a new source encoder) reads its sources with source/'s tokenizer and writes BART's."""
    from pathlib import Path

    from clozeformer.interop.model_dir import load_model
    from clozeformer.models.bart import BartForTranslation

    model = load_model(path, allow_pickle=allow_pickle)
    if not hasattr(model, "generate"):
        raise ValueError(f"{path}: a {type(model).__name__} does not generate text; use a BART or T5 model")
    tok = check_fits(Tokenizer.load(path), model, path)  # BART's own (a translator's target side)
    if isinstance(model, BartForTranslation):
        return model, Tokenizer.load(Path(path) / "source"), tok
    return model, tok, None


@torch.no_grad()
@typed
def generate_texts(model: nn.Module, tokenizer: Tokenizer, texts: list[str], *, batch_size: int = 16,
                   prefix: str = "", seed: int = 0, target_tokenizer: Tokenizer | None = None, **options) -> list[str]:
    """Decoded outputs of `model.generate` for each source text (prefixed, truncated to fit).

    `target_tokenizer` decodes the outputs when the target vocabulary differs from the
    source's (BART with a new source encoder).
    """
    if not hasattr(model, "generate"):
        raise ValueError(f"a {type(model).__name__} does not generate text; use a BART or T5 model")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):  # a str was read letter by letter
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    at_least(1, batch_size=batch_size)
    if target_tokenizer is None:
        check_fits(tokenizer, model, "the tokenizer given")
    model.eval()
    device = next(model.parameters()).device
    limit = model.config.max_length or LENGTH_CAP  # T5's positions set no limit: ours bounds its attention
    rows = [tokenizer.encode(prefix + t, max_length=limit, specials=True) for t in texts]
    # only a row that reached the limit may have been cut: those alone are encoded again, whole
    longest = max((len(tokenizer.encode(prefix + t, specials=True)) for t, r in zip(texts, rows) if len(r) == limit),
                  default=0)
    if longest > limit:
        warnings.warn(f"text of {longest} tokens truncated to the model's {limit} positions" if
                      model.config.max_length else f"text of {longest} tokens truncated to {limit}, the most one "
                      "source may hold")
    g = torch.Generator(device=device).manual_seed(seed)
    outputs = []
    for i in range(0, len(texts), batch_size):
        batch = rows[i: i + batch_size]
        ids = pad_rows(batch, tokenizer.pad_id)
        mask = (torch.arange(ids.shape[1]) < torch.tensor([len(r) for r in batch])[:, None]).long()
        out = model.generate(ids.to(device), mask.to(device), generator=g, **options)
        outputs += [(target_tokenizer or tokenizer).decode(o).strip() for o in out.tolist()]
    return outputs
