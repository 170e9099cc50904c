"""See what a pretraining objective does to a sentence: `clozeformer noise`.

Each objective runs exactly as in training (the same pure function from objectives/) on
one tokenised text, and the result is shown as aligned rows: the original tokens, the
corrupted input the model reads, and what it must produce. Original and input are aligned
column by column (difflib over the two token sequences), so a deleted token leaves a gap,
an inserted one takes a new column and a span folded into one `<mask>` lines up with it.

Without a tokenizer, the text's own words (and punctuation) make a word-level vocabulary,
so the corruption is easy to read; with `tokenizer=` it shows real subword pieces.
"""

from __future__ import annotations

import difflib
import html
import itertools
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers

from clozeformer.data.corpus import split_sentences
from clozeformer.data.packing import pad_rows
from clozeformer.data.pretrain import full_stop_ids
from clozeformer.families import FAMILIES
from clozeformer.nn.functional import IGNORE
from clozeformer.objectives import denoise as dn
from clozeformer.objectives.mlm import mlm_mask
from clozeformer.objectives.span import span_corruption
from clozeformer.tokenizer import SPECIALS_OF_KIND, T5_EXTRA_IDS, Tokenizer, bert_template

BART_OBJECTIVES = {name.replace("_", "-"): name for name in dn.NOISES}  # text-infilling -> text_infilling
OBJECTIVES = ("mlm", "whole-word-mlm", "nsp", *BART_OBJECTIVES, "bart-base", "span-corruption", "rtd")
# the objectives whose share of tokens `rate` sets (sentence permutation and rotation move whole spans; NSP
# pairs segments; the bart-base preset fixes its own)
RATED = ("mlm", "whole-word-mlm", *(o for o, n in BART_OBJECTIVES.items() if "rate" in dn.STEP_FIELDS[n]),
         "span-corruption", "rtd")



@dataclass
class Row:
    label: str
    cells: list[str]
    styles: list[str] = field(default_factory=list)  # per cell: "", "mask", "changed", "gone", "new", "target"
    aligned: bool = True  # False: printed as a plain sequence under the table


@dataclass
class View:
    objective: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def word_tokenizer(text: str, family: str) -> Tokenizer:
    """A WordLevel tokenizer over the words and punctuation of `text` plus the specials (and T5's
    sentinels, BERT's [CLS] … [SEP] template) of the tokenizer `family` trains."""
    kind = FAMILIES[family].tokenizer_kind
    specials = dict(SPECIALS_OF_KIND[kind])
    pre = pre_tokenizers.Whitespace()
    words = list(dict.fromkeys(w for w, _ in pre.pre_tokenize_str(text)))
    names = list(specials.values())
    sentinels = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)] if kind == "unigram" else []
    vocab = {w: i for i, w in enumerate(names + [w for w in words if w not in names])}
    for s in reversed(sentinels):  # T5's layout: <extra_id_0> is the highest id
        vocab[s] = len(vocab)
    backend = Backend(models.WordLevel(vocab, unk_token=specials["unk"]))
    backend.pre_tokenizer = pre
    backend.add_special_tokens(names + sentinels[::-1])
    if kind == "wordpiece":
        backend.post_processor = bert_template(specials["cls"], specials["sep"], backend)
    return Tokenizer(backend, specials)


def _align(original: list[str], corrupted: list[str]) -> tuple[list[str], list[str], list[str], list[int | None]]:
    """Columns for the two sequences: (top cells, bottom cells, styles, input index per column)."""
    top, bottom, styles, where = [], [], [], []
    ops = difflib.SequenceMatcher(None, original, corrupted, autojunk=False).get_opcodes()
    for op, i0, i1, j0, j1 in ops:
        if op == "equal":
            for i, j in zip(range(i0, i1), range(j0, j1)):
                top.append(original[i]), bottom.append(corrupted[j]), styles.append(""), where.append(j)
            continue
        pairs = itertools.zip_longest(range(i0, i1), range(j0, j1))
        for i, j in pairs:
            top.append(original[i] if i is not None else "")
            bottom.append(corrupted[j] if j is not None else "")
            styles.append("changed" if i is not None and j is not None else ("gone" if j is None else "new"))
            where.append(j)
    return top, bottom, styles, where


def _style_masks(cells: list[str], styles: list[str], mask_tokens: set[str]) -> list[str]:
    return ["mask" if c in mask_tokens else s for c, s in zip(cells, styles)]


def view(objective: str, text: str, *, tokenizer: Tokenizer | None = None, model=None, seed: int = 0,
         rate: float | None = None, second: str | None = None) -> View:
    """Run `objective` on `text` and return the rows to show. `model` is needed for "rtd"."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    if not text.strip():
        raise ValueError("the text is empty")
    if rate is not None and objective not in RATED:
        raise ValueError(f"rate {rate}: {objective} has no rate to set; objectives with one: {', '.join(RATED)}")
    if second is not None and objective != "nsp":
        raise ValueError(f"a second text is NSP's other segment; {objective} reads one text (leave out --second)")
    g = torch.Generator().manual_seed(seed)
    if objective in ("mlm", "whole-word-mlm", "nsp", "rtd"):
        return _bert_view(objective, text, tokenizer, model, g, rate, second)
    if objective == "span-corruption":
        return _span_view(text, tokenizer, g, rate)
    return _bart_view(objective, text, tokenizer, g, rate)


def _bert_view(objective, text, tok, model, g, rate, second) -> View:
    if objective == "rtd":
        if model is None or tok is None:
            raise ValueError("rtd needs a trained ELECTRA model directory (--model)")
        from clozeformer.infer import replaced_token_detection

        rows = replaced_token_detection(model, tok, text, seed=int(torch.randint(0, 2**31, (1,), generator=g)),
                                        rate=rate or 0.15)
        return View("rtd", [
            Row("original", [r.original for r in rows]),
            Row("masked", [r.masked_input for r in rows],
                ["mask" if r.masked_input != r.original else "" for r in rows]),
            Row("generator", [r.sample or "" for r in rows], ["changed" if r.replaced else "" for r in rows]),
            Row("P(replaced)", [f"{r.p_replaced:.2f}" for r in rows],
                ["target" if (r.p_replaced > 0.5) == r.replaced else "gone" for r in rows]),
        ], ["generator: the small MLM's sample at each masked position (a correct guess counts as original)",
            "P(replaced): the discriminator's verdict; green = right, red = wrong"])
    tok = tok or word_tokenizer(text + " " + (second or ""), "bert")
    if objective == "nsp":
        return _nsp_view(text, second, tok, g)
    enc = tok.encode(text)
    ids = torch.tensor([enc])
    cont = torch.from_numpy(tok.continuation_mask()) if objective == "whole-word-mlm" else None
    out = mlm_mask(ids, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=tok.special_ids, generator=g,
                   rate=rate or 0.15, continuation=cont)
    original, corrupted = tok.tokens(enc), tok.tokens(out["input_ids"][0].tolist())
    labels = out["labels"][0].tolist()
    styles = ["mask" if c == tok.tokens([tok.mask_id])[0] else ("changed" if c != o else "")
              for c, o in zip(corrupted, original)]
    kept = [o if lab != IGNORE and c == o else "" for o, c, lab in zip(original, corrupted, labels)]
    return View(objective, [
        Row("original", original),
        Row("input", corrupted, styles),
        Row("target", [tok.tokens([lab])[0] if lab != IGNORE else "" for lab in labels],
            ["target"] * len(labels)),
    ], [f"{sum(lab != IGNORE for lab in labels)} of the {sum(i not in tok.special_ids for i in enc)} text tokens "
        f"predicted (BERT: 80% [MASK], 10% random, "
        f"10% kept{': ' + ', '.join(k for k in kept if k) if any(kept) else ''})"])


def _nsp_view(text, second, tok, g) -> View:
    from clozeformer.objectives.nsp import nsp_pairs

    sentences = split_sentences(text.strip())  # as the corpus reader splits documents for training
    if len(sentences) < 2:
        raise ValueError("nsp needs a text of at least two sentences (A, then its true next segment B)")
    half = max(1, len(sentences) // 2)
    a_text, b_text = " ".join(sentences[:half]), " ".join(sentences[half:])
    # Row 0 is A with its true continuation. Given a second text, nsp_pairs with next_prob 0
    # swaps in the B of a row from another document: the second text (row 1).
    a = [tok.encode(a_text, add_special_tokens=False), tok.encode(second or a_text, add_special_tokens=False)]
    b = [tok.encode(b_text, add_special_tokens=False), tok.encode(second or b_text, add_special_tokens=False)]
    lens = lambda rows: torch.tensor([len(r) for r in rows])  # noqa: E731
    views = [("IsNext", 1.0)] + ([("NotNext", 0.0)] if second else [])
    rows, notes = [], []
    for name, next_prob in views:
        out = nsp_pairs(pad_rows(a, tok.pad_id), lens(a), pad_rows(b, tok.pad_id), lens(b), torch.tensor([0, 1]), max_len=512, cls_id=tok.cls_id,
                        sep_id=tok.sep_id, pad_id=tok.pad_id, generator=g, next_prob=next_prob)
        n = int(out["attention_mask"][0].sum())
        types = out["token_type_ids"][0, :n].tolist()
        rows += [Row(name, tok.tokens(out["input_ids"][0, :n].tolist()), ["target" if t else "" for t in types]),
                 Row("segment", [str(t) for t in types])]
        notes.append(f"{name}: label {int(out['next_sentence_label'][0])} (0 = B follows A, as transformers)")
    return View("nsp", rows, notes)




def _bart_view(objective, text, tok, g, rate) -> View:
    tok = tok or word_tokenizer(text, "bart")
    spec = dn.NoiseIds(bos=tok.bos_id, eos=tok.eos_id, pad=tok.pad_id, mask=tok.mask_id, vocab_size=tok.vocab_size,
                       special_ids=(tok.unk_id,))
    body = tok.encode(text, add_special_tokens=False)
    ids = torch.tensor([[tok.bos_id, *body, tok.eos_id]])
    if objective == "bart-base":
        steps = dn.PRESETS["bart-base"]
    else:
        base = dn.PRESETS[objective]
        steps = tuple(dn.NoiseStep(s.name, rate=rate if rate is not None else s.rate,
                                   poisson_lambda=s.poisson_lambda, random_ratio=s.random_ratio) for s in base)
    out = dn.denoise(ids, torch.tensor([ids.shape[1]]), steps, spec=spec, generator=g, full_stop_ids=full_stop_ids(tok))
    n = int(out["attention_mask"][0].sum())
    original = tok.tokens(ids[0].tolist())
    corrupted = tok.tokens(out["input_ids"][0, :n].tolist())
    top, bottom, styles, _ = _align(original, corrupted)
    mask = set(tok.tokens([tok.mask_id]))
    return View(objective, [
        Row("original", top, ["gone" if s in ("gone", "changed") else "" for s in styles]),
        Row("input", bottom, _style_masks(bottom, styles, mask)),
        Row("target", original, ["target"] * len(original), aligned=False),
    ], ["the decoder reads the target shifted right (starting with </s>) and predicts every token"])


def _span_view(text, tok, g, rate) -> View:
    tok = tok or word_tokenizer(text, "t5")
    if not tok.sentinel_ids:
        raise ValueError("span corruption needs a tokenizer with sentinels <extra_id_0> …")
    body = tok.encode(text, add_special_tokens=False)
    out = span_corruption(torch.tensor([body]), sentinel_ids=tok.sentinel_ids, eos_id=tok.eos_id, generator=g,
                          **({"density": rate} if rate is not None else {}))
    original = tok.tokens(body + [tok.eos_id])  # the input ends with </s> too: aligned with it, not a dropped span
    inputs = tok.tokens(out["input_ids"][0].tolist())
    targets = tok.tokens(out["labels"][0].tolist())
    top, bottom, styles, _ = _align(original, inputs)
    sentinels = set(tok.tokens(tok.sentinel_ids))
    return View("span-corruption", [
        Row("original", top, ["gone" if s in ("gone", "changed") else "" for s in styles]),
        Row("input", bottom, _style_masks(bottom, styles, sentinels)),
        Row("target", targets, ["mask" if t in sentinels else "target" for t in targets], aligned=False),
    ], ["each dropped span becomes one sentinel; the target lists every sentinel followed by its span, then </s>"])


_ANSI = {"mask": "\x1b[1;35m", "changed": "\x1b[33m", "gone": "\x1b[31;9m", "new": "\x1b[32m", "target": "\x1b[36m"}
_CSS = {"mask": "color:#b0b;font-weight:bold", "changed": "color:#a60", "gone": "color:#c00;text-decoration:line-through",
        "new": "color:#080", "target": "color:#078"}


def render_text(v: View, *, color: bool) -> str:
    """Aligned rows for a terminal; ANSI colours when `color`."""
    table = [r for r in v.rows if r.aligned]
    width = max(len(r.cells) for r in table)
    col = [max(len(r.cells[i]) if i < len(r.cells) else 0 for r in table) for i in range(width)]
    name = max(len(r.label) for r in v.rows)
    paint = (lambda s, st: f"{_ANSI[st]}{s}\x1b[0m" if color and st in _ANSI else s)  # noqa: E731
    lines = [f"objective: {v.objective}"]
    for r in table:
        styles = r.styles or [""] * len(r.cells)
        cells = [paint(c.ljust(col[i]), styles[i]) for i, c in enumerate(r.cells)]
        lines.append(f"{r.label.rjust(name)}  " + " ".join(cells).rstrip())
    for r in v.rows:
        if not r.aligned:
            styles = r.styles or [""] * len(r.cells)
            lines.append(f"{r.label.rjust(name)}  " + " ".join(paint(c, s) for c, s in zip(r.cells, styles)))
    lines += [f"{'':>{name}}  ({note})" for note in v.notes]
    return "\n".join(lines)


def render_html(v: View) -> str:
    def cell(c: str, s: str) -> str:
        return f'<td style="{_CSS[s]}">{html.escape(c)}</td>' if s in _CSS else f"<td>{html.escape(c)}</td>"

    def row(r: Row) -> str:
        styles = r.styles or [""] * len(r.cells)
        return f"<tr><th>{html.escape(r.label)}</th>{''.join(cell(c, s) for c, s in zip(r.cells, styles))}</tr>"

    # the aligned rows share one table's columns; each other row (a target of another length) has its own
    aligned = "".join(row(r) for r in v.rows if r.aligned)
    free = "".join(f"<table>{row(r)}</table>" for r in v.rows if not r.aligned)
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in v.notes)
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(v.objective)}</title>"
            f"<style>td,th{{padding:2px 6px;font-family:monospace;text-align:left}}</style>"
            f"<h3>{html.escape(v.objective)}</h3><table>{aligned}</table>{free}{notes}")
