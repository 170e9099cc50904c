"""Next-sentence prediction pairs (BERT §3.1): `[CLS] A [SEP] B [SEP]`.

Pure and batched. Input: for every row a segment A and its TRUE continuation B (both
without special tokens, right-padded) and the id of the document they come from. Half the
rows (rate `next_prob`) keep B; the others take the B of another row from a different
document: the next one up in a random order of the rows sorted by B's length, so that a
random B is as long as the true one it stands for or a little longer (a packed row keeps
its slot full; B's length says nothing of the label), else one found by random row shifts,
else any row of another document (a batch of few documents); only a batch of one document
keeps its true Bs. Label 0 = B follows A, 1 = B is random (the convention of HF `BertForPreTraining`).

Truncation (google-research/bert `truncate_seq_pair`): while the pair is too long, drop a
token from the longer segment (B on ties). Its closed form is used here: if the shorter
side s fits with room, the longer becomes budget − s; otherwise A keeps ceil(budget/2) and
B floor(budget/2). Tokens are dropped from the end.
Shapes: N rows, La/Lb padded segment lengths, L = max_len.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEIGHBOUR_TRIES = 8  # rows just above in B-length order tried first for a B from another document
SHIFT_TRIES = 4  # then random row shifts


def nsp_pairs(a: Tensor, a_len: Tensor, b: Tensor, b_len: Tensor, doc: Tensor, *, max_len: int | Tensor,
              cls_id: int, sep_id: int, pad_id: int, generator: torch.Generator,
              next_prob: float = 0.5) -> dict[str, Tensor]:
    """-> input_ids, token_type_ids, attention_mask [N, L]; next_sentence_label [N].

    max_len: one limit for every pair, or one per pair [N] (packed pretraining gives each pair
    the room its true A + B took, so a random B is truncated to fit the same slot); L is the
    largest limit.
    """
    if not 0 <= next_prob <= 1:  # 2, -1 or nan gave labels all one way
        raise ValueError(f"next_prob {next_prob} is out of range; allowed: a probability in [0, 1]")
    n = a.shape[0]
    if b.shape[1] == 0:  # no row has a B (one-token documents): one padding column keeps the gathers below valid
        b = b.new_full((n, 1), pad_id)
    want_random = torch.rand(n, generator=generator) >= next_prob  # [N]
    donor = torch.arange(n)
    found = torch.zeros(n, dtype=torch.bool)
    if n > 1:
        order = (b_len.double() + torch.rand(n, generator=generator, dtype=torch.double)).argsort()  # [N]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n)
        shifts = [order[(rank + k) % n] for k in range(1, min(NEIGHBOUR_TRIES, n - 1) + 1)]
        shifts += [(torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n for _ in range(SHIFT_TRIES)]
        for cand in shifts:
            ok = want_random & ~found & (doc[cand] != doc)
            donor = torch.where(ok, cand, donor)
            found |= ok
        if (left := want_random & ~found).any():  # few documents in the batch: any row of another, at random
            other = doc[None, :] != doc[:, None]  # [N, N]
            pick = (torch.rand(n, n, generator=generator) * other).argmax(1)
            ok = left & other.any(1)
            donor = torch.where(ok, pick, donor)
            found |= ok
    b, b_len = b[donor], b_len[donor]  # rows without a foreign donor keep their true B (label 0)
    label = found.long()

    limit = torch.as_tensor(max_len).expand(n)  # [N]
    budget = limit - 3  # [CLS], [SEP], [SEP]
    short = torch.minimum(a_len, b_len)
    over = a_len + b_len > budget
    fits = budget - short >= short
    half_a, half_b = (budget + 1) // 2, budget // 2
    la = torch.where(~over, a_len, torch.where(fits, torch.where(a_len > b_len, budget - short, a_len), half_a))
    lb = torch.where(~over, b_len, torch.where(fits, torch.where(a_len > b_len, b_len, budget - short), half_b))

    width = int(limit.max()) if n else 3
    p = torch.arange(width)[None, :]  # [1, L]
    la_, lb_ = la[:, None], lb[:, None]
    in_a = (p >= 1) & (p <= la_)
    in_b = (p >= la_ + 2) & (p <= la_ + lb_ + 1)
    a_tok = a.gather(1, (p - 1).clamp(0, a.shape[1] - 1).expand(n, -1))
    b_tok = b.gather(1, (p - la_ - 2).clamp(0, b.shape[1] - 1))
    ids = torch.full((n, width), pad_id, dtype=a.dtype)
    ids = torch.where(in_a, a_tok, ids)
    ids = torch.where(in_b, b_tok, ids)
    ids = torch.where((p == 0), cls_id, ids)
    ids = torch.where((p == la_ + 1) | (p == la_ + lb_ + 2), sep_id, ids)
    return {
        "input_ids": ids,
        "token_type_ids": ((p >= la_ + 2) & (p <= la_ + lb_ + 2)).long(),
        "attention_mask": (p <= la_ + lb_ + 2).long(),
        "next_sentence_label": label,
    }
