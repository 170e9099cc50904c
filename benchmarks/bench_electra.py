"""One ELECTRA pretraining (RTD) step: clozeformer vs transformers, same config, same batch, same loss.

    python benchmarks/bench_electra.py [--steps 6] [--warmup 2] [--precision fp32,bf16]

Discriminator L4 H256 A4 F1024 E128, generator H64 A1 F256 (1/4 width, google-research/electra's
derivation), vocab 30522, batch 32x128, dropout 0.1. transformers: ElectraForMaskedLM (generator)
+ ElectraForPreTraining (discriminator) with the token and position embeddings shared between
them, as in ELECTRA; ours: ElectraForPreTraining. Same initial weights, same masked batch, same
sampling noise, same loss (generator MLM + 50 · discriminator BCE over non-pad tokens). A step is
forward + loss + backward + AdamW + zero_grad; the two are alternated step by step in one process.
"""

from __future__ import annotations


import torch
import transformers

from bench_pretrain import print_race, race, step_args, step_flops  # this directory is on sys.path when run as a script

from clozeformer.interop.hf import electra_config_to_hf, electra_state_to_hf
from clozeformer.models.electra import ElectraConfig, ElectraForPreTraining
from clozeformer.objectives.rtd import replaced_inputs, rtd_mask, sample_replacements


def make_batch(b: int, t: int, vocab: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] … [SEP]
    mask = torch.ones_like(ids)
    mask[: b // 8, -t // 4:] = 0  # a few padded rows
    ids = ids.masked_fill(mask == 0, 0)
    batch = rtd_mask(ids, mask_id=103, vocab_size=vocab, special_ids=[0, 100, 101, 102, 103], generator=g)
    return {**batch, "attention_mask": mask}


def hf_pair(ours: ElectraForPreTraining):
    cfg = ours.config
    make = lambda gen: {k: v for k, v in electra_config_to_hf(cfg, generator=gen).items()  # noqa: E731
                        if k != "architectures"}
    disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(**make(False)))
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**make(True)))
    disc.load_state_dict(electra_state_to_hf(ours.discriminator.state_dict()), strict=False)
    gen.load_state_dict(electra_state_to_hf(ours.generator.state_dict()), strict=False)
    # share the token and position embeddings (ELECTRA §3.2); the generator's LM head stays tied to them
    gen.electra.embeddings.word_embeddings = disc.electra.embeddings.word_embeddings
    gen.electra.embeddings.position_embeddings = disc.electra.embeddings.position_embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    return disc, gen


class HFStep(torch.nn.Module):
    """transformers' generator + discriminator, run as ELECTRA's step (the same loss as ours)."""

    def __init__(self, disc, gen, weight: float) -> None:
        super().__init__()
        self.disc, self.gen, self.weight = disc, gen, weight

    def forward(self, input_ids, attention_mask, labels, replace_u):
        g = self.gen(input_ids=input_ids, attention_mask=attention_mask, labels=labels)  # full [B, T, V] logits
        where = labels != -100
        sampled = sample_replacements(g.logits[where], replace_u[where])
        disc_ids, replaced = replaced_inputs(input_ids, labels, sampled)
        d = self.disc(input_ids=disc_ids, attention_mask=attention_mask, labels=replaced.long())
        return g.loss + self.weight * d.loss


def main() -> None:
    args = step_args()
    torch.manual_seed(0)
    cfg = ElectraConfig.preset("mini", vocab_size=30522)
    ours = ElectraForPreTraining(cfg)
    disc, gen = hf_pair(ours)
    theirs = HFStep(disc, gen, cfg.discriminator_weight)
    batch = make_batch(args.batch, args.seq, cfg.vocab_size, torch.Generator().manual_seed(0))
    tokens = args.batch * args.seq
    with torch.no_grad():  # the same loss from the same weights (eval mode: no dropout)
        ours.eval(), theirs.eval()
        a, b = ours(**batch).loss.item(), theirs(**batch).item()
    print(f"initial loss: clozeformer {a:.5f}, transformers {b:.5f}")

    def loss_fn(model, b):
        out = model(**b)
        return out if isinstance(out, torch.Tensor) else out.loss

    models = {"clozeformer": ours, "transformers": theirs}
    rows = [(p, race(models, batch, p, args.steps, args.warmup, loss_fn)) for p in args.precision.split(",")]
    print_race(rows, tokens, step_flops(models, batch, loss_fn))

if __name__ == "__main__":
    main()
