"""Extractive QA: long contexts as overlapping token windows, and the best answer span back as text.

Shapes: W windows, L window length (≤ max_len).

A window is `[CLS] question [SEP] context-piece [SEP]` (the tokenizer's own pair template:
BART's `<s> q </s></s> c </s>`); neighbouring pieces share `stride` tokens (HF's
doc_stride), made by the tokenizers backend's overflow truncation of the second sequence.
Each window keeps the character offsets of its context tokens, so a span of tokens maps
back to a substring of the original context. Training targets: the answer's first and last
token when the window holds the whole answer, else position 0 (the `[CLS]` "no answer").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from clozeformer.tasks.spec import TaskError


@dataclass(frozen=True)
class Window:
    example: int  # index of its question
    ids: list[int]  # [L]
    type_ids: list[int]  # [L] 0 question, 1 context (BERT's token types)
    offsets: list[tuple[int, int]]  # [L] character span of each token in the context; (0, 0) outside it
    in_context: list[bool]  # [L] token belongs to the context
    start: int = 0  # answer's first token (0: not in this window)
    end: int = 0  # answer's last token


def windows(tok, question: str, context: str, example: int, *, max_len: int, stride: int | None,
            max_query_len: int, answer: tuple[str, int] | None = None) -> list[Window]:
    """The windows of one question over its context (with targets when `answer` = (text, char start)).
    stride None: a third of max_len, or half the room a long question leaves if that is less."""
    backend = tok.backend
    max_query_len = min(max_query_len, max_len // 2)  # a question never crowds the context out
    q = backend.encode(question, add_special_tokens=False)
    if len(q.ids) > max_query_len:  # keep the question's first max_query_len tokens (HF run_qa)
        question = question[: q.offsets[max_query_len - 1][1]]
        q_len = max_query_len
    else:
        q_len = len(q.ids)
    room = max_len - q_len - backend.num_special_tokens_to_add(True)
    if stride is None:
        stride = max(0, min(max_len // 3, (room - 1) // 2))
    if room <= stride:
        raise TaskError(f"max_len {max_len} leaves {room} context tokens per window beside a {q_len}-token "
                        f"question; stride {stride} must be smaller (raise max_len or lower stride)")
    backend.enable_truncation(max_len, stride=stride, strategy="only_second")
    try:
        enc = backend.encode(question, context)
    finally:
        backend.no_truncation()
    out = []
    for e in [enc, *enc.overflowing]:
        in_ctx = [s == 1 for s in e.sequence_ids]
        offsets = [tuple(o) if c else (0, 0) for o, c in zip(e.offsets, in_ctx)]
        start = end = 0
        if answer is not None and any(in_ctx):
            a0, a1 = answer[1], answer[1] + len(answer[0])
            ctx = [i for i, c in enumerate(in_ctx) if c]
            if offsets[ctx[0]][0] <= a0 and offsets[ctx[-1]][1] >= a1:  # the whole answer is inside
                start = max(i for i in ctx if offsets[i][0] <= a0)
                end = min(i for i in ctx if offsets[i][1] >= a1)
        out.append(Window(example, list(e.ids), list(e.type_ids), offsets, in_ctx, start, end))
    return out


def best_span(start_logits: Tensor, end_logits: Tensor, in_context: Tensor,
              max_answer_len: int) -> tuple[float, int, int]:
    """(score, first, last token) maximising start + end logit over spans inside the context with
    first ≤ last < first + max_answer_len; score -inf when the window has no context.

    start_logits, end_logits [L]; in_context bool [L].
    """
    n = start_logits.shape[0]
    score = start_logits.float()[:, None] + end_logits.float()[None, :]  # [L, L]: row first, column last
    i = torch.arange(n)
    valid = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_len)  # [L, L]
    valid &= in_context[:, None] & in_context[None, :]
    score = score.masked_fill(~valid, float("-inf"))
    flat = int(score.argmax())
    best = float(score.flatten()[flat])
    return best, flat // n, flat % n


def answer_texts(contexts: list[str], wins: list[Window], start_logits: Tensor, end_logits: Tensor,
                 max_answer_len: int) -> list[str]:
    """Each question's answer: the best span over all of its windows (stitched by score).

    start_logits, end_logits [W, L'] (L' ≥ each window's length; the padding is never chosen).
    """
    best: dict[int, tuple[float, str]] = {}
    for w, win in enumerate(wins):
        n = len(win.ids)
        score, a, b = best_span(start_logits[w, :n], end_logits[w, :n], torch.tensor(win.in_context), max_answer_len)
        if score == float("-inf"):
            continue
        if win.example not in best or score > best[win.example][0]:
            best[win.example] = (score, contexts[win.example][win.offsets[a][0]: win.offsets[b][1]])
    return [best[i][1] if i in best else "" for i in range(len(contexts))]
