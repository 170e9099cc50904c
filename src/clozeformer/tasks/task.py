"""A task's data path: records -> examples -> features (model forward keywords) -> batches,
and back: model outputs -> predictions -> metrics.

Shapes: B batch, T length, C classes, L fixed width of pooled eval tensors.

One function per step, branching on the task kind and on whether the model is a T5 doing
the task as text to text ("t2t": classification/regression by generating label words or
numbers). Evaluation metrics that are not per-batch sums (MCC, F1, correlations, SQuAD,
ROUGE) go through the loop's `Pooled`: per-batch tensors are padded to a fixed width L so
they concatenate, and the metric runs once over the whole eval set.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clozeformer.data.packing import EpochOrder, pad_rows
from clozeformer.families import FAMILIES
from clozeformer.nn.functional import IGNORE
from clozeformer.tasks import metrics as M
from clozeformer.tasks.metrics import Pooled
from clozeformer.tasks.qa import Window, answer_texts, windows
from clozeformer.tasks.readers import Record, field, read_records, read_squad
from clozeformer.tasks.spec import METRICS, TaskError, TaskSpec, parse_label, parse_regression, regression_text

def text_to_text(spec: TaskSpec, family: str) -> bool:
    """Whether `family` answers this labelled task by generating its label as text (T5)."""
    return spec.kind in FAMILIES[family].text_to_text


def generative(spec: TaskSpec, family: str) -> bool:
    """Whether the answer is generated text: seq2seq, or a label written as text."""
    return spec.kind == "seq2seq" or text_to_text(spec, family)


# --- examples ------------------------------------------------------------------------------

def load_examples(spec: TaskSpec, source, split: str = "train", labelled: bool = True) -> list[dict[str, Any]]:
    """Parsed examples of a file (or hf: dataset); `labelled=False` reads inputs only (predict)."""
    if spec.kind == "extractive-qa" and str(source).endswith(".json"):
        return read_squad(source)
    return [example(spec, r, labelled) for r in read_records(source, split)]


def example(spec: TaskSpec, record: Record, labelled: bool = True) -> dict[str, Any]:
    where = record[0]
    if spec.kind == "extractive-qa":  # a record {"question", "context"[, "id", "answers"]}: SQuAD as HF's datasets
        ex = {"id": str(record[1].get("id", where)), "question": field(record, "question"),
              "context": field(record, "context"), "answers": [], "where": where}
        if labelled:
            answers = field(record, "answers", dict)
            texts, starts = answers.get("text"), answers.get("answer_start")
            if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
                raise TaskError(f"{where}: 'answers' needs equal lists 'text' and 'answer_start'")
            ex["answers"] = [(str(t), int(a)) for t, a in zip(texts, starts)]
        return ex
    if spec.kind == "token-classification":
        tokens = field(record, spec.tokens_column, list)
        ex = {"where": where, "tokens": [str(t) for t in tokens]}
        if labelled:
            tags = field(record, spec.tags_column, list)
            if len(tags) != len(tokens):
                raise TaskError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            ex["tags"] = [str(t) for t in tags]
        if not tokens:
            raise TaskError(f"{where}: no tokens")
        return ex
    if spec.kind == "seq2seq":
        ex = {"where": where, "source": field(record, spec.source_column)}
        if labelled:
            ex["target"] = field(record, spec.target_column)
        return ex
    ex = {"where": where, "text": field(record, spec.text_column),
          "pair": field(record, spec.text_pair_column) if spec.text_pair_column else None}
    if labelled:
        label = field(record, spec.label_column).strip()
        if spec.kind == "regression":
            try:
                ex["label"] = float(label)
            except ValueError:
                raise TaskError(f"{where}: label {label!r} is not a number (regression)") from None
        else:
            ex["label"] = class_label(label)
    return ex


def class_label(label: str) -> str:
    """A class label as one string per class: a number with an integral value in any spelling
    (1, "1", 1.0, "+1", "01") becomes "1"; every other label is kept as written."""
    try:
        value = float(label)
    except ValueError:
        return label
    return str(int(value)) if value.is_integer() else label


def label_set(spec: TaskSpec, examples: list[dict]) -> list[str] | None:
    """The training labels (tags), sorted (numerically when all are integers)."""
    if spec.kind == "classification":
        found = {ex["label"] for ex in examples}
    elif spec.kind == "token-classification":
        found = {t for ex in examples for t in ex["tags"]}
    else:
        return None
    numeric = all(s.lstrip("-").isdigit() for s in found)
    if spec.kind == "classification":
        _warn_odd_labels(found, len(examples), numeric)
    return sorted(found, key=(lambda s: (int(s), s)) if numeric else None)


def _warn_odd_labels(found: set[str], rows: int, numeric: bool) -> None:
    """One warning when a classification label set looks like the wrong column or the wrong kind."""
    fractions = [s for s in found if not numeric and _is_number(s)]
    folded: dict[str, set[str]] = {}
    for s in found:
        folded.setdefault(s.strip().lower(), set()).add(s)
    clashes = [sorted(v) for v in folded.values() if len(v) > 1]
    if fractions:
        why = f"labels {sorted(fractions)[:3]} are fractional numbers: for a score use the regression task"
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
    """Every label of `examples` must be one the model was trained on."""
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


# --- features ------------------------------------------------------------------------------

def _encode(tok, text: str, pair: str | None, max_len: int, **kw) -> Any:
    """The backend encoding (ids, type_ids, offsets, word_ids) truncated longest-first to max_len."""
    tok.backend.enable_truncation(max_len)
    try:
        return tok.backend.encode(text, pair, **kw)
    finally:
        tok.backend.no_truncation()


def t2t_source(spec: TaskSpec, ex: dict) -> str:
    text = spec.prefix + ex["text"]
    return text + (f" {spec.pair_prefix}{ex['pair']}" if ex.get("pair") is not None else "")


def features(spec: TaskSpec, tok, family: str, examples: list[dict], *, labelled: bool = True) -> tuple[list, list]:
    """(features, windows): one feature dict per example (QA: per window; windows lists them)."""
    feats, wins = [], []
    enc_types = FAMILIES[family].token_types
    for i, ex in enumerate(examples):
        if spec.kind == "extractive-qa":
            answer = ex["answers"][0] if labelled and ex["answers"] else None
            for w in windows(tok, ex["question"], ex["context"], i, max_len=spec.max_len, stride=spec.stride,
                             max_query_len=spec.max_query_len, answer=answer):
                f = {"input_ids": w.ids, "attention_mask": [1] * len(w.ids)}
                if enc_types:
                    f["token_type_ids"] = w.type_ids
                if labelled:
                    f.update(start_positions=w.start, end_positions=w.end)
                feats.append(f)
                wins.append(w)
            continue
        if spec.kind == "token-classification":
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
            feats.append(f)
            continue
        if generative(spec, family):
            source = spec.prefix + ex["source"] if spec.kind == "seq2seq" else t2t_source(spec, ex)
            ids = tok.encode(source, max_length=spec.max_len)
            f = {"input_ids": ids, "attention_mask": [1] * len(ids)}
            if labelled:
                if spec.kind == "seq2seq":
                    target = ex["target"]
                elif spec.kind == "regression":
                    target = regression_text(ex["label"])
                else:
                    target = label_words(spec)[spec.labels.index(ex["label"])]
                f["labels"] = tok.encode(target, max_length=spec.max_len)
            feats.append(f)
            continue
        e = _encode(tok, ex["text"], ex["pair"], spec.max_len)
        f = {"input_ids": e.ids, "attention_mask": [1] * len(e.ids)}
        if enc_types:
            f["token_type_ids"] = e.type_ids
        if labelled:
            f["labels"] = ex["label"] if spec.kind == "regression" else spec.labels.index(ex["label"])
        feats.append(f)
    return feats, wins


def _byte_level(tok) -> bool:
    """Byte-level BPE marks a word's leading space in its first token (Ġ), so pre-split words get one back."""
    return type(tok.backend.pre_tokenizer).__name__ == "ByteLevel"


def collate(feats: list[dict], pad_id: int) -> dict[str, Tensor]:
    """Pad each list key to the batch's longest row: ids with pad_id, masks/types with 0, labels with -100."""
    out = {}
    for key in feats[0]:
        values = [f[key] for f in feats]
        if not isinstance(values[0], list):
            out[key] = torch.tensor(values, dtype=torch.float if isinstance(values[0], float) else torch.long)
            continue
        out[key] = pad_rows(values, pad_id if key == "input_ids" else IGNORE if key == "labels" else 0)
    return out


class TaskData:
    """Like data/pairs.PairData for every kind: training batches (batch k a pure function of (seed, k): exact resume) and ordered eval batches."""

    def __init__(self, train: list[dict], eval: list[dict], *, pad_id: int, batch_size: int, seed: int) -> None:
        self.train, self.eval, self.pad_id, self.batch_size = train, eval, pad_id, batch_size
        self.train_examples = torch.arange(len(train)).numpy()
        self.eval_examples = torch.arange(len(eval)).numpy()
        self._order = EpochOrder(len(train), seed) if train else None

    def train_batch(self, index: int) -> dict[str, Tensor]:
        rows = self._order.rows(self.train_examples, index, self.batch_size)
        return collate([self.train[i] for i in rows], self.pad_id)

    def eval_batches(self, max_batches: int = 10**9) -> list[dict[str, Tensor]]:
        n = min(len(self.eval), max_batches * self.batch_size)
        return [collate(self.eval[i: i + self.batch_size], self.pad_id) for i in range(0, n, self.batch_size)]



# --- outputs -------------------------------------------------------------------------------

def _pad(t: Tensor, width: int, value: float) -> Tensor:
    """[B, T] -> [B, width] (T ≤ width), on the CPU."""
    return F.pad(t, (0, width - t.shape[1]), value=value).cpu()


def _generate(model, spec: TaskSpec, batch: dict[str, Tensor]) -> Tensor:
    return model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=spec.max_new_tokens,
                          num_beams=spec.num_beams)  # [B, ≤ 1 + max_new_tokens]


def decode_rows(tok, ids: Tensor) -> list[str]:
    """Texts of id rows [B, L] (-100 counts as padding)."""
    return [tok.decode([i for i in row if i >= 0]).strip() for row in ids.tolist()]


def predictions(spec: TaskSpec, tok, family: str, model, outs: list[tuple[Any, dict]], examples: list[dict],
                wins: list[Window]) -> list[Any]:
    """Per example: class id, float, tag list, answer text or generated text, from (output, batch) pairs."""
    if spec.kind == "extractive-qa":
        width = max(b["input_ids"].shape[1] for _, b in outs)
        starts = torch.cat([_pad(o.start_logits.float(), width, -1e4) for o, _ in outs])
        ends = torch.cat([_pad(o.end_logits.float(), width, -1e4) for o, _ in outs])
        return answer_texts([ex["context"] for ex in examples], wins, starts, ends, spec.max_answer_len)
    preds: list[Any] = []
    for out, batch in outs:
        if generative(spec, family):
            texts = decode_rows(tok, _generate(model, spec, batch).cpu())
            preds += texts
        elif spec.kind == "token-classification":
            preds += out.logits.argmax(-1).cpu().tolist()
        elif spec.kind == "regression":
            preds += out.logits.squeeze(-1).float().cpu().tolist()
        else:
            preds += out.logits.argmax(-1).cpu().tolist()
    return preds


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


def score(spec: TaskSpec, family: str, preds: list[Any], examples: list[dict], tok) -> dict[str, float]:
    """All the kind's metrics of `preds` against the examples' gold labels."""
    if spec.kind == "extractive-qa":
        return M.squad(preds, [[a for a, _ in ex["answers"]] for ex in examples])
    if spec.kind == "seq2seq":
        refs = [ex["target"] for ex in examples]
        return M.bleu(preds, refs) if spec.main_metric == "bleu" else M.rouge(preds, refs)
    if spec.kind == "token-classification":
        return M.tagging([word_tags(spec, tok, ex["tokens"], p) for ex, p in zip(examples, preds)],
                         [ex["tags"] for ex in examples])
    if spec.kind == "regression":
        values = [parse_regression(p) if isinstance(p, str) else p for p in preds]
        return M.regression(values, [ex["label"] for ex in examples])
    ids = [parse_label(p, label_words(spec)) if isinstance(p, str) else p for p in preds]
    return M.classification(ids, [spec.labels.index(ex["label"]) for ex in examples])


def metrics_fn(spec: TaskSpec, tok, family: str, model, examples: list[dict], wins: list[Window]):
    """The loop's metrics_fn: loss per batch, and every metric of the kind over the whole eval set
    (one Pooled computation shared by all names: the per-batch model outputs concatenated in order)."""
    names = [m for m in METRICS[spec.kind] if spec.kind != "seq2seq"
             or (m == "bleu") == (spec.main_metric == "bleu")]
    generating = generative(spec, family)
    width = spec.max_len if not generating else spec.max_new_tokens + 1

    def fn(out, batch: dict[str, Tensor]) -> dict[str, Any]:
        if spec.kind == "extractive-qa":
            pooled = (_pad(out.start_logits.float(), width, -1e4), _pad(out.end_logits.float(), width, -1e4))
        elif generating:
            pooled = (_pad(_generate(model, spec, batch), width, IGNORE),)
        elif spec.kind == "regression":
            pooled = (out.logits.squeeze(-1).float().cpu(),)
        else:
            ids = out.logits.argmax(-1)  # [B] classes, or [B, T] tags
            pooled = (_pad(ids[:, None], 1, IGNORE),) if ids.dim() == 1 else (_pad(ids, width, IGNORE),)
        memo: dict[str, dict] = {}

        def one(name: str):
            def compute(*ts: Tensor) -> float:
                if "all" not in memo:
                    memo["all"] = score(spec, family, _unpool(spec, family, tok, ts, examples, wins),
                                        examples, tok)
                return memo["all"][name]
            return compute

        # the model's loss is a mean over the batch's examples (over its labelled tokens for tags and
        # text targets): weighted by that count, the eval loss does not depend on the batch size
        labels = batch.get("labels")
        n = int((labels != IGNORE).sum()) if labels is not None and labels.dim() > 1 else len(batch["input_ids"])
        metrics: dict[str, Any] = {"loss": (out.loss.item() * n, n)}
        metrics.update({name: Pooled(one(name), pooled) for name in names})
        return metrics

    return fn


def _unpool(spec: TaskSpec, family: str, tok, ts: tuple[Tensor, ...], examples: list[dict],
            wins: list[Window]) -> list[Any]:
    """The pooled eval tensors back into per-example predictions (as `predictions` gives them)."""
    if spec.kind == "extractive-qa":
        return answer_texts([ex["context"] for ex in examples], wins, ts[0], ts[1], spec.max_answer_len)
    if generative(spec, family):
        return decode_rows(tok, ts[0])
    if spec.kind == "regression":
        return ts[0].tolist()
    if spec.kind == "token-classification":
        return ts[0].tolist()
    return ts[0][:, 0].tolist()


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))
