"""What a fine-tuning task is: its kind, where its fields are, its main metric, and (for T5) its words.

A `TaskSpec` is saved with the fine-tuned model (config.json, "clozeformer" → "task"), so
`evaluate` and `predict` read files the way training did. Presets fix everything for the
GLUE-style tasks; any field can still be overridden.

T5 casts every task as text to text (T5 §2.4): the input is `prefix + text` (pairs:
`prefix + text + " " + pair_prefix + pair`), the target a label word (classification) or
the number rounded to 0.2 and printed with one decimal, e.g. "3.8" (regression, STS-B).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from clozeformer.config import LENGTH_CAP, MAX_NUM_BEAMS, MIN_MAX_LEN, check_type

KINDS = ("classification", "regression", "token-classification", "extractive-qa", "seq2seq")

# the metrics each kind reports; the first is the default main metric (model selection, early stopping)
METRICS = {
    "classification": ("accuracy", "f1", "macro_f1", "mcc"),
    "regression": ("pearson", "spearman", "mse"),
    "token-classification": ("f1", "precision", "recall", "accuracy"),
    "extractive-qa": ("f1", "exact_match"),
    "seq2seq": ("rougeL", "rouge1", "rouge2", "bleu"),
}


class TaskError(ValueError):
    """Bad task data or options; the message names file:line where one applies."""


@dataclass(frozen=True)
class TaskSpec:
    kind: str
    text_column: str = "sentence"  # classification/regression: the (first) text
    text_pair_column: str | None = None  # the second text of a pair task
    label_column: str = "label"
    source_column: str = "source"  # seq2seq
    target_column: str = "target"
    tokens_column: str = "tokens"  # token classification (JSONL lists)
    tags_column: str = "tags"
    metric: str | None = None  # main metric; None: the kind's first in METRICS
    prefix: str = ""  # T5 input prefix ("sst2 sentence: ", "summarize: ")
    pair_prefix: str = ""  # T5: before the second text ("sentence2: ")
    label_words: dict[str, str] | None = None  # T5 classification: label -> target word
    labels: list[str] | None = None  # the label (tag) set, read from the training data
    max_len: int = 128  # extractive QA: 384 unless given (HF run_qa's max_seq_length)
    stride: int | None = None  # extractive QA: tokens shared by neighbouring windows (HF's doc_stride); None:
    #                            a third of max_len (HF's 128 of 384), less where a long question leaves less room
    max_query_len: int = 64  # extractive QA: question tokens kept (HF run_qa default)
    max_answer_len: int = 30  # extractive QA: longest answer in tokens (SQuAD reference default)
    max_new_tokens: int = 64  # generation (seq2seq, T5 text-to-text)
    num_beams: int = 1
    preset: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # a prefix 5, 2.5 beams: failed deep in a run, after its first files
            check_type(f.name, getattr(self, f.name), f.type)
        if self.label_words is not None and not isinstance(self.label_words, dict):
            raise TypeError(f"label_words must be a dict of label -> word, got {type(self.label_words).__name__}")
        if self.kind not in KINDS:
            raise TaskError(f"unknown task kind {self.kind!r}; choose from {', '.join(KINDS)} or a preset "
                            f"({', '.join(PRESETS)})")
        allowed = METRICS[self.kind] + (("rouge",) if self.kind == "seq2seq" else ())
        if self.metric is not None and self.metric not in allowed:
            raise TaskError(f"metric {self.metric!r} does not fit {self.kind}; choose from {', '.join(allowed)}")
        reads = {k: v for k, v in (("text_column", self.text_column), ("text_pair_column", self.text_pair_column),
                                   ("label_column", self.label_column)) if v is not None}
        if self.kind in ("classification", "regression") and len(set(reads.values())) < len(reads):
            raise TaskError(f"{', '.join(f'{k} {v!r}' for k, v in reads.items())}: each must be its own column (the "
                            "label would be read as text, or one text as both)")
        for name, low, high in (("max_len", MIN_MAX_LEN, None), ("max_new_tokens", 1, LENGTH_CAP),
                                ("max_answer_len", 1, None), ("stride", 0, None), ("max_query_len", 1, None),
                                ("num_beams", 1, MAX_NUM_BEAMS)):
            value = getattr(self, name)
            if value is not None and not (low <= value and (high is None or value <= high)):
                raise TaskError(f"{name} {value} is out of range; allowed: {name} ≥ {low}" if high is None else
                                f"{name} {value} is out of range; allowed: {low} ≤ {name} ≤ {high}")

    @property
    def main_metric(self) -> str:
        if self.metric == "rouge":
            return "rougeL"
        return self.metric or METRICS[self.kind][0]

    def replace(self, **kw: Any) -> "TaskSpec":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _glue(kind: str, metric: str, prefix: str, words: tuple[str, ...] | None = None,
          pair: tuple[str, str] | None = None, text: str = "sentence") -> TaskSpec:
    a, b = pair or (text, None)
    return TaskSpec(kind, text_column=a, text_pair_column=b, metric=metric, prefix=prefix,
                    pair_prefix=f"{b}: " if b else "",
                    label_words={str(i): w for i, w in enumerate(words)} if words else None)


# Columns as in HF's GLUE datasets; label words and prefixes as in T5 (Raffel et al. 2020, appendix D);
# metrics as GLUE reports them (CoLA: Matthews corr.; STS-B: Pearson/Spearman; MRPC: F1/accuracy).
PRESETS: dict[str, TaskSpec] = {
    "cola": _glue("classification", "mcc", "cola sentence: ", ("unacceptable", "acceptable")),
    "sst2": _glue("classification", "accuracy", "sst2 sentence: ", ("negative", "positive")),
    "stsb": _glue("regression", "pearson", "stsb sentence1: ", pair=("sentence1", "sentence2")),
    "mrpc": _glue("classification", "f1", "mrpc sentence1: ", ("not_equivalent", "equivalent"),
                  pair=("sentence1", "sentence2")),
    "rte": _glue("classification", "accuracy", "rte sentence1: ", ("entailment", "not_entailment"),
                 pair=("sentence1", "sentence2")),
    "mnli": _glue("classification", "accuracy", "mnli premise: ", ("entailment", "neutral", "contradiction"),
                  pair=("premise", "hypothesis")),
    "nsmc": _glue("classification", "accuracy", "nsmc sentence: ", ("negative", "positive")),
}
PRESETS = {name: spec.replace(preset=name) for name, spec in PRESETS.items()}


def task_spec(task: str | TaskSpec, **overrides: Any) -> TaskSpec:
    """A kind or preset name (or a spec) with the given fields overridden (None leaves a field as is)."""
    if isinstance(task, TaskSpec):
        base = task
    elif task in PRESETS:
        base = PRESETS[task]
    else:
        base = TaskSpec(task)
        if base.kind == "extractive-qa":
            base = base.replace(max_len=QA_MAX_LEN)
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})


QA_MAX_LEN = 384  # question + context window (HF run_qa's max_seq_length; doc_stride 128 = a third of it)


def regression_text(value: float) -> str:
    """T5's STS-B target: rounded to the nearest 0.2, one decimal ("3.8")."""
    return f"{round(value * 5) / 5:.1f}"


def parse_regression(text: str) -> float:
    """A generated number; unparseable text scores -1, as T5's string_to_float postprocessor."""
    try:
        value = float(text.strip())
    except ValueError:
        return -1.0
    return value if value == value and abs(value) != float("inf") else -1.0


def parse_label(text: str, words: list[str]) -> int:
    """Class id of a generated label word; anything else is -1, which matches no class (T5's default)."""
    text = text.strip()
    return words.index(text) if text in words else -1
