"""Decoding for every encoder–decoder (BART, T5): greedy, beam search, and sampling.

A model takes part by offering the generation protocol:
    model.encode(input_ids, attention_mask) -> encoder output [B, S, D]
    model.new_cache() -> nn.Cache
    model.decode(new_decoder_ids [N, t], encoder output, attention_mask, cache) -> logits [N, t, V]
    model.config.{decoder_start_token_id, eos_token_id, pad_token_id}
The decoder runs one token per step against its key/value cache, so a step costs O(length),
not O(length²).

The search follows `transformers.generate` exactly (same processors in the same order,
same beam bookkeeping, same stopping rules), so the same weights give the same ids; the
tests hold it to that. Lengths count the decoder sequence including its start token, as in
transformers: `max_new_tokens=n` gives at most 1 + n ids per row.

Shapes: B batch, K beams, N = B·K rows, V vocabulary, L max length.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from clozeformer.config import LENGTH_CAP, MAX_LENGTH_PENALTY, MAX_NUM_BEAMS, check_type
from clozeformer.nn.functional import check_ids

__all__ = ["GenerationConfig", "generate", "generation_defaults"]

_NEG = -1.0e9  # transformers' "no longer a candidate" score in beam search


@dataclass(frozen=True)
class GenerationConfig:
    # lengths count the decoder sequence with its start token; as in transformers, max_new_tokens wins over
    # max_length and min_new_tokens over min_length, and with neither maximum given 20 new tokens are made
    max_new_tokens: int | None = None
    max_length: int | None = None
    min_length: int = 0  # before </s> is allowed
    min_new_tokens: int | None = None
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50  # sampling only; 0 disables
    top_p: float = 1.0  # sampling only; 1 disables
    length_penalty: float = 1.0  # beam scores are sum log p / length ** length_penalty
    early_stopping: bool | str = False  # True, False (transformers' heuristic) or "never"
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0  # scores of ids already in the row: divided by it if positive, else multiplied
    forced_bos_token_id: int | None = None  # BART (bart-large-cnn) forces <s> first
    forced_eos_token_id: int | None = None  # forces </s> as the last token at max_length
    num_return_sequences: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # 2.5 new tokens, True beams, "no" as do_sample (it sampled)
            check_type(f.name, getattr(self, f.name), f.type)
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length (the start token included) must be at least 2, got {self.max_length}")
        if not 1 <= self.num_beams <= MAX_NUM_BEAMS or self.num_return_sequences < 1:
            raise ValueError(f"num_beams {self.num_beams} and num_return_sequences {self.num_return_sequences}: "
                             f"allowed: 1 ≤ num_beams ≤ {MAX_NUM_BEAMS}, num_return_sequences ≥ 1")
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise ValueError(f"num_return_sequences {self.num_return_sequences} > num_beams {self.num_beams}")
        if self.do_sample and not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be positive and finite, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 < self.repetition_penalty < math.inf:
            raise ValueError(f"repetition_penalty must be positive and finite, got {self.repetition_penalty}")
        if not abs(self.length_penalty) <= MAX_LENGTH_PENALTY:  # length ** penalty must stay a float
            raise ValueError(f"length_penalty must be a number in [-{MAX_LENGTH_PENALTY}, {MAX_LENGTH_PENALTY}], "
                             f"got {self.length_penalty}")
        for name in ("top_k", "no_repeat_ngram_size", "min_length", "min_new_tokens"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError('early_stopping must be True, False or "never"')

    def lengths(self, positions: int | None) -> tuple[int, int]:
        """(max, min) decoder length with the start token, resolved as transformers does; the default
        maximum (20 new tokens) is capped at the model's `positions` (BART's learned table)."""
        if self.max_new_tokens is not None:
            longest = 1 + self.max_new_tokens
        elif self.max_length is not None:
            longest = self.max_length
        else:
            longest = min(1 + DEFAULT_NEW_TOKENS, positions or math.inf)
        return longest, (self.min_length if self.min_new_tokens is None else 1 + self.min_new_tokens)


DEFAULT_NEW_TOKENS = 20  # transformers' default length, when neither the call nor the checkpoint gives one
GENERATION_KEYS = tuple(f.name for f in dataclasses.fields(GenerationConfig))
# transformers' generation settings that change its output and are not implemented here, with the value that
# changes nothing: a checkpoint that saves another value cannot be generated from (it is not ignored)
UNSUPPORTED = {"encoder_repetition_penalty": 1.0, "encoder_no_repeat_ngram_size": 0, "typical_p": 1.0,
               "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None, "top_h": None, "diversity_penalty": 0.0,
               "num_beam_groups": 1, "penalty_alpha": None, "bad_words_ids": None, "force_words_ids": None,
               "sequence_bias": None, "suppress_tokens": None, "begin_suppress_tokens": None,
               "forced_decoder_ids": None, "exponential_decay_length_penalty": None, "renormalize_logits": False,
               "constraints": None, "guidance_scale": 1.0, "watermarking_config": None, "stop_strings": None,
               "max_time": None, "dola_layers": None}


def unsupported_settings(saved: dict) -> dict:
    """The settings in `saved` (a generation_config.json) that UNSUPPORTED says would change the output."""
    return {k: v for k, v in saved.items() if k in UNSUPPORTED and v not in (None, UNSUPPORTED[k], [], {})}


def generation_defaults(model) -> dict:
    """The model's own generation settings, which explicit arguments override (as transformers does):
    what load_model read from generation_config.json (or config.json's generation keys), else the
    model class's own (`Generates.family_generation`)."""
    given = getattr(model, "generation_defaults", None)
    return given if given is not None else model.family_generation()


def _process(scores: Tensor, seqs: Tensor, cfg: GenerationConfig, max_length: int, eos: int,
             min_keep: int) -> Tensor:
    """transformers' logits processors, in its order. scores [N, V] (modified in place), seqs [N, cur]."""
    cur = seqs.shape[1]
    if cfg.repetition_penalty != 1.0:  # every id in the row so far, the start token included
        seen = scores.gather(1, seqs)
        scores.scatter_(1, seqs, torch.where(seen < 0, seen * cfg.repetition_penalty, seen / cfg.repetition_penalty))
    n = cfg.no_repeat_ngram_size
    if n > 0 and cur >= n:  # ban each token that would complete an n-gram already in the row
        windows = seqs.unfold(1, n, 1)  # [N, W, n]
        hit = (windows[..., :-1] == seqs[:, cur + 1 - n:, None].transpose(1, 2)).all(-1)  # [N, W]
        rows, where = hit.nonzero(as_tuple=True)
        scores[rows, windows[rows, where, -1]] = -float("inf")
    if cur < cfg.min_length:  # resolved: min_new_tokens is None here
        scores[:, eos] = -float("inf")
    for forced, at in ((cfg.forced_bos_token_id, 1), (cfg.forced_eos_token_id, max_length - 1)):
        if forced is not None and cur == at:
            scores.fill_(-float("inf"))
            scores[:, forced] = 0.0
    if cfg.do_sample:  # the warpers
        if cfg.temperature != 1.0:
            scores = scores / cfg.temperature
        if cfg.top_k > 0:
            k = min(max(cfg.top_k, min_keep), scores.shape[-1])
            scores = scores.masked_fill(scores < scores.topk(k).values[..., -1:], -float("inf"))
        if cfg.top_p < 1.0:
            sorted_scores, order = scores.sort()  # ascending
            drop = sorted_scores.softmax(-1).cumsum(-1) <= 1 - cfg.top_p
            drop[..., -min_keep:] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    return scores


@torch.inference_mode()
def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, *, generator: torch.Generator | None = None,
             decoder_start_token_id: int | None = None, eos_token_id: int | None = None,
             pad_token_id: int | None = None, **options) -> Tensor:
    """Decode from `model` for the source rows `input_ids` [B, S]; returns ids [B·R, ≤ L].

    `options` are `GenerationConfig` fields (max_new_tokens, num_beams, do_sample, top_k,
    top_p, temperature, length_penalty, early_stopping, no_repeat_ngram_size, min_length,
    forced_bos_token_id, forced_eos_token_id, num_return_sequences, …). Rows that end early
    are padded with pad_token_id. Sampling draws from `generator` (default: torch's global one).
    """
    if unsupported := getattr(model, "generation_unsupported", None):
        raise ValueError(f"the checkpoint's generation settings {unsupported} change what transformers generates "
                         "and are not implemented here; remove them from its generation_config.json (its "
                         "config.json where it has none)")
    cfg = GenerationConfig(**{**generation_defaults(model), **options})
    mc = model.config
    start = mc.decoder_start_token_id if decoder_start_token_id is None else decoder_start_token_id
    eos = mc.eos_token_id if eos_token_id is None else eos_token_id
    pad = mc.pad_token_id if pad_token_id is None else pad_token_id
    check_ids(input_ids)
    if attention_mask is not None and attention_mask.shape != input_ids.shape:  # [1, T] was broadcast silently
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must be the shape of input_ids "
                         f"{tuple(input_ids.shape)}")
    ids = {"decoder_start_token_id": start, "eos_token_id": eos, "pad_token_id": pad,
           "forced_bos_token_id": cfg.forced_bos_token_id, "forced_eos_token_id": cfg.forced_eos_token_id}
    if bad := {k: v for k, v in ids.items() if v is not None and not 0 <= v < mc.vocab_size}:  # -2 wrapped to V-2
        raise ValueError(f"{', '.join(f'{k} {v}' for k, v in bad.items())}: allowed: an id in 0 … "
                         f"{mc.vocab_size - 1}")
    if attention_mask is None:  # as transformers: pad tokens in the input are padding (unless pad is eos)
        attention_mask = (input_ids != pad).long() if pad != eos else torch.ones_like(input_ids)
    max_length, min_length = cfg.lengths(mc.max_length)
    cfg = dataclasses.replace(cfg, max_length=max_length, max_new_tokens=None, min_length=min_length,
                              min_new_tokens=None)
    if mc.max_length is not None and max_length > mc.max_length:  # BART's learned positions
        raise ValueError(f"max_new_tokens {max_length - 1} needs {max_length} decoder positions, more than the "
                         f"model's {mc.max_length}; allowed: max_new_tokens ≤ {mc.max_length - 1}")
    if max_length - 1 > LENGTH_CAP:  # T5's relative positions set no limit: ours bounds the time and the cache
        raise ValueError(f"max_new_tokens {max_length - 1} is more than one generation may write; "
                         f"allowed: max_new_tokens ≤ {LENGTH_CAP}")
    encoded = model.encode(input_ids, attention_mask)  # [B, S, D]
    search = _beam_search if cfg.num_beams > 1 else _sample_or_greedy
    return search(model, encoded, attention_mask, cfg, max_length, start, eos, pad, generator)


class Generates:
    """`model.generate(input_ids, attention_mask, **options)` for the encoder–decoders (BART, T5), which give
    `encode`, `decode` and `config`: token ids [B, ≤ 1 + max_new_tokens] as `transformers` returns them."""

    # label smoothing of the training loss on the written text; a training setting (TrainConfig.label_smoothing,
    # set by `fit`), so not part of the config, the saved model or evaluation
    label_smoothing: float = 0.0

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, **options) -> Tensor:
        return generate(self, input_ids, attention_mask, **options)

    def family_generation(self) -> dict:
        """The family's generation settings, under any the checkpoint saved: none here (T5's)."""
        return {}


def _sample_or_greedy(model, encoded, mask, cfg, max_length, start, eos, pad, generator) -> Tensor:
    r = cfg.num_return_sequences
    encoded, mask = encoded.repeat_interleave(r, 0), mask.repeat_interleave(r, 0)
    n = encoded.shape[0]
    seqs = torch.full((n, 1), start, dtype=torch.long, device=encoded.device)  # [N, cur]
    running = torch.ones(n, dtype=torch.bool, device=encoded.device)
    cache = model.new_cache()
    while seqs.shape[1] < max_length:
        logits = model.decode(seqs[:, -1:], encoded, mask, cache)[:, -1].float()  # [N, V]
        scores = _process(logits, seqs, cfg, max_length, eos, 1)
        if cfg.do_sample:
            nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(-1)
        nxt = torch.where(running, nxt, pad)  # finished rows are padded
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        running &= nxt != eos
        if not bool(running.any()):
            break
    return seqs


def _beam_search(model, encoded, mask, cfg, max_length, start, eos, pad, generator) -> Tensor:
    """Beam search with transformers' bookkeeping: keep 2K candidates per step so K stay open."""
    b, k = encoded.shape[0], cfg.num_beams
    dev = encoded.device
    encoded, mask = encoded.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)  # [N, S, D]
    keep = 2 * k  # top candidates per source row: K may end with </s>, K more stay running
    fill = pad if pad else eos  # transformers fills with `pad or eos`, so a pad id of 0 gives eos; match it
    run_seqs = torch.full((b, k, max_length), fill, dtype=torch.long, device=dev)  # [B, K, L]
    run_seqs[:, :, 0] = start
    run_scores = torch.zeros(b, k, device=dev)
    run_scores[:, 1:] = _NEG  # all beams start identical: only the first may expand at step one
    fin_seqs, fin_scores = run_seqs.clone(), torch.full((b, k), _NEG, device=dev)
    fin_len = torch.zeros(b, k, dtype=torch.long, device=dev)  # decoder length of each finished row
    fin_done = torch.zeros(b, k, dtype=torch.bool, device=dev)
    improvable = torch.ones(b, 1, dtype=torch.bool, device=dev)  # can open beams still beat finished ones?
    first_k = torch.arange(keep, device=dev) < k  # only the best K candidates may finish
    offsets = torch.arange(b, device=dev)[:, None] * k
    cache, cur, lp = model.new_cache(), 1, cfg.length_penalty
    while True:
        flat = run_seqs.view(b * k, max_length)[:, :cur]  # [N, cur]
        logits = model.decode(flat[:, -1:], encoded, mask, cache)[:, -1].float()  # [N, V]
        logp = _process(F.log_softmax(logits, -1), flat, cfg, max_length, eos, 2)
        v = logp.shape[-1]
        total = (logp.view(b, k, v) + run_scores[..., None]).view(b, k * v)  # [B, K·V]
        if cfg.do_sample:
            idx = torch.multinomial(total.softmax(-1), keep, generator=generator)
            top, order = total.gather(1, idx).sort(-1, descending=True)
            idx = idx.gather(1, order)
        else:
            top, idx = total.topk(keep)  # [B, 2K]
        beam, tok = idx // v, idx % v
        cand = run_seqs.gather(1, beam[..., None].expand(-1, -1, max_length)).clone()  # [B, 2K, L]
        cand[:, :, cur] = tok
        ends = (tok == eos) | (cur + 1 >= max_length)  # [B, 2K]
        # the K best candidates that did not end keep running
        open_scores = top + ends.float() * _NEG
        pick = open_scores.topk(k).indices  # [B, K]
        run_seqs = cand.gather(1, pick[..., None].expand(-1, -1, max_length))
        run_scores = open_scores.gather(1, pick)
        source = (beam.gather(1, pick) + offsets).view(-1)  # [N] row each new beam extends
        # candidates that ended among the best K join the finished set, length-normalised
        ended = ends & first_k
        scored = top / (cur ** lp if lp else 1.0)
        scored = scored + (fin_done.all(1, keepdim=True) & (cfg.early_stopping is True)).float() * _NEG
        scored = scored + (~improvable).float() * _NEG + (~ended).float() * _NEG
        best = torch.cat([fin_scores, scored], 1).topk(k).indices  # [B, K]
        fin_seqs = torch.cat([fin_seqs, cand], 1).gather(1, best[..., None].expand(-1, -1, max_length))
        fin_scores = torch.cat([fin_scores, scored], 1).gather(1, best)
        fin_len = torch.cat([fin_len, torch.full_like(tok, cur + 1)], 1).gather(1, best)
        fin_done = torch.cat([fin_done, ended], 1).gather(1, best)
        cache.reorder(source)
        cur += 1
        # transformers' stopping heuristic: the best open beam, at the most favourable length
        best_len = (max_length - 1) if (cfg.early_stopping == "never" and lp > 0) else (cur - 1)
        best_open = run_scores[:, :1] / (best_len ** lp if lp else 1.0)
        worst_done = torch.where(fin_done, fin_scores.min(1, keepdim=True).values, _NEG)
        improvable &= (best_open > worst_done).any(-1, keepdim=True)
        if not (bool(improvable.any()) and not (bool(fin_done.all()) and cfg.early_stopping is True)
                and not bool(ends.all())):
            break
    r = cfg.num_return_sequences
    length = int(fin_len[:, :r].max())
    return fin_seqs[:, :r, :length].reshape(b * r, length)
