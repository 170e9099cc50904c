"""BART's noising functions (Lewis et al. 2020, §2.2) and the denoising batch built from them.

What each noise teaches the model to do (BART §2.2):
- token masking: predict a masked token from its context (as BERT does);
- token deletion: find where tokens are missing, not only what they were;
- text infilling: tell how many tokens one <mask> stands for (0, 1 or more) and write them;
- sentence permutation: put shuffled sentences back in order (discourse order);
- document rotation: find where the document starts;
- token insertion (fairseq's `--insert`): spot and drop tokens that do not belong.

Every noise is a pure, vectorised torch function over a padded batch with one explicit
`torch.Generator` and no Python loop over rows or tokens. Input and output use the same
batch convention, so the noises chain in any order:

    ids      LongTensor [B, T]   each row  <s> body… </s> <pad>…
    lengths  LongTensor [B]      non-pad tokens per row, <s> and </s> included

`<s>`, `</s>` and padding are never touched; a row's body (n = length - 2 tokens, possibly
0) is what gets corrupted. Each function returns new `(ids [B, T'], lengths [B])` with
T' = max(lengths): rows re-padded with the pad id.

Shape legend: B batch rows, T input width, T' output width, n body length per row,
I items per row after placement (kept tokens + spans or inserted tokens), K Poisson draws
per row, S sentences per row, V vocabulary size.

Differences from fairseq's DenoisingDataset (the released implementation):
- budgets are round(rate × n) tokens of the body, fixed per row (fairseq: ceil, over whole
  words when a word-start mask is given); we corrupt tokens, not whole words;
- infilling spans never overlap (fairseq's may merge), so the removed-token count equals
  the budget exactly;
- random replacements come from regular tokens only (fairseq draws from the whole
  dictionary but the first entry).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from clozeformer.nn.functional import IGNORE
from clozeformer.objectives.mlm import random_tokens

Batch = tuple[Tensor, Tensor]  # (ids [B, T], lengths [B])


@dataclass(frozen=True)
class NoiseIds:
    """The special ids a noise must know: never corrupted, never drawn as random tokens."""

    bos: int
    eos: int
    pad: int
    mask: int
    vocab_size: int
    special_ids: tuple[int, ...] = ()  # further ids never drawn as random replacements (e.g. <unk>)

    def __post_init__(self) -> None:
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        for name in ("bos", "eos", "pad", "mask"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} id {getattr(self, name)} is outside [0, {self.vocab_size})")
        if len({self.bos, self.eos, self.pad, self.mask}) != 4:
            raise ValueError("bos, eos, pad and mask ids must differ")
        object.__setattr__(self, "special_ids", tuple(int(i) for i in self.special_ids))


# facebook/bart-base and bart-large dictionaries: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> the last
# of 50,265 entries (HF config vocab_size 50265).
BART_IDS = NoiseIds(bos=0, eos=2, pad=1, mask=50264, vocab_size=50265, special_ids=(3,))


def _random_regular(shape: tuple[int, ...], spec: NoiseIds, generator: torch.Generator) -> Tensor:
    """Random replacements: any id but bos/eos/pad/mask/special_ids."""
    return random_tokens(shape, spec.vocab_size, [spec.bos, spec.eos, spec.pad, spec.mask, *spec.special_ids],
                         generator)


def _check_batch(ids: Tensor, lengths: Tensor) -> None:
    if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
        raise ValueError(f"expected ids [B, T] and lengths [B], got {tuple(ids.shape)} and {tuple(lengths.shape)}")
    if ids.dtype != torch.long or lengths.dtype != torch.long:
        raise ValueError("ids and lengths must be LongTensors")
    if len(lengths) and (int(lengths.min()) < 2 or int(lengths.max()) > ids.shape[1]):
        raise ValueError("every row needs <s> and </s> and must fit its width (2 <= length <= T)")


def _check_rate(rate: float, name: str = "rate", upper: float | None = 1.0) -> None:
    if not (rate >= 0.0 and (upper is None or rate <= upper)):
        raise ValueError(f"{name} must be in [0, {upper}], got {rate}" if upper is not None
                         else f"{name} must be >= 0, got {rate}")


def _check_lambda(poisson_lambda: float) -> None:
    # exp(-λ), the first term of the Poisson CDF table, underflows float64 near λ = 745.
    if not 0.0 < poisson_lambda < 700.0:
        raise ValueError(f"poisson_lambda must be in (0, 700), got {poisson_lambda}")


def _budget(n: Tensor, rate: float) -> Tensor:
    """[B] round(rate × n); float64 so that .5 ties round to even, as Python's round does."""
    return (n.double() * rate).round().long()


def _body_mask(lengths: Tensor, width: int) -> Tensor:
    """[B, width] True on body positions 1 .. length-2."""
    pos = torch.arange(width)
    return (pos >= 1) & (pos < (lengths - 1)[:, None])


def _assemble(body: Tensor, n: Tensor, spec: NoiseIds) -> Batch:
    """Body items [B, I] (row i valid up to n[i]) -> (<s> body </s> <pad>… [B, max n + 2], n + 2)."""
    b = body.shape[0]
    width = int(n.max()) + 2 if b else 2
    out = body.new_full((b, width), spec.pad)  # [B, T']
    w = min(body.shape[1], width - 2)
    out[:, 1 : 1 + w] = body[:, :w]
    out[:, 0] = spec.bos
    out.masked_fill_(torch.arange(width) > n[:, None], spec.pad)  # past the body (</s> set next)
    out.scatter_(1, (n + 1)[:, None], spec.eos)
    return out, n + 2


def _crop(ids: Tensor, lengths: Tensor) -> Batch:
    """Same rows, width cut to the longest row (the output convention). ids is a view: every
    noise writes its output to a new tensor."""
    width = int(lengths.max()) if len(lengths) else 2
    return ids[:, :width], lengths.clone()


def _choose(valid: Tensor, k: Tensor, generator: torch.Generator) -> Tensor:
    """bool [B, W]: exactly k[i] of row i's valid positions (k[i] <= valid count), uniformly.

    The k smallest of i.i.d. uniform keys form a uniform k-subset. One unsorted top-k serves
    every row: row i gets kmax - k[i] dummy keys below every real key, so its kmax smallest
    keys are the dummies plus its k[i] smallest real ones (a full sort costs ~10x more).
    """
    b, w = valid.shape
    kmax = int(k.max()) if b else 0
    if kmax == 0:
        return torch.zeros_like(valid)
    key = torch.rand(b, w, generator=generator).masked_fill_(~valid, 2.0)  # [B, W] in [0, 1); invalid 2
    dummy = torch.where(torch.arange(kmax) < (kmax - k)[:, None], -1.0, 3.0)  # [B, kmax]
    smallest = torch.cat([key, dummy], dim=1).topk(kmax, dim=1, largest=False, sorted=False).indices
    return torch.zeros(b, w + kmax, dtype=torch.bool).scatter_(1, smallest, True)[:, :w]


def _new_tokens(is_new: Tensor, random_ratio: float, spec: NoiseIds, generator: torch.Generator) -> Tensor | int:
    """What new positions (is_new [B, W]) hold: <mask>, or with probability random_ratio a
    random regular token (fairseq's mask_random); a [B, W] tensor, or the mask id alone."""
    if random_ratio <= 0.0:
        return spec.mask
    shape = tuple(is_new.shape)
    replace = torch.rand(shape, generator=generator) < random_ratio
    return torch.where(replace, _random_regular(shape, spec, generator), spec.mask)


def _put(is_new: Tensor, new: Tensor | int, old: Tensor) -> Tensor:
    """old with positions is_new replaced by new (a tensor or one id)."""
    return old.masked_fill(is_new, new) if isinstance(new, int) else torch.where(is_new, new, old)


def _place(ids: Tensor, n_items: Tensor, is_new: Tensor, consume: Tensor, new: Tensor | int,
           spec: NoiseIds) -> Batch:
    """Lay out items in slot order: a kept slot copies the next body token, a new slot emits `new`.

    is_new [B, I] marks new slots (spans or insertions); consume [B, I] is how many body
    tokens each slot uses up (1 for a kept slot, the span length for a span, 0 for an
    insertion or a slot past n_items), summing to the body length n per row. A kept slot
    reads the body at the running offset, at most n: position n + 1 <= T' - 1 in ids.
    """
    src = consume.cumsum(1) - consume + 1  # [B, I] position in ids where each slot's tokens begin
    return _assemble(_put(is_new, new, ids.gather(1, src)), n_items, spec)


# ---- the noises -----------------------------------------------------------------------------


def mask_tokens(ids: Tensor, lengths: Tensor, *, rate: float, random_ratio: float = 0.1, spec: NoiseIds,
                generator: torch.Generator) -> Batch:
    """Replace round(rate × n) body tokens per row: <mask>, or a random regular token with
    probability random_ratio (bart.large's mask_random=0.1). Lengths are unchanged."""
    _check_batch(ids, lengths)
    _check_rate(rate)
    _check_rate(random_ratio, "random_ratio")
    ids, lengths = _crop(ids, lengths)
    body = _body_mask(lengths, ids.shape[1])  # [B, T']
    chosen = _choose(body, _budget(lengths - 2, rate), generator)  # [B, T']
    return _put(chosen, _new_tokens(chosen, random_ratio, spec, generator), ids), lengths


def delete_tokens(ids: Tensor, lengths: Tensor, *, rate: float, spec: NoiseIds, generator: torch.Generator) -> Batch:
    """Delete round(rate × n) body tokens per row; the rest keep their order."""
    _check_batch(ids, lengths)
    _check_rate(rate)
    ids, lengths = _crop(ids, lengths)
    b, t = ids.shape
    body = _body_mask(lengths, t)  # [B, T']
    k = _budget(lengths - 2, rate)  # [B]
    keep = body & ~_choose(body, k, generator)  # [B, T']
    # Kept tokens go to their rank among kept tokens; everything else to a spare last column.
    dest = torch.where(keep, keep.cumsum(1) - 1, t)  # [B, T']
    packed = ids.new_full((b, t + 1), spec.pad).scatter_(1, dest, ids)[:, :t]  # [B, T'] kept body, in order
    return _assemble(packed, lengths - 2 - k, spec)


@lru_cache(maxsize=16)
def _poisson_cdf(poisson_lambda: float) -> Tensor:
    """[J] float64 CDF of Poisson(λ) at 0, 1, …, up to where 1 - CDF < 1e-15 (mass beyond: negligible)."""
    pmf, cdf, k = math.exp(-poisson_lambda), [], 0
    total = 0.0
    while True:
        total += pmf
        cdf.append(total)
        if 1.0 - total < 1e-15 or (k > poisson_lambda and pmf < 1e-300):
            break
        k += 1
        pmf *= poisson_lambda / k  # pmf(k) = pmf(k-1) · λ / k
    return torch.tensor(cdf, dtype=torch.float64)


def _poisson(shape: tuple[int, int], poisson_lambda: float, generator: torch.Generator) -> Tensor:
    """[shape] Poisson(λ) draws by inverse transform: the smallest k with CDF(k) > u, u ~ U[0, 1).
    (About 3x faster than torch.poisson's per-element rejection sampling for small λ.)"""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.searchsorted(_poisson_cdf(poisson_lambda), u, right=True)


def _draw_spans(budget: Tensor, poisson_lambda: float, generator: torch.Generator) -> Tensor:
    """[B, K] span lengths in draw order: Poisson(λ) draws until the row's budget is spent, the
    last one trimmed so they sum to the budget exactly; -1 past a row's last span."""
    b = budget.shape[0]
    most = int(budget.max()) if b else 0
    # Draws needed to cover m tokens: about m/λ, standard deviation about √m/λ (renewal
    # theory: Var(X)/E(X)^3 = 1/λ² per token). Mean + 4 sd + 8 covers nearly every batch at once.
    k = math.ceil((most + 4.0 * math.sqrt(most)) / poisson_lambda) + 8
    draws = _poisson((b, k), poisson_lambda, generator)  # [B, K]
    while bool((draws.sum(1) < budget).any()):  # rare: draw more columns for every row
        draws = torch.cat([draws, _poisson((b, k), poisson_lambda, generator)], dim=1)
    before = draws.cumsum(1) - draws  # [B, K] tokens already covered before each draw
    exists = before < budget[:, None]  # [B, K] draws up to the first that reaches the budget
    spans = torch.minimum(draws, budget[:, None] - before)  # trims the last one
    return torch.where(exists, spans, -1)


def _infill(ids: Tensor, lengths: Tensor, *, rate: float, poisson_lambda: float, random_ratio: float,
            spec: NoiseIds, generator: torch.Generator,
            with_spans: bool = False) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Text infilling; with_spans also returns the span lengths (for tests and inspection):
    (ids, lengths, draws [B, K] in draw order, spans [B, K] in document order), -1 past a
    row's last span."""
    _check_batch(ids, lengths)
    _check_rate(rate)
    _check_rate(random_ratio, "random_ratio")
    _check_lambda(poisson_lambda)
    ids, lengths = _crop(ids, lengths)
    b = ids.shape[0]
    n = lengths - 2  # [B]
    budget = _budget(n, rate)  # [B] tokens to hide
    draws = _draw_spans(budget, poisson_lambda, generator)  # [B, K]
    s = (draws >= 0).sum(1)  # [B] spans per row (zero-length ones included)
    n_items = n - budget + s  # [B] kept tokens + spans: the new body length

    # Which slots hold spans: s of the n_items slots, uniformly (every interleaving of the
    # spans with the kept tokens is equally likely, so spans never overlap).
    width = int(n_items.max()) if b else 0
    in_row = torch.arange(width) < n_items[:, None]  # [B, I]
    is_span = _choose(in_row, s, generator)  # [B, I]

    # Which span goes in which span slot. The draws before the last are exchangeable (the
    # stopping rule depends only on their sum), so a uniform cyclic shift puts the trimmed
    # last span at a uniform place, the same in distribution as a full shuffle.
    k = draws.shape[1]
    shift = (torch.rand(b, 1, generator=generator) * s[:, None]).long()  # [B, 1] in [0, s)
    rolled = draws.gather(1, (torch.arange(k) + shift) % s.clamp(min=1)[:, None])  # [B, K] document order
    rank = is_span.cumsum(1)  # [B, I] 1 + index of a span slot among span slots (<= s <= K)
    span_len = torch.nn.functional.pad(rolled, (1, 0)).gather(1, rank)  # [B, I] on span slots
    consume = torch.where(is_span, span_len, in_row.long())  # [B, I] body tokens each slot uses

    out, out_len = _place(ids, n_items, is_span, consume, _new_tokens(is_span, random_ratio, spec, generator), spec)
    if not with_spans:
        return out, out_len, None, None
    spans = torch.where(torch.arange(k) < s[:, None], rolled, -1)  # [B, K]
    return out, out_len, draws, spans


def infill_text(ids: Tensor, lengths: Tensor, *, rate: float = 0.3, poisson_lambda: float = 3.0,
                random_ratio: float = 0.0, spec: NoiseIds, generator: torch.Generator) -> Batch:
    """Replace spans covering round(rate × n) body tokens, each by ONE <mask> (random regular
    token with probability random_ratio). Span lengths ~ Poisson(λ) until the budget is spent
    (the last trimmed to fit); a length-0 span inserts a <mask>. λ=3: BART §2.2 (bart.large's
    released config uses 3.5); rate 0.3: BART §5.1 "we mask 30% of tokens"."""
    out, out_len, _, _ = _infill(ids, lengths, rate=rate, poisson_lambda=poisson_lambda,
                                 random_ratio=random_ratio, spec=spec, generator=generator)
    return out, out_len


def permute_sentences(ids: Tensor, lengths: Tensor, *, full_stop_ids: Sequence[int] | Tensor, spec: NoiseIds,
                      generator: torch.Generator) -> Batch:
    """Shuffle each row's sentences. A sentence ends after a body token in full_stop_ids; the
    last one ends at </s> with or without a full stop. Lengths are unchanged."""
    _check_batch(ids, lengths)
    ids, lengths = _crop(ids, lengths)
    b, t = ids.shape
    body = _body_mask(lengths, t)  # [B, T']
    is_stop = torch.zeros_like(body)  # [B, T']
    for stop in torch.as_tensor(full_stop_ids, dtype=torch.long).reshape(-1).tolist():  # a few ids;
        is_stop |= ids == stop  # one comparison each is ~20x faster than torch.isin here
    is_stop &= body
    sentence = (is_stop.cumsum(1) - is_stop.long()) * body  # [B, T'] sentence of each body token (0 elsewhere)
    n_sent = int(sentence.max()) + 1 if b else 1
    size = torch.zeros(b, n_sent, dtype=torch.long).scatter_add_(1, sentence, body.long())  # [B, S]
    old_start = size.cumsum(1) - size  # [B, S] body offset of each sentence
    # A random key per sentence and a sort over sentences (not tokens) give the new order;
    # sentences past a row's last are empty and land anywhere harmlessly.
    order = torch.rand(b, n_sent, generator=generator).argsort(dim=1)  # [B, S] sentence at each new place
    moved = size.gather(1, order)  # [B, S] sizes in the new order
    new_start = torch.empty_like(old_start).scatter_(1, order, moved.cumsum(1) - moved)  # [B, S]
    shift = (new_start - old_start).gather(1, sentence)  # [B, T'] how far each body token moves
    dest = torch.arange(t) + shift * body  # [B, T'] <s>, </s> and padding stay
    return torch.empty_like(ids).scatter_(1, dest, ids), lengths


def rotate_document(ids: Tensor, lengths: Tensor, *, spec: NoiseIds, generator: torch.Generator) -> Batch:
    """Rotate each body so that it starts at a uniformly chosen body token."""
    _check_batch(ids, lengths)
    ids, lengths = _crop(ids, lengths)
    t = ids.shape[1]
    n = (lengths - 2).clamp(min=1)[:, None]  # [B, 1] (an empty body has nothing to rotate)
    start = (torch.rand(len(lengths), 1, generator=generator) * n).long()  # [B, 1] in [0, n)
    pos = torch.arange(t)
    src = torch.where(_body_mask(lengths, t), 1 + (pos - 1 + start) % n, pos)  # [B, T']
    return ids.gather(1, src), lengths


def insert_tokens(ids: Tensor, lengths: Tensor, *, rate: float, random_ratio: float = 0.0, spec: NoiseIds,
                  generator: torch.Generator) -> Batch:
    """Insert round(rate × n) new tokens at uniformly random places in each body: <mask>, or a
    random regular token with probability random_ratio (fairseq's `--insert`, `--random-ratio`)."""
    _check_batch(ids, lengths)
    _check_rate(rate, upper=None)
    _check_rate(random_ratio, "random_ratio")
    ids, lengths = _crop(ids, lengths)
    b = ids.shape[0]
    n = lengths - 2  # [B]
    k = _budget(n, rate)  # [B] tokens to insert
    n_items = n + k  # [B]
    width = int(n_items.max()) if b else 0
    in_row = torch.arange(width) < n_items[:, None]  # [B, I]
    is_new = _choose(in_row, k, generator)  # [B, I] k of the n + k slots
    consume = (in_row & ~is_new).long()  # a kept slot uses one body token, an insertion none
    return _place(ids, n_items, is_new, consume, _new_tokens(is_new, random_ratio, spec, generator), spec)


# ---- composition ----------------------------------------------------------------------------

NOISES: dict[str, Callable[..., Batch]] = {
    "token_masking": mask_tokens,
    "token_deletion": delete_tokens,
    "text_infilling": infill_text,
    "sentence_permutation": permute_sentences,
    "document_rotation": rotate_document,
    "token_insertion": insert_tokens,
}
# The NoiseStep fields each noise takes (sentence_permutation also takes denoise's full_stop_ids).
STEP_FIELDS = {
    "token_masking": ("rate", "random_ratio"),
    "token_deletion": ("rate",),
    "text_infilling": ("rate", "poisson_lambda", "random_ratio"),
    "sentence_permutation": (),
    "document_rotation": (),
    "token_insertion": ("rate", "random_ratio"),
}


@dataclass(frozen=True)
class NoiseStep:
    """One noise of a chain: its NOISES name and the settings it uses (the others are ignored)."""

    name: str
    rate: float = 0.3  # BART §5.1: 30% of tokens
    poisson_lambda: float = 3.0  # BART §2.2
    random_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in NOISES:
            raise ValueError(f"unknown noise {self.name!r}; known: {sorted(NOISES)}")
        _check_rate(self.rate, upper=None if self.name == "token_insertion" else 1.0)
        _check_rate(self.random_ratio, "random_ratio")
        _check_lambda(self.poisson_lambda)

    def kwargs(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in STEP_FIELDS[self.name]}


# Single-noise presets follow BART's Table 1 comparison (§4.1), one noise at a time. The paper
# gives the rate only for its final model (30% of tokens, §5.1); we use it for every
# token-level noise so the presets corrupt comparable amounts.
PRESETS: dict[str, tuple[NoiseStep, ...]] = {
    # BART §5.1: text infilling (30%, λ=3) plus permuting all sentences; fairseq's
    # DenoisingDataset permutes first, then masks.
    "bart-base": (NoiseStep("sentence_permutation"), NoiseStep("text_infilling", rate=0.3, poisson_lambda=3.0)),
    # The released bart.large args: mask 0.3, poisson_lambda 3.5, mask_random 0.1, permute 1.0.
    "bart-large": (NoiseStep("sentence_permutation"),
                   NoiseStep("text_infilling", rate=0.3, poisson_lambda=3.5, random_ratio=0.1)),
    # BART §2.2: masked tokens become <mask> (no random replacements, unlike BERT's 80/10/10).
    "token-masking": (NoiseStep("token_masking", rate=0.3, random_ratio=0.0),),
    "token-deletion": (NoiseStep("token_deletion", rate=0.3),),
    "text-infilling": (NoiseStep("text_infilling", rate=0.3, poisson_lambda=3.0),),
    "sentence-permutation": (NoiseStep("sentence_permutation"),),
    "document-rotation": (NoiseStep("document_rotation"),),
    "token-insertion": (NoiseStep("token_insertion", rate=0.3),),
}


def apply_noises(ids: Tensor, lengths: Tensor, steps: Sequence[NoiseStep] | str, *, spec: NoiseIds,
                 generator: torch.Generator, full_stop_ids: Sequence[int] | Tensor | None = None) -> Batch:
    """Run the steps (or a PRESETS name) in order: (ids [B, T], lengths [B]) -> (ids [B, T'], lengths [B])."""
    if isinstance(steps, str):
        if steps not in PRESETS:
            raise ValueError(f"unknown preset {steps!r}; known: {sorted(PRESETS)}")
        steps = PRESETS[steps]
    for step in steps:
        extra = {}
        if step.name == "sentence_permutation":
            if full_stop_ids is None:
                raise ValueError("sentence_permutation needs full_stop_ids")
            extra["full_stop_ids"] = full_stop_ids
        ids, lengths = NOISES[step.name](ids, lengths, **step.kwargs(), **extra, spec=spec, generator=generator)
    return ids, lengths


def truncate(ids: Tensor, lengths: Tensor, max_len: int, *, spec: NoiseIds) -> Batch:
    """Cut rows longer than max_len (>= 2) to max_len tokens, </s> kept last."""
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2 (<s> and </s>), got {max_len}")
    if int(lengths.max()) <= max_len:
        return ids, lengths
    new_len = lengths.clamp(max=max_len)
    return _assemble(ids[:, 1 : max_len - 1], new_len - 2, spec)


def denoise(ids: Tensor, lengths: Tensor, steps: Sequence[NoiseStep] | str, *, spec: NoiseIds,
            generator: torch.Generator, full_stop_ids: Sequence[int] | Tensor | None = None,
            max_len: int | None = None, decoder_start_id: int | None = None) -> dict[str, Tensor]:
    """The BART training batch for original rows (ids [B, T], lengths [B]).

    Returns input_ids [B, S] (noised, padded), attention_mask [B, S] (1 on tokens, 0 on pad),
    labels [B, T] (the original rows, IGNORE on padding) and decoder_input_ids [B, T] (labels
    shifted right after decoder_start_id, default </s> as in fairseq/HF BART; pad where the
    shifted label is IGNORE). max_len cuts noised rows that grew longer, </s> kept last.
    """
    _check_batch(ids, lengths)
    noised, noised_len = apply_noises(ids, lengths, steps, spec=spec, generator=generator,
                                      full_stop_ids=full_stop_ids)
    if max_len is not None:
        noised, noised_len = truncate(noised, noised_len, max_len, spec=spec)
    attention_mask = (torch.arange(noised.shape[1]) < noised_len[:, None]).long()  # [B, S]
    labels = ids.masked_fill(torch.arange(ids.shape[1]) >= lengths[:, None], IGNORE)  # [B, T]
    start = spec.eos if decoder_start_id is None else decoder_start_id
    decoder_input_ids = torch.cat([labels.new_full((len(labels), 1), start), labels[:, :-1]], dim=1)  # [B, T]
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == IGNORE, spec.pad)
    return {"input_ids": noised, "attention_mask": attention_mask, "labels": labels,
            "decoder_input_ids": decoder_input_ids}
