"""BART: a denoising training step and beam-search generation, clozeformer vs transformers.

    python benchmarks/bench_bart.py [--steps 6] [--precision fp32,bf16] [--gen-batch 8] [--gen-tokens 48]

Config L4+4 H256 A4 F1024, vocab 30522, dropout 0.1 (attention/activation dropout 0, as
transformers' BartConfig defaults). Training: batch 32 × 128 corrupted inputs (text
infilling shortens some rows: they are padded) against 32 × 128 targets; a step is forward
+ loss + backward + AdamW, both models from the same weights, alternated step by step.
Generation: beam 4 over the same weights and inputs, </s> held off until the length limit
so both decode the full length; the ids must be identical, and the script checks that.
"""

from __future__ import annotations

import statistics
import time

import torch
import transformers
from bench_pretrain import print_race, race, step_args, step_flops

from clozeformer.interop.hf import bart_config_to_hf, bart_state_to_hf
from clozeformer.models.bart import BartConfig, BartForConditionalGeneration

PAD, EOS, MASK = 1, 2, 4


def denoising_batch(b: int, t: int, vocab: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    labels = torch.randint(5, vocab, (b, t), generator=g)
    labels[:, 0], labels[:, -1] = 0, EOS
    ids = labels.clone()
    ids[torch.rand(b, t, generator=g) < 0.1] = MASK
    lengths = t - torch.randint(0, t // 4, (b,), generator=g)  # infilling removed up to a quarter
    ids[torch.arange(t) >= lengths[:, None]] = PAD
    ids[torch.arange(b), lengths - 1] = EOS
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "labels": labels}


def main() -> None:
    args = step_args(gen_batch=(int, 8), gen_tokens=(int, 48), gen_repeats=(int, 3))
    torch.manual_seed(0)
    cfg = BartConfig.preset("mini", vocab_size=30522, max_positions=512)
    ours = BartForConditionalGeneration(cfg)
    hf_cfg = transformers.BartConfig(**{k: v for k, v in bart_config_to_hf(cfg).items() if k != "architectures"})
    theirs = transformers.BartForConditionalGeneration(hf_cfg)
    theirs.load_state_dict(bart_state_to_hf(ours.state_dict()), strict=False)  # same start (tied copies aside)
    batch = denoising_batch(args.batch, args.seq, cfg.vocab_size, torch.Generator().manual_seed(0))
    models = {"clozeformer": ours, "transformers": theirs}

    print("\n## denoising training step")
    rows = [(p, race(models, batch, p, args.steps, args.warmup)) for p in args.precision.split(",")]
    print_race(rows, args.batch * args.seq, step_flops(models, batch))

    print(f"\n## beam-4 generation: {args.gen_batch} sources x {args.seq // 2} tokens, {args.gen_tokens} new tokens")
    src = batch["input_ids"][: args.gen_batch, : args.seq // 2].clone()
    src[:, -1] = EOS
    settings = dict(num_beams=4, max_new_tokens=args.gen_tokens, min_new_tokens=args.gen_tokens, do_sample=False,
                    no_repeat_ngram_size=3, length_penalty=1.0,
                    forced_eos_token_id=EOS)  # transformers' BartConfig default; explicit for both
    calls = {"clozeformer": lambda: ours.generate(src, **settings),
             "transformers": lambda: theirs.generate(input_ids=src, **settings)}
    theirs.load_state_dict(bart_state_to_hf(ours.state_dict()), strict=False)  # training moved them apart
    for m in models.values():
        m.eval()
    times: dict[str, list[float]] = {k: [] for k in calls}
    out = {}
    for _ in range(args.gen_repeats + 1):  # the first round warms up
        for name, call in calls.items():
            t0 = time.perf_counter()
            out[name] = call()
            times[name].append(time.perf_counter() - t0)
    same = out["clozeformer"].tolist() == out["transformers"].tolist()
    new = args.gen_batch * args.gen_tokens
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    print("\n| | clozeformer | transformers | ratio |\n|---|---|---|---|")
    print(f"| seconds | {med['clozeformer']:.2f} | {med['transformers']:.2f} | "
          f"{med['transformers'] / med['clozeformer']:.2f}x |")
    print(f"| new tokens/s | {new / med['clozeformer']:,.0f} | {new / med['transformers']:,.0f} | |")
    print(f"\nidentical ids: {same}")
    if not same:
        raise SystemExit("generated ids differ from transformers")


if __name__ == "__main__":
    main()
