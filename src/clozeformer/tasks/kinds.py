"""Task kinds, one class each (Classification, Regression, TokenClassification, ExtractiveQA,
Seq2Seq), registered once in KINDS: how an example is read, what the model is fed, how its
outputs become predictions and are scored, and predict()'s row. `kind_of(spec, family)` gives
the one a model does the task with: a family that answers classification or regression as
text (T5) gets the kind wrapped in TextToText, which writes label words or numbers as targets
and reads them back from generated text. tasks/task.py runs the data path through them.

Shapes: B batch, T length, C classes, L fixed width of pooled eval tensors.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clozeformer.families import FAMILIES
from clozeformer.nn.functional import IGNORE
from clozeformer.tasks import metrics as M
from clozeformer.tasks.qa import Window, answer_texts, windows
from clozeformer.tasks.readers import Record, answers_in, field, read_records, read_squad
from clozeformer.tasks.spec import METRICS, TaskError, TaskSpec, parse_label, parse_regression, regression_text


# --- helpers -------------------------------------------------------------------------------

MAX_TARGET = 1e15  # regression targets: the squared error stays finite in fp32


_INTEGRAL = re.compile(r"[+-]?[0-9]+(\.0*)?")


def class_label(label: str) -> str:
    """A class label as one string per class: an integer in any spelling (1, "1", 1.0, "+1", "01") becomes
    "1", exactly however long; every other label is kept as written."""
    return str(int(label.split(".")[0])) if _INTEGRAL.fullmatch(label) else label


def _strings(where: str, column: str, values: list) -> list[str]:
    """A record's list of tokens or tags as strings: numbers are spelt out, anything else is refused by place."""
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            kind = "null" if v is None else type(v).__name__
            raise TaskError(f"{where}: {column}[{i}] is {kind}, not a string or a number")
    return [str(v) for v in values]


def _warn_odd_labels(found: set[str], rows: int, numeric: bool) -> None:
    """One warning when a classification label set looks like the wrong column or the wrong kind."""
    numbers = sorted(s for s in found if not numeric and _is_number(s))
    words = sorted(found - set(numbers))
    fractions = [s for s in numbers if not _INTEGRAL.fullmatch(s)]
    folded: dict[str, set[str]] = {}
    for s in found:
        folded.setdefault(s.strip().lower(), set()).add(s)
    clashes = [sorted(v) for v in folded.values() if len(v) > 1]
    if fractions and not words:
        why = f"labels {fractions[:3]} are fractional numbers: for a score use the regression task"
    elif numbers and words:
        why = f"labels {numbers[:3]} are numbers beside words ({', '.join(map(repr, words[:3]))}): is the label " \
              "column the right one, or two labellings mixed?"
    elif len(found) > 20 and len(found) > rows // 2:
        why = f"{len(found)} classes from {rows} rows: is the label column the right one?"
    elif clashes:
        why = f"labels {clashes[0]} differ only in case or spaces and count as different classes"
    else:
        return
    warnings.warn(f"odd label set: {why}", stacklevel=3)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def check_labels(spec: TaskSpec, examples: list[dict]) -> None:
    """Every label of `examples` must be one the model was trained on; one gold value throughout is warned of
    (MCC and correlations are undefined on it and read 0.0)."""
    golds = {ex["label"] for ex in examples if "label" in ex}
    if len(golds) == 1 and len(examples) > 1 and spec.kind in ("classification", "regression"):
        warnings.warn(f"every gold label of the {len(examples)} rows is {next(iter(golds))!r}: MCC and "
                      "correlations are undefined on them and read 0.0", stacklevel=2)
    if spec.labels is None:
        return
    known = set(spec.labels)
    for ex in examples:
        for label in ex.get("tags", [ex["label"]] if "label" in ex else []):
            if label not in known:
                raise TaskError(f"{ex['where']}: label {label!r} never seen in training (training labels: "
                                f"{', '.join(spec.labels)})")


def label_words(spec: TaskSpec) -> list[str]:
    """T5's target word per class id (the label itself where no word is set)."""
    words = spec.label_words or {}
    return [words.get(label, label) for label in spec.labels or []]


def _encode(tok, text: str, pair: str | None, max_len: int, **kw) -> Any:
    """The backend encoding (ids, type_ids, offsets, word_ids) truncated longest-first to max_len."""
    tok.backend.enable_truncation(max_len)
    try:
        return tok.backend.encode(text, pair, **kw)
    finally:
        tok.backend.no_truncation()


def _byte_level(tok) -> bool:
    """Byte-level BPE marks a word's leading space in its first token (Ġ), so pre-split words get one back."""
    return type(tok.backend.pre_tokenizer).__name__ == "ByteLevel"


def _pad(t: Tensor, width: int, value: float) -> Tensor:
    """[B, T] -> [B, width] (T ≤ width), on the CPU."""
    return F.pad(t, (0, width - t.shape[1]), value=value).cpu()


def _generate(model, spec: TaskSpec, batch: dict[str, Tensor]) -> Tensor:
    return model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=spec.max_new_tokens,
                          num_beams=spec.num_beams)  # [B, ≤ 1 + max_new_tokens]


def decode_rows(tok, ids: Tensor) -> list[str]:
    """Texts of id rows [B, L] (-100 counts as padding)."""
    return [tok.decode([i for i in row if i >= 0]).strip() for row in ids.tolist()]


def word_tags(spec: TaskSpec, tok, tokens: list[str], pred_ids: list[int]) -> list[str]:
    """Each word's tag: the prediction at its first sub-word ("O" for words cut off by max_len)."""
    words = [(" " + t if j and _byte_level(tok) else t) for j, t in enumerate(tokens)]
    e = _encode(tok, words, None, spec.max_len, is_pretokenized=True)
    tags = ["O"] * len(tokens)
    seen = set()
    for pos, w in enumerate(e.word_ids):
        if w is not None and w not in seen:
            tags[w] = spec.labels[pred_ids[pos]]
            seen.add(w)
    return tags



# --- the kinds -----------------------------------------------------------------------------

class Kind:
    """One task kind: how an example is read, what the model is fed and predicts, how it is scored.

    features(spec, tok, family, ex, i, labelled) -> [(feature dict, window or None)]; outputs come
    back per batch (`batch_predictions`) or pooled over the eval set (`pooled` -> `unpool`).
    """

    name = ""
    generates = False  # predictions are generated text (no forward pass without targets)
    reads: tuple[str, ...] = ("metric", "max_len")  # the TaskSpec options this kind uses (others are refused)

    def load(self, spec: TaskSpec, source, split: str, labelled: bool) -> list[dict[str, Any]]:
        return [self.example(spec, r, labelled) for r in read_records(source, split)]

    def example(self, spec: TaskSpec, record: Record, labelled: bool) -> dict[str, Any]:
        raise NotImplementedError

    def label_set(self, spec: TaskSpec, examples: list[dict]) -> list[str] | None:
        return None

    def check(self, spec: TaskSpec, source) -> None:
        """Refuse a training set this kind cannot learn from (after its labels are known)."""

    def num_labels(self, spec: TaskSpec) -> int:
        return len(spec.labels)

    def features(self, spec: TaskSpec, tok, family: str, ex: dict, i: int, labelled: bool) -> list[tuple]:
        raise NotImplementedError

    def metric_names(self, spec: TaskSpec) -> tuple[str, ...]:
        return METRICS[self.name]

    def width(self, spec: TaskSpec) -> int:
        return spec.max_len

    def predictions(self, spec: TaskSpec, tok, model, outs: list[tuple[Any, dict]], examples: list[dict],
                    wins: list[Window]) -> list[Any]:
        return [p for out, _ in outs for p in self.batch_predictions(out)]

    def batch_predictions(self, out) -> list[Any]:
        return out.logits.argmax(-1).cpu().tolist()

    def pooled(self, spec: TaskSpec, model, out, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def unpool(self, spec: TaskSpec, tok, ts: tuple[Tensor, ...], examples: list[dict], wins: list[Window]) -> list:
        return ts[0].tolist()

    def score(self, spec: TaskSpec, tok, preds: list[Any], examples: list[dict]) -> dict[str, float]:
        raise NotImplementedError

    def row(self, spec: TaskSpec, tok, ex: dict, pred: Any) -> dict[str, Any]:
        """predict()'s output for one example: its input fields and the prediction."""
        raise NotImplementedError

    def confidences(self, outs: list[tuple[Any, dict]]) -> list[float] | None:
        """predict()'s "score" per example where the prediction has a probability (classification)."""
        return None

    def input_column(self, spec: TaskSpec) -> str | None:
        """The column a bare text given to predict() fills (None: the kind reads records only)."""
        return None


class _Sentences(Kind):
    """A text (and an optional second text) per example, one label."""

    reads = Kind.reads + ("text_column", "text_pair_column", "label_column")

    def input_column(self, spec):
        return spec.text_column

    def example(self, spec, record, labelled):
        where = record[0]
        ex = {"where": where, "text": field(record, spec.text_column),
              "pair": field(record, spec.text_pair_column) if spec.text_pair_column else None}
        if labelled:
            ex["label"] = self.parse(where, field(record, spec.label_column).strip())
        return ex

    def parse(self, where: str, label: str) -> Any:
        raise NotImplementedError

    def target(self, spec: TaskSpec, label: Any) -> Any:
        raise NotImplementedError

    def features(self, spec, tok, family, ex, i, labelled):
        e = _encode(tok, ex["text"], ex["pair"], spec.max_len)
        f = {"input_ids": e.ids, "attention_mask": [1] * len(e.ids)}
        if FAMILIES[family].token_types:
            f["token_type_ids"] = e.type_ids
        if labelled:
            f["labels"] = self.target(spec, ex["label"])
        return [(f, None)]

    def row(self, spec, tok, ex, pred):
        return {k: v for k, v in ex.items() if k not in ("where", "label")}


class Classification(_Sentences):
    name = "classification"

    def parse(self, where, label):
        if not label:
            raise TaskError(f"{where}: empty label")
        return class_label(label)

    def target(self, spec, label):
        return spec.labels.index(label)

    def label_set(self, spec, examples):
        found = {ex["label"] for ex in examples}
        numeric = all(s.lstrip("-").isdigit() for s in found)
        _warn_odd_labels(found, len(examples), numeric)
        return sorted(found, key=(lambda s: (int(s), s)) if numeric else None)

    def check(self, spec, source):
        if len(spec.labels) < 2:
            raise TaskError(f"{source}: classification needs at least two labels; found {spec.labels}")

    def pooled(self, spec, model, out, batch):
        return (_pad(out.logits.argmax(-1)[:, None], 1, IGNORE),)  # [B, 1]

    def unpool(self, spec, tok, ts, examples, wins):
        return ts[0][:, 0].tolist()

    def score(self, spec, tok, preds, examples):
        return M.classification(preds, [spec.labels.index(ex["label"]) for ex in examples])

    def row(self, spec, tok, ex, pred):
        return {**super().row(spec, tok, ex, pred), "label": spec.labels[pred]}

    def confidences(self, outs):
        return torch.cat([o.logits.float().softmax(-1).max(-1).values.cpu() for o, _ in outs]).tolist()


class Regression(_Sentences):
    name = "regression"

    def parse(self, where, label):
        try:
            value = float(label) if "_" not in label else None  # Python's 1_000 is no number in a data file
        except ValueError:
            value = None
        if value is None:
            raise TaskError(f"{where}: label {label!r} is not a number (regression)")
        if not abs(value) <= MAX_TARGET:  # nan, inf, or a square that overflows the loss
            raise TaskError(f"{where}: label {label!r} is out of range; allowed: a finite number of magnitude "
                            f"≤ {MAX_TARGET:g} (regression)")
        return value

    def target(self, spec, label):
        return label

    def label_set(self, spec, examples):
        if len({ex["label"] for ex in examples}) == 1:
            raise TaskError(f"{examples[0]['where'].rsplit(':', 1)[0]}: regression needs at least two distinct "
                            f"values to learn from; every label is {examples[0]['label']:g}")
        return None

    def num_labels(self, spec):
        return 1

    def batch_predictions(self, out):
        return out.logits.squeeze(-1).float().cpu().tolist()

    def pooled(self, spec, model, out, batch):
        return (out.logits.squeeze(-1).float().cpu(),)

    def score(self, spec, tok, preds, examples):
        return M.regression(preds, [ex["label"] for ex in examples])

    def row(self, spec, tok, ex, pred):
        return {**super().row(spec, tok, ex, pred), "score": pred}


class TokenClassification(Kind):
    name = "token-classification"
    reads = Kind.reads + ("tokens_column", "tags_column")

    def example(self, spec, record, labelled):
        where = record[0]
        tokens = _strings(where, spec.tokens_column, field(record, spec.tokens_column, list))
        ex = {"where": where, "tokens": tokens}
        if labelled:
            tags = _strings(where, spec.tags_column, field(record, spec.tags_column, list))
            if len(tags) != len(tokens):
                raise TaskError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            ex["tags"] = [class_label(t) for t in tags]
        if not tokens:
            raise TaskError(f"{where}: no tokens")
        return ex

    def label_set(self, spec, examples):
        found = {t for ex in examples for t in ex["tags"]}
        numeric = all(s.lstrip("-").isdigit() for s in found)
        return sorted(found, key=(lambda s: (int(s), s)) if numeric else None)

    def features(self, spec, tok, family, ex, i, labelled):
        words = [(" " + t if j and _byte_level(tok) else t) for j, t in enumerate(ex["tokens"])]
        e = _encode(tok, words, None, spec.max_len, is_pretokenized=True)
        f = {"input_ids": e.ids, "attention_mask": [1] * len(e.ids)}
        if labelled:
            tag_id = {t: k for k, t in enumerate(spec.labels)}
            seen, labels = set(), []
            for w in e.word_ids:  # the label on each word's first sub-word, -100 elsewhere
                labels.append(IGNORE if w is None or w in seen else tag_id[ex["tags"][w]])
                seen.add(w)
            f["labels"] = labels
        return [(f, None)]

    def pooled(self, spec, model, out, batch):
        return (_pad(out.logits.argmax(-1), self.width(spec), IGNORE),)  # [B, L]

    def score(self, spec, tok, preds, examples):
        return M.tagging([word_tags(spec, tok, ex["tokens"], p) for ex, p in zip(examples, preds)],
                         [ex["tags"] for ex in examples])

    def row(self, spec, tok, ex, pred):
        return {"tokens": ex["tokens"], "tags": word_tags(spec, tok, ex["tokens"], pred)}


class ExtractiveQA(Kind):
    name = "extractive-qa"
    reads = Kind.reads + ("stride", "max_query_len", "max_answer_len")

    def load(self, spec, source, split, labelled):
        return read_squad(source) if str(source).endswith(".json") else super().load(spec, source, split, labelled)

    def example(self, spec, record, labelled):  # {"question", "context"[, "id", "answers"]}: SQuAD as HF's datasets
        where = record[0]
        ex = {"id": str(record[1].get("id", where)), "question": field(record, "question"),
              "context": field(record, "context"), "answers": [], "where": where}
        if labelled:
            answers = field(record, "answers", dict)
            texts, starts = answers.get("text"), answers.get("answer_start")
            if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
                raise TaskError(f"{where}: 'answers' needs equal lists 'text' and 'answer_start'")
            ex["answers"] = answers_in(where, ex["context"], list(zip(texts, starts)))
        return ex

    def num_labels(self, spec):
        return 2  # a start and an end logit per token

    def features(self, spec, tok, family, ex, i, labelled):
        answer = ex["answers"][0] if labelled and ex["answers"] else None
        out = []
        for w in windows(tok, ex["question"], ex["context"], i, max_len=spec.max_len, stride=spec.stride,
                         max_query_len=spec.max_query_len, answer=answer):
            f = {"input_ids": w.ids, "attention_mask": [1] * len(w.ids)}
            if FAMILIES[family].token_types:
                f["token_type_ids"] = w.type_ids
            if labelled:
                f.update(start_positions=w.start, end_positions=w.end)
            out.append((f, w))
        return out

    def predictions(self, spec, tok, model, outs, examples, wins):
        width = max(b["input_ids"].shape[1] for _, b in outs)
        starts = torch.cat([_pad(o.start_logits.float(), width, -1e4) for o, _ in outs])
        ends = torch.cat([_pad(o.end_logits.float(), width, -1e4) for o, _ in outs])
        return answer_texts([ex["context"] for ex in examples], wins, starts, ends, spec.max_answer_len)

    def pooled(self, spec, model, out, batch):
        width = self.width(spec)
        return _pad(out.start_logits.float(), width, -1e4), _pad(out.end_logits.float(), width, -1e4)

    def unpool(self, spec, tok, ts, examples, wins):
        return answer_texts([ex["context"] for ex in examples], wins, ts[0], ts[1], spec.max_answer_len)

    def score(self, spec, tok, preds, examples):
        return M.squad(preds, [[a for a, _ in ex["answers"]] for ex in examples])

    def row(self, spec, tok, ex, pred):
        return {"id": ex["id"], "question": ex["question"], "answer": pred}


GENERATION = ("max_new_tokens", "num_beams")  # the TaskSpec options every generating kind reads


class _Generates(Kind):
    """Predictions are generated: no forward pass without targets; eval pools the generated ids."""

    generates = True
    reads = Kind.reads + GENERATION

    def width(self, spec):
        return spec.max_new_tokens + 1

    def predictions(self, spec, tok, model, outs, examples, wins):
        return [t for _, batch in outs for t in decode_rows(tok, _generate(model, spec, batch).cpu())]

    def pooled(self, spec, model, out, batch):
        return (_pad(_generate(model, spec, batch), self.width(spec), IGNORE),)

    def unpool(self, spec, tok, ts, examples, wins):
        return decode_rows(tok, ts[0])

    def source_target(self, spec: TaskSpec, ex: dict, labelled: bool) -> tuple[str, str | None]:
        raise NotImplementedError

    def features(self, spec, tok, family, ex, i, labelled):
        source, target = self.source_target(spec, ex, labelled)
        ids = tok.encode(source, max_length=spec.max_len)
        f = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if labelled:
            f["labels"] = tok.encode(target, max_length=spec.max_len)
        return [(f, None)]


class Seq2Seq(_Generates):
    name = "seq2seq"
    reads = _Generates.reads + ("source_column", "target_column", "prefix")

    def example(self, spec, record, labelled):
        ex = {"where": record[0], "source": field(record, spec.source_column)}
        if labelled:
            ex["target"] = field(record, spec.target_column)
        return ex

    def source_target(self, spec, ex, labelled):
        return spec.prefix + ex["source"], ex["target"] if labelled else None

    def metric_names(self, spec):
        return tuple(m for m in METRICS[self.name] if (m == "bleu") == (spec.main_metric == "bleu"))

    def score(self, spec, tok, preds, examples):
        refs = [ex["target"] for ex in examples]
        return M.bleu(preds, refs) if spec.main_metric == "bleu" else M.rouge(preds, refs)

    def row(self, spec, tok, ex, pred):
        return {"source": ex["source"], "output": pred}

    def input_column(self, spec):
        return spec.source_column


class TextToText(_Generates):
    """A classification or regression kind done by generating text (T5, Raffel et al. §2.4): the
    target is the label's word (or the score rounded to 0.2, "3.8"), read back from the output."""

    def __init__(self, inner: _Sentences) -> None:
        self.inner, self.name = inner, inner.name
        self.reads = (*inner.reads, *GENERATION, "prefix", "pair_prefix",
                      *(("label_words",) if isinstance(inner, Classification) else ()))

    def example(self, spec, record, labelled):
        return self.inner.example(spec, record, labelled)

    def input_column(self, spec):
        return self.inner.input_column(spec)

    def label_set(self, spec, examples):
        return self.inner.label_set(spec, examples)

    def check(self, spec, source):
        self.inner.check(spec, source)
        if not spec.label_words or set(spec.labels or []) <= set(spec.label_words.values()):
            return  # no words, or labels spelled as the words themselves (GLUE's text labels under a preset)
        missing = [lb for lb in spec.labels or [] if lb not in spec.label_words]
        if missing:
            raise TaskError(f"{source}: labels {missing} have no T5 label word (label_words: {spec.label_words})")
        unknown = [lb for lb in spec.label_words if lb not in (spec.labels or [])]
        if unknown:
            raise TaskError(f"label_words names labels {unknown} that {source} does not have (its labels: "
                            f"{', '.join(spec.labels or [])})")
        words = list(spec.label_words.values())
        if any(not w.strip() for w in words) or len(set(words)) < len(words):
            raise TaskError(f"label_words {spec.label_words}: each label needs its own non-empty word (generated "
                            "text is read back as the label whose word it is)")

    def source_target(self, spec, ex, labelled):
        source = spec.prefix + ex["text"] + (f" {spec.pair_prefix}{ex['pair']}" if ex.get("pair") is not None else "")
        if not labelled:
            return source, None
        if isinstance(self.inner, Regression):
            return source, regression_text(ex["label"])
        return source, label_words(spec)[spec.labels.index(ex["label"])]

    def parsed(self, spec: TaskSpec, text: str) -> Any:
        """A generated text as the inner kind's prediction: a class id (-1: no label word) or a score."""
        return parse_regression(text) if isinstance(self.inner, Regression) else parse_label(text, label_words(spec))

    def score(self, spec, tok, preds, examples):
        return self.inner.score(spec, tok, [self.parsed(spec, p) for p in preds], examples)

    def row(self, spec, tok, ex, pred):
        row = {**_Sentences.row(self.inner, spec, tok, ex, pred), "output": pred}
        value = self.parsed(spec, pred)
        if isinstance(self.inner, Regression):
            return {**row, "score": value}
        return {**row, "label": spec.labels[value] if value >= 0 else None}  # None: an unparseable generation


KINDS: dict[str, Kind] = {k.name: k for k in (Classification(), Regression(), TokenClassification(), ExtractiveQA(),
                                              Seq2Seq())}


def kind_of(spec: TaskSpec, family: str | None = None) -> Kind:
    """The kind a model of `family` does `spec` with (reading examples needs no family)."""
    kind = KINDS[spec.kind]
    return TextToText(kind) if family is not None and spec.kind in FAMILIES[family].text_to_text else kind


def check_options(spec: TaskSpec, family: str, options: dict[str, Any]) -> None:
    """Refuse task options given (not None) that the kind does not read with a `family` model (T5's label words
    for a BERT classifier, a QA stride for a summariser): they would be ignored without a word."""
    reads = kind_of(spec, family).reads
    if unread := [k for k, v in options.items() if v is not None and k not in reads]:
        raise TaskError(f"{', '.join(unread)} {'does' if len(unread) == 1 else 'do'} not apply to {spec.kind} with a "
                        f"{family} model; its options: {', '.join(reads)}")
