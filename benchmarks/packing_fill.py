"""How much of a pretraining batch is real text, per family and corpus (document-aware packing).

    python benchmarks/packing_fill.py [--max-len 128] [--batches 50]

For the shared corpora (en_reviews.txt: one sentence per line; ko_reviews.txt: one review per
line) and the demo's stdlib documentation (documents of many sentences), builds each family's
pretraining data as `clozeformer pretrain` does (its own tokenizer kind, 8k; BERT with and
without NSP) and reports the packing's fill (row positions holding tokens) and, over the first
--batches training batches, the share of all positions (encoder and decoder) that are real
tokens, which includes BART's and T5's per-batch padding to the longest row. No training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clozeformer.data.cache import load_corpus
from clozeformer.data.corpus import iter_texts
from clozeformer.demo import stdlib_documents, write_corpus
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.loop import count_tokens
from clozeformer.families import FAMILIES
from clozeformer.train.pretrain import OBJECTIVES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--out", default="benchmarks/results/packing_fill")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    corpora = [(DATA / "en_reviews.txt", False), (DATA / "ko_reviews.txt", False),
               (write_corpus(out / "stdlib_docs.txt", stdlib_documents()), True)]
    print(f"| corpus | family | documents | rows of {a.max_len} | packing fill | real tokens in batches |")
    print("|---|---|---|---|---|---|")
    for path, blank in corpora:
        if not path.is_file():
            print(f"| {path.name} | (not available) | | | | |")
            continue
        for family, nsp in (("bert", True), ("bert", False), ("bart", False), ("t5", False)):
            kind = {"bert": "wordpiece", "bart": "bpe", "t5": "unigram"}[family]
            tok_dir = out / "tokenizers" / f"{path.stem}-{kind}"
            if not (tok_dir / "tokenizer.json").is_file():
                tok = Tokenizer.train(kind, iter_texts(path, blank_line_docs=blank), vocab_size=8000,
                                      lowercase=kind == "wordpiece")
                tok_dir.mkdir(parents=True, exist_ok=True)
                tok.save(tok_dir)
            tok = Tokenizer.load(tok_dir)
            cache = load_corpus(path, tok, cache_dir=out / "cache", blank_line_docs=blank, progress=False)
            data = OBJECTIVES[FAMILIES[family].objective].data(cache, tok, max_len=a.max_len, batch_size=a.batch_size, nsp=nsp,
                                        whole_word=False, mlm_rate=0.15, noise="bart-base", seed=0,
                                        eval_fraction=0.02)
            counts = [count_tokens(data.train_batch(i)) for i in range(a.batches)]
            real = sum(c[1] for c in counts) / sum(c[2] for c in counts)
            name = family + (" + NSP" if nsp else "")
            print(f"| {path.name} | {name} | {cache.n_documents:,} | {len(data.train_examples):,} | "
                  f"{data.train_examples.fill:.1%} | {real:.1%} |", flush=True)


if __name__ == "__main__":
    main()
