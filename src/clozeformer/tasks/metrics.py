"""Task metrics from scikit-learn, scipy, seqeval, rouge-score and sacreBLEU; SQuAD EM/F1 written out.

Every function takes plain Python lists and returns {name: value} (percentages for EM/F1,
ROUGE and BLEU, as their reference scripts print them; fractions for the rest).
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Pooled:
    """A metric that is no per-batch sum (ROC AUC, F1): fn(*tensors), each tensor concatenated over all of an
    evaluation's batches (train/loop.evaluate)."""

    fn: Callable[..., float]
    tensors: tuple[Tensor, ...]


def classification(preds: list[int], golds: list[int]) -> dict[str, float]:
    """accuracy, f1 (binary: of class 1; else macro), macro_f1, mcc. A pred of -1 (unparseable T5
    output) is simply wrong."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    binary = set(golds) <= {0, 1}
    return {"accuracy": float(accuracy_score(golds, preds)),
            # F1 of class 1 alone (binary; -1 predictions only ever miss), else macro over the gold classes
            "f1": float(f1_score(golds, preds, average="macro", labels=[1] if binary else sorted(set(golds)),
                                 zero_division=0)),
            "macro_f1": float(f1_score(golds, preds, average="macro", labels=sorted(set(golds)), zero_division=0)),
            "mcc": _quiet(matthews_corrcoef, golds, preds)}  # one class throughout: 0.0 (check_labels warns)


def _quiet(fn: Callable[..., float], *args) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(*args))


def regression(preds: list[float], golds: list[float]) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    def corr(fn) -> float:
        if len(set(preds)) < 2 or len(set(golds)) < 2:
            return 0.0  # undefined for a constant input: no correlation shown
        return float(fn(preds, golds)[0])

    return {"pearson": corr(pearsonr), "spearman": corr(spearmanr),
            "mse": sum((p - g) ** 2 for p, g in zip(preds, golds)) / max(1, len(golds))}


def tagging(preds: list[list[str]], golds: list[list[str]]) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, CoNLL rules) and tag accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {"f1": float(f1_score(golds, preds, zero_division=0)),
            "precision": float(precision_score(golds, preds, zero_division=0)),
            "recall": float(recall_score(golds, preds, zero_division=0)),
            "accuracy": float(accuracy_score(golds, preds))}


def rouge(preds: list[str], refs: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (rouge-score, Porter stemming as in its README) × 100."""
    from rouge_score import rouge_scorer

    names = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=True)
    totals = dict.fromkeys(names, 0.0)
    for p, r in zip(preds, refs):
        for name, score in scorer.score(r, p).items():
            totals[name] += score.fmeasure
    return {k: 100 * v / max(1, len(refs)) for k, v in totals.items()}


def bleu(preds: list[str], refs: list[str]) -> dict[str, float]:
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(preds, [refs]).score)}


# --- SQuAD v1.1, as its official evaluate-v1.1.py defines them ----------------------------

def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """Mean over questions of the best EM/F1 against any gold answer, × 100 (as the official script)."""
    n = max(1, len(answers))
    em = sum(max((exact_match(p, a) for a in golds), default=0.0) for p, golds in zip(predictions, answers))
    f = sum(max((f1(p, a) for a in golds), default=0.0) for p, golds in zip(predictions, answers))
    return {"exact_match": 100 * em / n, "f1": 100 * f / n}
