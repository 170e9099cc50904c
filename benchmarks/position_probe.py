"""Has a pretrained BERT learnt word order? Attention to neighbours and position embeddings; and does
[CLS] read the sentence?

MLM first learns a bag-of-words guess: which tokens occur near which, not where. Word order
shows up as heads that attend to the previous or the next token, and as position embeddings
whose neighbours point the same way. For each model directory (ours or transformers', BERT
or ELECTRA layout) this prints, over single sentences of a TSV/text file:
- per layer, the largest share of attention any head puts on the previous / the next token
  (a uniform head puts 1/n there; n is printed);
- the mean cosine between adjacent position embeddings (1..31) and their mean norm;
- in the last layer, the share of its attention [CLS] puts on itself and the entropy of its attention
  over the sentence relative to a uniform head's (1.0): what a [CLS] classifier starts from.

    python benchmarks/position_probe.py runs/ko_nsp/model runs/ko_long/model --text ../shared/data/nsmc/dev.tsv

Attention weights come from transformers' eager BertModel / ElectraModel (a dev dependency) on the exported
checkpoint, which gives the same logits as ours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def sentences(path: Path, rows: int) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".tsv":  # the first column; skip the header
        lines = [ln.split("\t")[0] for ln in lines[1:]]
    return [ln for ln in lines if ln.strip()][:rows]


def probe(model_dir: Path, texts: list[str], max_len: int) -> dict:
    import transformers
    from tokenizers import Tokenizer

    transformers.logging.set_verbosity_error()
    model = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    shares, lengths, cls_self, cls_entropy = [], [], [], []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok.encode(text).ids[:max_len]])
            att = torch.stack(model(ids, output_attentions=True).attentions)[:, 0]  # [L, H, n, n]
            shares.append(torch.stack([att.diagonal(k, -2, -1).mean(-1) for k in (-1, 1)], -1))  # [L, H, 2]
            lengths.append(ids.shape[1])
            cls = att[-1, :, 0]  # [H, n]: [CLS]'s attention in the last layer
            cls_self.append(cls[:, 0].mean())
            entropy = -(cls * cls.clamp_min(1e-12).log()).sum(-1)  # [H]; a uniform head's is log n
            cls_entropy.append((entropy / torch.log(torch.tensor(float(ids.shape[1])))).mean())
    share = torch.stack(shares).mean(0).amax(1)  # [L, 2]: the best head per layer
    pos = model.embeddings.position_embeddings.weight[1:32].detach().float()
    unit = torch.nn.functional.normalize(pos, dim=-1)
    return {"previous": share[:, 0].tolist(), "next": share[:, 1].tolist(),
            "adjacent_cos": float((unit[:-1] * unit[1:]).sum(-1).mean()), "pos_norm": float(pos.norm(dim=-1).mean()),
            "mean_len": sum(lengths) / len(lengths), "cls_self": float(torch.stack(cls_self).mean()),
            "cls_entropy": float(torch.stack(cls_entropy).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--text", type=Path, required=True, help=".tsv (first column) or one sentence per line")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=64)
    a = ap.parse_args()
    texts = sentences(a.text, a.rows)
    print("| model | best head on previous token, by layer | on next token | adjacent position cos | position norm "
          "| [CLS] on itself | [CLS] entropy / uniform |")
    print("|---|---|---|---|---|---|---|")
    for m in a.models:
        r = probe(m, texts, a.max_len)
        fmt = " / ".join
        print(f"| {m} | {fmt(f'{x:.2f}' for x in r['previous'])} | {fmt(f'{x:.2f}' for x in r['next'])} "
              f"| {r['adjacent_cos']:.3f} | {r['pos_norm']:.3f} | {r['cls_self']:.2f} | {r['cls_entropy']:.2f} |")
    print(f"{len(texts)} sentences, {r['mean_len']:.1f} tokens on average: a uniform head puts "
          f"{1 / r['mean_len']:.3f} on each neighbour")


if __name__ == "__main__":
    main()
