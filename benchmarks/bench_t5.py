"""T5: (a) one span-corruption training step, clozeformer vs transformers; (b) span-corruption data throughput.

    python benchmarks/bench_t5.py [--steps 6] [--warmup 2] [--precision fp32,bf16] [--part train,data]

(a) Config L4+4, d_model 256, d_kv 64, d_ff 1024, 4 heads, vocab 32128, T5 v1.0 (ReLU, tied
head), dropout 0.1 in both; batch 32 × 128 encoder tokens with 29 target tokens (span
corruption of 141 raw tokens, `span_lengths(128)`). A step is forward + loss + backward +
AdamW + zero_grad; both models start from the same weights, see the same batch, and run
alternately in this process. Tokens/s counts encoder input tokens (32 × 128 per step).

(b) Span corruption of batches of 32 × 568 raw tokens (-> 512 inputs, 114 targets) on one
thread: our batched torch version vs a per-example numpy version of T5's reference algorithm
in the style of transformers' examples/flax/language-modeling/run_t5_mlm_flax.py collator.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import transformers
from bench_pretrain import print_race, race, step_args, step_flops

from clozeformer.interop.hf import t5_config_to_hf, t5_state_to_hf
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration
from clozeformer.objectives.span import span_corruption, span_lengths

VOCAB = 32128
SENTINELS = list(range(VOCAB - 1, VOCAB - 101, -1))  # <extra_id_0> = V − 1, counting down as T5's vocabulary
EOS = 1


def bench_train(args) -> None:
    torch.manual_seed(0)
    cfg = T5Config.preset("mini", vocab_size=VOCAB)  # L4+4, d_model 256, d_kv 64, d_ff 1024, 4 heads
    ours = T5ForConditionalGeneration(cfg)
    hf_cfg = transformers.T5Config(**{k: v for k, v in t5_config_to_hf(cfg).items() if k != "architectures"})
    theirs = transformers.T5ForConditionalGeneration(hf_cfg)
    missing, unexpected = theirs.load_state_dict(t5_state_to_hf(ours.state_dict()), strict=False)
    assert not unexpected and all("embed_tokens" in k or k == "lm_head.weight" for k in missing), missing
    raw, targets = span_lengths(args.seq)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, VOCAB - 100, (args.batch, raw), generator=g)
    batch = span_corruption(tokens, sentinel_ids=SENTINELS, eos_id=EOS, generator=g)
    assert batch["input_ids"].shape == (args.batch, args.seq) and batch["labels"].shape == (args.batch, targets)
    n_tokens = args.batch * args.seq
    print(f"(a) training step: batch {args.batch} x {args.seq} inputs / {targets} targets (raw {raw})")

    def loss_fn(model, b):
        return model(input_ids=b["input_ids"], labels=b["labels"]).loss

    models = {"clozeformer": ours, "transformers": theirs}
    rows = [(p, race(models, batch, p, args.steps, args.warmup, loss_fn)) for p in args.precision.split(",")]
    print_race(rows, n_tokens, step_flops(models, batch, loss_fn))


# --- (b) the per-example numpy reference -------------------------------------------------

def reference_noise_mask(length: int, density: float, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """T5's random_spans_noise_mask for one example, as the flax example collator writes it."""
    num_noise = int(np.round(length * density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(np.round(num_noise / mean_span)), 1)
    num_kept = length - num_noise

    def segmentation(num_items, num_segments):
        first = np.arange(num_items - 1) < (num_segments - 1)
        rng.shuffle(first)
        first = np.pad(first, [[1, 0]])
        segment_id = np.cumsum(first)
        _, lengths = np.unique(segment_id, return_counts=True)
        return lengths

    interleaved = np.reshape(np.stack([segmentation(num_kept, num_spans), segmentation(num_noise, num_spans)], 1),
                             [num_spans * 2])
    starts = np.cumsum(interleaved)[:-1]
    indicator = np.zeros((length,), dtype=np.int8)
    indicator[starts] = True
    return np.cumsum(indicator) % 2 == 1


def reference_collate(tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    b, length = tokens.shape
    mask = np.asarray([reference_noise_mask(length, 0.15, 3.0, rng) for _ in range(b)])
    sentinel_table = np.asarray(SENTINELS)

    def sentinel_ids(m):
        start = m - np.roll(m, 1, axis=-1) * m
        start[:, 0] = m[:, 0]
        ids = np.where(start != 0, np.cumsum(start, axis=-1), start)
        return np.where(ids != 0, sentinel_table[np.maximum(ids - 1, 0)], 0) - (m - start)  # -1 drops a token

    def filter_ids(ids, sent):
        full = np.where(sent != 0, sent, ids)
        rows = [row[row >= 0] for row in full]
        return np.concatenate([np.stack(rows), np.full((b, 1), EOS)], axis=-1)

    m = mask.astype(np.int8)
    return {"input_ids": filter_ids(tokens, sentinel_ids(m)), "labels": filter_ids(tokens, sentinel_ids(1 - m))}


def bench_data(args) -> None:
    torch.set_num_threads(1)
    raw, targets = span_lengths(512)
    b, reps = 32, args.data_reps
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, VOCAB - 100, (b, raw), generator=g)
    np_tokens = tokens.numpy()
    rng = np.random.default_rng(0)
    ref = reference_collate(np_tokens, rng)  # shapes agree with ours
    out = span_corruption(tokens, sentinel_ids=SENTINELS, eos_id=EOS, generator=g)
    assert ref["input_ids"].shape == tuple(out["input_ids"].shape) == (b, 512)
    assert ref["labels"].shape == tuple(out["labels"].shape) == (b, targets)

    def rate(fn) -> float:
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return b * raw / statistics.median(times)

    ours = rate(lambda: span_corruption(tokens, sentinel_ids=SENTINELS, eos_id=EOS, generator=g))
    theirs = rate(lambda: reference_collate(np_tokens, rng))
    print(f"\n(b) span corruption, batches of {b} x {raw} raw tokens -> {b} x 512 / {b} x {targets}, 1 thread")
    print("| implementation | raw tokens/s |\n|---|---|")
    print(f"| clozeformer (batched torch) | {ours:,.0f} |\n| per-example numpy (T5 reference) | {theirs:,.0f} |")
    print(f"ratio {ours / theirs:.1f}x")


def main() -> None:
    args = step_args(data_reps=(int, 50), part=(str, "train,data"))
    parts = args.part.split(",")
    if "train" in parts:
        bench_train(args)
    if "data" in parts:
        bench_data(args)


if __name__ == "__main__":
    main()
