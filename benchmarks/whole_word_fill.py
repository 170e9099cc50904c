"""Whole-word masking: how much of each row's prediction budget the selection fills.

    python benchmarks/whole_word_fill.py [--rows 2000] [--max-len 128] [--rate 0.15]

On the first --rows lines of ../shared/data/corpus/en_reviews.txt with a WordPiece tokenizer
trained on them (8k), masks each row alone (one sentence per row, as one line of the corpus)
with objectives/mlm.mlm_mask in whole-word mode and reports the predicted tokens as a share of
the budget round(rate × tokens), and the rows left with no target. Google's rule (skip a word
that overflows, keep filling) against the rule it replaced (stop at the first word that
overflows), both on the same rows and random draws. No training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from clozeformer.objectives.mlm import IGNORE, mlm_mask
from clozeformer.tokenizer import Tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "en_reviews.txt"


def stop_at_first_overflow(labels: torch.Tensor, ids: torch.Tensor, cont: torch.Tensor, budget: torch.Tensor,
                           order_seed: int) -> torch.Tensor:
    """Targets per row under the replaced rule, for comparison: words in random order, taken while the
    running count fits, every word after the first overflow dropped."""
    g = torch.Generator().manual_seed(order_seed)
    counts = []
    for r in range(ids.shape[0]):
        row = ids[r][ids[r] > 4]
        starts = ~cont[row] | (torch.arange(len(row)) == 0)
        lengths = torch.diff(torch.nonzero(torch.cat([starts, torch.tensor([True])])).flatten())
        order = torch.randperm(len(lengths), generator=g)
        taken = lengths[order].cumsum(0)
        counts.append(int(taken[taken <= budget[r]].max()) if bool((taken <= budget[r]).any()) else 0)
    return torch.tensor(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--rate", type=float, default=0.15)
    a = ap.parse_args()
    lines = DATA.read_text(encoding="utf-8").splitlines()[: a.rows]
    tok = Tokenizer.train("wordpiece", lines, vocab_size=8000)
    rows = [tok.encode(line, max_length=a.max_len) for line in lines]
    ids = torch.full((len(rows), max(map(len, rows))), tok.pad_id)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    cont = torch.from_numpy(tok.continuation_mask())
    out = mlm_mask(ids, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=tok.special_ids,
                   generator=torch.Generator().manual_seed(0), rate=a.rate, continuation=cont)
    eligible = (~torch.isin(ids, torch.tensor(tok.special_ids))).sum(1)
    budget = (eligible.double() * a.rate).round().long().clamp(min=1)
    now = (out["labels"] != IGNORE).sum(1)
    before = stop_at_first_overflow(out["labels"], ids, cont, budget, 0)
    print(f"{len(rows)} rows of en_reviews, WordPiece {tok.vocab_size}, whole-word masking at {a.rate:.0%}:")
    print("| rule | targets / budget | rows with no target |\n|---|---|---|")
    for name, counts in (("stop at the first word that overflows (replaced)", before),
                         ("skip a word that overflows, keep filling (Google's)", now)):
        print(f"| {name} | {counts.sum() / budget.sum():.1%} | {int((counts == 0).sum())} |")


if __name__ == "__main__":
    main()
