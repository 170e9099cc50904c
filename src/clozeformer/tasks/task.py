"""A task's data path: records -> examples -> features (model forward keywords) -> batches,
and back: model outputs -> predictions -> metrics, each step done by the task's kind
(tasks/kinds.py). Evaluation metrics that are not per-batch sums (MCC, F1, correlations,
SQuAD, ROUGE) go through the loop's `Pooled`: per-batch tensors are padded to a fixed width L
so they concatenate, and the metric runs once over the whole eval set.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from clozeformer.data.packing import EpochOrder, batch_within, pad_rows
from clozeformer.nn.functional import IGNORE
from clozeformer.tasks.kinds import check_labels, check_options, kind_of
from clozeformer.tasks.metrics import Pooled
from clozeformer.tasks.qa import Window
from clozeformer.tasks.readers import Record
from clozeformer.tasks.spec import TaskSpec

__all__ = ["TaskData", "check_labels", "check_options", "example", "features", "kind_of", "label_set", "load_examples",
           "metrics_fn", "predictions", "score", "steps_per_epoch"]


# --- the data path, by kind ------------------------------------------------------------------

def load_examples(spec: TaskSpec, source, split: str = "train", labelled: bool = True) -> list[dict[str, Any]]:
    """Parsed examples of a file (or hf: dataset); `labelled=False` reads inputs only (predict)."""
    return kind_of(spec).load(spec, source, split, labelled)


def example(spec: TaskSpec, record: Record, labelled: bool = True) -> dict[str, Any]:
    return kind_of(spec).example(spec, record, labelled)


def label_set(spec: TaskSpec, examples: list[dict]) -> list[str] | None:
    """The training labels (tags), sorted (numerically when all are integers)."""
    return kind_of(spec).label_set(spec, examples)


def features(spec: TaskSpec, tok, family: str, examples: list[dict], *, labelled: bool = True,
             token_types: int = 2) -> tuple[list, list]:
    """(features, windows): one feature dict per example (QA: per window; windows lists them). A model with
    fewer than two `token_types` (`--set type_vocab_size=1`, as RoBERTa has) reads a pair as one segment."""
    kind = kind_of(spec, family)
    pairs = [p for i, ex in enumerate(examples) for p in kind.features(spec, tok, family, ex, i, labelled)]
    if token_types < 2:
        for f, _ in pairs:
            f.pop("token_type_ids", None)
    return [f for f, _ in pairs], [w for _, w in pairs if w is not None]


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
        self.train, self.eval, self.pad_id, self.batch_size = train, eval, pad_id, batch_within(batch_size, len(train))
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

def predictions(spec: TaskSpec, tok, family: str, model, outs: list[tuple[Any, dict]], examples: list[dict],
                wins: list[Window]) -> list[Any]:
    """Per example: class id, float, tag list, answer text or generated text, from (output, batch) pairs."""
    return kind_of(spec, family).predictions(spec, tok, model, outs, examples, wins)


def score(spec: TaskSpec, family: str, preds: list[Any], examples: list[dict], tok) -> dict[str, float]:
    """All the kind's metrics of `preds` (as `predictions` gives them) against the examples' gold labels."""
    return kind_of(spec, family).score(spec, tok, preds, examples)


def metrics_fn(spec: TaskSpec, tok, family: str, model, examples: list[dict], wins: list[Window]):
    """The loop's metrics_fn: loss per batch, and every metric of the kind over the whole eval set
    (one Pooled computation shared by all names: the per-batch model outputs concatenated in order)."""
    kind = kind_of(spec, family)
    names = kind.metric_names(spec)

    def fn(out, batch: dict[str, Tensor]) -> dict[str, Any]:
        pooled = kind.pooled(spec, model, out, batch)
        memo: dict[str, dict] = {}

        def one(name: str):
            def compute(*ts: Tensor) -> float:
                if "all" not in memo:
                    memo["all"] = kind.score(spec, tok, kind.unpool(spec, tok, ts, examples, wins), examples)
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


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))
